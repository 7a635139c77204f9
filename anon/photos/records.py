"""What anonymising a photo reports: one :class:`Face` per detected face, one :class:`PhotoResult` per photo."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from anon.data.align import AlignTransform


@dataclass
class Face:
    """One detected face of a photo.

    ``box``: (4,) ``x1, y1, x2, y2`` photo pixels; ``landmarks``: 5 x 2 ``(x, y)`` pixel centres;
    ``status``: ``aligned`` | ``too_small`` | ``bad_landmarks``; ``policy``: what was done --
    ``anonymised`` | ``left`` | ``blurred`` | ``filled``; ``transform``: the alignment (photo
    coordinates) of an aligned face; ``window``: ``(x0, y0, x1, y1)`` photo region the face touches;
    ``crop`` / ``result``: ``3 x S x S`` in [-1, 1] before / after anonymisation.
    """

    box: np.ndarray
    prob: float
    landmarks: np.ndarray
    status: str = "aligned"
    policy: str = "anonymised"
    face_size: float | None = None
    transform: AlignTransform | None = None
    window: tuple[int, int, int, int] | None = None
    crop: torch.Tensor | None = field(default=None, repr=False)
    result: torch.Tensor | None = field(default=None, repr=False)
    info: dict = field(default_factory=dict)
    key: str | None = field(default=None, repr=False)
    outline: np.ndarray | None = field(default=None, repr=False)  # K x 2 hull (photo px) for mask_shape=hull

    def record(self) -> dict[str, Any]:
        """JSON-ready manifest entry (no landmarks: the transform is enough to paste back)."""
        return {"box": [round(float(v), 2) for v in self.box], "prob": round(float(self.prob), 4),
                "face_size": None if self.face_size is None else round(float(self.face_size), 2),
                "status": self.status, "policy": self.policy,
                "transform": None if self.transform is None else self.transform.to_dict(), **self.info}


@dataclass
class PhotoResult:
    """An anonymised photo: ``image`` H x W x 3 uint8 RGB and its faces (see :class:`Face`)."""

    image: np.ndarray
    faces: list[Face]
    seconds: float = 0.0
    error: str | None = None

    @property
    def status(self) -> str:
        """``done``; ``no_face`` (returned unchanged); or ``failed``: no face found in an image where none
        could be searched (``error`` says why, e.g. a blank frame), which must not pass as face-free, or
        none found under ``no_face_policy=fail``."""
        return "done" if self.faces else ("failed" if self.error else "no_face")

    @property
    def changed(self) -> bool:
        """Whether any pixel may differ from the input (a face anonymised, blurred or filled)."""
        return any(f.policy != "left" for f in self.faces)
