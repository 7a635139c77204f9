"""The run manifest: one JSON line per image, appended as soon as the image is done.

Each rank appends to its own ``manifest.rank<r>.jsonl`` (no two processes write one file, also on
network file systems) and fsyncs every line, so an interrupted run loses at most the batch in
flight. Resume reads every shard; ``merge`` writes the single sorted ``manifest.jsonl``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

MERGED = "manifest.jsonl"


def shard_path(run_dir: str | Path, rank: int, prefix: str = "manifest") -> Path:
    return Path(run_dir) / f"{prefix}.rank{rank}.jsonl"


def read_records(run_dir: str | Path, prefix: str = "manifest") -> list[dict]:
    """Every record of every rank shard ``<prefix>.rank*.jsonl`` (a torn last line from a killed
    process is ignored)."""
    records = []
    for path in sorted(Path(run_dir).glob(f"{prefix}.rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def latest_by_id(run_dir: str | Path, prefix: str = "manifest") -> dict[str, dict]:
    """``{id: last record}`` over every rank shard."""
    return {r["id"]: r for r in read_records(run_dir, prefix)}


def done_ids(run_dir: str | Path) -> set[str]:
    """Ids that already have a record (finished or failed): a resumed run skips them."""
    return {r["id"] for r in read_records(run_dir)} if Path(run_dir).is_dir() else set()


def finished_ids(run_dir: str | Path) -> set[str]:
    """Ids whose latest record is ``done``: what a run with ``retry_failed=true`` skips (failed ones
    are tried again; their new record is appended, so the shards keep the history and the latest wins)."""
    return {i for i, r in latest_by_id(run_dir).items() if r.get("status") == "done"} if Path(run_dir).is_dir() else set()


class ManifestWriter:
    """Appends records for one rank (to ``<prefix>.rank<r>.jsonl``; stages keep their own prefixes)."""

    def __init__(self, run_dir: str | Path, rank: int = 0, prefix: str = "manifest"):
        self.path = shard_path(run_dir, rank, prefix)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def merge(run_dir: str | Path) -> Path:
    """Write ``manifest.jsonl``: one record per id (the last one wins), sorted by id."""
    by_id = {r["id"]: r for r in read_records(run_dir)}
    out = Path(run_dir) / MERGED
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(by_id[k], sort_keys=True) + "\n" for k in sorted(by_id)))
    os.replace(tmp, out)
    return out
