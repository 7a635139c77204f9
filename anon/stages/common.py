"""What every stage shares: rank/world from the launcher's environment, devices, done markers."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from anon.atomic_write import write_text_atomically

DONE = "DONE.json"


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (torchrun / SLURM / Lightning variables; else 0, 1)."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and world_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[world_var])
    return 0, 1


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and ":" not in requested and torch.cuda.is_available():
        requested = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return torch.device(requested)


def is_done(stage_dir: Path) -> bool:
    return (Path(stage_dir) / DONE).is_file()


def mark_done(stage_dir: Path, **facts) -> None:
    """Written last: a stage folder without it is resumed, never trusted."""
    record = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts}
    write_text_atomically(Path(stage_dir) / DONE, json.dumps(record, indent=2, sort_keys=True))


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]
