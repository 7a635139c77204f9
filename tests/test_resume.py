"""Kill a run mid-way, start the same command again: nothing lost, nothing done twice."""
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.conftest import TINY_IMAGES, tiny_overrides
from tests.helpers import REPO, anon_command, env, run_anon, shard_lines

pytestmark = pytest.mark.slow


def test_killed_run_resumes_from_manifest(tiny_world, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_world, tmp_path / "unused") if not o.startswith("run_dir=")]
    args = ["anonymize", *overrides, "module.steps=30", "dataset.batch_size=1", f"output_root={tmp_path}"]
    proc = subprocess.Popen(anon_command(*args), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    run_dirs = []
    while time.time() < deadline and proc.poll() is None:
        run_dirs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
        if run_dirs and len(shard_lines(run_dirs[0])) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be interrupted: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = run_dirs[0]
    done_before = {r["id"] for r in shard_lines(run_dir)}
    assert 2 <= len(done_before) < TINY_IMAGES

    second = run_anon(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"({len(done_before)} already in the manifest)" in second.stdout
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name], "same config -> same run folder"
    counts = Counter(r["id"] for r in shard_lines(run_dir))
    assert len(counts) == TINY_IMAGES and set(counts.values()) == {1}, counts
    assert all((run_dir / "images" / f"{i}.png").exists() for i in counts)
    assert len((run_dir / "manifest.jsonl").read_text().splitlines()) == TINY_IMAGES


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_stops_two_process_run_cleanly_and_restart_completes(tiny_world, tmp_path, sig):
    """Preemption under DDP: every rank gets the signal (as SLURM sends it), finishes its batch,
    the run exits with 128+signal; the restart completes with every image exactly once."""
    overrides = [o for o in tiny_overrides(tiny_world, tmp_path / "unused") if not o.startswith("run_dir=")]
    args = ["anonymize", *overrides, "module.steps=40", "dataset.batch_size=1", "trainer=ddp_cpu",
            f"output_root={tmp_path}"]
    proc = subprocess.Popen(anon_command(*args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        run_dirs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
        if run_dirs and len(shard_lines(run_dirs[0])) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before the signal"
    import os
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "run the same command to resume" in out
    run_dir = run_dirs[0]
    first = Counter(r["id"] for r in shard_lines(run_dir))
    assert set(first.values()) == {1} and len(first) < TINY_IMAGES
    second = run_anon(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    counts = Counter(r["id"] for r in shard_lines(run_dir))
    assert len(counts) == TINY_IMAGES and set(counts.values()) == {1}, counts
