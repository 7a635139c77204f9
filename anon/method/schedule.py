"""Learning-rate schedule of the official code: multiply by ``gamma`` at fractions of the step count."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def fractional_multistep(optimizer: torch.optim.Optimizer, steps: int, milestones: Sequence[float] = (0.75, 0.9),
                         gamma: float = 0.8) -> torch.optim.lr_scheduler.MultiStepLR:
    """``MultiStepLR`` with milestones ``int(f * steps)`` (50 steps: 37 and 45), stepped every iteration."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(float(f) * steps) for f in milestones], gamma=gamma)
