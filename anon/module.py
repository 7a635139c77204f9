"""The LightningModule: each batch of images is anonymised by optimising its latent codes for N steps.

Lightning runs this as ``trainer.predict`` with ``inference_mode=False``: predict shards images across
ranks without duplicates, never wraps the module in DDP (no gradient all-reduce between ranks, which
would mix images), and lets every rank write its own outputs. The optimisation loop itself -- the
"fit" of FALCO -- is :func:`anon.optimise.optimise`, which needs no Trainer; the module holds it as a
:class:`anon.falco_method.FalcoMethod` (``module.method``, also what the photo path uses) and
:meth:`FalcoModule.optimise` calls it (benchmarks and tests do).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from anon.falco_method import FalcoMethod
from anon.latent import LatentLayout
from anon.losses import FalcoLoss
from anon.manifest import ManifestWriter
from anon.nets.tuned import Offsets
from anon.optimise import FrozenNetworks, OptimiseOptions, OptimiseResult
from anon.outputs import check_format, code_path, image_path, save_code, save_offsets, save_output, save_png
from anon.preemption import StopFlag, launcher_forward
from anon.step_curve import StepCurve, gather_curves, merge_curves
from anon.summary import write_run_summary
from anon.visuals import comparison_grid
from anon.wandb_record import close_run


def _method_option(name: str) -> property:
    """A module attribute that reads and sets ``method.options.<name>`` (tests and benchmarks set them)."""
    return property(lambda self: getattr(self.method.options, name),
                    lambda self, value: self.method.configure(**{name: value}),
                    doc=f"``method.options.{name}`` (:class:`anon.optimise.OptimiseOptions`)")


class FalcoModule(pl.LightningModule):
    """Frozen generator and loss networks; per-batch trainable latent rows.

    Args:
        generator: W+ -> image network (``num_ws``, ``w_dim``; images in [-1, 1]).
        identity: identity encoder (images -> L2-normalised embeddings).
        attribute: attribute encoder (images -> N x T x C tokens).
        loss: weights and margin (:class:`anon.losses.FalcoLoss`).
        latent: which W+ rows are trainable (:class:`anon.latent.LatentLayout`).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``; default Adam lr 0.01).
        scheduler: ``(optimizer, steps) -> LR scheduler`` (default x0.8 at 75 % and 90 %).
        steps: optimisation steps per image (paper: 50).
        log_every: log the run's loss curve (each term's mean over every image of every rank at optimisation
            step s, logged at the end of predict) every this many steps (0: never).
        log_images: also save/log original | initial | anonymised grids. Off by default: originals are
            private data and must not leak into logs unless asked for.
        loss_resolution: render the generator's skip output at this size for the losses during the
            steps (ArcFace and FaRL look at 256 / 224 px anyway); the final image is full size.
            ``null`` (paper): full resolution at every step.
        early_stop_tolerance: stop optimising an image once ``|cos - m| <= tolerance``: its code is
            frozen from then on and it leaves the batch (the steps render only the unfinished images;
            the batch ends when all are done; logged step losses are means over those). ``null``
            (paper): all steps.
        precision: ``32`` (paper), ``tf32`` (TF32 matmuls/convs on Ampere+ GPUs) or ``bf16``
            (autocast of the networks; the latent codes, the optimiser and the losses stay fp32).
        channels_last: keep the networks' convolution weights and the images in NHWC memory layout.
        compile: run each step's render + losses through ``torch.compile`` (compiled once per batch
            shape on first use; a C++ compiler on CPU, Triton on GPU).
        output_format: ``png`` (lossless, default) or ``official_jpeg`` (see :mod:`anon.outputs`).
    """

    def __init__(self, generator: nn.Module, identity: nn.Module, attribute: nn.Module, loss: FalcoLoss,
                 latent: LatentLayout, optimizer: Callable | None = None, scheduler: Callable | None = None,
                 steps: int = 50, log_every: int = 1, log_images: bool = False, loss_resolution: int | None = None,
                 early_stop_tolerance: float | None = None, precision: str = "32", channels_last: bool = False,
                 compile: bool = False, output_format: str = "png"):
        super().__init__()
        self.generator, self.identity, self.attribute = generator, identity, attribute
        self.loss, self.latent = loss, latent
        options = OptimiseOptions(steps=steps, optimizer=optimizer, scheduler=scheduler,
                                  loss_resolution=loss_resolution, early_stop_tolerance=early_stop_tolerance,
                                  precision=precision, channels_last=channels_last, compile=compile)
        self.method = FalcoMethod(FrozenNetworks(generator, identity, attribute), loss, latent, options)
        self.log_every, self.log_images = int(log_every), bool(log_images)
        self.output_format = check_format(output_format)
        self.run_dir: Path | None = None
        self._manifest: ManifestWriter | None = None
        self._curve = StepCurve(self.steps)
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
        """Anonymise a batch: :func:`anon.optimise.optimise` (arguments and result documented there)."""
        return self.method.optimise(images, w_inversion, w_neighbour, on_step, keep_initial_images, targets, offsets)

    def step_function(self) -> Callable:
        """``(frozen, trainable, reference, offsets=None) -> (images, loss terms)``: :meth:`FalcoMethod.step`."""
        return self.method.step()

    # ------------------------------------------------------------------ Lightning hooks
    def on_predict_start(self) -> None:
        if self.run_dir is None:
            raise RuntimeError("FalcoModule.run_dir must be set before trainer.predict")
        self._manifest = ManifestWriter(self.run_dir, self.global_rank)
        self._curve = StepCurve(self.steps)
        if self.logger is not None and self.config_to_log is not None:
            self.logger.log_hyperparams(self.config_to_log)  # rank 0 only (Lightning's loggers)
        # Replaces Lightning's SIGTERM handler for the duration of predict (it broadcasts inside
        # the handler, which can hang ranks that are not in a collective). A rank that launched the
        # others (Lightning's subprocess launcher runs rank 0 in the launching process) passes it on.
        self._stop = StopFlag(forward=launcher_forward(self.trainer)).install()

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        self._stop.check()
        started = time.perf_counter()
        records = [{**f, "status": "failed", "rank": self.global_rank} for f in batch["failed"]]
        for failure in batch["failed"]:
            print(f"[anon] skipped {failure['source']}: {failure['error']}", flush=True)
        if batch["id"]:
            with torch.enable_grad():
                result = self.optimise(batch["image"], batch["w_inversion"], batch["w_neighbour"],
                                       on_step=self._curve.add, keep_initial_images=self.log_images,
                                       targets=batch.get("target"), offsets=batch.get("offsets"))
            records += self._write_outputs(batch, result, time.perf_counter() - started)
            if self.log_images and batch_idx == 0:
                self._log_grid(batch["image"], result["initial_images"], result["images"], batch_idx)
        self._manifest.append(records)

    def on_predict_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop.check()  # the finished batch is on disk; stop before loading the next one

    def on_predict_end(self) -> None:
        self._stop.restore()
        self.trainer.strategy.barrier("anon-predict-end")
        curve = merge_curves(gather_curves(self._curve.local()))  # every rank's images, not rank 0's only
        if self.global_rank == 0:
            summary = write_run_summary(self.run_dir)
            if self.logger is not None:
                self._log_curve(curve)
                last = self.log_step_base + self.steps
                self.logger.log_metrics({f"run/{k}": v for k, v in summary.items() if isinstance(v, (int, float))},
                                        step=last)
                self.logger.save()
                close_run(self.logger, self.run_dir, next_step=last + 1)

    # ------------------------------------------------------------------ outputs and logging
    def _write_outputs(self, batch: dict, result: dict, wall: float) -> list[dict]:
        n = len(batch["id"])
        records = []
        for i, image_id in enumerate(batch["id"]):
            out_path = image_path(self.run_dir, image_id, self.output_format)
            save_output(result["images"][i], out_path, self.output_format)
            save_code(result["ws"][i], code_path(self.run_dir, image_id))
            if self.latent.trainable_offsets and result["offsets"]:  # the moved weights belong to the output
                save_offsets({k: v[i] for k, v in result["offsets"].items()}, self.run_dir / "offsets" / f"{image_id}.pt")
            init, final = result["initial"], result["final"]
            records.append({
                "id": image_id, "source": batch["source"][i], "status": "done", "rank": self.global_rank,
                "image": out_path.relative_to(self.run_dir).as_posix(),
                "code": code_path(self.run_dir, image_id).relative_to(self.run_dir).as_posix(),
                "steps": int(result["steps"][i]), "batch_size": n, "wall_time_s": wall / n,
                "identity_similarity_before": float(init["similarity"][i]),
                "identity_similarity_after": float(final["similarity"][i]),
                "loss": {k: float(final[k][i]) for k in ("total", "identity", "attribute")},
                "loss_initial": {k: float(init[k][i]) for k in ("total", "identity", "attribute")},
            })
        return records

    def _log_curve(self, curve: list[tuple[int, int, dict]]) -> None:
        """``step/<term>``: the term's mean over the images optimised at step s; ``step/images``: how many."""
        for step, images, means in curve:
            if self.log_every and step % self.log_every == 0:
                self.logger.log_metrics({"step/images": images, **{f"step/{k}": v for k, v in means.items()}},
                                        step=self.log_step_base + step)

    def _log_grid(self, originals, initial, anonymised, batch_idx: int) -> None:
        grid = comparison_grid(originals, initial, anonymised)
        save_png(grid, self.run_dir / "grids" / f"rank{self.global_rank}_batch{batch_idx}.png")
        log_image = getattr(self.logger, "log_image", None)
        if log_image is not None:
            log_image(key="original|initial|anonymised", images=[grid])
