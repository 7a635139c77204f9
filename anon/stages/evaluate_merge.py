"""The evaluate stage's cross-item part, computed once from every item's result (whatever rank measured it).

:func:`merge_results` joins the ranks' results into one list in report order, each item exactly once (a
rank that saw an item twice, e.g. through ``DistributedSampler`` padding, does not count it twice).
:func:`write_report` then has every selected metric (:mod:`anon.metrics.registry`) summarise all items
(re-identification and its attacks, detection, pose, attributes, expression, the FID statistics from the
gathered features), judges the per-image verdicts, and writes ``verification.jsonl``, ``failed_ids.txt``,
``plots/``, ``report.json`` and ``report.md``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from anon.atomic_write import write_text_atomically
from anon.metrics.verdict import privacy, utility

#: the verdict's utility checks, in the order the report lists them (each fed by one metric)
UTILITY_CHECKS = ("pose", "expression", "attributes")
VERIFICATION = "verification.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FAILED_IDS = "failed_ids.txt"


def merge_results(per_rank: Iterable[list[dict]]) -> list[dict]:
    """The ranks' result lists -> one list sorted by item index, each index once (the first copy kept)."""
    seen: dict[int, dict] = {}
    for results in per_rank:
        for result in results:
            seen.setdefault(int(result["index"]), result)
    return [seen[k] for k in sorted(seen)]


def write_report(plan, results: list[dict]) -> dict:
    """Every cross-item metric from the merged ``results``; writes the report files; returns the report dict."""
    from anon.report import render as reporting
    from anon.stages.evaluate_summary import summarise

    lines = [r["line"] for r in results]
    evaluated_results = [r for r in results if "error" not in r["line"]]
    evaluated = [r["line"] for r in evaluated_results]
    unreadable = [r["id"] for r in results if "error" in r["line"]]
    metrics, verdict = plan.measures.metrics, plan.verdict
    sections = {metric.report_field: metric.summarise(evaluated_results) for metric in metrics}
    checks = [c for c in UTILITY_CHECKS if c in {metric.utility_check() for metric in metrics}]
    for line in evaluated:
        line["privacy"] = privacy(line)
        line["utility"], line["utility_failures"] = utility(line, verdict, checks)
        line["passed"] = bool(line["privacy"] and line["utility"])
    report = summarise(plan.run_dir, plan.records, lines, unreadable, sections, plan.calibration,
                       plan.label_description, verdict, checks, plan.inversion_source)
    data = clean(report.to_dict())
    lines = clean(lines)
    run_dir = Path(plan.run_dir)
    write_text_atomically(run_dir / VERIFICATION, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    write_text_atomically(run_dir / FAILED_IDS, "".join(i + "\n" for i in data["failed_ids"]))
    if plan.plots:
        data["plots"] = reporting.write_plots(run_dir, lines, data)
    write_text_atomically(run_dir / REPORT_JSON, json.dumps(data, indent=2, sort_keys=True) + "\n")
    write_text_atomically(run_dir / REPORT_MD, reporting.markdown(data))
    return data


def clean(value):
    """JSON-safe: NaN/inf -> None, tensors and numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["merge_results", "write_report", "clean", "UTILITY_CHECKS", "VERIFICATION", "REPORT_JSON", "REPORT_MD",
           "FAILED_IDS"]
