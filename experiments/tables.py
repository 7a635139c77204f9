"""``make tables``: the paper's tables from finished, evaluated runs, as Markdown and CSV.

Every run carries ``table`` and ``cell`` in its ``config.yaml`` (set by the ``experiment/`` configs:
``celebahq_main``, ``celebahq_margin``, ``lfw_main``, ``lite``); every evaluated run has a
``report.json`` (``anon evaluate run_dir=...``). Rows are cells, columns the metrics:
re-identification rate per evaluator (lower is better), face detection rate, head-pose error,
attribute agreement and FID where measured, and the number of images.

    python experiments/tables.py [--runs outputs] [--out outputs/tables]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml


def collect(roots: list[Path]) -> dict[str, list[dict]]:
    """``{table: [row, ...]}`` from every ``report.json`` under ``roots`` whose config names a table."""
    tables: dict[str, list[dict]] = {}
    for report_path in sorted(p for root in roots for p in root.rglob("report.json")):
        config_path = report_path.parent / "config.yaml"
        if not config_path.is_file():
            continue
        config = yaml.safe_load(config_path.read_text()) or {}
        if not config.get("table"):
            continue
        report = json.loads(report_path.read_text())
        row = {"cell": config.get("cell") or report_path.parent.name, "run": report_path.parent.name,
               "images": report.get("evaluated")}
        for name, ev in sorted(report.get("evaluators", {}).items()):
            row[f"re-ID % ({name})"] = _pct(ev.get("reidentification_rate"))
        row["detection %"] = _pct((report.get("detection") or {}).get("rate"))
        row["pose error (deg)"] = _num((report.get("pose") or {}).get("mean"), 2)
        attributes = report.get("attributes") or {}
        row["attribute agreement %"] = _pct(attributes.get("mean_agreement") if isinstance(attributes, dict) else None)
        fid = report.get("fid")
        row["FID"] = _num(fid.get("value") if isinstance(fid, dict) else fid, 2)
        tables.setdefault(config["table"], []).append(row)
    return tables


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


def markdown(name: str, rows: list[dict]) -> str:
    cols = columns(rows)
    out = [f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        out.append("| " + " | ".join("—" if row.get(c) is None else str(row[c]) for c in cols) + " |")
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
