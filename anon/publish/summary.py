"""The run summary a data-protection officer reads: what was published, re-optimised, withheld, fell back.

``summary.json`` (numbers) and ``summary.md`` (the same in sentences), from the published folder's
manifest entries, the attempt history, the evaluator sets and their thresholds, and the report-set
evaluation of the published images.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from anon.runtime.manifest import write_atomic


def _worse(measure: str, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b) if measure == "similarity" else min(a, b)


def worst_scores(records: list[dict]) -> dict[str, dict]:
    """Per evaluator, the score closest to re-identification among ``records`` (attempt records or
    verification lines): the highest similarity, or the lowest distance."""
    worst: dict[str, dict] = {}
    for rec in records:
        if "evaluators" in rec:  # a verification line
            items = {n: (("similarity" if "similarity" in e else "distance"), e.get("similarity", e.get("distance")),
                         e.get("threshold"), e.get("reidentified")) for n, e in rec["evaluators"].items()}
        else:
            items = {n: (rec["measure"][n], rec["score"][n], rec["threshold"][n], rec["reidentified"][n])
                     for n in rec.get("score", {})}
        for name, (measure, score, threshold, reidentified) in items.items():
            entry = worst.setdefault(name, {"measure": measure, "worst": None, "threshold": threshold,
                                            "reidentified": 0, "judged": 0})
            entry["worst"] = _worse(measure, entry["worst"], score)
            entry["judged"] += reidentified is not None
            entry["reidentified"] += bool(reidentified)
    return worst


def build_summary(entries: list[dict], decide: list[str], report: list[str], report_lines: list[dict],
                  settings: dict, verdict: dict) -> dict:
    """The numbers of ``summary.json``."""
    status = Counter(e["status"] for e in entries)
    published = [e for e in entries if e["status"].startswith("published")]
    by_attempt = Counter(f"{e['attempt']} ({e['setting']})" for e in published if e.get("fallback") is None)
    reoptimised = [e for e in entries if e.get("reoptimisations", 0) > 0]
    return {
        "images": len(entries),
        "published": len(published),
        "published_first_time": sum(1 for e in published if e.get("attempt") == 0 and e.get("fallback") is None),
        "published_by_attempt": dict(sorted(by_attempt.items())),
        "published_with_failed_utility": status["published_utility_failed"],
        "re_optimised": len(reoptimised),
        "re_optimisations": sum(e.get("reoptimisations", 0) for e in entries),
        "withheld": status["withheld"],
        "fell_back": dict(Counter(e["fallback"] for e in published if e.get("fallback"))),
        "withheld_reasons": dict(Counter(e["reason_kind"] for e in entries if e["status"] == "withheld")),
        "evaluators": {"decide": decide, "report": report},
        "worst_remaining": {
            "decide": worst_scores([e["final"] for e in published if e.get("final")]),
            "report": worst_scores(report_lines),
        },
        "verdict_thresholds": verdict,
        "settings": settings,
    }


def _score(entry: dict) -> str:
    if entry["worst"] is None:
        return "n/a"
    closer = "highest similarity" if entry["measure"] == "similarity" else "lowest distance"
    same = ">=" if entry["measure"] == "similarity" else "<="
    threshold = "n/a" if entry["threshold"] is None else f"{entry['threshold']:.3f}"
    return (f"{closer} {entry['worst']:.3f} (same person if {same} {threshold}); "
            f"re-identified {entry['reidentified']} of {entry['judged']} judged")


def markdown(summary: dict) -> str:
    s = summary
    lines = [
        "# Publication summary", "",
        f"Of **{s['images']}** images, **{s['published']} were published** and **{s['withheld']} withheld**.",
        f"- published at the first verification: {s['published_first_time']}",
        f"- re-optimised: {s['re_optimised']} image(s) ({s['re_optimisations']} re-optimisation(s) in all)",
        f"- published with a fallback instead of an anonymisation: {sum(s['fell_back'].values())} "
        f"({', '.join(f'{k}: {v}' for k, v in s['fell_back'].items()) or 'none'})",
        f"- published although utility failed (`publish.on_utility_failure=publish`): {s['published_with_failed_utility']}",
        "", "## Published, by the attempt that passed", "",
        "| attempt (setting) | images |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in s["published_by_attempt"].items()],
        "", "## Withheld, by reason", "", "| reason | images |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in s["withheld_reasons"].items()],
        "", "## Evaluators", "",
        f"- **deciding** (they chose what is re-optimised and what is published): {', '.join(s['evaluators']['decide'])}",
        f"- **reporting** (the table below; not used to decide unless also listed above): "
        f"{', '.join(s['evaluators']['report'])}", "",
        "Worst remaining score among the published images:", "",
        "| set | evaluator | worst remaining |", "|---|---|---|",
        *[f"| {kind} | {name} | {_score(e)} |" for kind in ("decide", "report")
          for name, e in s["worst_remaining"][kind].items()],
        "", "## Verdict thresholds", "",
        *[f"- {k}: {v}" for k, v in s["verdict_thresholds"].items()],
        "", "The manifest (`manifest.jsonl`) lists every image: published or withheld, why, and each attempt.", ""]
    return "\n".join(lines)


def write_summary(out: Path, summary: dict) -> None:
    write_atomic(Path(out) / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    write_atomic(Path(out) / "summary.md", markdown(summary))


__all__ = ["worst_scores", "build_summary", "markdown", "write_summary"]
