"""Classic anonymisation baselines: Gaussian blur, pixelation and a filled box.

Each is a callable ``H x W x 3 uint8 -> H x W x 3 uint8`` applied to the whole (aligned) face image.
They calibrate the evaluators: blur and fine pixelation keep identity for a face matcher, coarse
pixelation halves it, a box removes the face. No generator, inversion or pairing is involved.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float pixels rounded to the nearest integer, clipped to 0..255, as uint8."""
    rounded: np.ndarray = np.rint(pixels)
    clipped: np.ndarray = np.clip(rounded, 0, 255)
    return clipped.astype(np.uint8)


class Baseline:
    """Base class: ``name`` (recorded in the manifest) and ``__call__`` on one RGB uint8 image."""

    name = "baseline"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GaussianBlur(Baseline):
    """Separable Gaussian blur of standard deviation ``sigma`` pixels (kernel truncated at 3 sigma,
    borders reflected), computed in float and rounded to uint8."""

    name = "blur"

    def __init__(self, sigma: float = 4.0):
        if sigma <= 0:
            raise ValueError(f"method.sigma must be > 0, not {sigma}")
        self.sigma = float(sigma)

    def kernel(self) -> np.ndarray:
        radius = int(np.ceil(3 * self.sigma))
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        k: np.ndarray = np.exp(-0.5 * (x / self.sigma) ** 2)
        normalised: np.ndarray = k / k.sum()  # numpy's stubs type the division Any
        return normalised

    def __call__(self, image: np.ndarray) -> np.ndarray:
        k = self.kernel()
        r = len(k) // 2
        x = image.astype(np.float64)
        for axis in (0, 1):
            pad = [(0, 0)] * 3
            pad[axis] = (r, r)
            padded = np.pad(x, pad, mode="symmetric")
            n = x.shape[axis]
            x = sum(k[i] * np.take(padded, np.arange(i, i + n), axis=axis) for i in range(len(k)))
        return to_uint8(x)


class Pixelate(Baseline):
    """Mean colour of each ``block`` x ``block`` cell (cells at the right/bottom edge may be smaller)."""

    name = "pixelate"

    def __init__(self, block: int = 8):
        if int(block) < 1:
            raise ValueError(f"method.block must be >= 1, not {block}")
        self.block = int(block)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = image.astype(np.float64).copy()
        h, w = image.shape[:2]
        b = self.block
        for y in range(0, h, b):
            for x in range(0, w, b):
                out[y:y + b, x:x + b] = out[y:y + b, x:x + b].mean(axis=(0, 1))
        return to_uint8(out)


class FilledBox(Baseline):
    """A box of one colour over the face. ``box`` is ``[left, top, right, bottom]`` as fractions of the
    image width/height (default: the central face region of an FFHQ-aligned or LFW image)."""

    name = "mask"

    def __init__(self, box: Sequence[float] = (0.2, 0.2, 0.8, 0.9), fill: Sequence[int] = (0, 0, 0)):
        left, top, right, bottom = (float(v) for v in box)
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"method.box must be [left, top, right, bottom] fractions in [0, 1], not {list(box)}")
        self.box, self.fill = (left, top, right, bottom), tuple(int(v) for v in fill)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        left, top, right, bottom = self.box
        out: np.ndarray = image.copy()
        out[int(round(top * h)):int(round(bottom * h)), int(round(left * w)):int(round(right * w))] = self.fill
        return out
