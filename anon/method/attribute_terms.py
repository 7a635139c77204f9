"""Extra attribute objectives, composable with FALCO's token term: each holds one thing of the
original that the identity loss must not move.

A term is a module with ``reference(originals) -> R`` (computed once per batch, no gradient) and
``forward(generated, R) -> N`` (per-sample loss, lower = closer to the original). :class:`anon.method.losses.FalcoLoss`
adds ``weight * term`` for each configured term and reports each one per step under its name.

- :class:`LowFrequencyColour`: L1 of block-averaged images (skin tone, hair colour, background).
- :class:`ExpressionTerm`: KL divergence of an expression classifier's class distributions
  (e.g. mini-Xception), original -> generated.
- :class:`LandmarkTerm`: distance between the five landmarks (eyes, nose, mouth corners) that the
  MTCNN O-Net regresses on the generated and the original face: head pose and mouth shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anon.nets.frozen import FrozenNetwork


class LowFrequencyColour(nn.Module):
    """Mean |avg_pool(generated) - avg_pool(original)| over ``factor x factor`` blocks, per sample."""

    def __init__(self, factor: int = 8):
        super().__init__()
        self.factor = int(factor)

    def reference(self, originals: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(originals, self.factor)

    def forward(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(generated, self.factor)
        if pooled.shape[-2:] != reference.shape[-2:]:
            pooled = F.interpolate(pooled, size=reference.shape[-2:], mode="area")
        return (pooled - reference).abs().flatten(1).mean(1)


class ExpressionTerm(FrozenNetwork):
    """``KL(p_original || p_generated)`` of a classifier giving B x C probabilities (frozen)."""

    def __init__(self, classifier: nn.Module, eps: float = 1e-6):
        super().__init__()
        self.classifier = classifier
        self.eps = float(eps)
        self.freeze()  # the classifier's BatchNorm never leaves eval

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """B x C class probabilities, float32, at least ``eps``."""
        probabilities: torch.Tensor = self.classifier(images)
        return probabilities.float().clamp_min(self.eps)

    def reference(self, originals: torch.Tensor) -> torch.Tensor:
        return self.probabilities(originals)

    def forward(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        log_generated = self.probabilities(generated).log()
        return (reference * (reference.log() - log_generated)).sum(1)


class LandmarkTerm(FrozenNetwork):
    """Mean L1 (or squared L2) distance of MTCNN O-Net's five landmarks, generated vs original, per sample.

    The whole aligned face (N x 3 x H x W in [-1, 1]) is the O-Net's box: it is resized to 48 px and
    scaled as the detector feeds its crops ((x - 127.5) / 128 of 8-bit pixels); the landmarks come out
    in units of that box (x1..x5, y1..y5 in [0, 1]), so a distance of 0.01 is 1 % of the face's width.
    Differentiable end to end (antialiased bilinear resize, then the O-Net's convolutions).

    Args:
        onet: the O-Net (:class:`anon.nets.mtcnn.ONet`, frozen here).
        distance: ``l1`` (mean absolute coordinate difference) or ``l2`` (mean squared difference).
    """

    SIZE = 48

    def __init__(self, onet: nn.Module, distance: str = "l1"):
        super().__init__()
        if distance not in ("l1", "l2"):
            raise ValueError(f"landmark term distance must be l1 or l2, not {distance!r}")
        self.onet = onet
        self.distance = distance
        self.freeze()

    def landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [-1, 1] -> N x 10 landmarks (x1..x5, y1..y5) in units of the image."""
        if images.shape[-2:] != (self.SIZE, self.SIZE):
            images = F.interpolate(images, size=(self.SIZE, self.SIZE), mode="bilinear", antialias=True,
                                   align_corners=False)
        outputs: tuple[torch.Tensor, ...] = self.onet(images * (127.5 / 128.0))  # (boxes, landmarks, ...)
        return outputs[1].float()

    def reference(self, originals: torch.Tensor) -> torch.Tensor:
        return self.landmarks(originals)

    def forward(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        difference = self.landmarks(generated) - reference
        return (difference.abs() if self.distance == "l1" else difference.square()).mean(1)
