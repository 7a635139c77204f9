"""Read offline W&B runs back: the ``.wandb`` files' records, decoded with wandb's own protobuf ``Record``.

wandb 0.31 has no Python reader of its transaction log (the Go core writes it); the framing is LevelDB's
log format (32 KiB blocks of records with a 7-byte header: crc32c, length, type), after a 7-byte
``:W&B`` header. The records themselves are parsed by ``wandb.proto.wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import json
import struct
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@dataclass
class OfflineRun:
    """Everything the offline files of one run id hold (a resumed run spans several files)."""
    id: str
    files: list = field(default_factory=list)
    groups: set = field(default_factory=set)
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # one {key: value} per logged row

    def keys(self) -> set:
        return {k for row in self.history for k in row}


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def finished(path: Path) -> bool:
    """Whether the run's writer got to its ``exit`` record (``run.finish()`` can return before the core
    process has written the file's tail)."""
    try:
        return any(rec.WhichOneof("record_type") == "exit" for rec in records(path))
    except (AssertionError, struct.error):  # header not written yet
        return False


def read_runs(root: Path, files: int = 0, wait_s: float = 60.0) -> dict[str, OfflineRun]:
    """Every offline run under ``root`` by run id, once at least ``files`` files are there and each is
    complete (waiting at most ``wait_s``)."""
    deadline = time.time() + wait_s
    while time.time() < deadline:
        paths = list(Path(root).rglob("*.wandb"))
        if len(paths) >= files and all(finished(p) for p in paths):
            break
        time.sleep(0.2)
    runs: dict[str, OfflineRun] = defaultdict(lambda: OfflineRun(""))
    for path in sorted(Path(root).rglob("*.wandb")):
        for rec in records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run = runs[rec.run.run_id]
                run.id = rec.run.run_id
                run.files.append(path)
                if rec.run.run_group:
                    run.groups.add(rec.run.run_group)
                run.config.update({_key(u): json.loads(u.value_json) for u in rec.run.config.update})
                current = run
            elif kind == "config":
                current.config.update({_key(u): json.loads(u.value_json) for u in rec.config.update})
            elif kind == "history":
                current.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
    return dict(runs)
