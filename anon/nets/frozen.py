"""The base of every pretrained network the method only reads (identity, attribute, inverter, detector,
expression and FID networks, and the lite DCGAN generator).

A frozen network needs no parameter gradient and stays in eval mode whatever ``.train()`` asks (a
LightningModule or a parent module calls it): BatchNorm keeps its running statistics, dropout is off.
Gradients still reach its *input* (the identity and attribute losses are taken through it).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, TypeVar

from torch import nn

Net = TypeVar("Net", bound="FrozenNetwork")


class FrozenNetwork(nn.Module):
    """``nn.Module`` with :meth:`freeze`, an eval-only :meth:`train` while frozen, and :meth:`from_checkpoint`.

    A subclass calls ``self.freeze(frozen)`` at the end of its ``__init__`` (``frozen=False`` is for
    tests that train it), takes its weights as the ``checkpoint`` argument and loads them strictly: every
    tensor of the file used, every parameter and buffer filled (:func:`anon.nets.checkpoint.load_checked`
    says which keys do not fit).
    """

    #: Name of the official weights: an ``anon download`` entry (:data:`anon.runtime.weights.REGISTRY`) or a lite
    #: npm file (:data:`anon.lite.npm.LITE`); ``None`` when they ship inside an installed package.
    weights: ClassVar[str | None] = None
    #: Whether the network is frozen (set by :meth:`freeze`; frozen until then).
    frozen: bool = True

    def freeze(self: Net, frozen: bool = True) -> Net:
        """``frozen``: no parameter gradients and eval mode from now on; ``False`` leaves it trainable."""
        self.frozen = bool(frozen)
        if self.frozen:
            self.requires_grad_(False)
            self.eval()
        return self

    def train(self: Net, mode: bool = True) -> Net:
        """A frozen network stays in eval mode (BatchNorm running statistics, no dropout)."""
        return super().train(mode and not self.frozen)

    @classmethod
    def from_checkpoint(cls: type[Net], path: str | Path, **kwargs) -> Net:
        """Build the network and load the checkpoint file ``path`` strictly (``kwargs``: the other arguments)."""
        return cls(checkpoint=path, **kwargs)
