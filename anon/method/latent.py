"""FALCO's latent code: a W+ code whose rows are partly frozen and partly trainable.

Default (the paper): rows 0-2 (coarse) and 8-17 (fine) are frozen at the real image's inversion,
rows 3-7 (middle) are trainable and start from the nearest fake neighbour's code.

A generator without W+ (the lite DCGAN) has one z row; there the split is carried over to per-image
*weight offsets* (:mod:`anon.nets.tuned`): ``trainable_offsets`` names the generator parameters whose
offsets the identity loss may move, e.g. the BatchNorm scale/shift of the 8 and 16 px layers (the
DCGAN's "middle" styles), while the offsets a pivotal inversion fitted to the image (its 32 and 64 px
"fine" layers) stay as they are unless named too. A named offset starts from the inversion's value,
or from zero when the inversion has none for it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from anon.errors import ConfigError

SOURCES = ("inversion", "neighbour")


class LatentLayout:
    """Which W+ rows are optimised, and where frozen and trainable rows start from.

    Args:
        trainable_layers: ``[start, stop)`` of the trainable W+ rows (0-based). ``stop`` may be
            ``null`` for "to the last row".
        trainable_init: code the trainable rows start from: ``neighbour`` (FALCO) or ``inversion``.
        frozen_source: code the frozen rows are taken from: ``inversion`` (FALCO) or ``neighbour``.
        trainable_offsets: generator parameters whose per-image offsets the loss may move (see above).
        offset_lr: the offsets' learning rate (None: the optimiser's).
        offset_lr_relative: each offset's learning rate is ``offset_lr`` times the mean absolute value of
            its parameter (Adam moves every element by about its lr per step, so one absolute lr moves a
            0.03-scale convolution weight 30 times more, relatively, than a 0.8-scale BatchNorm scale).
    """

    def __init__(self, trainable_layers: tuple[int, int | None] = (3, 8), trainable_init: str = "neighbour",
                 frozen_source: str = "inversion", trainable_offsets: Sequence[str] = (),
                 offset_lr: float | None = None, offset_lr_relative: bool = False) -> None:
        start, stop = trainable_layers
        for name, value in (("trainable_init", trainable_init), ("frozen_source", frozen_source)):
            if value not in SOURCES:
                raise ConfigError(f"latent.{name} must be one of {SOURCES}, not {value!r}")
        self.start, self.stop = int(start), (None if stop is None else int(stop))
        self.trainable_init, self.frozen_source = trainable_init, frozen_source
        self.trainable_offsets = [str(name) for name in (trainable_offsets or ())]
        self.offset_lr = None if offset_lr is None else float(offset_lr)
        self.offset_lr_relative = bool(offset_lr_relative)
        if self.offset_lr_relative and self.offset_lr is None:
            raise ConfigError("latent.offset_lr_relative=true scales latent.offset_lr per parameter: set offset_lr too")

    def rows(self, num_ws: int) -> tuple[int, int]:
        """The trainable ``[start, stop)`` for a generator with ``num_ws`` W+ rows (validated)."""
        stop = num_ws if self.stop is None else self.stop
        if not 0 <= self.start < stop <= num_ws:
            raise ConfigError(
                f"latent.trainable_layers=[{self.start}, {self.stop}] does not fit a generator with {num_ws} W+ rows "
                f"(need 0 <= start < stop <= {num_ws})")
        return self.start, stop

    def check_generator(self, generator: Any) -> None:
        """Layer ranges only mean something in a W+ space; a generator without one (a DCGAN's z)
        accepts only the whole code (``latent=whole``)."""
        num_ws = generator.num_ws
        if not getattr(generator, "has_wplus", True) and (self.start, self.stop) not in ((0, None), (0, num_ws)):
            raise ConfigError(
                f"{type(generator).__name__} has no W+ space (its latent is one {generator.w_dim}-d code), so "
                f"latent.trainable_layers=[{self.start}, {self.stop}] does not apply: use latent=whole")
        self.rows(num_ws)
        if not self.trainable_offsets:
            return
        params = dict(generator.named_parameters())
        unknown = [name for name in self.trainable_offsets if name not in params]
        if unknown:
            raise ConfigError(f"latent.trainable_offsets names parameters {type(generator).__name__} does not have: "
                              f"{unknown} (it has {sorted(params)})")

    def split(self, w_inversion: torch.Tensor, w_neighbour: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(frozen, trainable_init)``: the full N x L x D frozen code and the N x k x D start rows."""
        if w_inversion.shape != w_neighbour.shape or w_inversion.ndim != 3:
            raise ValueError(f"codes must both be N x L x D, got {tuple(w_inversion.shape)} and {tuple(w_neighbour.shape)}")
        start, stop = self.rows(w_inversion.shape[1])
        codes = {"inversion": w_inversion, "neighbour": w_neighbour}
        frozen = codes[self.frozen_source].detach()
        trainable = codes[self.trainable_init][:, start:stop].detach().clone()
        return frozen, trainable

    def compose(self, frozen: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
        """Insert the trainable rows into the frozen code: N x L x D, differentiable w.r.t. ``trainable``."""
        start, stop = self.rows(frozen.shape[1])
        return torch.cat([frozen[:, :start], trainable, frozen[:, stop:]], dim=1)

    def offset_groups(self, trainable: dict[str, torch.Tensor], generator: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the trainable offsets (``split_offsets``' second dict, made leaves
        here): one group at ``offset_lr`` (None: the optimiser's lr), or with ``offset_lr_relative`` one
        group per parameter at ``offset_lr`` x its mean absolute value. Empty when nothing is trainable."""
        leaves = {name: value.requires_grad_(True) for name, value in trainable.items()}
        if not leaves:
            return []
        if not self.offset_lr_relative:
            group = {"params": list(leaves.values())}
            return [group if self.offset_lr is None else {**group, "lr": self.offset_lr}]
        base = self.offset_lr
        assert base is not None  # __init__ refuses offset_lr_relative without offset_lr
        params = dict(generator.named_parameters())
        scales = {name: float(params[name].detach().abs().mean()) for name in leaves}
        zero = [name for name, scale in scales.items() if scale == 0.0]
        if zero:
            raise ConfigError(f"latent.offset_lr_relative: {zero} are all zeros, so an lr relative to their size is 0; "
                              "leave them out of latent.trainable_offsets or use an absolute offset_lr")
        return [{"params": [value], "lr": base * scales[name]} for name, value in leaves.items()]

    def split_offsets(self, offsets: dict[str, torch.Tensor] | None, generator: nn.Module, n: int,
                      device: torch.device | str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(fixed, trainable)`` per-image weight offsets (``{name: N x *shape}``): the inversion's
        offsets not named in ``trainable_offsets`` (detached, untouched) and fresh leaves for the named
        ones (a copy of the inversion's, or zeros). Both empty when nothing is tuned or trainable."""
        offsets = dict(offsets or {})
        params = dict(generator.named_parameters())
        fixed = {name: value.detach() for name, value in offsets.items() if name not in self.trainable_offsets}
        trainable = {}
        for name in self.trainable_offsets:
            if name in offsets:
                trainable[name] = offsets[name].detach().clone()
            else:
                trainable[name] = torch.zeros(n, *params[name].shape, device=device, dtype=params[name].dtype)
        return fixed, trainable
