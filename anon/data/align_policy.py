"""What to do with a face that cannot be aligned: the policy, the per-image record, the decision.

No landmarks, non-finite landmarks, or a face whose FFHQ quad side (:func:`anon.data.align.face_size`)
is below ``min_face_size`` pixels follow an :class:`AlignmentPolicy`: ``skip`` (no image) or
``unaligned`` (centre crop + resize, itself an :class:`~anon.data.align.AlignTransform`, so it can
be pasted back too). FALCO's official code feeds the unaligned image to e4e when detection fails
or the quad side is below 512 px (:data:`FALCO_MIN_FACE_SIZE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from anon.data.align import AlignTransform, ImageLike, align_face, face_size, image_height_width

#: FALCO (``lib/aligner.py``) falls back to the unaligned image when the quad side is below this.
FALCO_MIN_FACE_SIZE = 512.0
#: Default smallest quad side (pixels) that is aligned; smaller faces follow the policy.
DEFAULT_MIN_FACE_SIZE = 32.0


class AlignmentPolicy(str, Enum):
    """What to do with an image whose face cannot be aligned."""

    SKIP = "skip"            #: no crop; the image is recorded as failed
    UNALIGNED = "unaligned"  #: centre crop + resize (FALCO feeds the unaligned image to e4e)


@dataclass(frozen=True)
class AlignmentRecord:
    """Per-image outcome. ``status``: ``aligned`` | ``unaligned`` | ``skipped``; ``reason``: ``None`` |
    ``no_face`` | ``bad_landmarks`` | ``face_too_small``; ``face_size``: quad side in pixels (if
    landmarks were usable); ``transform``: the map used (``None`` when skipped)."""

    status: str
    reason: str | None = None
    face_size: float | None = None
    transform: AlignTransform | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the per-image manifest line."""
        return {"status": self.status, "reason": self.reason, "face_size": self.face_size,
                "transform": None if self.transform is None else self.transform.to_dict()}


def align_with_policy(image: ImageLike, landmarks5: np.ndarray | None, size: int,
                      policy: AlignmentPolicy | str = AlignmentPolicy.UNALIGNED,
                      min_face_size: float = DEFAULT_MIN_FACE_SIZE, zoom: float = 1.0,
                      **warp_options) -> tuple[ImageLike | None, AlignmentRecord]:
    """Align ``image`` by its landmarks, or apply ``policy`` when that is impossible.

    ``landmarks5`` is ``None`` when no face was detected. A face whose quad side (:func:`face_size`)
    is below ``min_face_size`` pixels, or whose landmarks are non-finite/degenerate, also follows
    the policy. Returns ``(crop or None, record)``; the crop has the layout of ``image``.
    """
    policy = AlignmentPolicy(policy)
    reason, qsize = None, None
    if landmarks5 is None:
        reason = "no_face"
    else:
        lm = np.asarray(landmarks5, dtype=np.float64)
        try:
            if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
                raise ValueError("bad landmarks")
            qsize = face_size(lm)
        except ValueError:
            reason = "bad_landmarks"
        else:
            if not qsize > 0:
                reason = "bad_landmarks"
            elif qsize < min_face_size:
                reason = "face_too_small"
    if reason is None:
        aligned, transform = align_face(image, lm, size, zoom, **warp_options)
        return aligned, AlignmentRecord("aligned", None, qsize, transform)
    if policy is AlignmentPolicy.SKIP:
        return None, AlignmentRecord("skipped", reason, qsize, None)
    height, width = image_height_width(image)
    transform = AlignTransform.centre_crop(height, width, size)
    return transform.warp(image, **warp_options), AlignmentRecord("unaligned", reason, qsize, transform)
