"""Writing the published folder: atomic copies, fallback images, removal of what is no longer published.

Every file lands under its final name only whole (a temporary name in the same folder, then
``os.replace``), so a kill -9 never leaves half an image in the published folder, and a rerun simply
writes it again.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from anon.atomic_write import write_atomically
from anon.method.baselines import FilledBox, GaussianBlur
from anon.errors import ConfigError
from anon.runtime.outputs import save_png

FALLBACKS = ("withhold", "mask", "blur")


def check_fallback(kind: str) -> str:
    if kind not in FALLBACKS:
        raise ConfigError(f"publish.fallback={kind!r}: choose one of {', '.join(FALLBACKS)}")
    return kind


def copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file beside it (skipped when already identical)."""
    if target.is_file() and target.stat().st_size == source.stat().st_size \
            and target.read_bytes() == source.read_bytes():
        return
    write_atomically(target, lambda tmp: shutil.copyfile(source, tmp), fsync=True)


def fallback_image(kind: str, image: Path, target: Path, blur_sigma: float, mask_box) -> Path:
    """Write the ``mask`` (filled box over the face region) or ``blur`` (Gaussian, ``blur_sigma`` px) of
    ``image`` to ``target`` (PNG); returns ``target``."""
    pixels = np.asarray(Image.open(image).convert("RGB"))
    if kind == "mask":
        out = FilledBox(box=tuple(mask_box))(pixels)
    elif kind == "blur":
        out = GaussianBlur(sigma=blur_sigma)(pixels)
    else:
        raise ConfigError(f"no fallback image for publish.fallback={kind!r}")
    save_png(out, target)
    return target


def prune(images_dir: Path, keep: set[Path]) -> list[Path]:
    """Remove files under ``images_dir`` that are not in ``keep`` (an item no longer published, a
    temporary file of a killed copy); returns what was removed."""
    removed = []
    if not images_dir.is_dir():
        return removed
    keep = {p.resolve() for p in keep}
    for path in sorted(images_dir.rglob("*")):
        if (path.is_file() or path.is_symlink()) and path.resolve() not in keep:
            path.unlink()
            removed.append(path)
    return removed


__all__ = ["FALLBACKS", "check_fallback", "copy_atomic", "fallback_image", "prune"]
