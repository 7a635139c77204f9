"""``make tables``: the paper's tables from finished, evaluated runs, as Markdown and CSV.

Every run carries ``table`` and ``cell`` in its ``config.yaml`` (set by the ``experiment/`` configs:
``celebahq_main``, ``celebahq_margin``, ``lfw_main``, ``lite``); every evaluated run has a
``report.json`` (``anon evaluate run_dir=...``, schema :mod:`anon.report_schema`). Rows are cells,
columns the metrics: per evaluator the three attacks (own original, another photo of the same
person, closed-set identification), each on the inversions, on the outputs and their difference (the
anonymisation's gain); face detection rate, head-pose error, expression and attribute agreement,
FID, and the verdict shares (privacy, utility, passed). A metric no run measured is left out and
named under the table.

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
from anon.report_schema import Report  # noqa: E402


def collect(roots: list[Path]) -> dict[str, list[dict]]:
    """``{table: [row, ...]}`` from every ``report.json`` under ``roots`` whose config names a table.

    Each report is read through :class:`anon.report_schema.Report`: a report of another schema, or with
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
        report = Report.from_dict(json.loads(report_path.read_text()), str(report_path))
        row = {"cell": config.get("cell") or report_path.parent.name, "run": report_path.parent.name}
        row.update(row_of(report))
        tables.setdefault(config["table"], []).append(row)
    return tables


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


def _pct(value):
    return None if value is None else round(100 * float(value), 2)


def _num(value, digits):
    return None if value is None else round(float(value), digits)


def columns(rows: list[dict]) -> list[str]:
    """Columns in first-seen order, dropping metrics no run of the table measured."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    return [c for c in seen if c in ("cell", "run", "images") or any(r.get(c) is not None for r in rows)]


def unmeasured(rows: list[dict]) -> list[str]:
    """Metrics that no run of the table measured (left out of the table, and named under it)."""
    cols = columns(rows)
    return [c for row in rows[:1] for c in row if c not in cols]


def markdown(name: str, rows: list[dict]) -> str:
    cols = columns(rows)
    out = [f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        out.append("| " + " | ".join("not measured" if row.get(c) is None else str(row[c]) for c in cols) + " |")
    if unmeasured(rows):
        out += ["", "Not measured in any run: " + ", ".join(unmeasured(rows)) + "."]
    return "\n".join(out) + "\n"


def write(tables: dict[str, list[dict]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in sorted(tables.items()):
        rows = sorted(rows, key=lambda r: str(r["cell"]))
        (out / f"{name}.md").write_text(markdown(name, rows))
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns(rows), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
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
              f"through `anon pipeline` and `anon evaluate` first", file=sys.stderr)
        return 1
    for path in write(tables, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
