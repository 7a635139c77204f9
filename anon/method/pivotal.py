"""Pivotal tuning inversion: a z code, then a per-image copy of some generator weights tuned around it.

A 64 px DCGAN has only a 100-d z; its best z for a real face is a different person. Pivotal tuning
(Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2021) keeps that z as the
*pivot* and then moves the generator's weights a little, per image, until the pivot renders the
face. Here only the parameters named in ``tune`` move (by default the last two convolutions and
the last BatchNorm: the layers that draw the face's detail and colour), as offsets ``N x *shape``
optimised with Adam on a pixel L2 plus a low-frequency L1 (blurred colours: skin tone, hair,
background). Images are batched with :func:`anon.nets.tuned.render` (``functional_call`` under
``vmap``); losses are summed, and Adam is element-wise, so each image's offsets are its own.

The output is ``{"codes": N x 1 x D, "offsets": {name: N x *shape}}``: the invert stage stores the
offsets beside the codes and the anonymisation renders every step with them.
"""
from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from anon.method.inversion import OptimisationInverter
from anon.nets.tuned import Offsets, render

DEFAULT_TUNE = ("main.9.weight", "main.10.weight", "main.10.bias", "main.12.weight")


class PivotalInversion(TypedDict):
    """The output of :class:`PivotalInverter` (see the module docstring)."""

    codes: torch.Tensor  # N x 1 x D
    offsets: Offsets  # {name: N x *shape}


def low_frequency(images: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Images averaged over ``factor x factor`` blocks (a 64 px face -> 16 px of colours)."""
    return F.avg_pool2d(images, factor)


class PivotalInverter(nn.Module):
    """images (N x 3 x H x W, [-1, 1]) -> ``{"codes", "offsets"}`` (see the module docstring).

    Args:
        generator: the generator (a DCGAN; any module whose parameters ``tune`` names).
        steps, lr, starts, seed, init, latent_reg: the pivot's z inversion
            (:class:`anon.method.inversion.OptimisationInverter`).
        tune: names of the parameters that get per-image offsets.
        tune_steps, tune_lr: Adam steps and learning rate of the offsets.
        low_frequency_weight: weight of the L1 between 4x-downsampled images.
        offset_reg: weight of the mean squared offset relative to each weight's mean square
            (keeps the tuned generator near the shared one; 0 = off).
    """

    def __init__(self, generator: nn.Module, steps: int = 150, lr: float = 0.05, starts: int = 1, seed: int = 0,
                 init: str = "random", latent_reg: float = 0.001, tune: list[str] | tuple[str, ...] = DEFAULT_TUNE,
                 tune_steps: int = 100, tune_lr: float = 0.003, low_frequency_weight: float = 1.0,
                 offset_reg: float = 0.0):
        super().__init__()
        self.pivot = OptimisationInverter(generator, steps, lr, starts, seed, init, latent_reg)
        params = dict(generator.named_parameters())
        unknown = [name for name in tune if name not in params]
        if unknown:
            raise ValueError(f"inverter.tune names parameters the generator does not have: {unknown} "
                             f"(it has {sorted(params)})")
        self.tune = list(tune)
        self.tune_steps, self.tune_lr = int(tune_steps), float(tune_lr)
        self.low_frequency_weight, self.offset_reg = float(low_frequency_weight), float(offset_reg)

    @property
    def generator(self) -> nn.Module:
        return self.pivot.generator

    def reconstruction_loss(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image pixel L2 + weighted low-frequency L1 (N,)."""
        loss = (generated - target).square().flatten(1).mean(1)
        if self.low_frequency_weight:
            lf = (low_frequency(generated) - low_frequency(target)).abs().flatten(1).mean(1)
            loss = loss + self.low_frequency_weight * lf
        return loss

    def forward(self, images: torch.Tensor, ids: list[str] | None = None) -> PivotalInversion:
        g = self.pivot.generator  # typed as the module and the interface inversion reads
        codes = self.pivot(images, ids)
        target = F.interpolate(images, size=(g.resolution, g.resolution), mode="bilinear", antialias=True,
                               align_corners=False) if images.shape[-1] != g.resolution else images
        params = dict(g.named_parameters())
        n = images.shape[0]
        offsets = {name: torch.zeros(n, *params[name].shape, device=images.device) for name in self.tune}
        scale = {name: params[name].detach().square().mean() for name in self.tune}
        with torch.enable_grad():
            for value in offsets.values():
                value.requires_grad_(True)
            opt = torch.optim.Adam(list(offsets.values()), lr=self.tune_lr)
            for _ in range(self.tune_steps):
                loss = self.reconstruction_loss(render(g, codes, offsets), target)
                if self.offset_reg:
                    for name, value in offsets.items():
                        loss = loss + self.offset_reg * value.square().flatten(1).mean(1) / scale[name]
                opt.zero_grad(set_to_none=True)
                # sum: each image's offsets get only its own gradient (Tensor.backward is untyped in torch's stub)
                torch.autograd.backward(loss.sum())
                opt.step()
        return {"codes": codes.detach(), "offsets": {name: value.detach() for name, value in offsets.items()}}
