"""Per-image outputs: a lossless PNG and the final W+ code, each written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_png(array: np.ndarray, path: Path) -> None:
    """H x W x 3 uint8 -> PNG (lossless; no per-image rescaling)."""
    _atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_code(code: torch.Tensor, path: Path) -> None:
    """One W+ code (L x D float32)."""
    _atomic(path, lambda tmp: torch.save(code.detach().cpu().float().clone(), tmp))


def image_path(run_dir: Path, image_id: str) -> Path:
    return run_dir / "images" / f"{image_id}.png"


def code_path(run_dir: Path, image_id: str) -> Path:
    return run_dir / "codes" / f"{image_id}.pt"
