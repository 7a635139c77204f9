"""Reading images: ids from relative paths, RGB tensors in [-1, 1], unreadable files reported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(root: str | Path) -> dict[str, Path]:
    """Every file under ``root`` with an image suffix, keyed by its id (relative path, no suffix, '/' separators)."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found[path.relative_to(root).with_suffix("").as_posix()] = path
    return found


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image to H x W x 3 uint8 RGB, EXIF orientation honoured (raises on undecodable files)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8).copy()


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Decode an image (EXIF orientation honoured) to a 3 x H x W float tensor in [-1, 1].

    ``size`` resizes the square image to ``size x size`` (Lanczos). Raises ``OSError``/``ValueError`` on
    files that are not decodable images; callers record these and skip the file.
    """
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        array = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8 (values outside the range are clipped, no rescaling)."""
    x = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()
