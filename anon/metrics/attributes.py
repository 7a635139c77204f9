"""Attribute preservation: per-attribute agreement of a classifier, and head-pose error.

**Attribute agreement.** A classifier is any callable ``image (H x W x 3 uint8) -> A scores``; it is
applied to the original and to the anonymised image and :class:`AttributeAgreement` counts, per
attribute, how often the two binary decisions agree. No CelebA attribute classifier ships offline,
so the evaluate stage uses one only when configured.

**Pose.** :func:`pose_from_landmarks` is a deliberately simple geometric estimate from the 5 MTCNN
landmarks (left eye, right eye, nose tip, left and right mouth corner, "left" as seen in the image):

1. a rigid 5-point mean-face template (:data:`FACE_TEMPLATE_5`, in the frontal 112 x 112 ArcFace
   alignment's proportions, with rough anthropometric depths: nose tip 14 units, mouth corners
   3 units in front of the eye plane, interocular distance 35.2 units) is fitted to the landmarks
   with a scaled orthographic (weak-perspective) camera by least squares: ``q_i = s R[:2] X_i + t``;
2. the fitted ``2 x 3`` map is projected onto the nearest pair of orthonormal rows (SVD), the third
   row is their cross product, giving a rotation ``R``;
3. ``R = Rz(roll) Ry(yaw) Rx(pitch)`` in image axes (x right, y down, z into the image) gives the
   angles in degrees: yaw about the vertical axis, pitch about the horizontal one, roll in the
   image plane.

Five points and a generic template make the absolute angles rough (a few degrees); the metric is
the *difference* between the original's and the anonymised image's estimate, for which the same
bias largely cancels. A better estimator (dense landmarks + PnP, a pose network) plugs in as any
callable ``image -> (yaw, pitch, roll) or None``; :class:`PoseError` only sees angles.
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

# x right, y down, z into the image (the nose tip has negative z: it is nearer the camera).
FACE_TEMPLATE_5 = np.array([
    [-17.6, 0.0, 0.0],    # left eye (image left)
    [17.6, 0.0, 0.0],     # right eye
    [0.0, 20.1, -14.0],   # nose tip
    [-14.6, 40.7, -3.0],  # left mouth corner
    [14.6, 40.7, -3.0],   # right mouth corner
])
POSE_NAMES = ("yaw", "pitch", "roll")


def pose_from_landmarks(landmarks, template: np.ndarray = FACE_TEMPLATE_5) -> np.ndarray:
    """Head pose from 5 landmarks: ``5 x 2`` or ``N x 5 x 2`` pixel ``(x, y)`` -> ``3`` or ``N x 3`` degrees
    ``(yaw, pitch, roll)``; see the module docstring for the model and the angle convention."""
    points = np.asarray(landmarks, dtype=np.float64)
    single = points.ndim == 2
    points = points[None] if single else points
    model = np.asarray(template, dtype=np.float64)
    model = model - model.mean(axis=0)
    out = np.empty((points.shape[0], 3))
    for n, q in enumerate(points):
        q = q - q.mean(axis=0)
        m = np.linalg.lstsq(model, q, rcond=None)[0].T  # 2 x 3 = s * R[:2]
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        r12 = u @ vt
        rotation = np.vstack([r12, np.cross(r12[0], r12[1])])
        yaw = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
        pitch = np.arctan2(rotation[2, 1], rotation[2, 2])
        roll = np.arctan2(rotation[1, 0], rotation[0, 0])
        out[n] = np.degrees([yaw, pitch, roll])
    return out[0] if single else out


def angle_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Signed ``a - b`` in degrees, wrapped to ``[-180, 180)``."""
    return torch.remainder(a - b + 180.0, 360.0) - 180.0


class AttributeAgreement(Metric):
    """Per-attribute share of images whose binary attribute decision is the same before and after.

    ``update(pred_original, pred_anonymised)``: ``N x A`` predictions, booleans or scores binarised as
    ``score > threshold`` (0.5 for probabilities; use 0 for logits or +-1 labels). Rows containing a
    NaN (classifier gave nothing) are skipped.
    ``compute()`` -> dict: ``per_attribute`` ``A`` agreement in ``[0, 1]``, ``mean`` (over attributes),
    ``count`` (images compared).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_attributes: int, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.num_attributes, self.threshold = int(num_attributes), float(threshold)
        self.add_state("agree", torch.zeros(self.num_attributes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _binary(self, pred: torch.Tensor) -> torch.Tensor:
        pred = torch.as_tensor(pred)
        return pred if pred.dtype == torch.bool else pred.double() > self.threshold

    def update(self, pred_original: torch.Tensor, pred_anonymised: torch.Tensor) -> None:
        a, b = torch.as_tensor(pred_original), torch.as_tensor(pred_anonymised)
        if a.shape != b.shape or a.ndim != 2 or a.shape[1] != self.num_attributes:
            raise ValueError(f"expected two N x {self.num_attributes} predictions, got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        valid = torch.ones(a.shape[0], dtype=torch.bool)
        for p in (a, b):
            if p.is_floating_point():
                valid &= ~torch.isnan(p).any(dim=1)
        self.agree += (self._binary(a[valid]) == self._binary(b[valid])).sum(dim=0)
        self.count += valid.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            nan = torch.full((self.num_attributes,), float("nan"))
            return {"per_attribute": nan, "mean": torch.tensor(float("nan")), "count": self.count}
        per = self.agree / self.count
        return {"per_attribute": per, "mean": per.mean(), "count": self.count}


class PoseError(Metric):
    """Mean absolute yaw / pitch / roll difference (degrees) between originals and anonymised images.

    ``update(pose_original, pose_anonymised)``: ``N x 3`` angles (yaw, pitch, roll) in degrees, e.g.
    from :func:`pose_from_landmarks`; a row with a NaN (no face or no landmarks) is counted in
    ``missing`` and left out. ``compute()`` -> dict of scalar tensors ``yaw``, ``pitch``, ``roll``,
    ``mean`` (of the three), ``count``, ``missing``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("abs_sum", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("missing", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pose_original: torch.Tensor, pose_anonymised: torch.Tensor) -> None:
        a = torch.as_tensor(pose_original, dtype=torch.float64).reshape(-1, 3)
        b = torch.as_tensor(pose_anonymised, dtype=torch.float64).reshape(-1, 3)
        valid = torch.isfinite(a).all(dim=1) & torch.isfinite(b).all(dim=1)
        self.abs_sum += angle_difference(a[valid], b[valid]).abs().sum(dim=0)
        self.count += valid.sum()
        self.missing += (~valid).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        means = self.abs_sum / self.count if self.count > 0 else torch.full((3,), float("nan"), dtype=torch.float64)
        out = dict(zip(POSE_NAMES, means))
        return {**out, "mean": means.mean(), "count": self.count, "missing": self.missing}


__all__ = ["FACE_TEMPLATE_5", "POSE_NAMES", "pose_from_landmarks", "angle_difference", "AttributeAgreement",
           "PoseError"]
