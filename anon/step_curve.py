"""The run's loss curve: each loss term's mean over every image of the run (all ranks, all batches) at
each optimisation step.

Every rank adds its own images' per-sample terms step by step (:meth:`StepCurve.add`, no collective
inside the loop: ranks may run different numbers of batches and steps); at the end of predict each rank
calls :func:`gather_curves` once, and rank 0 logs the merged curve. The result does not depend on how
the images were batched or spread over ranks (up to float summation order).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class StepCurve:
    """Per-step sums of each loss term and the number of images that contributed at that step."""

    def __init__(self, steps: int):
        self.steps = int(steps)
        self.sums: dict[str, torch.Tensor] = {}  # term -> (steps,) on the images' device, no host sync per step
        self.counts = [0] * self.steps

    def add(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        """``terms``: each a per-sample tensor (N) of the images still optimised at ``step``."""
        n = None
        for name, values in terms.items():
            values = values.detach()
            if name not in self.sums:
                dtype = torch.float32 if values.device.type == "mps" else torch.float64
                self.sums[name] = torch.zeros(self.steps, dtype=dtype, device=values.device)
            self.sums[name][step] += values.sum().to(self.sums[name].dtype)
            n = values.shape[0]
        if n is not None:
            self.counts[step] += int(n)

    def local(self) -> dict:
        """This rank's sums as plain Python (what :func:`gather_curves` exchanges)."""
        return {"counts": list(self.counts), "sums": {k: v.cpu().tolist() for k, v in self.sums.items()}}


def merge_curves(parts: list[dict]) -> list[tuple[int, int, dict[str, float]]]:
    """``(step, images, {term: mean})`` for every step at which any rank had an image, from the
    :meth:`StepCurve.local` of every rank (ranks without images contribute nothing)."""
    steps = max((len(p["counts"]) for p in parts), default=0)
    rows = []
    for step in range(steps):
        images = sum(p["counts"][step] for p in parts if step < len(p["counts"]))
        if not images:
            continue
        names = sorted({name for p in parts for name in p["sums"]})
        means = {name: sum(p["sums"][name][step] for p in parts if name in p["sums"]) / images for name in names}
        rows.append((step, images, means))
    return rows


def gather_curves(local: dict) -> list[dict]:
    """Every rank's :meth:`StepCurve.local` (a collective: every rank must call it once); one process: ``[local]``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [local]
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return parts
