"""The run manifest: one JSON line per image, appended as soon as the image is done.

Each rank appends to its own ``manifest.rank<r>.jsonl`` (no two processes write one file, also on
network file systems) and fsyncs every line, so an interrupted run loses at most the batch in
flight. A line cut short by a crash is cut off before the next append (:func:`append_jsonl`), so the
next record is never glued onto it. The shards are the truth: resume and ``anon evaluate`` read them
(:func:`current_records`); ``merge`` writes the single sorted ``manifest.jsonl`` from them, and
:func:`merged_is_stale` says when that copy no longer matches (a run killed before its merge).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from anon.atomic_write import write_text_atomically

MERGED = "manifest.jsonl"


def shard_path(run_dir: str | Path, rank: int, prefix: str = "manifest") -> Path:
    return Path(run_dir) / f"{prefix}.rank{rank}.jsonl"


def shard_paths(run_dir: str | Path, prefix: str = "manifest") -> list[Path]:
    return sorted(Path(run_dir).glob(f"{prefix}.rank*.jsonl"))


def _parse_lines(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_records(run_dir: str | Path, prefix: str = "manifest") -> list[dict]:
    """Every record of every rank shard ``<prefix>.rank*.jsonl`` (a torn last line from a killed
    process is ignored)."""
    return [r for path in shard_paths(run_dir, prefix) for r in _parse_lines(path.read_text())]


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


def current_records(run_dir: str | Path) -> list[dict]:
    """The run's records as the shards say (the merged file may be stale or missing); a folder that
    has only ``manifest.jsonl`` (shards deleted or never copied) is read from it."""
    run_dir = Path(run_dir)
    if shard_paths(run_dir):
        return read_records(run_dir)
    merged = run_dir / MERGED
    return _parse_lines(merged.read_text()) if merged.is_file() else []


def repair_torn_tail(fh) -> None:
    """Cut an unfinished last line (a crash mid-write) off a file opened ``r+b``/``a+b``: the next
    line then starts on a line of its own. The cut line was never a whole record, so nothing recorded
    is lost (its item is redone)."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    keep = 0
    block = 1 << 16
    end = size
    while end > 0:  # find the last newline, reading backwards
        start = max(0, end - block)
        fh.seek(start)
        chunk = fh.read(end - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            keep = start + at + 1
            break
        end = start
    fh.truncate(keep)
    fh.seek(keep)


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append one JSON line per record and fsync (after cutting off a torn last line)."""
    if not records:
        return
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
    with open(path, "a+b") as fh:
        repair_torn_tail(fh)
        fh.seek(0, os.SEEK_END)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class ManifestWriter:
    """Appends records for one rank (to ``<prefix>.rank<r>.jsonl``; stages keep their own prefixes)."""

    def __init__(self, run_dir: str | Path, rank: int = 0, prefix: str = "manifest"):
        self.path = shard_path(run_dir, rank, prefix)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records: list[dict]) -> None:
        append_jsonl(self.path, records)


def merged_text(run_dir: str | Path) -> str:
    """What ``manifest.jsonl`` must hold: one record per id (the last one wins), sorted by id."""
    by_id = {r["id"]: r for r in read_records(run_dir)}
    return "".join(json.dumps(by_id[k], sort_keys=True) + "\n" for k in sorted(by_id))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file of this process (never half a file, never
    another process's temporary file); the temporary file is removed if the write fails (full disk)."""
    write_text_atomically(path, text, fsync=True)


def merge(run_dir: str | Path) -> Path:
    """Write ``manifest.jsonl``: one record per id (the last one wins), sorted by id."""
    out = Path(run_dir) / MERGED
    write_atomic(out, merged_text(run_dir))
    return out


def merged_is_stale(run_dir: str | Path) -> bool:
    """True when rank shards exist and ``manifest.jsonl`` or ``summary.json`` is missing, or the merged
    file differs from what the shards say (a run that stopped between its last record and its merge)."""
    run_dir = Path(run_dir)
    if not shard_paths(run_dir):
        return False
    merged = run_dir / MERGED
    if not merged.is_file() or not (run_dir / "summary.json").is_file():
        return True
    return merged.read_text() != merged_text(run_dir)
