"""``make tables-lite``: Table 1 (CelebA-HQ and LFW) and Table 4 (margin sweep) on the shared samples with
the offline lite model set, running whatever is missing, then the trade-off figure.

For the first ``--images`` images (sorted ids) of ``../shared/data/celebahq_sample`` and ``lfw_sample``:

* FALCO with the lite set (``experiment=lite``, m = 0.0) and the four baseline rows (blur sigma 4,
  pixelate 8 px, pixelate 16 px, filled box), on each dataset (tables ``table1_celebahq``, ``table1_lfw``);
* FALCO lite on CelebA-HQ for each margin of ``--margins`` (``table4_margin_celebahq``; m = 0.0 is
  Table 1's run, not run twice);
* ``anon evaluate`` on each run with dlib's ResNet (``dlib_resnet_crops``; the lite set has no FaceNet),
  MTCNN detection, dlib-68 head pose and mini-Xception expression;
* the tables (Markdown + CSV, a ``run`` column naming each row's run folder, ``n/a [k]`` with its
  reason for what does not apply), ``index.json`` (table, cell, run folder of every row) and
  ``tradeoff.png`` / ``.pdf`` (re-identification vs pose error and expression agreement).

FALCO lite works on the 64 px face crop its DCGAN makes (MTCNN + FFHQ alignment, ``zoom 0.6``); the
baselines get the same alignment at ``--baseline-size`` px (256: the block and blur sizes then mean
what they mean on a real face photo, not on a 64 px thumbnail). Each row's attacks compare its output
with its own input crop.

Everything resumes: run folders are content-hashed and skip finished images; a run whose
``verification.jsonl`` covers exactly its finished images (same evaluators) is not evaluated again.
The default 8 images per dataset take about 10 minutes on 2 CPU cores (FALCO lite ~15 s per face).

    python experiments/tables_lite.py [--images 8] [--margins 0.0 0.5 1.0] [--out outputs/tables_lite]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))
import tables  # noqa: E402
import tradeoff_figure  # noqa: E402

SHARED_DATA = Path(os.environ.get("ANON_SHARED_DATA") or REPO.parent / "shared" / "data")
EVALUATORS = ["dlib_resnet_crops"]
BASELINES = (("blur σ 4", ["method=blur", "method.sigma=4"]),
             ("pixelate 8 px", ["method=pixelate", "method.block=8"]),
             ("pixelate 16 px", ["method=pixelate", "method.block=16"]),
             ("mask (black box)", ["method=mask"]))
FALCO_CELL = "FALCO lite, m = {m}"


@dataclass
class Row:
    """One table row: which table, its label, and the ``anon pipeline`` overrides that make its run."""

    table: str
    cell: str
    overrides: list[str]
    run_dir: str = ""


def dataset_overrides(data: Path, name: str, images: int) -> list[str]:
    if name == "celebahq":
        folder = data / "celebahq_sample"
        return ["dataset=celebahq", f"dataset.images={folder}", f"dataset.identities={folder / 'identity_and_mapping.txt'}",
                f"dataset.attributes={folder / 'CelebAMask-HQ-attribute-anno.txt'}", "dataset.name=lite-celebahq",
                f"dataset.limit={images}"]
    return ["dataset=lfw", f"dataset.images={data / 'lfw_sample'}", "dataset.name=lite-lfw", f"dataset.limit={images}"]


def plan(data: Path, images: int, margins: list[float], baseline_size: int) -> list[Row]:
    """Every row of the three tables, in table order."""
    rows = []
    for name in ("celebahq", "lfw"):
        table, ds = f"table1_{name}", ["experiment=lite", *dataset_overrides(data, name, images)]
        rows.append(Row(table, FALCO_CELL.format(m=0.0), [*ds, "loss.margin=0.0"]))
        rows += [Row(table, cell, [*ds, *method, f"align.size={baseline_size}"]) for cell, method in BASELINES]
    ds = ["experiment=lite", *dataset_overrides(data, "celebahq", images)]
    rows += [Row("table4_margin_celebahq", f"m = {float(m)}", [*ds, f"loss.margin={float(m)}"]) for m in margins]
    return rows


def captions(images: int, baseline_size: int, margins: list[float]) -> dict[str, str]:
    common = (f"The first {images} images (sorted ids) of the shared sample, lite model set (DCGAN 64 px, "
              "MobileFaceNet identity and attribute losses, optimisation inversion). Re-identification by dlib's "
              "ResNet at its own threshold 0.6 (`dlib_resnet_crops`: HOG on a 2x upsampled image, the whole crop "
              "as the box where HOG finds none); detection: MTCNN; pose: dlib 68 landmarks (5-point MTCNN fit as "
              "fallback); expression: mini-Xception (FER2013). FALCO lite runs on the 64 px MTCNN + FFHQ crop "
              f"(zoom 0.6); the baselines on the same crop at {baseline_size} px. The `run` column is each row's "
              "run folder (`report.json`, `verification.jsonl` per image).")
    return {"table1_celebahq": "Table 1, CelebA-HQ. " + common,
            "table1_lfw": "Table 1, LFW (identity = folder name). " + common,
            "table4_margin_celebahq": f"Table 4, the margin m of the identity loss ({', '.join(map(str, margins))}), "
                                      "CelebA-HQ. " + common}


def compose(config: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from anon.runtime.run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config, overrides=overrides)


def run_dir_of(cfg) -> Path:
    from anon.runtime.run import resolve_run_dir

    return resolve_run_dir(cfg)


def needs_evaluation(run_dir: Path, fid: bool = False) -> bool:
    """No ``report.json``, one whose ``verification.jsonl`` does not cover exactly the run's finished
    images, one made with other evaluators, or one without FID when FID is wanted."""
    from anon.runtime.manifest import current_records

    report, lines = run_dir / "report.json", run_dir / "verification.jsonl"
    if not report.is_file() or not lines.is_file():
        return True
    try:
        data = json.loads(report.read_text())
        evaluated = {json.loads(line)["id"] for line in lines.read_text().splitlines() if line.strip()}
    except (ValueError, KeyError):
        return True
    latest = {r["id"]: r for r in current_records(run_dir)}
    if evaluated != {i for i, r in latest.items() if r.get("status") == "done"}:
        return True
    return sorted(data.get("evaluators", {})) != sorted(EVALUATORS) or (fid and data.get("fid") is None)


def run_and_evaluate(row: Row, out: Path, fid: bool = False) -> Path:
    """Run (or resume) the row's pipeline and evaluate it when needed; returns its run folder."""
    from anon.stages.evaluate import evaluate
    from anon.stages.pipeline import run_pipeline

    quote = lambda text: "'" + text.replace("'", "\\'") + "'"  # noqa: E731
    cfg = compose("pipeline", [*row.overrides, f"output_root={out}", f"table={row.table}", f"cell={quote(row.cell)}"])
    run_dir = run_dir_of(cfg)
    summary = run_pipeline(cfg)
    run_dir = Path(summary.get("run_dir", run_dir))
    if needs_evaluation(run_dir, fid):
        eval_cfg = compose("evaluate", [f"evaluators=[{','.join(EVALUATORS)}]",
                                        *[f"+thresholds.{name}=null" for name in EVALUATORS if name != "dlib_resnet"],
                                        f"output_root={out}", f"run_dir={run_dir}",
                                        *(["fid.enabled=true"] if fid else [])])
        evaluate(eval_cfg)
    return run_dir


def main(argv=None) -> int:
    from anon.runtime.run import one_line_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="first N images of each dataset (sorted ids)")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--baseline-size", type=int, default=256, help="aligned crop size the baselines work on")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder with celebahq_sample/ and lfw_sample/")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables_lite"))
    parser.add_argument("--fid", action="store_true", help="FID column (needs the Inception checkpoint of "
                                                            "`anon download`; meaningless on a few images)")
    args = parser.parse_args(argv)
    if args.images < 1:
        raise SystemExit(f"--images must be >= 1, not {args.images}")
    for sample in ("celebahq_sample", "lfw_sample"):
        if not (args.data / sample).is_dir():
            raise SystemExit(f"{args.data / sample} is absent: pass --data DIR (or set $ANON_SHARED_DATA)")
    started = time.time()
    rows = plan(args.data.resolve(), args.images, args.margins, args.baseline_size)
    finished: dict[tuple, Path] = {}
    with one_line_errors():
        for k, row in enumerate(rows, 1):
            key = tuple(o for o in row.overrides)
            print(f"[tables] {k}/{len(rows)} {row.table}: {row.cell}", flush=True)
            if key not in finished:
                finished[key] = run_and_evaluate(row, args.out, args.fid)
            row.run_dir = str(finished[key])
    by_table: dict[str, list[dict]] = {}
    for row in rows:
        by_table.setdefault(row.table, []).append(tables.run_row(Path(row.run_dir), row.cell))
    out = args.out / "tables"
    written = tables.write(by_table, out, captions(args.images, args.baseline_size, args.margins), sort=False)
    (out / "index.json").write_text(json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False) + "\n")
    written += tradeoff_figure.write(by_table, out / "tradeoff", EVALUATORS[0])
    for path in written + [out / "index.json"]:
        print(path)
    print(f"[tables] {len(rows)} rows in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
