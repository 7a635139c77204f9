"""Run-level summary from the manifest: counts, mean identity similarity before/after, time per image."""
from __future__ import annotations

import json
from pathlib import Path

from anon.runtime.manifest import merge, merged_is_stale, read_records, write_atomic

SUMMARY = "summary.json"


def summarise(records: list[dict]) -> dict:
    latest = {r["id"]: r for r in records}
    done = [r for r in latest.values() if r["status"] == "done"]
    failed = sorted(r["id"] for r in latest.values() if r["status"] != "done")

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    return {
        "images_done": len(done),
        "images_failed": len(failed),
        "failed_ids": failed,
        # Baseline records (blur, pixelate, mask) have no loss terms: NaN, as for an empty run.
        "identity_similarity_before": mean(r["identity_similarity_before"] for r in done if "identity_similarity_before" in r),
        "identity_similarity_after": mean(r["identity_similarity_after"] for r in done if "identity_similarity_after" in r),
        "loss_total": mean(r["loss"]["total"] for r in done if "loss" in r),
        "loss_identity": mean(r["loss"]["identity"] for r in done if "loss" in r),
        "loss_attribute": mean(r["loss"]["attribute"] for r in done if "loss" in r),
        "seconds_per_image": mean(r["wall_time_s"] for r in done),
    }


def write_run_summary(run_dir: str | Path) -> dict:
    """Merge the rank manifests into ``manifest.jsonl`` and write ``summary.json``."""
    run_dir = Path(run_dir)
    merge(run_dir)
    summary = summarise(read_records(run_dir))
    write_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def refresh_run_summary(run_dir: str | Path) -> bool:
    """Rebuild ``manifest.jsonl`` and ``summary.json`` when they disagree with the shards; True if rebuilt."""
    if not merged_is_stale(run_dir):
        return False
    write_run_summary(run_dir)
    return True
