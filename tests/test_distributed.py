"""Two CPU processes (gloo): every image exactly once, all outputs in one run folder."""
import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from anon.data.datamodule import shard
from anon.runtime.run import anonymize
from tests.conftest import TINY_IMAGES
from tests.helpers import REPO, shard_lines
from tests.helpers import env as helpers_env

pytestmark = pytest.mark.slow


def test_shards_are_disjoint_complete_and_stable():
    ids = [f"x{i:03d}" for i in range(41)]
    for world in (1, 2, 3, 8):
        shards = [shard(list(reversed(ids)), r, world) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert sorted(flat) == ids and len(flat) == len(set(flat))
        assert shards == [shard(ids, r, world) for r in range(world)]


def test_two_process_run_processes_each_image_once(tiny_cfg):
    summary = anonymize(tiny_cfg("trainer=ddp_cpu", "dataset.batch_size=2"))
    run_dir = Path(summary["run_dir"])
    lines = shard_lines(run_dir)
    counts = Counter(r["id"] for r in lines)
    assert len(counts) == TINY_IMAGES and set(counts.values()) == {1}
    assert {r["rank"] for r in lines} == {0, 1}
    assert sorted(p.name for p in run_dir.glob("manifest.rank*.jsonl")) == ["manifest.rank0.jsonl",
                                                                              "manifest.rank1.jsonl"]
    assert len(list((run_dir / "images").rglob("*.png"))) == TINY_IMAGES
    assert summary["images_done"] == TINY_IMAGES
    # The logged loss curve is reduced over both ranks' images, not rank 0's batches only: at step 0 it is
    # the mean initial loss of every image in the manifest.
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    first = next(r for r in rows if r.get("step/images") and int(float(r["step"])) == 0)
    assert int(float(first["step/images"])) == TINY_IMAGES
    initial = [json.loads(x)["loss_initial"]["total"] for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert float(first["step/total"]) == pytest.approx(sum(initial) / len(initial), rel=1e-5)
    # every step of the curve: the two ranks' sum is the curve one process logs for the same images
    alone = Path(anonymize(tiny_cfg("dataset.batch_size=2", "run_dir=" + str(run_dir.parent / "alone")))["run_dir"])
    assert step_curve(run_dir).keys() == step_curve(alone).keys() == set(range(4))
    for step, terms in step_curve(alone).items():
        assert terms.keys() == step_curve(run_dir)[step].keys() and "step/similarity" in terms
        assert step_curve(run_dir)[step] == pytest.approx(terms, rel=1e-5)


def step_curve(run_dir: Path) -> dict[int, dict[str, float]]:
    """``{step: {"step/<term>": value}}`` from the run's metrics.csv."""
    rows = csv.DictReader(next(run_dir.rglob("metrics.csv")).open())
    return {int(float(r["step"])): {k: float(v) for k, v in r.items() if k.startswith("step/") and v}
            for r in rows if r.get("step/images")}


def test_a_rank_without_images_still_takes_part(tiny_cfg):
    """One pending image, two ranks: rank 1 runs one empty batch (Lightning refuses an empty loader on one
    rank only, and the step curve's sum and the merge barrier need every rank), the run completes."""
    summary = anonymize(tiny_cfg("trainer=ddp_cpu", "dataset.limit=1", "module.steps=2"))
    run_dir = Path(summary["run_dir"])
    assert summary["images_done"] == 1 and [r["rank"] for r in shard_lines(run_dir)] == [0]
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    assert [int(float(r["step/images"])) for r in rows if r.get("step/images")] == [1, 1]


WARM_PARENT_RUN = """
import sys
from pathlib import Path
import torch
from anon.runtime.run import anonymize
from tests.conftest import compose_config, tiny_overrides
torch.ones(1 << 20).exp_()  # a 2-thread OpenMP region: this process now holds a GNU OpenMP thread pool
world, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
summary = anonymize(compose_config(*tiny_overrides(world, run_dir, "trainer=ddp_cpu", "dataset.batch_size=2")))
print("images done", summary["images_done"])
"""


def test_two_process_run_after_torch_work_with_omp_num_threads_set(tiny_world, tmp_path):
    """``OMP_NUM_THREADS=2`` exported (SLURM, torchrun) and torch work done in the process before the run
    (``anon pipeline``, a notebook, a test session): the forked ranks used to wait forever for the parent's
    OpenMP workers (anon/fit/forked_threads.py). Run in its own process group with a deadline, so a hang
    fails here and leaves no rank behind."""
    env = {**helpers_env(), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-c", WARM_PARENT_RUN, str(tiny_world), str(tmp_path / "run")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung ranks too (they ignore SIGTERM: StopFlag)
        out, _ = proc.communicate()
        pytest.fail(f"the two-rank run hung with OMP_NUM_THREADS=2 after torch work in the parent: {out[-1500:]}")
    assert proc.returncode == 0, out[-3000:]
    assert f"images done {TINY_IMAGES}" in out
    assert len(shard_lines(tmp_path / "run")) == TINY_IMAGES
