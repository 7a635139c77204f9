"""The FALCO method as a plain object: frozen networks, loss, latent layout and loop options in one place.

No Lightning and no files: :class:`anon.fit.module.FalcoModule` holds one (and adds the run's outputs and
logging around it); the photo path (:class:`anon.photos.falco_faces.FalcoFaceAnonymizer`) uses one directly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from anon.method.latent import LatentLayout
from anon.method.losses import FalcoLoss
from anon.nets.tuned import Offsets
from anon.method.optimise import FrozenNetworks, OptimiseOptions, OptimiseResult, StepFn, StepFunction, Terms, optimise


class FalcoMethod:
    """Frozen generator, identity and attribute networks; the loss; which W+ rows move; how the loop runs.

    Args:
        networks: :class:`anon.method.optimise.FrozenNetworks` (put in eval mode with gradients off here).
        loss: weights and margin (:class:`anon.method.losses.FalcoLoss`).
        latent: which W+ rows (and weight offsets) are trainable (:class:`anon.method.latent.LatentLayout`).
        options: :class:`anon.method.optimise.OptimiseOptions` (steps, optimiser, schedule, precision, ...);
            replace it with ``method.options = dataclasses.replace(method.options, ...)``.

    It keeps the step function's cache (memory layout, compiled step) across batches.
    """

    def __init__(self, networks: FrozenNetworks, loss: FalcoLoss, latent: LatentLayout,
                 options: OptimiseOptions | None = None) -> None:
        for net in networks.all():
            net.requires_grad_(False).eval()
        latent.check_generator(networks.generator)  # fail early on a layer range that does not fit
        self.networks, self.loss, self.latent = networks, loss, latent
        self.options = options or OptimiseOptions()
        self.step_function = StepFunction()

    def configure(self, **changes: Any) -> None:
        """Change some options (keyword names of :class:`anon.method.optimise.OptimiseOptions`)."""
        self.options = replace(self.options, **changes)

    def to(self, device: torch.device | str) -> FalcoMethod:
        """Move the networks and the loss (its extra attribute terms) to ``device``; returns self."""
        for net in (*self.networks.all(), self.loss):
            net.to(device)
        return self

    def eval(self) -> FalcoMethod:
        """Put the networks back in eval mode (no dropout, no running-statistics updates); returns self."""
        for net in self.networks.all():
            net.eval()
        return self

    def step(self) -> StepFn:
        """One step's forward with the current options' layout and compilation (see :class:`StepFunction`)."""
        return self.step_function.prepare(self.networks, self.loss, self.latent, self.options)

    def optimise(self, images: torch.Tensor, w_inversion: torch.Tensor, w_neighbour: torch.Tensor,
                 on_step: Callable[[int, Terms], None] | None = None, keep_initial_images: bool = False,
                 targets: torch.Tensor | None = None, offsets: Offsets | None = None) -> OptimiseResult:
        """Anonymise a batch (:func:`anon.method.optimise.optimise`, reusing this method's step-function cache)."""
        return optimise(self.networks, self.loss, self.latent, self.options, images, w_inversion, w_neighbour,
                        step_function=self.step_function, on_step=on_step, keep_initial_images=keep_initial_images,
                        targets=targets, offsets=offsets)
