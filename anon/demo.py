"""``make demo``: a real anonymisation on this machine, offline, with the lite model set.

    python -m anon.demo                 # faces that ship inside installed packages (scikit-image's astronaut)
    python -m anon.demo data=DIR        # any folder of photos (recursive)
    python -m anon.demo data=DIR limit=50 out=outputs/demo

Runs ``anon pipeline experiment=lite`` (MTCNN + FFHQ crop, DCGAN inversion, seeded fake pool,
pairing, MobileFaceNet-driven anonymisation), then ``anon evaluate`` with dlib's ResNet -- a
different recogniser from the one optimised against -- on the original, the inversion and the output
(so the anonymisation's own gain is visible), prints the inversion fidelity (inversions that dlib
matches to their own original, k/n) and the two-half verdict (privacy / utility / passed counts, from
``report.json`` read through :class:`anon.report.schema.Report`), and writes ``grid.png`` (aligned
original | anonymised, captioned with the generator's resolution) beside the run's images, manifest
and verification report.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from anon.data.images import load_image
from anon.lite.packages import resolve
from anon.report.schema import Report
from anon.runtime.run import CONFIG_DIR, one_line_errors
from anon.report.visuals import save_captioned_grid

PACKAGED_FACES = {"astronaut.png": "pkg://skimage/data/astronaut.png"}  # NASA photo, public domain


def packaged_faces(folder: Path) -> Path:
    """Copy the public-domain face photos that ship inside installed packages into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, location in PACKAGED_FACES.items():
        if not (folder / name).exists():
            shutil.copyfile(resolve(location), folder / name)
    return folder


def parse(argv: list[str]) -> dict:
    args = {"data": None, "out": "outputs/demo", "limit": None, "grid_rows": 12}
    for item in argv:
        key, _, value = item.partition("=")
        if key not in args or not value:
            raise SystemExit(f"usage: python -m anon.demo [data=DIR] [out=DIR] [limit=N] [grid_rows=N] (got {item!r})")
        args[key] = value
    return args


def write_grid(run_dir: Path, path: Path, rows: int, generated_px: int) -> Path | None:
    records = [json.loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    done = [r for r in records if r["status"] == "done"][:rows]
    if not done:
        return None
    originals = torch.stack([load_image(r["source"], generated_px) for r in done])
    anonymised = torch.stack([load_image(run_dir / r["image"], generated_px) for r in done])
    return save_captioned_grid(path, [originals, anonymised],
                               ["original (aligned crop)", f"anonymised (generated at {generated_px} px)"], size=128)


def result_lines(report: dict, evaluator: str = "dlib_resnet_crops") -> list[str]:
    """The inversion fidelity and the two-half verdict of an evaluation report, as printed lines."""
    r = Report.from_dict(report)
    own = r.evaluators[evaluator].attacks["own_original"]
    lines = []
    if own.inversion is not None and not own.not_run:
        inv = own.inversion
        lines.append(f"  inversion fidelity: the inversion matches its own original (threshold "
                     f"{own.threshold:.2f}) in {inv.matched}/{inv.evaluable} ({_pct(inv.rate)})")
    else:
        lines.append(f"  inversion fidelity: not measured ({own.not_run or 'no inversion images'})")
    v = r.verdict
    checks = " and ".join(v.utility_checks) or "nothing"
    lines.append(f"  verdict ({v.evaluated} images): privacy {v.privacy}/{v.evaluated} ({_pct(v.privacy_rate)}), "
                 f"utility {v.utility}/{v.evaluated} ({_pct(v.utility_rate)}; checks {checks}: pose within "
                 f"{v.thresholds['max_yaw_deg']:g} deg, same expression), passed {v.passed}/{v.evaluated} "
                 f"({_pct(v.pass_rate)})")
    return lines


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args["out"])
    data = Path(args["data"]) if args["data"] else packaged_faces(out / "input")
    overrides = ["experiment=lite", f"dataset.images={data.resolve()}", f"output_root={out}"]
    if args["limit"]:
        overrides.append(f"dataset.limit={int(args['limit'])}")
    from anon.stages.evaluate import evaluate
    from anon.stages.pipeline import run_pipeline

    started = time.time()
    with one_line_errors():
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("pipeline", overrides=overrides)
            eval_cfg = compose("evaluate", overrides=["evaluators=[dlib_resnet_crops]",
                                                      "+thresholds.dlib_resnet_crops=null", f"output_root={out}"])
        summary = run_pipeline(cfg)
        run_dir = Path(summary["run_dir"])
        with open_dict(eval_cfg):
            eval_cfg.run_dir = str(run_dir)
        report = evaluate(eval_cfg)
    wall = time.time() - started
    generated_px = int(cfg.dataset.image_size)
    grid = write_grid(run_dir, run_dir / "grid.png", int(args["grid_rows"]), generated_px)
    dlib = report["evaluators"]["dlib_resnet_crops"]
    done = summary.get("images_done", 0)
    print("\n[anon] demo finished")
    print(f"  images: {done} anonymised, {summary.get('images_failed', 0)} failed (see manifest.jsonl)")
    if report["inversion"]["warning"]:
        print(f"  WARNING: {report['inversion']['warning']}")
    for kind, attack in dlib["attacks"].items():
        out, inv = attack["output"], attack["inversion"]
        if attack["not_run"]:
            print(f"  dlib {kind}: not run ({attack['not_run']})")
            continue
        text = f"output {_pct(out['rate'])} ({out['matched']} of {out['evaluable']})"
        if inv is not None:
            text += f", inversion alone {_pct(inv['rate'])} ({inv['matched']} of {inv['evaluable']})"
        print(f"  re-identified by dlib, {kind} (threshold {dlib['threshold']:.2f}): {text}")
    detection = report.get("detection") or {}
    if detection.get("rate") is not None:
        print(f"  face detected in the outputs (MTCNN): {100 * detection['rate']:.1f} % "
              f"({detection['detected']} of {detection['total']})")
    for line in result_lines(report):
        print(line)
    print(f"  faces generated at {generated_px} px (the generator's resolution)")
    if done:
        print(f"  wall time: {wall:.0f} s in all, {wall / done:.1f} s per image (this machine, all stages)")
    print(f"  outputs: {run_dir}  (images/, manifest.jsonl, report.md{', grid.png' if grid else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
