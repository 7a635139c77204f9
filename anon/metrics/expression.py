"""Expression preservation: does the anonymised face show the same expression as the original?

A classifier gives each face a probability vector over expression classes (FER2013's seven for
:class:`anon.nets.mini_xception.ExpressionClassifier`). :class:`ExpressionAgreement` compares the
original's and the anonymised image's vectors:

* **agreement**: share of images whose most likely expression (argmax) is the same in both;
* **total-variation distance**: ``0.5 * sum_c |p_c - q_c|`` in ``[0, 1]``, averaged over images
  (0: identical distributions, 1: disjoint);
* a ``C x C`` confusion matrix (rows: original's class, columns: anonymised image's class).

:class:`ExpressionScorer` turns a torch classifier into ``list of uint8 images -> N x C probabilities``,
after an optional face crop (the evaluate stage passes the MTCNN crop its identity evaluators use);
an image without a face gets a row of NaN, which the metric counts as ``missing``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from anon.metrics.evaluators import forward_by_size


class ExpressionAgreement(Metric):
    """Argmax agreement and mean total-variation distance of two expression probability vectors per image.

    ``update(prob_original, prob_anonymised)``: ``N x C`` probabilities (rows summing to 1); a row with
    a NaN in either tensor (no face) is counted in ``missing`` and left out.
    ``compute()`` -> dict: ``agreement`` and ``tv_distance`` (scalars in ``[0, 1]``, NaN when nothing was
    compared), ``same`` (images with the same argmax), ``count`` (images compared), ``missing``,
    ``confusion`` (``C x C`` counts, original class x anonymised class). All states are sums, so ranks
    reduce by adding.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.add_state("agree", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("tv_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("missing", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confusion", torch.zeros(self.num_classes, self.num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, prob_original: torch.Tensor, prob_anonymised: torch.Tensor) -> None:
        p = torch.as_tensor(prob_original, dtype=torch.float64)
        q = torch.as_tensor(prob_anonymised, dtype=torch.float64)
        if p.shape != q.shape or p.ndim != 2 or p.shape[1] != self.num_classes:
            raise ValueError(f"expected two N x {self.num_classes} probability tensors, got {tuple(p.shape)} "
                             f"and {tuple(q.shape)}")
        p, q = p.to(self.tv_sum.device), q.to(self.tv_sum.device)
        valid = torch.isfinite(p).all(dim=1) & torch.isfinite(q).all(dim=1)
        p, q = p[valid], q[valid]
        a, b = p.argmax(dim=1), q.argmax(dim=1)
        self.agree += (a == b).sum()
        self.tv_sum += 0.5 * (p - q).abs().sum()
        self.count += valid.sum()
        self.missing += (~valid).sum()
        self.confusion += torch.bincount(a * self.num_classes + b, minlength=self.num_classes ** 2).view(
            self.num_classes, self.num_classes)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.double()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return {"agreement": self.agree / n if self.count > 0 else nan,
                "tv_distance": self.tv_sum / n if self.count > 0 else nan,
                "same": self.agree, "count": self.count, "missing": self.missing, "confusion": self.confusion}


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum |p - q|`` over the last axis: ``... x C`` -> ``...`` in ``[0, 1]`` for distributions."""
    return 0.5 * (torch.as_tensor(p) - torch.as_tensor(q)).abs().sum(dim=-1)


class ExpressionScorer:
    """A torch expression classifier applied to uint8 images.

    ``scorer(images: list of H x W x 3 uint8) -> N x C float64`` probabilities; a row of NaN where
    ``crop`` finds no face. Crops of equal size are classified together, ``batch_size`` at a time.

    Args:
        net: ``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x C`` probabilities (e.g.
            :class:`anon.nets.mini_xception.ExpressionClassifier`).
        names: the ``C`` class names; default the network's ``names`` attribute.
        crop: ``image -> face crop or None`` (e.g. :class:`anon.metrics.evaluators.FaceCropper`); None
            classifies the whole image.
        batch_size, device: forward-pass batching and placement.
    """

    def __init__(self, net: torch.nn.Module, crop: Callable[[np.ndarray], np.ndarray | None] | None = None,
                 batch_size: int = 32, device: str | torch.device = "cpu", names: Sequence[str] | None = None):
        self.names = tuple(names if names is not None else getattr(net, "names", ()))
        if not self.names:
            raise ValueError(f"{type(net).__name__} has no `names` attribute: pass the class names")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.crop, self.batch_size = crop, int(batch_size)
        self.description = getattr(net, "description", type(net).__name__)

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        faces = [self.crop(im) if self.crop is not None else np.asarray(im) for im in images]
        rows = forward_by_size(self.net, faces, self.batch_size, self.device, lambda prob: prob.double().cpu())
        width = len(self.names)
        wrong = next((len(r) for r in rows if r is not None and len(r) != width), None)
        if wrong is not None:
            raise ValueError(f"the classifier gave {wrong} scores per image for {width} class names")
        if not rows:
            return torch.zeros(0, width, dtype=torch.float64)
        nan = torch.full((width,), float("nan"), dtype=torch.float64)
        return torch.stack([nan if r is None else r for r in rows])


__all__ = ["ExpressionAgreement", "ExpressionScorer", "total_variation"]
