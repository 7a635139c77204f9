"""Inversion by optimisation, for generators that have no encoder (e.g. the offline DCGAN).

Each image's latent starts at the generator's mean code and is optimised with Adam on a pixel L2
loss (plus an optional identity term); like the anonymisation loop, per-image losses are summed so
a batch inverts each image as it would alone. Random starts are drawn per image from a generator
keyed by ``(seed, image id, start)`` (:mod:`anon.seeding`), never by the image's place in the batch.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13; typing_extensions comes with torch

from anon.seeding import content_key, item_generator


class InvertibleGenerator(Protocol):
    """What inversion reads of a generator (part of the :mod:`anon.nets` generator interface)."""

    num_ws: int
    z_dim: int
    resolution: int

    @property
    def w_avg(self) -> torch.Tensor: ...  # w_dim: the mean code (a buffer or a property)

    def mapping(self, z: torch.Tensor) -> torch.Tensor: ...  # N x z_dim -> N x num_ws x w_dim


INVERTIBLE_MEMBERS = ("num_ws", "z_dim", "resolution", "w_avg", "mapping")


def is_invertible(generator: object) -> TypeIs[InvertibleGenerator]:
    """Whether ``generator`` has every member inversion reads (for an ``nn.Module``, the type becomes both)."""
    return all(hasattr(generator, name) for name in INVERTIBLE_MEMBERS)


class OptimisationInverter(nn.Module):
    """images (N x 3 x H x W, [-1, 1]) -> codes (N x num_ws x w_dim) that the generator maps close to them.

    Args:
        generator: the generator to invert into.
        steps, lr: Adam steps and learning rate.
        starts: number of starts per image (the best final loss is kept).
        init: ``mean`` -- the first start is the mean code (w_avg on every row; StyleGAN's usual start),
            the others random; ``random`` -- every start is a mapped random latent (generators whose
            mean code is degenerate, e.g. a DCGAN at z = 0 where every ReLU is dead).
        latent_reg: weight of ``mean((code - w_avg)^2)``, keeping codes where the generator was trained.
        seed: seed of the random starts (start ``k`` of image ``id`` draws from ``(seed, id, k)``).
    """

    def __init__(self, generator: nn.Module, steps: int = 200, lr: float = 0.05, starts: int = 1, seed: int = 0,
                 init: str = "mean", latent_reg: float = 0.0):
        super().__init__()
        if init not in ("mean", "random"):
            raise ValueError(f"inverter.init must be mean or random, not {init!r}")
        if not is_invertible(generator):
            missing = [name for name in INVERTIBLE_MEMBERS if not hasattr(generator, name)]
            raise TypeError(f"{type(generator).__name__} cannot be inverted: it has no {', '.join(missing)}")
        self.generator = generator
        self.steps, self.lr, self.starts, self.seed = int(steps), float(lr), int(starts), int(seed)
        self.init, self.latent_reg = init, float(latent_reg)

    def _starts(self, ids: list[str], device: torch.device) -> list[torch.Tensor]:
        """The starting codes (each N x num_ws x w_dim) of the images ``ids``, in batch order."""
        g = self.generator
        n = len(ids)
        codes = [g.w_avg.to(device)[None, None].expand(n, g.num_ws, -1).clone()] if self.init == "mean" else []
        while len(codes) < self.starts:
            k = len(codes)
            z = torch.stack([torch.randn(g.z_dim, generator=item_generator(self.seed, f"{i}/start{k}")) for i in ids])
            with torch.no_grad():
                codes.append(g.mapping(z.to(device)))
        return codes

    def forward(self, images: torch.Tensor, ids: list[str] | None = None) -> torch.Tensor:
        """``ids``: one per image, keys of its random starts (None: each image's content is its key)."""
        g = self.generator
        if ids is None:
            ids = [content_key(image) for image in images]
        if len(ids) != images.shape[0]:
            raise ValueError(f"{len(ids)} ids for {images.shape[0]} images")
        target = F.interpolate(images, size=(g.resolution, g.resolution), mode="bilinear", antialias=True,
                               align_corners=False) if images.shape[-1] != g.resolution else images
        best: tuple[torch.Tensor, torch.Tensor] | None = None  # the best codes so far and their losses
        mean = g.w_avg.to(images.device)
        for start in self._starts(list(ids), images.device):
            code = start.clone().requires_grad_(True)
            opt = torch.optim.Adam([code], lr=self.lr)
            with torch.enable_grad():
                for _ in range(self.steps):
                    loss = (g(code) - target).square().flatten(1).mean(1)
                    if self.latent_reg:
                        loss = loss + self.latent_reg * (code - mean).square().flatten(1).mean(1)
                    opt.zero_grad(set_to_none=True)
                    torch.autograd.backward(loss.sum())  # Tensor.backward is untyped in torch's stub
                    opt.step()
            with torch.no_grad():
                loss = (g(code) - target).square().flatten(1).mean(1)
            if best is None:
                best = code.detach().clone(), loss
            else:
                codes, best_loss = best
                better = loss < best_loss
                codes[better] = code.detach()[better]
                best = codes, torch.minimum(loss, best_loss)
        if best is None:
            raise ValueError(f"inverter.starts must be >= 1 with init=random, not {self.starts}")
        return best[0]
