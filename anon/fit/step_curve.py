"""The run's loss curve: each loss term's mean over every image of the run (all ranks, all batches) at
each optimisation step.

Every rank adds its own images' per-sample terms step by step (:meth:`StepCurve.add`, no collective
inside the loop: ranks may run different numbers of batches and steps). At the end of predict each rank
sums its :meth:`StepCurve.table` across ranks once, through Lightning (``trainer.strategy.reduce(...,
reduce_op="sum")``): a fixed-size tensor (counts and one row per term, named up front by the loss), so a
rank without images takes part with zeros. :func:`curve_rows` turns the sum into the logged means. The
result does not depend on how the images were batched or spread over ranks (up to float summation order).
"""
from __future__ import annotations

import torch


class StepCurve:
    """Per-step sums of each loss term and the number of images that contributed at that step.

    Args:
        steps: optimisation steps per image.
        names: the loss terms, in a fixed order every rank shares (``FalcoLoss.term_names``).
        device: where the sums live (the images' device: no host sync per step).
    """

    def __init__(self, steps: int, names: list[str], device: torch.device | str = "cpu"):
        self.steps, self.names = int(steps), list(names)
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self._table = torch.zeros(1 + len(self.names), self.steps, dtype=dtype, device=device)  # row 0: counts

    def add(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        """``terms``: each a per-sample tensor (N) of the images still optimised at ``step``."""
        if sorted(terms) != sorted(self.names):
            raise ValueError(f"step terms {sorted(terms)} differ from the curve's {sorted(self.names)}")
        for row, name in enumerate(self.names, start=1):
            self._table[row, step] += terms[name].detach().sum().to(self._table.dtype)
        self._table[0, step] += terms[self.names[0]].shape[0]

    def table(self) -> torch.Tensor:
        """(1 + terms) x steps: image counts, then each term's sum (what the ranks sum)."""
        return self._table.clone()


def curve_rows(table: torch.Tensor, names: list[str]) -> list[tuple[int, int, dict[str, float]]]:
    """``(step, images, {term: mean})`` for every step at which any image was optimised, from a
    :meth:`StepCurve.table` (one rank's, or summed over ranks)."""
    values = table.cpu().tolist()
    rows = []
    for step, images in enumerate(values[0]):
        if images:
            rows.append((step, int(images), {name: values[row][step] / images for row, name in enumerate(names, 1)}))
    return rows
