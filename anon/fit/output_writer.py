"""The run folder's writer: a Lightning prediction writer that puts each predicted batch on disk.

Per batch (:meth:`OutputWriter.write_on_batch_end`, with ``write_interval="batch"``; Lightning hands it
the step's outputs also under ``trainer.predict(..., return_predictions=False)``): each image in
``output.format``, its W+ code, its moved generator weights (``latent.trainable_offsets``), the optional
original | initial | anonymised grid of the rank's first batch, and one manifest record per image -- done,
or failed for an item that could not be loaded -- fsynced to the rank's shard. At the end of predict
(rank 0, after every rank has finished): the merged manifest and ``summary.json``, logged as ``run/<key>``.

The module (:class:`anon.fit.module.FalcoModule`) holds no paths: without this callback a predict writes
nothing. :class:`anon.runtime.preemption.StopCallback` comes after it in the Trainer's callbacks, so a stop
signal takes effect only once the batch in flight is written and recorded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from anon.runtime.manifest import ManifestWriter
from anon.runtime.outputs import check_format, code_path, image_path, save_code, save_offsets, save_output, save_png
from anon.runtime.summary import write_run_summary
from anon.report.visuals import comparison_grid
from anon.runtime.wandb_record import close_run

LOSS_KEYS = ("total", "identity", "attribute")


class OutputWriter(BasePredictionWriter):
    """Args:
        run_dir: the run folder (images/, codes/, offsets/, grids/, manifest shards, summary.json).
        output_format: ``png`` (lossless, default) or ``official_jpeg`` (see :mod:`anon.runtime.outputs`).
    """

    def __init__(self, run_dir: str | Path, output_format: str = "png"):
        super().__init__(write_interval="batch")
        self.run_dir, self.output_format = Path(run_dir), check_format(output_format)
        self._manifest: ManifestWriter | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        self._manifest = ManifestWriter(self.run_dir, trainer.global_rank)

    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices, batch: dict,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        rank = trainer.global_rank
        records = [{**failure, "status": "failed", "rank": rank} for failure in batch["failed"]]
        for failure in batch["failed"]:
            print(f"[anon] skipped {failure['source']}: {failure['error']}", flush=True)
        if batch["id"]:
            records += self.write_images(batch, prediction, rank)
            if prediction["initial_images"] is not None and batch_idx == 0:
                self.write_grid(trainer, batch["image"], prediction, batch_idx)
        self._manifest.append(records)

    def write_images(self, batch: dict, prediction: dict, rank: int) -> list[dict]:
        """Each image, code and (moved) weight offsets of the batch; returns their manifest records."""
        n = len(batch["id"])
        init, final = prediction["initial"], prediction["final"]
        records = []
        for i, image_id in enumerate(batch["id"]):
            out_path = image_path(self.run_dir, image_id, self.output_format)
            save_output(prediction["images"][i], out_path, self.output_format)
            save_code(prediction["codes"][i], code_path(self.run_dir, image_id))
            if prediction["offsets"]:
                save_offsets({k: v[i] for k, v in prediction["offsets"].items()},
                             self.run_dir / "offsets" / f"{image_id}.pt")
            records.append({
                "id": image_id, "source": batch["source"][i], "status": "done", "rank": rank,
                "image": out_path.relative_to(self.run_dir).as_posix(),
                "code": code_path(self.run_dir, image_id).relative_to(self.run_dir).as_posix(),
                "steps": int(prediction["steps"][i]), "batch_size": n, "wall_time_s": prediction["wall_time_s"],
                "identity_similarity_before": init["similarity"][i],
                "identity_similarity_after": final["similarity"][i],
                "loss": {k: final[k][i] for k in LOSS_KEYS},
                "loss_initial": {k: init[k][i] for k in LOSS_KEYS},
            })
        return records

    def write_grid(self, trainer, originals: torch.Tensor, prediction: dict, batch_idx: int) -> None:
        """original | initial | anonymised for the batch (asked for with ``module.log_images``): saved, and
        sent to a logger that takes images."""
        grid = comparison_grid(originals.cpu(), prediction["initial_images"], prediction["images"])
        save_png(grid, self.run_dir / "grids" / f"rank{trainer.global_rank}_batch{batch_idx}.png")
        log_image = getattr(trainer.logger, "log_image", None)
        if log_image is not None:
            log_image(key="original|initial|anonymised", images=[grid])

    def on_predict_end(self, trainer, pl_module) -> None:
        """Rank 0, once every rank's records are on disk: merged manifest, summary, its ``run/`` metrics
        (after the module's step curve), and the W&B run closed."""
        trainer.strategy.barrier("anon-predict-end")
        if trainer.global_rank != 0:
            return
        summary = write_run_summary(self.run_dir)
        logger = trainer.logger
        if logger is not None:
            last = getattr(pl_module, "log_step_base", 0) + getattr(pl_module, "steps", 0)
            logger.log_metrics({f"run/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, step=last)
            logger.save()
            close_run(logger, self.run_dir, next_step=last + 1)
