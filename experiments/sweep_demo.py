"""``make sweep-demo``: lambda_id x landmark weight (2 x 2) of the lite set on a few shared LFW faces,
as one Hydra multirun, then each point evaluated (dlib's ResNet, dlib-68 pose, mini-Xception
expression) and the trade-off drawn (matplotlib) and tabulated (Markdown).

    PYTHONPATH=$PWD .venv/bin/python experiments/sweep_demo.py [data=DIR] [limit=N] [out=DIR] [override ...]

``data``: default ``../shared/data/lfw_sample`` (Name/Name_000N.jpg); ``limit``: faces (default 4);
``out``: default ``outputs/sweep_demo``. Extra ``key=value`` Hydra overrides go to every point (e.g.
``inverter=pivotal``). The same command resumes: the stage caches and run folders are content-keyed.
Writes ``OUT/sweep_demo.md``, ``OUT/sweep_demo.png`` and ``OUT/sweep_demo.json`` (rows read from each
run's ``report.json`` through :class:`anon.report.schema.Report`).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
EVALUATOR = "dlib_resnet_crops"


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    args = {"data": str(REPO.parent / "shared" / "data" / "lfw_sample"), "limit": "4", "out": "outputs/sweep_demo"}
    overrides = []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise SystemExit(f"usage: sweep_demo.py [data=DIR] [limit=N] [out=DIR] [hydra override ...] (got {item!r})")
        if key in args:
            args[key] = value
        else:
            overrides.append(item)
    if not Path(args["data"]).is_dir():
        raise SystemExit(f"sweep_demo: data folder {args['data']} not found (the shared LFW sample, or data=DIR)")
    return args, overrides


def run_sweep(data: Path, limit: int, out: Path, overrides: list[str]) -> None:
    """The Hydra multirun (basic launcher: the 4 points one after another, caches shared)."""
    command = [sys.executable, "-m", "anon.runtime.cli", "pipeline", "--multirun", "experiment=lite_sweep_demo",
               f"dataset.images={data.resolve()}", f"dataset.limit={limit}", f"output_root={out}",
               f"hydra.sweep.dir={out}/sweep", *overrides]
    print("[sweep-demo]", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def sweep_runs(data: Path, limit: int, out: Path, overrides: list[str]) -> list[Path]:
    """The run folders of this sweep's points: each point's config composed as the multirun composes it
    (the grid from ``hydra.sweeper.params``), its content-keyed ``run_name`` under the sweep folder.
    Runs of other settings left in the same folder are not this sweep's."""
    from itertools import product

    from hydra import compose, initialize_config_dir

    from anon.runtime.run import CONFIG_DIR

    base = ["experiment=lite_sweep_demo", f"dataset.images={data.resolve()}", f"dataset.limit={limit}",
            f"output_root={out}", *overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        grid = compose("pipeline", overrides=base, return_hydra_config=True).hydra.sweeper.params
        axes = [[f"{key}={value.strip()}" for value in str(values).split(",")] for key, values in grid.items()]
        names = [compose("pipeline", overrides=[*base, *point]).run_name for point in product(*axes)]
    return [out / "sweep" / name for name in names]


def evaluate_run(run_dir: Path, out: Path) -> None:
    from hydra import compose, initialize_config_dir

    from anon.runtime.run import CONFIG_DIR
    from anon.stages.evaluate import evaluate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"evaluators=[{EVALUATOR}]", f"+thresholds.{EVALUATOR}=null",
                                             f"output_root={out}", f"run_dir={run_dir}"])
    evaluate(cfg)


def row(run_dir: Path, evaluator_name: str = EVALUATOR) -> dict:
    """One point: its weights (``config.yaml``) and measurements (``report.json``, schema-checked)."""
    from anon.report.schema import Report

    path = run_dir / "report.json"
    report = json.loads(path.read_text())
    Report.from_dict(report, str(path))
    cfg = OmegaConf.load(run_dir / "config.yaml")
    evaluator = report["evaluators"][evaluator_name]
    other = ((evaluator.get("attacks") or {}).get("other_photo") or {}).get("output") or {}
    pose, expression = report.get("pose") or {}, report.get("expression") or {}
    return {
        "run": run_dir.name, "lambda_id": OmegaConf.select(cfg, "loss.lambda_id"),
        "landmark_weight": OmegaConf.select(cfg, "loss.terms.landmark.weight", default=0.0),
        "reid_own": evaluator["reidentification_rate"],
        "reid_other": other.get("rate"),
        "yaw": pose.get("yaw"), "pitch": pose.get("pitch"), "pose_mean": pose.get("mean"),
        "expression_agreement": expression.get("agreement"),
        "detection": (report.get("detection") or {}).get("rate"), "images": report["evaluated"],
    }


def _cell(value, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.0f} %" if percent else f"{value:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| lambda_id | landmark weight | re-id own original | re-id other photo | mean abs yaw / pitch change (deg) "
             "| expression agreement | detection | faces |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lambda_id']:g} | {r['landmark_weight']:g} | {_cell(r['reid_own'], True)} | "
                     f"{_cell(r['reid_other'], True)} | {_cell(r['yaw'])} / {_cell(r['pitch'])} | "
                     f"{_cell(r['expression_agreement'], True)} | {_cell(r['detection'], True)} | {r['images']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = (("pose_mean", "mean abs pose change (deg, lower is better)"),
              ("expression_agreement", "expression agreement (higher is better)"))
    for ax, (key, label) in zip(axes, panels):
        for r in rows:
            if r[key] is None or r["reid_own"] is None:
                continue
            ax.scatter(r[key], r["reid_own"], s=40)
            ax.annotate(f"id={r['lambda_id']:g} lm={r['landmark_weight']:g}", (r[key], r["reid_own"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"re-identified vs own original ({EVALUATOR})")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    fig.suptitle("lite set: privacy vs utility over lambda_id x landmark weight")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args["out"])
    data, limit = Path(args["data"]), int(args["limit"])
    run_sweep(data, limit, out, overrides)
    runs = sweep_runs(data, limit, out, overrides)
    missing = [str(r) for r in runs if not (r / "manifest.jsonl").is_file()]
    if missing:
        raise SystemExit(f"sweep_demo: the multirun left no run folder for {missing}")
    for run_dir in runs:
        report, manifest = run_dir / "report.json", run_dir / "manifest.jsonl"
        if not report.is_file() or report.stat().st_mtime < manifest.stat().st_mtime:  # a resumed run re-evaluates
            evaluate_run(run_dir, out)
    rows = sorted((row(r) for r in runs), key=lambda r: (r["lambda_id"], r["landmark_weight"]))
    (out / "sweep_demo.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "sweep_demo.md").write_text(markdown(rows))
    plot(rows, out / "sweep_demo.png")
    sys.stdout.write(markdown(rows))
    print(f"[sweep-demo] {out / 'sweep_demo.md'}, {out / 'sweep_demo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
