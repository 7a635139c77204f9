"""The LightningModule: each batch of images is anonymised by optimising its latent codes for N steps.

Lightning runs this as ``trainer.predict`` with ``inference_mode=False``: predict shards images across
ranks without duplicates, never wraps the module in DDP (no gradient all-reduce between ranks, which
would mix images), and lets every rank write its own outputs. The optimisation loop itself -- the
"fit" of FALCO -- runs inside :meth:`FalcoModule.optimise`, which needs no Trainer (benchmarks call it).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from anon.latent import LatentLayout
from anon.losses import FalcoLoss
from anon.manifest import ManifestWriter
from anon.nets.tuned import Offsets, render, select
from anon.outputs import check_format, code_path, image_path, save_code, save_offsets, save_output, save_png
from anon.preemption import StopFlag, launcher_forward
from anon.schedule import fractional_multistep
from anon.step_curve import StepCurve, gather_curves, merge_curves
from anon.summary import write_run_summary
from anon.visuals import comparison_grid
from anon.wandb_record import close_run


@contextmanager
def tf32_enabled(enabled: bool):
    """TF32 matmuls/convolutions inside the block if ``enabled``, true float32 otherwise (the flags are
    process-wide and restored after). PyTorch's own default lets cuDNN convolutions use TF32 on Ampere and
    newer GPUs, so without forcing it off ``precision=32`` would not be float32 there (an H200 moved the
    tiny config's first loss by 5.6e-4 against the CPU's)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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
        for net in (generator, identity, attribute):
            net.requires_grad_(False).eval()
        self.loss, self.latent = loss, latent
        self.make_optimizer = optimizer or partial(torch.optim.Adam, lr=0.01)
        self.make_scheduler = scheduler or fractional_multistep
        self.steps, self.log_every, self.log_images = int(steps), int(log_every), bool(log_images)
        self.loss_resolution = loss_resolution
        self.early_stop_tolerance = early_stop_tolerance
        if str(precision) not in ("32", "tf32", "bf16"):
            raise ValueError(f"module.precision must be 32, tf32 or bf16, not {precision!r}")
        self.precision = str(precision)
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        self._compiled_step: Callable | None = None
        self.output_format = check_format(output_format)
        self._layout_is_channels_last = False  # whether step_function put the networks in NHWC
        self.run_dir: Path | None = None
        self._manifest: ManifestWriter | None = None
        self._curve = StepCurve(self.steps)
        self.log_step_base = 0  # first logger step of this session (a resumed W&B run continues after its last)
        self.config_to_log: dict | None = None  # the resolved run config, logged as hyperparameters by rank 0
        self.latent.check_generator(generator)  # fail early on a layer range that does not fit

    def train(self, mode: bool = True):
        """The networks stay in eval mode whatever Lightning asks (no dropout, no w_avg updates)."""
        super().train(mode)
        for net in (self.generator, self.identity, self.attribute):
            net.eval()
        return self

    # ------------------------------------------------------------------ the optimisation loop
    def optimise(self, images: torch.Tensor, w_inversion: torch.Tensor, w_neighbour: torch.Tensor,
                 on_step: Callable[[int, dict], None] | None = None, keep_initial_images: bool = False,
                 targets: torch.Tensor | None = None, offsets: Offsets | None = None) -> dict:
        """Anonymise a batch. images: N x 3 x H x W in [-1, 1]; codes: N x L x D; ``targets`` (N x 3 x H' x W'
        in [-1, 1]): what the losses compare against instead of ``images`` (``loss.target=unaligned``);
        ``offsets``: the images' generator weight offsets from a pivotal-tuning inversion
        (``{name: N x *shape}``; None: the shared generator), which every render of the image uses.

        Returns ``ws`` (N x L x D final codes), ``images`` (N x 3 x R x R), ``offsets`` (the weight offsets
        the images were rendered with: ``latent.trainable_offsets`` moved, the others as given; None
        without any), and the per-sample loss terms ``initial`` (at the starting code) and ``final``.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        frozen, start = self.latent.split(w_inversion, w_neighbour)
        trainable = start.clone().requires_grad_(True)
        # latent.trainable_offsets: which per-image weight offsets the loss may move too; the rest stay fixed
        fixed, tuned = self.latent.split_offsets(offsets, self.generator, images.shape[0], images.device)
        params = [trainable]
        if tuned:
            params = [{"params": params}, *self.latent.offset_groups(tuned, self.generator)]
        offsets = {**fixed, **tuned} or None
        optimizer = self.make_optimizer(params)
        scheduler = self.make_scheduler(optimizer, steps=self.steps)
        with tf32_enabled(False):  # the reference and the final scores are always float32
            ref = self.loss.reference(self.identity, self.attribute, images if targets is None else targets)
        step_losses = self.step_function()
        initial = initial_images = None
        active = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        steps_taken = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        early_stop = self.early_stop_tolerance is not None
        for step in range(self.steps):
            # With early stop, finished images leave the batch: only the unfinished ones are rendered.
            rows = active.nonzero().squeeze(1) if early_stop and not active.all() else None
            with tf32_enabled(self.precision == "tf32"):
                if rows is None:
                    generated, terms = step_losses(frozen, trainable, ref, offsets)
                else:
                    generated, terms = step_losses(frozen[rows], trainable[rows], ref.select(rows),
                                                   select(offsets, rows))
            if step == 0:
                initial = {k: v.detach() for k, v in terms.items()}
                initial_images = generated.detach() if keep_initial_images else None
            loss = terms["total"]
            if early_stop:
                unfinished = terms["identity"].detach() > self.early_stop_tolerance
                active[rows if rows is not None else slice(None)] = unfinished
                if not active.any():
                    break
                held = trainable.detach().clone()
                held_offsets = {name: value.detach().clone() for name, value in tuned.items()}
                loss = loss[unfinished]
            optimizer.zero_grad(set_to_none=True)
            with tf32_enabled(self.precision == "tf32"):
                loss.sum().backward()  # sum, not mean: each code's gradient is its own image's
            optimizer.step()
            scheduler.step()
            if early_stop:
                with torch.no_grad():  # finished images keep their code (Adam momentum would move it)
                    trainable[~active] = held[~active]
                    for name, value in tuned.items():
                        value[~active] = held_offsets[name][~active]
            steps_taken += active.long()
            if on_step is not None:
                on_step(step, terms)
        with torch.no_grad(), tf32_enabled(False):
            ws = self.latent.compose(frozen, trainable)
            final_images = render(self.generator, ws, offsets)
            final = {k: v.detach() for k, v in self.loss(self.identity, self.attribute, final_images, ref).items()}
            if initial is None:  # steps == 0
                initial, initial_images = final, final_images
        final_offsets = None if offsets is None else {name: value.detach() for name, value in offsets.items()}
        return {"ws": ws.detach(), "images": final_images, "initial": initial, "final": final,
                "initial_images": initial_images, "steps": steps_taken, "offsets": final_offsets}

    def _render_and_score(self, frozen: torch.Tensor, trainable: torch.Tensor, ref: dict,
                          offsets: Offsets | None = None):
        """One step's forward: the W+ code rendered (at ``loss_resolution`` if set; with the images'
        weight offsets if any) and its loss terms."""
        resolution = {"resolution": self.loss_resolution} if self.loss_resolution else {}
        with torch.autocast(trainable.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            generated = render(self.generator, self.latent.compose(frozen, trainable), offsets, **resolution)
            terms = self.loss(self.identity, self.attribute, generated, ref)
        return generated, {k: v.float() for k, v in terms.items()}

    def step_function(self) -> Callable:
        """``(frozen, trainable, reference, offsets=None) -> (images, loss terms)`` for one step, with this module's
        layout (channels_last) and compilation settings applied."""
        if self.channels_last != self._layout_is_channels_last:
            # Only on a change: by default each network keeps the layout it chose (MobileFaceNet runs
            # NHWC on its own); switching the option back puts every network in NCHW.
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            for net in (self.generator, self.identity, self.attribute):
                net.to(memory_format=layout)  # only 4-D weights change layout
            self._layout_is_channels_last = self.channels_last
        if not self.compile:
            return self._render_and_score
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self._render_and_score)
        return self._compiled_step

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
