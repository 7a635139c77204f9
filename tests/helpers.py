"""Test helpers: the real command line in a subprocess (as a user runs it), and shape-table counts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from anon.errors import find_cause

REPO = Path(__file__).resolve().parents[1]
E = TypeVar("E", bound=BaseException)


def anon_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "anon.runtime.cli", *args]


def env() -> dict:
    e = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run_anon(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(anon_command(*args), cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def shard_lines(run_dir: Path) -> list[dict]:
    """Every manifest line every rank ever wrote (a duplicate here means an image was done twice)."""
    lines = []
    for path in sorted(run_dir.glob("manifest.rank*.jsonl")):
        lines += [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return lines


def wait_for_records(proc: subprocess.Popen, runs: Path, n: int, timeout: float = 240) -> Path:
    """Wait until the run folder ``runs`` (or the one folder under it, for hashed names) holds ``n``
    manifest lines while ``proc`` still runs; returns the run folder."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        folders = [runs] if (runs / "config.yaml").exists() else sorted(runs.glob("*")) if runs.is_dir() else []
        if folders and len(shard_lines(folders[0])) >= n:
            return folders[0]
        time.sleep(0.05)
    stderr = proc.stderr.read()[-2000:] if proc.stderr else ""
    raise AssertionError(f"run ended (rc {proc.poll()}) before {n} manifest lines: {stderr}")


def learned_parameter_count(shapes: dict) -> int:
    """Numbers in a state-dict shape table, batch-norm running statistics left out."""
    return sum(torch.Size(s).numel() for k, s in shapes.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def caused_by(error: BaseException, kind: type[E]) -> E:
    """:func:`anon.errors.find_cause` (the ``kind`` error Hydra's instantiate wrapped), asserted present."""
    cause = find_cause(error, kind)
    assert cause is not None, f"no {kind.__name__} in the cause chain of {error!r}"
    return cause


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count is ``n`` inside the block and what it was after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
