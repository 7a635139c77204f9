"""The evaluation as a LightningModule: ``trainer.predict`` measures the run's triples batch by batch on every
rank, then rank 0 merges the ranks' results and computes the cross-item metrics once.

Each rank measures the items :class:`anon.stages.evaluate_inputs.RankShards` gives it
(:meth:`anon.stages.evaluate_items.Measures.measure`: embeddings, detections, poses, predictions and
FID features, batched on the rank's device). At the end every rank writes its results to
``<run_dir>/evaluation_shards/rank<r>.pt`` (tensors and plain values, read back with
``torch.load(weights_only=True)``: no pickled code runs); after a barrier rank 0 reads the shards of
this world size, joins them with :func:`anon.stages.evaluate_merge.merge_results` (each item once) and
writes the report (:func:`anon.stages.evaluate_merge.write_report`); the shards are then removed. A second
barrier lets every rank return only once the report is on disk.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from anon.atomic_write import write_atomically
from anon.fit.forked_threads import launcher_start_method, make_forked_rank_thread_safe
from anon.metrics.thresholds import Calibration
from anon.metrics.verdict import VerdictThresholds
from anon.stages.evaluate_inputs import EvaluationTriples, RankShards, collate_triples
from anon.stages.evaluate_items import Measures
from anon.stages.evaluate_merge import merge_results, write_report

SHARDS = "evaluation_shards"


@dataclass
class EvaluationPlan:
    """What the report needs besides the items: the run, its records, the measures (the selected metrics,
    each with its own thresholds and settings) and how to judge them."""

    run_dir: Path
    records: list[dict]
    measures: Measures
    verdict: VerdictThresholds
    label_description: str
    calibration: Calibration | None = None
    inversion_source: str | None = None
    plots: bool = True


def shard_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / SHARDS / f"rank{rank}.pt"


def save_shard(path: Path, rank: int, world_size: int, results: list[dict]) -> None:
    write_atomically(path, lambda tmp: torch.save({"rank": rank, "world_size": world_size, "results": results}, tmp))


def load_shards(run_dir: str | Path, world_size: int) -> list[list[dict]]:
    """Every rank's results of this world size; a missing or foreign shard is an error (never a silent gap)."""
    out = []
    for rank in range(world_size):
        path = shard_path(run_dir, rank)
        if not path.is_file():
            raise RuntimeError(f"evaluation shard {path} is missing: rank {rank} did not finish")
        shard = torch.load(path, map_location="cpu", weights_only=True)
        if (shard.get("rank"), shard.get("world_size")) != (rank, world_size):
            raise RuntimeError(f"{path} belongs to rank {shard.get('rank')} of {shard.get('world_size')}, "
                               f"not rank {rank} of {world_size}")
        out.append(shard["results"])
    return out


class EvaluationModule(pl.LightningModule):
    """``trainer.predict(EvaluationModule(plan, triples))`` evaluates a run on every device of the Trainer.

    Args:
        plan: :class:`EvaluationPlan`.
        triples: the run's :class:`EvaluationTriples`.
        batch_size: items per ``predict_step`` (each evaluator embeds them together).
        num_workers: DataLoader workers reading the images.
    After ``predict``, ``report`` holds the report on the rank that wrote it (rank 0 of a one-process run).
    """

    def __init__(self, plan: EvaluationPlan, triples: EvaluationTriples, batch_size: int = 16, num_workers: int = 0):
        super().__init__()
        self.plan, self.triples = plan, triples
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.results: list[dict] = []
        self.report: dict | None = None

    def predict_dataloader(self) -> DataLoader:
        sampler = RankShards(self.triples, self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(self.triples, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_triples,
                          num_workers=self.num_workers)

    def on_predict_start(self) -> None:
        self.results, self.report = [], None
        make_forked_rank_thread_safe(launcher_start_method(self.trainer))  # GNU OpenMP is not fork-safe
        if self.global_rank == 0:
            shutil.rmtree(Path(self.plan.run_dir) / SHARDS, ignore_errors=True)  # a stale run's shards
        self.trainer.strategy.barrier("anon-evaluate-start")

    def predict_step(self, batch: list[dict], batch_idx: int) -> int:
        self.results += self.plan.measures.measure(batch)
        return len(batch)  # the results stay here until on_predict_end (return_predictions=False)

    def on_predict_end(self) -> None:
        world = self.trainer.world_size
        save_shard(shard_path(self.plan.run_dir, self.global_rank), self.global_rank, world, self.results)
        self.trainer.strategy.barrier("anon-evaluate-shards")
        if self.global_rank == 0:
            results = merge_results(load_shards(self.plan.run_dir, world))
            self.report = write_report(self.plan, results)
            shutil.rmtree(Path(self.plan.run_dir) / SHARDS, ignore_errors=True)
        self.trainer.strategy.barrier("anon-evaluate-report")


__all__ = ["EvaluationPlan", "EvaluationModule", "SHARDS", "shard_path", "save_shard", "load_shards"]
