"""Per-image outputs: the anonymised image and the final W+ code, each written atomically.

``output.format``: ``png`` (default) writes lossless PNGs of the [-1, 1] image, clipped, no rescaling;
``official_jpeg`` writes what the official code saved and the paper evaluated (FALCO.md section 9.4):
each image min-max rescaled on its own to [0, 1], times 255 truncated to uint8, JPEG quality 75.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anon.atomic_write import write_atomically


def save_png(array: np.ndarray, path: Path) -> None:
    """H x W x 3 uint8 -> PNG (lossless; no per-image rescaling)."""
    write_atomically(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


OUTPUT_SUFFIX = {"png": ".png", "official_jpeg": ".jpg"}


def check_format(fmt: str) -> str:
    if fmt not in OUTPUT_SUFFIX:
        raise ValueError(f"output.format must be one of {', '.join(OUTPUT_SUFFIX)}, not {fmt!r}")
    return fmt


def official_jpeg_pixels(image: torch.Tensor) -> np.ndarray:
    """3 x H x W float (any range) -> H x W x 3 uint8: per-image min-max to [0, 1], then 255 x, truncated."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return (255 * x).to(torch.uint8).permute(1, 2, 0).numpy()


def save_jpeg(array: np.ndarray, path: Path, quality: int = 75) -> None:
    """H x W x 3 uint8 -> JPEG at ``quality`` (PIL's default 4:2:0 subsampling, as ToPILImage().save)."""
    write_atomically(path, lambda tmp: Image.fromarray(array).save(tmp, format="JPEG", quality=quality))


def save_output(image: torch.Tensor, path: Path, fmt: str = "png") -> None:
    """One anonymised image (3 x H x W in [-1, 1]) in ``output.format``."""
    if check_format(fmt) == "official_jpeg":
        save_jpeg(official_jpeg_pixels(image), path)
    else:
        from anon.data.images import to_uint8

        save_png(to_uint8(image[None])[0], path)


def save_code(code: torch.Tensor, path: Path) -> None:
    """One W+ code (L x D float32)."""
    write_atomically(path, lambda tmp: torch.save(code.detach().cpu().float().clone(), tmp))


def save_offsets(offsets: dict[str, torch.Tensor], path: Path) -> None:
    """One image's generator weight offsets (``{parameter name: tensor}``, pivotal tuning)."""
    write_atomically(path, lambda tmp: torch.save({k: v.detach().cpu().float().clone() for k, v in offsets.items()}, tmp))


def image_path(run_dir: Path, image_id: str, fmt: str = "png") -> Path:
    return run_dir / "images" / f"{image_id}{OUTPUT_SUFFIX[check_format(fmt)]}"


def code_path(run_dir: Path, image_id: str) -> Path:
    return run_dir / "codes" / f"{image_id}.pt"
