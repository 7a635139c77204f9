"""Face detection rate: does the anonymised image still contain a face a detector can find?

A *detector* here is anything with the shape of :meth:`anon.nets.mtcnn.MTCNNDetector.detect`: one
``H x W x 3`` uint8 RGB image -> a list of ``(box (4,), prob, landmarks 5 x 2)``, best first (an
object with a ``detect`` method, or a plain callable). Only the list's length and, for the pose
estimate, the first entry's landmarks are used.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Iterable

import numpy as np
import torch
from torchmetrics import Metric

Detections = list  # [(box (4,), prob, landmarks 5 x 2), ...]


def detect_fn(detector) -> Callable[[np.ndarray], Detections]:
    """The detector's ``detect`` method, or the detector itself when it is a plain callable."""
    detect = getattr(detector, "detect", None)
    return detect if callable(detect) else detector


class MemoDetector:
    """Remembers the last ``size`` images' detections, so cropping and counting share one detector pass.

    Images are keyed by shape and a SHA-1 of their bytes (an identical array gives the same answer).
    """

    def __init__(self, detector, size: int = 64):
        self._detect, self.size = detect_fn(detector), int(size)
        self._cache: OrderedDict[tuple, Detections] = OrderedDict()

    def detect(self, image: np.ndarray) -> Detections:
        image = np.ascontiguousarray(image)
        key = (image.shape, hashlib.sha1(image.tobytes()).hexdigest())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        found = list(self._detect(image))
        self._cache[key] = found
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return found

    __call__ = detect


def count_faces(detector, images: Iterable[np.ndarray]) -> torch.Tensor:
    """Number of faces the detector finds in each ``H x W x 3`` uint8 image -> ``N`` long tensor."""
    detect = detect_fn(detector)
    return torch.tensor([len(detect(image)) for image in images], dtype=torch.long)


class DetectionRate(Metric):
    """Share of images in which the detector finds at least one face.

    ``update(num_faces)``: ``N`` face counts (or booleans) per image, e.g. from :func:`count_faces`.
    ``compute()`` -> dict of scalar tensors ``rate``, ``detected``, ``total``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("detected", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, num_faces: torch.Tensor) -> None:
        counts = torch.as_tensor(num_faces).reshape(-1)
        self.detected += (counts > 0).sum()
        self.total += counts.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        rate = self.detected / self.total if self.total > 0 else torch.tensor(float("nan"))
        return {"rate": rate, "detected": self.detected, "total": self.total}


__all__ = ["detect_fn", "MemoDetector", "count_faces", "DetectionRate"]
