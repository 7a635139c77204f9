"""``make tables``: the paper's tables from finished, evaluated runs, as Markdown and CSV.

Every run carries ``table`` and ``cell`` in its ``config.yaml`` (set by the ``experiment/`` configs:
``celebahq_main``, ``celebahq_margin``, ``lfw_main``, ``lite``); every evaluated run has a
``report.json`` (``anon evaluate run_dir=...``, schema :mod:`anon.report.schema`). Rows are cells,
columns the metrics: per evaluator the three attacks (own original, another photo of the same
person, closed-set identification), each on the inversions, on the outputs and their difference (the
anonymisation's gain); face detection rate, head-pose error, expression and attribute agreement,
FID, and the verdict shares (privacy, utility, passed). The ``run`` column names each row's run
folder, so every cell can be traced to its ``report.json`` and ``verification.jsonl``.

A metric a run did not measure is written ``n/a [k]``, and note ``[k]`` under the table says why
(taken from the report: an attack that could not be mounted, a baseline without inversions, a
detector or classifier that was not configured, FID disabled). Nothing is left blank or dropped.

    python experiments/tables.py [--runs outputs] [--out outputs/tables]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anon.report.schema import Report  # noqa: E402

NA = "n/a"
WHY = "_why"  # row key: {column: reason} for every column whose value is None


def collect(roots: list[Path]) -> dict[str, list[dict]]:
    """``{table: [row, ...]}`` from every ``report.json`` under ``roots`` whose config names a table.

    Each report is read through :class:`anon.report.schema.Report`: a report of another schema, or with
    a field missing, stops the table with a one-line error instead of leaving its column blank.
    """
    tables: dict[str, list[dict]] = {}
    for report_path in sorted(p for root in roots for p in root.rglob("report.json")):
        config_path = report_path.parent / "config.yaml"
        if not config_path.is_file():
            continue
        config = yaml.safe_load(config_path.read_text()) or {}
        if not config.get("table"):
            continue
        tables.setdefault(config["table"], []).append(run_row(report_path.parent, config.get("cell")))
    return tables


def run_row(run_dir: Path, cell: str | None = None) -> dict:
    """The table row of one evaluated run folder (``cell`` defaults to the folder's name)."""
    report_path = Path(run_dir) / "report.json"
    report = Report.from_dict(json.loads(report_path.read_text()), str(report_path))
    row = {"cell": cell or Path(run_dir).name, "run": str(run_dir)}
    row.update(row_of(report))
    row[WHY] = reasons(report, row)
    return row


def row_of(report: Report) -> dict:
    """One table row: every metric of a report under its column name (None where not measured)."""
    row = {"images": report.evaluated}
    for name, ev in sorted(report.evaluators.items()):
        for kind, attack in ev.attacks.items():
            row[f"re-ID % {kind} inversion ({name})"] = _pct(attack.inversion.rate if attack.inversion else None)
            row[f"re-ID % {kind} output ({name})"] = _pct(attack.output.rate)
            row[f"gain % {kind} ({name})"] = _pct(attack.gain)
    row["detection %"] = _pct(report.detection.rate if report.detection else None)
    pose = report.pose
    row["|Δyaw| (deg)"] = _num(pose.yaw if pose else None, 2)
    row["|Δpitch| (deg)"] = _num(pose.pitch if pose else None, 2)
    row["pose error (deg)"] = _num(pose.mean if pose else None, 2)
    row["expression agreement %"] = _pct(report.expression.agreement if report.expression else None)
    row["attribute agreement %"] = _pct(report.attributes.mean if report.attributes else None)
    row["FID"] = _num(report.fid, 2)
    row["privacy %"] = _pct(report.verdict.privacy_rate)
    row["utility %"] = _pct(report.verdict.utility_rate)
    row["passed %"] = _pct(report.verdict.pass_rate)
    return row


def reasons(report: Report, row: dict) -> dict[str, str]:
    """``{column: why it is None}`` for every unmeasured column of ``row_of(report)``, read from the report."""
    no_images = "no image of the run could be evaluated"
    no_inversion = (f"no inversion judged (inversions: {report.inversion.source})" if report.inversion.source else
                    "no inversion images: the run has no inversion codes (a baseline has no generator)")
    why = {}
    for name, ev in report.evaluators.items():
        for kind, attack in ev.attacks.items():
            base = attack.not_run or "no original with a face"
            why[f"re-ID % {kind} output ({name})"] = base
            why[f"re-ID % {kind} inversion ({name})"] = attack.not_run or no_inversion
            why[f"gain % {kind} ({name})"] = attack.not_run or no_inversion
    det = report.detection
    why["detection %"] = "no face detector in the evaluation (`~detector`)" if det is None else no_images
    pose = report.pose
    for column in ("|Δyaw| (deg)", "|Δpitch| (deg)", "pose error (deg)"):
        why[column] = ("no pose estimator in the evaluation (`pose=null`)" if pose is None else
                       f"no image pair with a pose on both sides ({pose.missing} without)")
    expr = report.expression
    why["expression agreement %"] = (
        "no expression classifier in the evaluation (`~expression`)" if expr is None else
        expr.skipped or f"no image pair with a face crop on both sides ({expr.missing} without)")
    why["attribute agreement %"] = ("no attribute classifier in the evaluation (`attributes: null`; none ships "
                                    "in the lite set)" if report.attributes is None else no_images)
    why["FID"] = ("FID not computed (`fid.enabled=false`; it needs the Inception checkpoint of `anon download` "
                  "and hundreds of images to mean anything)")
    for column in ("privacy %", "utility %", "passed %"):
        why[column] = no_images
    return {c: why.get(c, "not measured") for c, v in row.items() if v is None and not c.startswith("_")}


def _pct(value):
    return None if value is None else round(100 * float(value), 2)


def _num(value, digits):
    return None if value is None else round(float(value), digits)


def columns(rows: list[dict]) -> list[str]:
    """Every column of any row, in first-seen order (none dropped: unmeasured cells say n/a and why)."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen and not k.startswith("_")]
    return seen


def why_missing(row: dict, column: str) -> str:
    """Why ``row`` has no value in ``column``: the report's reason, or the run lacks the column altogether."""
    if column in row:
        return row.get(WHY, {}).get(column, "not measured")
    return "not evaluated in this run (another evaluator set than the table's other rows)"


def notes(rows: list[dict]) -> tuple[list[list[str]], list[str]]:
    """The cell texts of ``rows`` (``n/a [k]`` where unmeasured) and the numbered reasons ``[k]``."""
    cols, reasons_seen, cells = columns(rows), [], []
    for row in rows:
        texts = []
        for c in cols:
            if row.get(c) is not None:
                texts.append(str(row[c]))
                continue
            why = why_missing(row, c)
            if why not in reasons_seen:
                reasons_seen.append(why)
            texts.append(f"{NA} [{reasons_seen.index(why) + 1}]")
        cells.append(texts)
    return cells, reasons_seen


def markdown(name: str, rows: list[dict], caption: str = "") -> str:
    cols = columns(rows)
    cells, why = notes(rows)
    out = [f"## {name}", ""] + ([caption, ""] if caption else [])
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(texts) + " |" for texts in cells]
    if why:
        out += ["", "Not applicable or not measured:", ""] + [f"[{k}] {text}" for k, text in enumerate(why, 1)]
    return "\n".join(out) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    """The table as CSV: ``n/a`` cells, and a last ``notes`` column naming each one's reason."""
    cols = columns(rows)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols + ["notes"])
        for row in rows:
            values = [NA if row.get(c) is None else row[c] for c in cols]
            why = "; ".join(f"{c}: {why_missing(row, c)}" for c in cols if row.get(c) is None)
            writer.writerow(values + [why])


def write(tables: dict[str, list[dict]], out: Path, captions: dict[str, str] | None = None,
          sort: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in sorted(tables.items()):
        if sort:
            rows = sorted(rows, key=lambda r: str(r["cell"]))
        (out / f"{name}.md").write_text(markdown(name, rows, (captions or {}).get(name, "")))
        write_csv(out / f"{name}.csv", rows)
        written += [out / f"{name}.md", out / f"{name}.csv"]
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("outputs")])
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"))
    args = parser.parse_args(argv)
    tables = collect(args.runs)
    if not tables:
        print(f"no evaluated runs with a `table` under {[str(r) for r in args.runs]}: run an experiment/ config "
              f"through `anon pipeline` and `anon evaluate` first (or `make tables-lite`)", file=sys.stderr)
        return 1
    for path in write(tables, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
