"""Pasting an anonymised crop back into its photo: the window a face touches, the feathered blend masks
(crop coordinates ``(a, b)`` in [-1, 1], see :mod:`anon.photos.anonymizer`) and the blend that leaves every pixel
with weight 0 exactly as it was; the blur / fill of the faces that are not anonymised."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from anon.data.align import AlignTransform
from anon.errors import ConfigError
from anon.photos.records import Face


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def window_bounds(xs: np.ndarray, ys: np.ndarray, height: int, width: int, margin: int) -> tuple[int, int, int, int] | None:
    """Integer window ``(x0, y0, x1, y1)`` holding every pixel whose centre is within ``margin`` px of the
    points' bounding box, clipped to the photo; None when it leaves nothing."""
    x0, x1 = max(int(np.floor(xs.min())) - margin, 0), min(int(np.ceil(xs.max())) + margin + 1, width)
    y0, y1 = max(int(np.floor(ys.min())) - margin, 0), min(int(np.ceil(ys.max())) + margin + 1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def shifted_transform(transform: AlignTransform, x0: int, y0: int) -> AlignTransform:
    """The same transform in the coordinates of a window whose top-left pixel is ``(x0, y0)``."""
    return AlignTransform(transform.quad - np.array([x0, y0], dtype=np.float64), transform.size)


def feather_mask(transform: AlignTransform, height: int, width: int, shape: str = "ellipse",
                 feather: float = 0.25) -> np.ndarray:
    """Blend weight of an ``height x width`` canvas (float32 in [0, 1]) for a crop pasted by ``transform``.

    Computed from each canvas pixel's crop coordinates ``(a, b)`` in [-1, 1] (module docstring):
    0 on and outside the crop's border, 1 from ``feather`` (fraction of the half-side) inside it.
    """
    if shape not in ("ellipse", "square"):
        raise ConfigError(f"a crop mask is ellipse or square, not {shape!r}")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    uv = transform.to_aligned(np.stack([xs, ys], axis=-1))
    ab = (uv + 0.5) * (2.0 / transform.size) - 1.0
    if shape == "square":
        d = 1.0 - np.abs(ab).max(axis=-1)
    else:
        d = 1.0 - np.hypot(ab[..., 0], ab[..., 1])
    return smoothstep(d / max(float(feather), 1e-6)).astype(np.float32)


def ellipse_mask(box: np.ndarray, window: tuple[int, int, int, int], scale: float, feather: float) -> np.ndarray:
    """Feathered ellipse ``scale`` times the box (float32 window-sized, 1 inside, 0 outside)."""
    x0, y0, x1, y1 = window
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    rx, ry = max(0.5 * scale * (box[2] - box[0]), 0.5), max(0.5 * scale * (box[3] - box[1]), 0.5)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    d = 1.0 - np.hypot((xs - cx) / rx, (ys - cy) / ry)
    return smoothstep(d / max(float(feather), 1e-6)).astype(np.float32)


def blend(out: np.ndarray, window: tuple[int, int, int, int], layer: np.ndarray, alpha: np.ndarray) -> None:
    """``out[window] += alpha * (layer - out[window])`` in place, rounded; alpha 0 leaves a pixel exactly."""
    x0, y0, x1, y1 = window
    region = out[y0:y1, x0:x1].astype(np.float32)
    mixed = region + alpha[..., None] * (layer.astype(np.float32) - region)
    out[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def cover_face(out: np.ndarray, face: Face, region_scale: float, region_feather: float, blur_sigma: float) -> None:
    """A face that is not anonymised, ``blurred`` (Gaussian, sigma ``blur_sigma`` x the box side) or ``filled``
    (the region's mean colour) in place, inside a feathered ellipse ``region_scale`` times its detection box
    (ramp ``region_feather``); sets ``face.window`` to the region. Nothing when the region leaves the photo."""
    height, width = out.shape[:2]
    box = face.box
    side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
    half = 0.5 * region_scale * np.array([box[2] - box[0], box[3] - box[1]])
    centre = 0.5 * np.array([box[0] + box[2], box[1] + box[3]])
    window = window_bounds(np.array([centre[0] - half[0], centre[0] + half[0]]),
                           np.array([centre[1] - half[1], centre[1] + half[1]]), height, width, margin=1)
    if window is None:
        return
    face.window = window
    alpha = ellipse_mask(box, window, region_scale, region_feather)
    x0, y0, x1, y1 = window
    if face.policy == "filled":
        region = out[y0:y1, x0:x1].reshape(-1, 3)[alpha.reshape(-1) > 0.5]
        colour = region.mean(axis=0) if region.size else out[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        layer = np.broadcast_to(colour.astype(np.float32), (y1 - y0, x1 - x0, 3))
    else:
        sigma = blur_sigma * side
        pad = int(np.ceil(3.0 * sigma))
        bx0, by0 = max(x0 - pad, 0), max(y0 - pad, 0)
        bx1, by1 = min(x1 + pad, width), min(y1 + pad, height)
        blurred = Image.fromarray(out[by0:by1, bx0:bx1]).filter(ImageFilter.GaussianBlur(sigma))
        layer = np.asarray(blurred)[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    blend(out, window, layer, alpha)
