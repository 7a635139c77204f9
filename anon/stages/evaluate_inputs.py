"""What the evaluate stage reads: a finished run's ``done`` records as (original, inversion, anonymised) triples.

:class:`EvaluationTriples` is a map-style Dataset over the run's ``done`` records (sorted by id): item
``k`` is the original (the record's ``source``), the inversion (``<inversion_dir>/<id>.png`` when there
is one) and the anonymised output (``run_dir/<record image>``), with the id, the identity label (for the
other-photo and closed-set attacks) and the record. A file that cannot be read makes that item an
``error`` item (the report lists it as unreadable), never a crash of the run.

:class:`RankShards` gives rank ``r`` of ``W`` the items ``r, r + W, ...``: disjoint and complete, no
padding (a ``DistributedSampler``, so Lightning leaves it alone whatever ``use_distributed_sampler`` says).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from anon.errors import ConfigError, MissingDataError
from anon.runtime.manifest import current_records
from anon.metrics.thresholds import read_rgb


def done_records(run_dir: str | Path) -> list[dict]:
    """The run's ``done`` records, one per id (the last wins), sorted by id.

    Reads the rank shards (``manifest.jsonl`` when a folder has none).
    """
    run_dir = Path(run_dir)
    merged = run_dir / "manifest.jsonl"
    records = current_records(run_dir)  # the rank shards' truth (the merged file may be stale)
    if not records and not merged.is_file():
        raise MissingDataError(merged, "run manifest", "run `anon anonymize` first, or fix `run_dir`")
    latest = {r["id"]: r for r in records}
    return [latest[k] for k in sorted(latest) if latest[k].get("status") == "done"]


def folder_identity(image_id: str) -> str:
    """The identity of an id laid out as ``Person/file`` (LFW): its first path component."""
    return image_id.split("/")[0]


def identity_labels(kind, ids: Sequence[str]) -> tuple[Callable[[str], object], str]:
    """``identity_labels`` config -> ``(id -> person, description)``.

    ``folder``: the first path component (LFW ``Name/Name_0001``); ``auto``: folder when ids have
    folders, else each image its own person; ``null``: each image its own person; a callable as is.
    """
    if callable(kind):
        return kind, getattr(kind, "description", "configured identity labels")
    if kind == "auto":
        kind = "folder" if any("/" in i for i in ids) else None
    if kind == "folder":
        return folder_identity, "folder name (LFW Name/Name_0001 layout)"
    if kind is None:
        return (lambda i: i), "none: every image is its own person"
    raise ConfigError(f"identity_labels={kind!r}: use auto, folder (LFW's Name/Name_0001 ids) or null")


class EvaluationTriples(Dataset):
    """The run's ``done`` records as per-item triples.

    Args:
        run_dir: the run folder (``images/<id>.png`` or the record's ``image``).
        records: the ``done`` records (:func:`done_records`), in report order.
        label_of: ``id -> person`` (:func:`identity_labels`).
        inversion_dir: folder of ``<id>.png`` inversions, or None (no inversion scored).

    Item ``k``: ``{"index": k, "id", "label", "record", "original", "anonymised", "inversion"}`` with
    ``H x W x 3`` uint8 arrays (``inversion`` None where there is none), or, when the original or the
    output (or an inversion that is there) cannot be read, ``{"index", "id", "label", "record", "error":
    "<type>: <message>"}``.
    """

    def __init__(self, run_dir: str | Path, records: list[dict], label_of: Callable[[str], object],
                 inversion_dir: str | Path | None = None):
        self.run_dir, self.records, self.label_of = Path(run_dir), list(records), label_of
        self.inversion_dir = None if inversion_dir is None else Path(inversion_dir)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        label = self.label_of(rec["id"])
        label = label.item() if isinstance(label, np.generic) else label  # plain values travel in the rank shards
        item = {"index": index, "id": rec["id"], "label": label, "record": rec}
        inversion = None if self.inversion_dir is None else self.inversion_dir / f"{rec['id']}.png"
        try:
            item["original"] = read_rgb(rec["source"])
            item["anonymised"] = read_rgb(self.run_dir / rec.get("image", f"images/{rec['id']}.png"))
            item["inversion"] = read_rgb(inversion) if inversion is not None and inversion.is_file() else None
        except (OSError, ValueError) as err:
            return {**{k: item[k] for k in ("index", "id", "label", "record")}, "error": f"{type(err).__name__}: {err}"}
        return item


def collate_triples(items: list[dict]) -> list[dict]:
    """Items stay a list: images differ in size (originals, outputs), and evaluators take lists of arrays."""
    return items


class RankShards(DistributedSampler):
    """Indices ``rank, rank + world, ...`` of a map-style dataset: each item on exactly one rank, no padding."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


__all__ = ["done_records", "folder_identity", "identity_labels", "EvaluationTriples", "collate_triples",
           "RankShards"]
