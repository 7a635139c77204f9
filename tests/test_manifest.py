"""The manifest files on their own: torn last lines, stale merges, failed writes, the folder lock."""
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import anon.atomic_write
from anon.runtime.folder_lock import LOCK_NAME, FolderInUseError, FolderLock
from anon.runtime.manifest import ManifestWriter, current_records, merged_is_stale, write_atomic
from anon.photos.cli import _append, recorded_sources
from tests.helpers import REPO, env


def _parsed(path):
    """Lines that parse (json.loads by hand: the reader under test skips the others)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def test_record_after_a_torn_line_is_kept(tmp_path):
    writer = ManifestWriter(tmp_path, rank=0)
    writer.append([{"id": "a", "status": "done"}])
    with open(writer.path, "a") as fh:
        fh.write('{"id": "b", "stat')  # the process died mid-line
    writer.append([{"id": "c", "status": "done"}])
    assert [r["id"] for r in _parsed(writer.path)] == ["a", "c"]
    assert writer.path.read_text().endswith("\n") and writer.path.read_text().count("\n") == 2


def test_torn_line_with_no_newline_at_all_is_cut(tmp_path):
    writer = ManifestWriter(tmp_path, rank=1)
    writer.path.write_text('{"id": "x", "sta')
    writer.append([{"id": "y", "status": "failed"}])
    assert [r["id"] for r in _parsed(writer.path)] == ["y"]


def test_photos_manifest_record_after_a_torn_line_is_kept(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    _append(manifest, {"source": "/in/a.jpg", "status": "done"})
    with open(manifest, "a") as fh:
        fh.write('{"source": "/in/b.jp')
    _append(manifest, {"source": "/in/c.jpg", "status": "done"})
    assert recorded_sources(tmp_path) == {"/in/a.jpg", "/in/c.jpg"}


def test_stale_merge_is_detected_and_shards_win(tmp_path):
    writer = ManifestWriter(tmp_path, rank=0)
    writer.append([{"id": f"i{k}", "status": "done"} for k in range(4)])
    assert merged_is_stale(tmp_path)  # never merged
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "i0", "status": "done"}, sort_keys=True) + "\n")
    assert merged_is_stale(tmp_path)
    assert sorted(r["id"] for r in current_records(tmp_path)) == ["i0", "i1", "i2", "i3"]


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "manifest.jsonl"
    target.write_text("old\n")

    def full_disk(path, *args, **kwargs):
        Path(path).write_text("half a line")  # the disk filled up part-way through
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(anon.atomic_write, "open", full_disk, raising=False)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new\n" * 100)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]


def _hold_lock(folder):
    code = ("import sys, time; from anon.runtime.folder_lock import FolderLock; lock = FolderLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_a_second_writer_and_a_killed_holder_frees_it(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(FolderInUseError, match=f"in use by another anon process \\(pid {holder.pid} "):
            FolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # left behind by kill -9, but no longer locked
    with FolderLock(tmp_path):
        assert f"pid={os.getpid()} " in (tmp_path / LOCK_NAME).read_text()
    assert not (tmp_path / LOCK_NAME).exists()


def test_photos_refuses_an_output_folder_in_use(tmp_path):
    (tmp_path / "in").mkdir()
    holder = _hold_lock(tmp_path / "out")
    try:
        run = subprocess.run([sys.executable, "-m", "anon.photos.cli", f"input={tmp_path / 'in'}",
                              f"output={tmp_path / 'out'}"], cwd=REPO, env=env(), capture_output=True, text=True,
                             timeout=120)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(errors) == 1 and "in use" in errors[0] and str(holder.pid) in errors[0]
    assert "Traceback" not in run.stderr
