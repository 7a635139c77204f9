"""Faults around a whole run: a merge that never happened, torn shards, two runs on one folder,
signals to the launched process, Ctrl-C, and configs no run can work with."""
import errno
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import anon.runtime.summary
from anon.errors import ConfigError
from anon.runtime.run import anonymize
from anon.stages.evaluate import done_records
from tests.conftest import TINY_IMAGES, tiny_overrides
from tests.helpers import REPO, anon_command, env, run_anon, shard_lines, wait_for_records

pytestmark = pytest.mark.slow


def _shard_truth(run_dir: Path) -> str:
    """The merged manifest the shards call for, built here by hand: last record per id, sorted by id."""
    latest = {r["id"]: r for r in shard_lines(run_dir)}
    return "".join(json.dumps(latest[k], sort_keys=True) + "\n" for k in sorted(latest))


def test_rerun_with_nothing_left_rebuilds_a_missing_or_stale_merge(tiny_cfg):
    cfg = tiny_cfg()
    run_dir = Path(anonymize(cfg)["run_dir"])
    truth = _shard_truth(run_dir)
    assert (run_dir / "manifest.jsonl").read_text() == truth
    # killed after the last record, before the merge
    (run_dir / "manifest.jsonl").unlink()
    (run_dir / "summary.json").unlink()
    summary = anonymize(cfg)
    assert (run_dir / "manifest.jsonl").read_text() == truth and summary["images_done"] == TINY_IMAGES
    # an older merge of fewer records
    (run_dir / "manifest.jsonl").write_text("".join(truth.splitlines(keepends=True)[:2]))
    assert len(done_records(run_dir)) == TINY_IMAGES  # evaluate reads the shards' truth
    summary = anonymize(cfg)
    assert (run_dir / "manifest.jsonl").read_text() == truth and summary["images_done"] == TINY_IMAGES
    assert json.loads((run_dir / "summary.json").read_text())["images_done"] == TINY_IMAGES
    assert Counter(r["id"] for r in shard_lines(run_dir)).most_common(1)[0][1] == 1, "nothing redone"


def test_full_disk_during_the_merge_is_repaired_by_the_rerun(tiny_cfg, monkeypatch):
    cfg = tiny_cfg()

    def full_disk(run_dir):
        (Path(run_dir) / "manifest.tmp").write_text('{"id": "person0/im')
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(anon.runtime.summary, "merge", full_disk)
        with pytest.raises(OSError, match="No space"):
            anonymize(cfg)
    run_dir = Path(cfg.run_dir)
    assert len({r["id"] for r in shard_lines(run_dir)}) == TINY_IMAGES and not (run_dir / "manifest.jsonl").exists()
    anonymize(cfg)
    assert (run_dir / "manifest.jsonl").read_text() == _shard_truth(run_dir)
    assert len(_shard_truth(run_dir).splitlines()) == TINY_IMAGES


def test_torn_shard_line_is_redone_once_and_kept(tiny_cfg):
    cfg = tiny_cfg()
    run_dir = Path(anonymize(cfg)["run_dir"])
    shard = run_dir / "manifest.rank0.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["id"]
    shard.write_text("".join(lines[:-1]) + lines[-1][:25])  # killed while writing the last line
    anonymize(cfg)
    records = [json.loads(x) for x in shard.read_text().splitlines()]  # every line parses
    assert Counter(r["id"] for r in records) == Counter({i: 1 for i in {r["id"] for r in records}})
    assert len(records) == TINY_IMAGES and torn_id in {r["id"] for r in records}
    assert len((run_dir / "manifest.jsonl").read_text().splitlines()) == TINY_IMAGES


@pytest.mark.parametrize("override", ["dataset.batch_size=0", "dataset.batch_size=-2", "module.steps=0",
                                      "module.steps=-1"])
def test_unworkable_sizes_are_config_errors(tiny_cfg, override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.") + " must be"):
        anonymize(tiny_cfg(override))


def test_zero_batch_size_is_one_line_on_the_command_line(tiny_world, tmp_path):
    out = run_anon("anonymize", *tiny_overrides(tiny_world, tmp_path / "run"), "dataset.batch_size=0")
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "dataset.batch_size" in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def _start(args, **kwargs):
    return subprocess.Popen(anon_command(*args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_second_run_on_the_same_folder_is_refused(tiny_world, tmp_path):
    run_dir = tmp_path / "run"
    args = ["anonymize", *tiny_overrides(tiny_world, run_dir), "module.steps=200", "dataset.batch_size=1"]
    first = _start(args)
    wait_for_records(first, run_dir, 1)
    second = run_anon(*args)
    assert first.poll() is None, "the first run must still be running while the second starts"
    first.send_signal(signal.SIGTERM)  # no need to wait for all of it: stop after the batch in flight
    out, err = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
    assert "in use by another anon process" in errors[0] and f"pid {first.pid} " in errors[0]
    counts = Counter(r["id"] for r in shard_lines(run_dir))
    assert set(counts.values()) == {1}, counts
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / ".anon.lock").exists()


def _sigint_as_in_a_terminal() -> None:
    """A shell that starts the tests in the background (``make test &``, a CI runner) sets SIGINT to
    ignored, and a child inherits that; Ctrl-C in a terminal reaches a process whose SIGINT is not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_merges_the_manifest_before_exiting(tiny_world, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(["anonymize", *tiny_overrides(tiny_world, run_dir), "module.steps=30", "dataset.batch_size=1"],
                  preexec_fn=_sigint_as_in_a_terminal)
    wait_for_records(proc, run_dir, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in out and "run the same command to resume" in out
    assert (run_dir / "manifest.jsonl").read_text() == _shard_truth(run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["images_done"] == len(shard_lines(run_dir))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_to_the_launched_ddp_process_stops_the_ranks(tiny_world, tmp_path, sig):
    """SLURM and `kill PID` signal the process the user started (not its group): the ranks must still
    finish their batch and stop; the rerun counts every rank's records as already done."""
    overrides = [o for o in tiny_overrides(tiny_world, tmp_path / "unused") if not o.startswith("run_dir=")]
    args = ["anonymize", *overrides, "module.steps=40", "dataset.batch_size=1", "trainer=ddp_cpu",
            f"output_root={tmp_path}"]
    proc = _start(args, start_new_session=True)
    run_dir = wait_for_records(proc, tmp_path / "runs", 1)
    os.kill(proc.pid, sig)  # the launched process only
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "run the same command to resume" in out
    first = Counter(r["id"] for r in shard_lines(run_dir))
    assert set(first.values()) == {1} and len(first) < TINY_IMAGES, first
    second = run_anon(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"({len(first)} already in the manifest)" in second.stdout
    counts = Counter(r["id"] for r in shard_lines(run_dir))
    assert len(counts) == TINY_IMAGES and set(counts.values()) == {1}, counts
