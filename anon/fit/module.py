"""The LightningModule: each batch of images is anonymised by optimising its latent codes for N steps.

Lightning runs this as ``trainer.predict`` with ``inference_mode=False``: predict shards images across
ranks without duplicates, never wraps the module in DDP (no gradient all-reduce between ranks, which
would mix images), and lets every rank write its own outputs. The optimisation loop itself -- the
"fit" of FALCO -- is :func:`anon.method.optimise.optimise`, which needs no Trainer; the module holds it as a
:class:`anon.method.falco.FalcoMethod` (``module.method``, also what the photo path uses) and
:meth:`FalcoModule.optimise` calls it (benchmarks and tests do).

The module holds no output paths and writes no files: :meth:`FalcoModule.predict_step` returns the
batch's results (tensors on the CPU, per-image numbers) and :class:`anon.fit.output_writer.OutputWriter`, a
Lightning prediction writer, puts them in the run folder; :class:`anon.runtime.preemption.StopCallback` stops
cleanly between batches.

What comes from Lightning and what stays a module option:

* precision: ``trainer.precision=bf16-mixed`` gives the module's ``bf16`` (:mod:`anon.fit.precision` has the
  rule). Lightning wraps ``predict_step`` in its autocast; the step turns that off around the loop, which
  autocasts only the networks itself, so the codes, the optimiser, the reference and the final scores stay
  float32. ``module.precision`` stays for ``tf32`` (Lightning has no TF32 plugin) and for the Trainer-less
  callers (benchmarks, the photo path).
* compile: stays ``module.compile``. What is worth compiling is the per-step render + loss closure, not
  the module's ``forward`` (Lightning's ``torch.compile(model)`` route): ``predict_step`` holds a Python
  optimisation loop with a data-dependent early stop, which a compiled graph would break at every step.
* metrics: ``self.log`` is not allowed in predict hooks in Lightning, so the step curve is summed across
  ranks with ``trainer.strategy.reduce`` (a fixed-size tensor, every rank takes part) and logged with
  ``logger.log_metrics`` by rank 0 (Lightning's loggers log on rank 0 only).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from anon.fit.forked_threads import launcher_start_method, make_forked_rank_thread_safe
from anon.method.falco import FalcoMethod
from anon.method.latent import LatentLayout
from anon.method.losses import FalcoLoss
from anon.nets.tuned import Offsets
from anon.method.optimise import FrozenNetworks, OptimiseOptions, OptimiseResult
from anon.fit.precision import effective_precision
from anon.fit.step_curve import StepCurve, curve_rows


def _method_option(name: str) -> property:
    """A module attribute that reads and sets ``method.options.<name>`` (tests and benchmarks set them)."""
    return property(lambda self: getattr(self.method.options, name),
                    lambda self, value: self.method.configure(**{name: value}),
                    doc=f"``method.options.{name}`` (:class:`anon.method.optimise.OptimiseOptions`)")


class FalcoModule(pl.LightningModule):
    """Frozen generator and loss networks; per-batch trainable latent rows.

    Args:
        generator: W+ -> image network (``num_ws``, ``w_dim``; images in [-1, 1]).
        identity: identity encoder (images -> L2-normalised embeddings).
        attribute: attribute encoder (images -> N x T x C tokens).
        loss: weights and margin (:class:`anon.method.losses.FalcoLoss`).
        latent: which W+ rows are trainable (:class:`anon.method.latent.LatentLayout`).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``; default Adam lr 0.01).
        scheduler: ``(optimizer, steps) -> LR scheduler`` (default x0.8 at 75 % and 90 %).
        steps: optimisation steps per image (paper: 50).
        log_every: log the run's loss curve (each term's mean over every image of every rank at optimisation
            step s, logged at the end of predict) every this many steps (0: never).
        log_images: also return the initial images, for the writer's original | initial | anonymised grids.
            Off by default: originals are private data and must not leak into logs unless asked for.
        loss_resolution: render the generator's skip output at this size for the losses during the
            steps (ArcFace and FaRL look at 256 / 224 px anyway); the final image is full size.
            ``null`` (paper): full resolution at every step.
        early_stop_tolerance: stop optimising an image once ``|cos - m| <= tolerance``: its code is
            frozen from then on and it leaves the batch (the steps render only the unfinished images;
            the batch ends when all are done; logged step losses are means over those). ``null``
            (paper): all steps.
        precision: ``32`` (paper), ``tf32`` (TF32 matmuls/convs on Ampere+ GPUs) or ``bf16``
            (autocast of the networks; the latent codes, the optimiser and the losses stay fp32). Under a
            Trainer it must agree with ``trainer.precision`` (:func:`anon.fit.precision.effective_precision`;
            :func:`anon.runtime.run.build_module` builds it so from the config).
        channels_last: keep the networks' convolution weights and the images in NHWC memory layout.
        compile: run each step's render + losses through ``torch.compile`` (compiled once per batch
            shape on first use; a C++ compiler on CPU, Triton on GPU).
    """

    def __init__(self, generator: nn.Module, identity: nn.Module, attribute: nn.Module, loss: FalcoLoss,
                 latent: LatentLayout, optimizer: Callable | None = None, scheduler: Callable | None = None,
                 steps: int = 50, log_every: int = 1, log_images: bool = False, loss_resolution: int | None = None,
                 early_stop_tolerance: float | None = None, precision: str = "32", channels_last: bool = False,
                 compile: bool = False):
        super().__init__()
        self.generator, self.identity, self.attribute = generator, identity, attribute
        self.loss, self.latent = loss, latent
        options = OptimiseOptions(steps=steps, optimizer=optimizer, scheduler=scheduler,
                                  loss_resolution=loss_resolution, early_stop_tolerance=early_stop_tolerance,
                                  precision=precision, channels_last=channels_last, compile=compile)
        self.method = FalcoMethod(FrozenNetworks(generator, identity, attribute), loss, latent, options)
        self.log_every, self.log_images = int(log_every), bool(log_images)
        self._curve: StepCurve | None = None  # this rank's loss curve during predict
        self.log_step_base = 0  # first logger step of this session (a resumed W&B run continues after its last)
        self.config_to_log: dict | None = None  # the resolved run config, logged as hyperparameters by rank 0

    # the loop's settings live in the method object (one place for the Lightning run and the photo path)
    steps = _method_option("steps")
    make_optimizer = _method_option("optimizer")
    make_scheduler = _method_option("scheduler")
    loss_resolution = _method_option("loss_resolution")
    early_stop_tolerance = _method_option("early_stop_tolerance")
    precision = _method_option("precision")
    channels_last = _method_option("channels_last")
    compile = _method_option("compile")

    def train(self, mode: bool = True):
        """The networks stay in eval mode whatever Lightning asks (no dropout, no w_avg updates)."""
        super().train(mode)
        self.method.eval()
        return self

    def optimise(self, images: torch.Tensor, w_inversion: torch.Tensor, w_neighbour: torch.Tensor,
                 on_step: Callable[[int, dict], None] | None = None, keep_initial_images: bool = False,
                 targets: torch.Tensor | None = None, offsets: Offsets | None = None) -> OptimiseResult:
        """Anonymise a batch: :func:`anon.method.optimise.optimise` (arguments and result documented there)."""
        return self.method.optimise(images, w_inversion, w_neighbour, on_step, keep_initial_images, targets, offsets)

    def step_function(self) -> Callable:
        """``(frozen, trainable, reference, offsets=None) -> (images, loss terms)``: :meth:`FalcoMethod.step`."""
        return self.method.step()

    # ------------------------------------------------------------------ Lightning hooks
    def on_predict_start(self) -> None:
        make_forked_rank_thread_safe(launcher_start_method(self.trainer))  # before any torch op
        if effective_precision(self.precision, self.trainer.precision) != self.precision:
            raise ValueError(f"trainer.precision={self.trainer.precision} needs module.precision=bf16, not "
                             f"{self.precision} (anon.runtime.run.build_module applies the rule from the config)")
        self._curve = StepCurve(self.steps, self.loss.term_names, self.device)
        if self.logger is not None and self.config_to_log is not None:
            self.logger.log_hyperparams(self.config_to_log)  # rank 0 only (Lightning's loggers)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Anonymise the batch's images; returns what :class:`anon.fit.output_writer.OutputWriter` writes:
        ``images`` (N x 3 x R x R), ``codes`` (N x L x D), ``offsets`` (``{name: N x *shape}``, only with
        ``latent.trainable_offsets``), ``initial_images`` (with ``log_images``), all on the CPU, and per
        image ``steps``, ``wall_time_s`` and the loss terms ``initial`` / ``final`` (``{term: [floats]}``).
        Empty for a batch whose images all failed to load (the writer records those)."""
        started = time.perf_counter()
        if not batch["id"]:
            return {}
        # Lightning's bf16-mixed wraps this step in autocast; the loop autocasts only the networks itself.
        outer_autocast = torch.is_autocast_enabled(self.device.type)
        with torch.enable_grad(), torch.autocast(self.device.type, enabled=False) if outer_autocast else nullcontext():
            result = self.optimise(batch["image"], batch["w_inversion"], batch["w_neighbour"],
                                   on_step=self._curve.add, keep_initial_images=self.log_images,
                                   targets=batch.get("target"), offsets=batch.get("offsets"))
        wall = time.perf_counter() - started
        moved = self.latent.trainable_offsets and result["offsets"]  # the moved weights belong to the output
        return {
            "images": result["images"].cpu(), "codes": result["ws"].cpu(),
            "offsets": {k: v.cpu() for k, v in result["offsets"].items()} if moved else None,
            "initial_images": result["initial_images"].cpu() if self.log_images else None,
            "steps": result["steps"].tolist(), "wall_time_s": wall / len(batch["id"]),
            "initial": {k: v.tolist() for k, v in result["initial"].items()},
            "final": {k: v.tolist() for k, v in result["final"].items()},
        }

    def on_predict_epoch_end(self) -> None:
        """The loss curve over every rank's images (a collective: every rank, with or without images),
        logged by rank 0 before the writer's run summary (its ``on_predict_end`` comes after this hook)."""
        table = self.trainer.strategy.reduce(self._curve.table(), reduce_op="sum")
        if self.global_rank == 0 and self.logger is not None:
            self._log_curve(curve_rows(table, self._curve.names))

    # ------------------------------------------------------------------ logging
    def _log_curve(self, curve: list[tuple[int, int, dict]]) -> None:
        """``step/<term>``: the term's mean over the images optimised at step s; ``step/images``: how many."""
        for step, images, means in curve:
            if self.log_every and step % self.log_every == 0:
                self.logger.log_metrics({"step/images": images, **{f"step/{k}": v for k, v in means.items()}},
                                        step=self.log_step_base + step)
