"""Extra attribute objectives, composable with FALCO's token term: each holds one thing of the
original that the identity loss must not move.

A term is a module with ``reference(originals) -> R`` (computed once per batch, no gradient) and
``forward(generated, R) -> N`` (per-sample loss, lower = closer to the original). :class:`anon.losses.FalcoLoss`
adds ``weight * term`` for each configured term and reports each one per step under its name.

- :class:`LowFrequencyColour`: L1 of block-averaged images (skin tone, hair colour, background).
- :class:`ExpressionTerm`: KL divergence of an expression classifier's class distributions
  (e.g. mini-Xception), original -> generated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class ExpressionTerm(nn.Module):
    """``KL(p_original || p_generated)`` of a classifier giving B x C probabilities (frozen)."""

    def __init__(self, classifier: nn.Module, eps: float = 1e-6):
        super().__init__()
        self.classifier = classifier.requires_grad_(False).eval()
        self.eps = float(eps)

    def train(self, mode: bool = True) -> "ExpressionTerm":
        return super().train(False)  # the classifier's BatchNorm never leaves eval

    def reference(self, originals: torch.Tensor) -> torch.Tensor:
        return self.classifier(originals).float().clamp_min(self.eps)

    def forward(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        log_generated = self.classifier(generated).float().clamp_min(self.eps).log()
        return (reference * (reference.log() - log_generated)).sum(1)
