"""Fault injection on the tiny config: does a run survive, or refuse, every fault it should?

    python experiments/faults.py                 # every fault (a few minutes on 2 CPU cores)
    python experiments/faults.py -k ddp -k torn  # only faults whose name contains one of these
    make faults

One uninterrupted run is the reference. Each fault then runs the same command in its own folder and
injects one fault: a real ``kill -9`` at a chosen moment, a torn manifest line, a full disk, a second
run on the same folder, a signal to the launched DDP process, Ctrl-C; a ``survive`` fault is then
resumed by running the same command again and passes when every item has exactly one record and its
PNG and code are bitwise identical to the reference run. A ``config`` fault (a value or checkpoint no
run can work with) passes when the command exits 2 with one ``error:`` line and no traceback. A
``per_file`` fault (a bad input file) passes when that file gets its own ``failed`` record (or, for an
odd but valid file, its own ``done`` one) and the others are done. Also: an item alone gives what it
gives in a batch (keyed randomness), and moving the data or weights keeps the run folder's name.

Adding a fault: write ``def name(ctx) -> str`` decorated with ``@fault("survive" | "config" |
"per_file", "what it injects")``; it raises :class:`Failed` (with the reason) or returns a short
note. ``ctx`` gives the tiny world, the reference run and helpers (:class:`Context`). Faults that run
code inside the child process (kill at an exact point, a failing writer) add a hook to ``HOOKS``.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_IMAGES = 6
BASE = ["module.steps=20", "dataset.batch_size=2", "dataset.image_size=64"]


class Failed(Exception):
    """The fault got through: what went wrong, in one line."""


# ----------------------------------------------------------------------------- hooks in the child
def _kill_before_merge() -> None:
    import anon.fit.output_writer

    anon.fit.output_writer.write_run_summary = lambda run_dir: os.kill(os.getpid(), signal.SIGKILL)


def _full_disk_on_merge() -> None:
    import anon.atomic_write  # the manifest's write_atomic opens its temporary file there

    real_open = open

    class FullDisk:
        def __init__(self, path, *args, **kwargs):
            self.path, self.fh = Path(path), real_open(path, *args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text):
            self.fh.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    def patched(path, *args, **kwargs):
        if str(path).endswith(".tmp") and Path(path).name.startswith("manifest.jsonl"):
            return FullDisk(path, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    anon.atomic_write.open = patched


def _slow_batches(seconds: float = 1.5) -> None:
    """Each batch takes ``seconds`` longer (results unchanged): room to interrupt a run mid-way."""
    import anon.fit.module

    step = anon.fit.module.FalcoModule.predict_step

    def slow(self, batch, batch_idx):
        prediction = step(self, batch, batch_idx)
        time.sleep(seconds)
        return prediction

    anon.fit.module.FalcoModule.predict_step = slow


def _die_mid_line() -> None:
    """The second append writes half its first line, then the process is killed: a torn last line."""
    import anon.runtime.manifest

    append = anon.runtime.manifest.append_jsonl
    calls = []

    def torn(path, records):
        calls.append(path)
        if len(calls) == 2 and records:
            with open(path, "a", encoding="utf-8") as fh:
                line = json.dumps(records[0], sort_keys=True)
                fh.write(line[: len(line) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        append(path, records)

    anon.runtime.manifest.append_jsonl = torn


HOOKS: dict[str, Callable[[], None]] = {"kill_before_merge": _kill_before_merge, "full_disk_on_merge": _full_disk_on_merge,
                                        "slow_batches": _slow_batches, "very_slow_batches": lambda: _slow_batches(6.0),
                                        "die_mid_line": _die_mid_line}


def child_main(hook: str, args: list[str]) -> int:
    HOOKS[hook]()
    from anon.runtime.cli import main

    return main(args)


# ----------------------------------------------------------------------------- the context
@dataclass
class Context:
    root: Path
    world: Path
    references: dict

    def reference(self, *extra: str) -> Path:
        """An uninterrupted single-process run with these overrides (made once)."""
        key = tuple(extra)
        if key not in self.references:
            run_dir = self.folder(f"reference{len(self.references)}")
            out = self.run(["anonymize", *self.overrides(run_dir, *extra)])
            if out.returncode != 0:
                raise Failed(f"reference run failed: {last_line(out.stderr)}")
            self.references[key] = run_dir
        return self.references[key]

    def overrides(self, run_dir: Path, *extra: str, world: Path | None = None) -> list[str]:
        w = world or self.world
        keys = {e.split("=", 1)[0] for e in extra}
        return [f"dataset.images={w / 'images'}", f"dataset.inversions={w / 'inversions'}",
                f"dataset.neighbours={w / 'neighbours'}", *(b for b in BASE if b.split("=", 1)[0] not in keys),
                f"run_dir={run_dir}", *extra]

    def command(self, args: list[str], hook: str | None = None) -> list[str]:
        if hook is None:
            return [sys.executable, "-m", "anon.runtime.cli", *args]
        return [sys.executable, str(Path(__file__).resolve()), "--child", hook, "--", *args]

    def env(self) -> dict:
        e = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        return e

    def run(self, args: list[str], hook: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(args, hook), cwd=REPO, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, args: list[str], hook: str | None = None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(args, hook), cwd=REPO, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)

    def folder(self, name: str) -> Path:
        return self.root / "runs" / name

    def wait_for_records(self, proc: subprocess.Popen, run_dir: Path, n: int, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if len(shard_records(run_dir)) >= n:
                return
            time.sleep(0.05)
        raise Failed(f"the run ended (rc {proc.poll()}) before {n} records: {proc.stderr.read()[-300:]!r}")

    def resume_and_check(self, run_dir: Path, *extra: str) -> str:
        out = self.run(["anonymize", *self.overrides(run_dir, *extra)])
        if out.returncode != 0:
            raise Failed(f"the rerun exited {out.returncode}: {last_line(out.stderr)}")
        return check_survived(run_dir, self.reference(*(e for e in extra if not e.startswith("trainer="))))


def shard_records(run_dir: Path) -> list[dict]:
    """Every record of every rank shard (json by hand; a torn line is skipped and counted elsewhere)."""
    out = []
    for path in sorted(run_dir.glob("manifest.rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


def check_survived(run_dir: Path, reference: Path) -> str:
    """Every item exactly once in the shards and the merged manifest; PNGs and codes bitwise equal."""
    counts = Counter(r["id"] for r in shard_records(run_dir))
    expected = sorted(r["id"] for r in shard_records(reference))
    if sorted(counts) != expected:
        raise Failed(f"ids {sorted(set(expected) - set(counts))} missing, {sorted(set(counts) - set(expected))} extra")
    twice = sorted(i for i, c in counts.items() if c > 1)
    if twice:
        raise Failed(f"done twice: {twice}")
    merged = [json.loads(x)["id"] for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    if merged != expected:
        raise Failed(f"manifest.jsonl has {len(merged)} records, the shards {len(expected)}")
    if json.loads((run_dir / "summary.json").read_text())["images_done"] != len(expected):
        raise Failed("summary.json disagrees with the shards")
    for image_id in expected:
        a = np.asarray(Image.open(run_dir / "images" / f"{image_id}.png"))
        b = np.asarray(Image.open(reference / "images" / f"{image_id}.png"))
        if not np.array_equal(a, b):
            raise Failed(f"{image_id}.png differs from the reference (max |diff| "
                         f"{np.abs(a.astype(int) - b.astype(int)).max()})")
        ca = torch.load(run_dir / "codes" / f"{image_id}.pt", weights_only=True)
        cb = torch.load(reference / "codes" / f"{image_id}.pt", weights_only=True)
        if not torch.equal(ca, cb):
            raise Failed(f"{image_id}.pt differs from the reference (max |diff| {(ca - cb).abs().max():.3g})")
    leftovers = [p.name for p in run_dir.rglob("*.tmp")]
    if leftovers:
        raise Failed(f"temporary files left: {leftovers[:3]}")
    return f"{len(expected)} items once, bitwise identical"


def make_world(root: Path) -> Path:
    """Tiny-generator images with their true codes as inversions and other samples' codes as neighbours."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from anon.data.images import to_uint8
    from anon.runtime.outputs import save_png
    from anon.runtime.run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="anonymize")
    torch.manual_seed(7)
    generator = instantiate(cfg.generator).eval()
    with torch.no_grad():
        codes = {"inversions": generator.mapping(torch.randn(N_IMAGES, generator.z_dim)),
                 "neighbours": generator.mapping(torch.randn(N_IMAGES, generator.z_dim), truncation_psi=0.7)}
        pixels = to_uint8(generator(codes["inversions"]))
    for i in range(N_IMAGES):
        image_id = f"p{i % 3}/face{i}"
        save_png(pixels[i], root / "images" / f"{image_id}.png")
        for folder, w in codes.items():
            (root / folder / image_id).parent.mkdir(parents=True, exist_ok=True)
            torch.save(w[i].clone(), root / folder / f"{image_id}.pt")
    return root


# ----------------------------------------------------------------------------- the faults
FAULTS: list[tuple[str, str, str, Callable[[Context], str]]] = []  # (name, kind, what, function)
KINDS = ("survive", "per_file", "config")


def fault(kind: str, what: str):
    assert kind in KINDS

    def register(fn):
        FAULTS.append((fn.__name__, kind, what, fn))
        return fn
    return register


@fault("survive", "kill -9 after the last record, before the merge")
def kill_before_merge(ctx: Context) -> str:
    run_dir = ctx.folder("kill_before_merge")
    out = ctx.run(["anonymize", *ctx.overrides(run_dir)], hook="kill_before_merge")
    if out.returncode != -signal.SIGKILL or (run_dir / "manifest.jsonl").exists():
        raise Failed(f"the fault was not injected (rc {out.returncode})")
    return ctx.resume_and_check(run_dir) + ", merge rebuilt"


@fault("survive", "older merge left beside newer shards (rerun with nothing left to do)")
def stale_merge(ctx: Context) -> str:
    run_dir = ctx.folder("stale_merge")
    shutil.copytree(ctx.reference(), run_dir)
    lines = (run_dir / "manifest.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "manifest.jsonl").write_text("".join(lines[: len(lines) // 2]))
    from anon.stages.evaluate import done_records
    if len(done_records(run_dir)) != len(lines):
        raise Failed("anon evaluate would read the stale merge")
    return ctx.resume_and_check(run_dir) + ", evaluate reads the shards"


@fault("survive", "disk full (ENOSPC) while writing the merged manifest's temporary file")
def full_disk_on_merge(ctx: Context) -> str:
    run_dir = ctx.folder("full_disk")
    out = ctx.run(["anonymize", *ctx.overrides(run_dir)], hook="full_disk_on_merge")
    if out.returncode == 0 or "No space left" not in out.stderr:
        raise Failed(f"the fault was not injected (rc {out.returncode})")
    return ctx.resume_and_check(run_dir)


@fault("survive", "kill -9 in the middle of writing a manifest line (torn last line)")
def torn_line(ctx: Context) -> str:
    run_dir = ctx.folder("torn_line")
    out = ctx.run(["anonymize", *ctx.overrides(run_dir)], hook="die_mid_line")
    text = (run_dir / "manifest.rank0.jsonl").read_text()
    if out.returncode != -signal.SIGKILL or text.endswith("\n"):
        raise Failed(f"the fault was not injected (rc {out.returncode})")
    return ctx.resume_and_check(run_dir)


@fault("survive", "kill -9 mid-run, then resume")
def kill_mid_run(ctx: Context) -> str:
    run_dir = ctx.folder("kill_mid_run")
    proc = ctx.start(["anonymize", *ctx.overrides(run_dir)], hook="slow_batches")
    ctx.wait_for_records(proc, run_dir, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return ctx.resume_and_check(run_dir)


@fault("survive", "a second identical run on the same folder while the first runs")
def concurrent_runs(ctx: Context) -> str:
    run_dir = ctx.folder("concurrent")
    args = ["anonymize", *ctx.overrides(run_dir)]
    first = ctx.start(args, hook="very_slow_batches")
    ctx.wait_for_records(first, run_dir, 1)
    second = ctx.run(args)
    errors = [x for x in second.stderr.splitlines() if x.startswith("error:")]
    if second.returncode != 2 or len(errors) != 1 or "in use" not in errors[0]:
        first.kill()
        raise Failed(f"the second run was not refused (rc {second.returncode}): {last_line(second.stderr)}")
    _, err = first.communicate(timeout=300)
    if first.returncode != 0:
        raise Failed(f"the first run exited {first.returncode}: {last_line(err)}")
    return check_survived(run_dir, ctx.reference()) + ", second refused (exit 2)"


def _signal_launched(ctx: Context, name: str, sig: int, *extra: str) -> str:
    run_dir = ctx.folder(name)
    args = ["anonymize", *ctx.overrides(run_dir, *extra)]
    proc = ctx.start(args, hook="slow_batches", start_new_session=True)
    try:
        ctx.wait_for_records(proc, run_dir, 1)
        os.kill(proc.pid, sig)  # the launched process only, as SLURM or `kill PID` does
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != 128 + sig:
        raise Failed(f"exit {proc.returncode}, not {128 + sig}: {last_line(err)}")
    done = len({r["id"] for r in shard_records(run_dir)})
    if done >= N_IMAGES:
        raise Failed("the run did every item: the signal was ignored")
    if sig != signal.SIGINT and "trainer=ddp_cpu" in extra:
        rerun = ctx.run(args)
        if f"({done} already in the manifest)" not in rerun.stdout:
            raise Failed(f"the resume message miscounts: {last_line(rerun.stdout)}")
        return check_survived(run_dir, ctx.reference(*(e for e in extra if e != "trainer=ddp_cpu"))) + \
            f", resume counted {done} of both ranks"
    if (run_dir / "manifest.jsonl").read_text().count("\n") != done:
        raise Failed("not merged before exiting")
    return ctx.resume_and_check(run_dir, *extra)


@fault("survive", "SIGTERM to the launched process of a 2-rank DDP run (batch 1)")
def ddp_sigterm_to_launched_pid(ctx: Context) -> str:
    # batch_size=1: after a resume the ranks' batches hold other items, and batched float sums then
    # differ in the last bit (1/255 in a pixel); alone, an item is bitwise the same on any rank.
    return _signal_launched(ctx, "ddp_sigterm", signal.SIGTERM, "trainer=ddp_cpu", "dataset.batch_size=1")


@fault("survive", "Ctrl-C (SIGINT) to a single-process run")
def ctrl_c(ctx: Context) -> str:
    return _signal_launched(ctx, "ctrl_c", signal.SIGINT)


def _one_line_error(ctx: Context, name: str, *extra: str, expect: str) -> str:
    out = ctx.run(["anonymize", *ctx.overrides(ctx.folder(name), *extra)])
    errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    if out.returncode != 2 or len(errors) != 1 or "Traceback" in out.stderr or expect not in errors[0]:
        raise Failed(f"exit {out.returncode}, {len(out.stderr.splitlines())} stderr lines: {last_line(out.stderr)}")
    return f"{len(errors[0])} chars: {errors[0][:90]}..."


@fault("config", "dataset.batch_size=0")
def batch_size_zero(ctx: Context) -> str:
    return _one_line_error(ctx, "bs0", "dataset.batch_size=0", expect="dataset.batch_size")


@fault("config", "module.steps=0")
def steps_zero(ctx: Context) -> str:
    return _one_line_error(ctx, "steps0", "module.steps=0", expect="module.steps")


@fault("config", "module.steps=-5")
def steps_negative(ctx: Context) -> str:
    return _one_line_error(ctx, "steps_neg", "module.steps=-5", expect="module.steps")


def _checkpoint(ctx: Context, kind: str) -> Path:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from anon.runtime.run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="anonymize")
    path = ctx.root / f"{kind}.pt"
    if kind == "other_architecture":
        torch.save(instantiate(cfg.attribute).state_dict(), path)
    else:
        torch.save(instantiate(cfg.identity).backbone.state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(b"" if kind == "empty" else data[: len(data) // 3])
    return path


def _checkpoint_fault(kind: str, what: str) -> None:
    def run(ctx: Context) -> str:
        path = _checkpoint(ctx, kind)
        return _one_line_error(ctx, kind, f"identity.checkpoint={path}", expect=str(path))
    run.__name__ = f"{kind}_checkpoint"
    fault("config", what)(run)


for _kind, _what in (("other_architecture", "identity checkpoint of another architecture"),
                     ("empty", "empty identity checkpoint"), ("truncated", "truncated identity checkpoint")):
    _checkpoint_fault(_kind, _what)


# ----------------------------------------------------------------------------- bad input files
def world_copy(ctx: Context, name: str, ids: list[str] | None = None) -> Path:
    """A copy of the tiny world (only ``ids`` if given) to spoil one file of."""
    world = ctx.root / "worlds" / name
    shutil.copytree(ctx.world, world)
    if ids is not None:
        for file in [*world.rglob("*.png"), *world.rglob("*.pt")]:
            image_id = file.relative_to(file.parents[1]).with_suffix("").as_posix()
            if image_id not in ids:
                file.unlink()
        if _all_ids(world) != set(ids):
            raise Failed(f"the tiny world has no {sorted(set(ids) - _all_ids(world))}")
    return world


def _records_by_id(run_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in shard_records(run_dir):
        out.setdefault(record["id"], []).append(record)
    return out


def check_per_file(ctx: Context, name: str, world: Path, failing: set[str], done: set[str]) -> str:
    """Run on ``world`` twice: ``failing`` ids each get one one-line ``failed`` record, ``done`` ids are done,
    both runs exit 0 and the rerun adds nothing."""
    run_dir = ctx.folder(name)
    args = ["anonymize", *ctx.overrides(run_dir, world=world)]
    out = ctx.run(args)
    if out.returncode != 0:
        raise Failed(f"the run exited {out.returncode}: {last_line(out.stderr)}")
    records = _records_by_id(run_dir)
    if set(records) != failing | done:
        raise Failed(f"records for {sorted(records)}, expected {sorted(failing | done)}")
    for image_id, recs in records.items():
        want = "failed" if image_id in failing else "done"
        if [r["status"] for r in recs] != [want]:
            raise Failed(f"{image_id}: {[r['status'] for r in recs]}, expected one {want!r}")
    reasons = [records[i][0].get("error", "") for i in sorted(failing)]
    if any(not r or "\n" in r or len(r) > 400 for r in reasons):
        raise Failed(f"failure reasons not one short line: {reasons}")
    rerun = ctx.run(args)
    if rerun.returncode != 0 or "Traceback" in rerun.stderr:
        raise Failed(f"the rerun exited {rerun.returncode}: {last_line(rerun.stderr)}")
    if len(shard_records(run_dir)) != len(records):
        raise Failed("the rerun added records")
    return f"{len(failing)} failed ({reasons[0][:70] if reasons else ''}...), {len(done)} done, rerun exit 0"


def _all_ids(world: Path) -> set[str]:
    return {p.relative_to(world / "images").with_suffix("").as_posix() for p in (world / "images").rglob("*.png")}


@fault("per_file", "an inversion code file holding a pickled object, not a tensor")
def pickled_object_code(ctx: Context) -> str:
    import argparse as _argparse
    import pickle

    world = world_copy(ctx, "pickled_code")
    (world / "inversions" / "p1" / "face1.pt").write_bytes(pickle.dumps(_argparse.Namespace(evil=True)))
    return check_per_file(ctx, "pickled_code", world, {"p1/face1"}, _all_ids(world) - {"p1/face1"})


@fault("per_file", "a symlink loop and a.jpg beside a.png in the input folder")
def symlink_loop_and_same_stem(ctx: Context) -> str:
    world = world_copy(ctx, "loop_stem", ids=["p0/face0"])
    images = world / "images"
    (images / "loop.jpg").symlink_to("loop.jpg")
    face = Image.open(images / "p0" / "face0.png").convert("RGB")
    face.save(images / "a.png")
    face.save(images / "a.jpg", quality=95)
    for folder in ("inversions", "neighbours"):
        for stem in ("a.jpg", "a.png"):
            shutil.copy(world / folder / "p0" / "face0.pt", world / folder / f"{stem}.pt")
    return check_per_file(ctx, "loop_stem", world, {"loop"}, {"p0/face0", "a.jpg", "a.png"})


@fault("per_file", "a face saved as 16-bit grayscale PNG (I;16)")
def sixteen_bit_gray(ctx: Context) -> str:
    """The I;16 face must decode by scaling: the same output as its 8-bit grey twin, far from a white frame's."""
    outputs = {}
    for kind in ("i16", "gray8", "white"):
        world = world_copy(ctx, f"mode_{kind}", ids=["p2/face2"])
        path = world / "images" / "p2" / "face2.png"
        gray = np.asarray(Image.open(path).convert("L")).astype(np.uint16)
        if kind == "i16":
            Image.fromarray(gray * 257).save(path)  # numpy uint16 -> mode I;16
            if Image.open(path).mode != "I;16":
                raise Failed(f"the fault was not injected (saved as {Image.open(path).mode})")
        else:
            Image.fromarray((gray if kind == "gray8" else np.full_like(gray, 255)).astype(np.uint8), "L").save(path)
        check_per_file(ctx, f"mode_{kind}", world, set(), {"p2/face2"})
        outputs[kind] = np.asarray(Image.open(ctx.folder(f"mode_{kind}") / "images" / "p2" / "face2.png")).astype(int)
    to_gray, to_white = (np.abs(outputs["i16"] - outputs[k]).max() for k in ("gray8", "white"))
    if to_gray > 1 or to_white < 32:
        raise Failed(f"I;16 output is {to_gray} from the 8-bit grey run's and {to_white} from the white frame's")
    return f"done; max |diff| to the 8-bit grey run {to_gray}, to the white-frame run {to_white}"


def _item_diff(run_dir: Path, reference: Path, image_id: str) -> tuple[int, float, float]:
    """Max |diff| of one item's PNG (0-255) and code between two runs, and the code's largest magnitude."""
    a = np.asarray(Image.open(run_dir / "images" / f"{image_id}.png")).astype(int)
    b = np.asarray(Image.open(reference / "images" / f"{image_id}.png")).astype(int)
    ca = torch.load(run_dir / "codes" / f"{image_id}.pt", weights_only=True)
    cb = torch.load(reference / "codes" / f"{image_id}.pt", weights_only=True)
    return int(np.abs(a - b).max()), float((ca - cb).abs().max()), float(cb.abs().max())


@fault("survive", "one item anonymised alone vs after the others, and vs in a batch with another (keyed randomness)")
def alone_vs_batch(ctx: Context) -> str:
    image_id = "p0/face3"  # face i lies in p{i % 3}; the fourth item of the sorted ids
    world = world_copy(ctx, "alone", ids=[image_id])
    run_dir = ctx.folder("alone")
    out = ctx.run(["anonymize", *ctx.overrides(run_dir, "dataset.batch_size=1", world=world)])
    if out.returncode != 0:
        raise Failed(f"the run exited {out.returncode}: {last_line(out.stderr)}")
    # one at a time after three other items: any draw from a shared generator would shift -> bitwise
    pixel, code, _ = _item_diff(run_dir, ctx.reference("dataset.batch_size=1"), image_id)
    if pixel or code:
        raise Failed(f"alone vs after three others: max |diff| {pixel}/255 in pixels, {code:.3g} in the code")
    # in a batch of 2, batched float sums may differ in the last bits (not a random draw: that moves whole
    # levels): within 1e-6 of the code's scale and one grey level
    pixel, code, scale = _item_diff(run_dir, ctx.reference(), image_id)
    if pixel > 1 or code > 1e-6 * max(scale, 1.0):
        raise Failed(f"alone vs batch of 2: max |diff| {pixel}/255 in pixels, {code:.3g} in the code (|w| <= {scale:.3g})")
    inverted = _inverter_alone_vs_batch(ctx)
    return (f"alone = after three others bitwise; vs batch of 2: max |diff| {pixel}/255, code {code:.3g} "
            f"(|w| <= {scale:.3g}); inverter's random starts alone vs batch: {inverted:.3g}")


def _inverter_alone_vs_batch(ctx: Context) -> float:
    """The photos/pipeline inverter (random starts) on three faces in one batch and on the last alone."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from anon.method.inversion import OptimisationInverter
    from anon.runtime.run import CONFIG_DIR
    from anon.seeding import built_seeded

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="anonymize")
    generator = built_seeded(0, "generator", lambda: instantiate(cfg.generator)).eval()
    ids = ["p0/face0", "p1/face1", "p2/face2"]
    images = torch.stack([torch.from_numpy(np.array(Image.open(ctx.world / "images" / f"{i}.png").convert("RGB")))
                          .permute(2, 0, 1).float() / 127.5 - 1 for i in ids])
    inverter = OptimisationInverter(generator, steps=3, starts=2, init="random", seed=5)
    batch = inverter(images, ids=ids)
    alone = inverter(images[2:], ids=ids[2:])
    diff = float((batch[2:] - alone).abs().max())
    if diff > 1e-6 * max(float(alone.abs().max()), 1.0):
        raise Failed(f"the inverter's result for {ids[2]} alone differs from in a batch by {diff:.3g}")
    return diff


# ----------------------------------------------------------------------------- where the run lands
def _run_name(world: Path, weights_dir: Path) -> str:
    from hydra import compose, initialize_config_dir

    from anon.runtime.run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="anonymize", overrides=[
            f"dataset.images={world / 'images'}", f"dataset.inversions={world / 'inversions'}",
            f"dataset.neighbours={world / 'neighbours'}", *BASE, f"weights_dir={weights_dir}",
            "identity=mobilefacenet"])  # a checkpoint under weights_dir enters the hash
    return str(cfg.run_name)


@fault("config", "the same config with the data and weights_dir on another path; then one image more")
def run_name_machine_free(ctx: Context) -> str:
    here = _run_name(ctx.world, ctx.root / "home1" / "weights")
    # another mount: the stage layout below the mount point (the last folders of a code path) is kept
    moved = ctx.root / "mnt2" / ctx.root.name / ctx.world.name
    shutil.copytree(ctx.world, moved)
    there = _run_name(moved, ctx.root / "home2" / "cache" / "weights")
    if here != there:
        raise Failed(f"moved data/weights: {here} -> {there}")
    shutil.copy(moved / "images" / "p0" / "face0.png", moved / "images" / "p0" / "extra.png")
    changed = _run_name(moved, ctx.root / "home2" / "cache" / "weights")
    if changed == here:
        raise Failed(f"one image more kept the name {here}")
    return f"moved: {here} both; one image more: {changed}"


# ----------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="only faults whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    chosen = [f for f in FAULTS if not args.k or any(k in f[0] for k in args.k)]
    root = Path(tempfile.mkdtemp(prefix="anon-faults-"))
    started = time.time()
    try:
        ctx = Context(root, make_world(root / "world"), {})
        passed = Counter()
        print(f"{'fault':32} {'kind':8} result")
        for name, kind, what, fn in chosen:
            t0 = time.time()
            try:
                note, ok = fn(ctx), True
            except Failed as err:
                note, ok = f"FAILED: {err}", False
            passed[kind] += ok
            print(f"{name:32} {kind:8} {'ok' if ok else '--'} {time.time() - t0:4.0f} s  {what}: {note}", flush=True)
        total = Counter(kind for _, kind, _, _ in chosen)
        print(f"\nfaults injected: {len(chosen)}; survived with every item exactly once and bitwise identical to an "
              f"uninterrupted run (an item alone vs in a batch: within float rounding): {passed['survive']}/"
              f"{total['survive']}; bad inputs with a per-file record: {passed['per_file']}/{total['per_file']}; "
              f"bad configs with a one-line error (moved paths: the same run folder): "
              f"{passed['config']}/{total['config']}  ({time.time() - started:.0f} s)")
        return 0 if sum(passed.values()) == len(chosen) else 1
    finally:
        if args.keep:
            print(f"work folder: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2], sys.argv[4:]))
    sys.exit(main())
