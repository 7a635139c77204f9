"""Reading images: ids from relative paths, RGB tensors in [-1, 1], unreadable files reported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def is_image_entry(path: Path) -> bool:
    """An image-suffixed file, or an image-suffixed symlink of any kind: a loop or a dangling link is
    listed too, so that reading it fails into the item's ``failed`` record instead of vanishing."""
    return path.suffix.lower() in IMAGE_SUFFIXES and (path.is_symlink() or path.is_file())


def unique_ids(relative: list[Path]) -> dict[str, int]:
    """``{id: index into relative}``: the path without its suffix ('/' separators), or -- for files whose
    stems collide (``a.jpg`` and ``a.png``) -- the whole relative name (``a.jpg``, ``a.png``), so that every
    file is its own item."""
    ids = [r.with_suffix("").as_posix() for r in relative]
    while True:
        seen: dict[str, list[int]] = {}
        for index, image_id in enumerate(ids):
            seen.setdefault(image_id, []).append(index)
        clashes = [i for group in seen.values() if len(group) > 1 for i in group]
        if not clashes:
            return {image_id: index for index, image_id in enumerate(ids)}
        for index in clashes:
            if ids[index] == relative[index].as_posix():  # already its full name: the others move
                continue
            ids[index] = relative[index].as_posix()


def list_images(root: str | Path) -> dict[str, Path]:
    """Every image under ``root`` keyed by its id (relative path without suffix, '/' separators; the
    suffix kept where stems collide, see :func:`unique_ids`), sorted by id."""
    root = Path(root)
    paths = [p for p in sorted(root.rglob("*")) if is_image_entry(p)]
    ids = unique_ids([p.relative_to(root) for p in paths])
    return {image_id: paths[ids[image_id]] for image_id in sorted(ids)}


#: Modes whose samples are wider than 8 bits: Pillow's ``convert`` would clip them, not scale them.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _wide_to_gray8(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image -> 8-bit ``L``, by scaling, never clipping.

    ``I;16*``: 0..65535 -> 0..255 (divide by 257). ``I``: the same when any value exceeds 255 (a
    16-bit image, as Pillow opens some), else taken as 8-bit. ``F``: 0..1 scaled to 0..255 when no value
    exceeds 1, else taken as 0..255. Negative values become 0. A fixed scale per mode, never the image's
    own min--max, so a dark photo stays dark.
    """
    values = np.asarray(image).astype(np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or (image.mode == "I" and top > 255):
        values = values / 257.0
    elif image.mode == "F" and top <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> H x W x 3 uint8 RGB: the one conversion every reader uses.

    Wide grey modes are scaled (:func:`_wide_to_gray8`); images with alpha (RGBA, LA, PA, P with a
    transparent colour) keep their stored colours and drop the alpha (callers that need it read it
    themselves); CMYK, YCbCr, palette and 1-bit go through Pillow's conversion. A 16-bit RGB(A) PNG is
    opened by Pillow as 8-bit already (the high byte of each sample: within one level of scaling).
    """
    if image.mode in WIDE_MODES:
        image = _wide_to_gray8(image)
    elif image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8).copy()


def degenerate(rgb: np.ndarray, share: float = 0.9) -> str | None:
    """Why no face can be searched in ``rgb`` (H x W x 3 uint8), or None: ``share`` or more of its pixels
    at one grey level (a blank, white or black frame; a wide image clipped by a careless decoder)."""
    grey = rgb.astype(np.uint16).sum(axis=-1) // 3 if rgb.ndim == 3 else rgb
    if grey.size == 0:
        return "empty image"
    counts = np.bincount(grey.ravel(), minlength=256)
    level = int(counts.argmax())
    if counts[level] >= share * grey.size:
        return f"degenerate image: {counts[level] / grey.size:.0%} of its pixels at grey level {level}"
    return None


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image to H x W x 3 uint8 RGB, EXIF orientation honoured (raises on undecodable files)."""
    with Image.open(path) as im:
        return to_rgb8(ImageOps.exif_transpose(im))


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Decode an image (EXIF orientation honoured, any mode via :func:`to_rgb8`) to a 3 x H x W float
    tensor in [-1, 1].

    ``size`` resizes the square image to ``size x size`` (Lanczos). Raises ``OSError``/``ValueError`` on
    files that are not decodable images; callers record these and skip the file.
    """
    with Image.open(path) as im:
        rgb = Image.fromarray(to_rgb8(ImageOps.exif_transpose(im)), "RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(rgb, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8 (values outside the range are clipped, no rescaling)."""
    x = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def split_image(image: Image.Image) -> tuple[np.ndarray, Image.Image | None, str]:
    """An upright PIL image -> (``H x W x 3`` uint8 RGB, alpha channel or None, mode to hand back)."""
    mode = image.mode
    alpha = None
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
    out_mode = mode if mode in ("RGB", "RGBA", "L", "LA") else ("RGBA" if alpha is not None else "RGB")
    return to_rgb8(image), alpha, out_mode


def merge_image(rgb: np.ndarray, alpha: Image.Image | None, mode: str) -> Image.Image:
    """Inverse of :func:`split_image`: RGB pixels (+ the untouched alpha) back in ``mode``."""
    image = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        image.putalpha(alpha)
    return image if image.mode == mode else image.convert(mode)
