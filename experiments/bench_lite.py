"""Cost of the whole lite pipeline per face, stage by stage, on this machine (the issue's <= 10 s target).

    python experiments/bench_lite.py                            # 8 shared LFW photos, the lite default and z-only
    python experiments/bench_lite.py --n 4 --variants zonly     # a quicker look
    python experiments/bench_lite.py --data DIR --json out.json

Each variant runs ``anon pipeline experiment=lite`` one stage at a time (``only=align``, ``fakes``,
``invert``, ``pair``, ``anonymize``) into a fresh output folder, then ``anon evaluate`` with dlib as
``make demo`` does, and times every stage. ``fakes`` (the seeded pool of 2000 fakes) is built once per
machine and cached, so it is shown apart and left out of the per-face total; every other stage is
divided by the number of photos. The load average is printed with the timings: the machine may be
shared, and a loaded CPU stretches every number. ``anon`` is imported before torch, so OpenMP's idle
threads sleep as in an ``anon`` command (``OMP_WAIT_POLICY=PASSIVE``, printed in the header).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import anon  # noqa: E402,F401  (before torch: sets OMP_WAIT_POLICY as the `anon` command does)

# default: `experiment=lite` as it is (pivotal inversion, lite_all offsets, view-averaged identity, landmark
# and colour terms); zonly: the previous default (z-only optimisation inversion, z trainable, no terms)
VARIANTS = {"default": [], "zonly": ["inverter=optimisation", "latent=whole", "identity=mobilefacenet", "loss/terms=[]"]}
STAGES = ("align", "fakes", "invert", "pair", "anonymize")


def default_photos(n: int, folder: Path) -> Path:
    """The first ``n`` people of the shared LFW sample, one photo each, copied into ``folder``."""
    shared = Path(os.environ.get("ANON_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    lfw = shared / "lfw_sample"
    if not lfw.is_dir():
        raise SystemExit(f"no shared LFW sample at {lfw}: pass --data DIR (or set $ANON_SHARED_DATA)")
    folder.mkdir(parents=True, exist_ok=True)
    for person in sorted(p for p in lfw.iterdir() if p.is_dir())[:n]:
        photo = sorted(person.glob("*.jpg"))[0]
        shutil.copyfile(photo, folder / photo.name)
    return folder


def time_variant(name: str, extra: list[str], data: Path, out: Path, n: int, fakes_dir: Path | None = None) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from anon.runtime.run import CONFIG_DIR
    from anon.stages.evaluate import evaluate
    from anon.stages.pipeline import run_pipeline

    base = ["experiment=lite", f"dataset.images={data}", f"output_root={out}", *extra]
    if fakes_dir:  # a pool built before (same generator, attribute network and fakes config)
        base.append(f"stages.fakes_dir={fakes_dir}")
    seconds, cpu = {}, {}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        configs = {s: compose("pipeline", overrides=[*base, f"only={s}"]) for s in STAGES}
        eval_cfg = compose("evaluate", overrides=["evaluators=[dlib_resnet_crops]",
                                                  "+thresholds.dlib_resnet_crops=null", f"output_root={out}"])
    summary = {}
    def timed(stage, call):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = call()
        seconds[stage], cpu[stage] = time.perf_counter() - started, time.process_time() - started_cpu
        print(f"[bench] {name} {stage}: {seconds[stage]:.1f} s wall, {cpu[stage]:.1f} s CPU (all threads), "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        return result

    for stage in STAGES:
        summary = timed(stage, lambda stage=stage: run_pipeline(configs[stage]))
    with open_dict(eval_cfg):
        eval_cfg.run_dir = str(summary["run_dir"])
    report = timed("evaluate", lambda: evaluate(eval_cfg))
    per_face = {k: v / n for k, v in seconds.items() if k != "fakes"}
    per_face_cpu = {k: v / n for k, v in cpu.items() if k != "fakes"}
    own = report["evaluators"]["dlib_resnet_crops"]["attacks"]["own_original"]
    return {"variant": name, "overrides": extra, "faces": n, "seconds": seconds, "per_face_s": per_face,
            "per_face_total_s": sum(per_face.values()),
            "cpu_seconds": cpu, "per_face_cpu_s": per_face_cpu, "per_face_cpu_total_s": sum(per_face_cpu.values()), "load_after": os.getloadavg(),
            "inversion_matches": own["inversion"], "output_matches": own["output"],
            "verdict": report["verdict"]["pass_rate"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of photos (default: --n shared LFW photos)")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fakes-dir", type=Path, help="reuse this fake pool (the one-off fakes stage is skipped)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_lite_") as tmp:
        data = args.data or default_photos(args.n, Path(tmp) / "photos")
        n = len([p for p in data.rglob("*") if p.is_file()])
        out = Path(tmp) / "out"  # one folder: the second variant reuses the cached fakes and alignment
        print(f"[bench] {n} photos, torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
              f"{os.environ.get('OMP_WAIT_POLICY')}, load average before "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for name in args.variants:
            rows.append(time_variant(name, VARIANTS[name], data.resolve(), out, n, args.fakes_dir))
    cols = ["align", "invert", "pair", "anonymize", "evaluate"]
    print("\nwall s per face (CPU s per face, all threads, in brackets: less sensitive to a shared machine)")
    print("| variant | " + " | ".join(cols) + " | total | fakes (once) s | inversion matches | load after |")
    print("|---" * (len(cols) + 5) + "|")
    for r in rows:
        inv = r["inversion_matches"]
        print(f"| {r['variant']} | " + " | ".join(f"{r['per_face_s'][c]:.2f} ({r['per_face_cpu_s'][c]:.2f})"
                                                  for c in cols)
              + f" | {r['per_face_total_s']:.2f} ({r['per_face_cpu_total_s']:.2f}) | {r['seconds']['fakes']:.1f} | "
              f"{inv['matched'] if inv else '-'}/{inv['evaluable'] if inv else '-'} | "
              f"{' '.join(f'{x:.2f}' for x in r['load_after'])} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
