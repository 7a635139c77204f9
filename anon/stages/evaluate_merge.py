"""The evaluate stage's cross-item part, computed once from every item's result (whatever rank measured it).

:func:`merge_results` joins the ranks' results into one list in report order, each item exactly once (a
rank that saw an item twice, e.g. through ``DistributedSampler`` padding, does not count it twice).
:func:`write_report` then feeds the accumulated metrics (re-identification, detection, pose, attributes,
expression), runs the attacks over all items, computes the FID statistics from the gathered features,
the per-image verdicts, and writes ``verification.jsonl``, ``failed_ids.txt``, ``plots/``, ``report.json``
and ``report.md``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from anon.metrics import attacks
from anon.metrics.attributes import AttributeAgreement, PoseError
from anon.metrics.detection import DetectionRate
from anon.metrics.expression import ExpressionAgreement
from anon.metrics.fid import frechet_distance
from anon.metrics.reid import ReIdentificationRate, stack_embeddings
from anon.metrics.thresholds import write_atomic
from anon.metrics.verdict import privacy, utility

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


def _stack(rows: list[torch.Tensor | None], width: int) -> torch.Tensor:
    """Optional vectors -> ``N x width`` float64 with NaN rows for None."""
    out = torch.full((len(rows), width), float("nan"), dtype=torch.float64)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row.double()
    return out


#: the metrics are fed every rank's items on rank 0: no cross-rank reduction on compute (it would wait for
#: ranks that are not computing)
LOCAL = {"sync_on_compute": False}


def accumulate(results: list[dict], plan) -> dict:
    """The metric states of the old per-batch loop, filled from all results at once."""
    evaluated = [r for r in results if "error" not in r["line"]]
    state = {"reid": {}, "emb": {}, "detection": None, "pose": None, "pose_fallback": 0, "attributes": None,
             "attribute_names": list(plan.measures.extra.get("attribute_names") or []), "expression": None}
    for name, evaluator in plan.measures.evaluators.items():
        store = {k: [r["emb"][name][j] for r in evaluated] for j, k in enumerate("oai")}
        state["emb"][name] = store
        metric = ReIdentificationRate(plan.measures.thresholds[name], evaluator.higher_is_same, **LOCAL)
        if evaluated:
            dim = next((len(e) for e in store["o"] + store["a"] + store["i"] if e is not None), 1)
            metric.update(stack_embeddings(store["o"], dim), stack_embeddings(store["a"], dim))
        state["reid"][name] = metric
    m = plan.measures
    if m.detector is not None:
        state["detection"] = DetectionRate(**LOCAL)
        state["detection"].update(torch.tensor([r["faces"] for r in evaluated], dtype=torch.long))
    if m.pose_pair is not None:
        state["pose"] = PoseError(**LOCAL)
        state["pose"].update(_stack([r["pose"][0] for r in evaluated], 3), _stack([r["pose"][1] for r in evaluated], 3))
        state["pose_fallback"] = sum(r["pose"][2] == "fallback" for r in evaluated)
    if m.attributes is not None and evaluated:
        width = evaluated[0]["attributes"][0].numel()
        state["attributes"] = AttributeAgreement(width, **LOCAL)
        state["attributes"].update(torch.stack([r["attributes"][0] for r in evaluated]),
                                   torch.stack([r["attributes"][1] for r in evaluated]))
        state["attribute_names"] = state["attribute_names"] or [f"attr{k}" for k in range(width)]
    if m.expression is not None:
        state["expression"] = ExpressionAgreement(len(m.expression.names), **LOCAL)
        if evaluated:
            state["expression"].update(torch.stack([r["expression"][0] for r in evaluated]),
                                       torch.stack([r["expression"][1] for r in evaluated]))
    return state


def run_attacks(lines: list[dict], plan, state: dict, labels: list) -> dict:
    """``{evaluator: {attack: {"output": per-item, "inversion": per-item}}}``; also written into the lines."""
    out = {}
    has_inv = [line["inversion"] for line in lines]
    for name, evaluator in plan.measures.evaluators.items():
        store = state["emb"][name]
        if not lines:
            out[name] = {}
            continue
        dim = next((len(e) for e in store["o"] + store["a"] + store["i"] if e is not None), 1)
        t_o, t_a, t_i = (stack_embeddings(store[k], dim) for k in ("o", "a", "i"))
        higher, threshold = evaluator.higher_is_same, plan.measures.thresholds[name]
        result = {}
        for probe_name, probes in (("output", t_a), ("inversion", t_i)):
            per = {"own_original": attacks.own_original(t_o, probes, threshold, higher),
                   "other_photo": attacks.other_photo(t_o, probes, labels, threshold, higher),
                   "closed_set": attacks.closed_set(t_o, probes, labels, higher)}
            if probe_name == "inversion":
                per = {k: [v if inv else None for v, inv in zip(vals, has_inv)] for k, vals in per.items()}
            for kind, vals in per.items():
                result.setdefault(kind, {})[probe_name] = vals
        for k, line in enumerate(lines):
            line["evaluators"][name]["attacks"] = {
                kind: {"output": r["output"][k], "inversion": r["inversion"][k]} for kind, r in result.items()}
        out[name] = result
    return out


def fid_value(evaluated: list[dict]) -> float | None:
    """FID of the originals (real) against the outputs (fake) from the gathered features (None: under 2 items)."""
    if len(evaluated) < 2:
        return None
    return frechet_distance(torch.stack([r["fid"][0] for r in evaluated]), torch.stack([r["fid"][1] for r in evaluated]))


def write_report(plan, results: list[dict]) -> dict:
    """Every cross-item metric from the merged ``results``; writes the report files; returns the report dict."""
    from anon import report as reporting
    from anon.stages.evaluate_summary import summarise

    lines = [r["line"] for r in results]
    evaluated_results = [r for r in results if "error" not in r["line"]]
    evaluated = [r["line"] for r in evaluated_results]
    unreadable = [r["id"] for r in results if "error" in r["line"]]
    state = accumulate(results, plan)
    attack_results = run_attacks(evaluated, plan, state, [r["label"] for r in evaluated_results])
    m, verdict = plan.measures, plan.verdict
    checks = [c for c, on in (("pose", m.pose_pair is not None),
                              ("expression", m.expression is not None and verdict.same_expression),
                              ("attributes", m.attributes is not None)) if on]
    for line in evaluated:
        line["privacy"] = privacy(line)
        line["utility"], line["utility_failures"] = utility(line, verdict, checks)
        line["passed"] = bool(line["privacy"] and line["utility"])
    fid = fid_value(evaluated_results) if m.fid_feature is not None else None
    report = summarise(plan.run_dir, plan.records, lines, unreadable, m.evaluators, plan.limits, state, attack_results,
                       fid, plan.calibration, plan.label_description, verdict, checks, m.pose_pair, m.expression,
                       plan.expression_skipped, plan.inversion_source)
    data = clean(report.to_dict())
    lines = clean(lines)
    run_dir = Path(plan.run_dir)
    write_atomic(run_dir / VERIFICATION, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    write_atomic(run_dir / FAILED_IDS, "".join(i + "\n" for i in data["failed_ids"]))
    if plan.plots:
        data["plots"] = reporting.write_plots(run_dir, lines, data)
    write_atomic(run_dir / REPORT_JSON, json.dumps(data, indent=2, sort_keys=True) + "\n")
    write_atomic(run_dir / REPORT_MD, reporting.markdown(data))
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


__all__ = ["merge_results", "accumulate", "run_attacks", "fid_value", "write_report", "clean", "VERIFICATION",
           "REPORT_JSON", "REPORT_MD", "FAILED_IDS"]
