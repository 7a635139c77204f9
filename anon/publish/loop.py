"""The closed loop: verify, escalate the failures rung by rung, decide, publish.

:func:`run_loop` is independent of how images are made and judged: it is given ``optimise(rung, scale,
sources, folder) -> {id: record}`` and ``verify(folder) -> {id: verification line}`` (the stage passes
the real anonymisation and the evaluate stage; tests pass tiny stand-ins). Every attempt's outcome is
appended to ``<work>/attempts.jsonl`` before the next attempt starts, and each decision is a pure
function of those records (:func:`anon.publish.ladder.next_step`), so a rerun after kill -9 redoes at
most the attempt in flight (which itself resumes from its own run folder) and reaches the same result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from anon.runtime.manifest import append_jsonl, _parse_lines
from anon.publish import ladder as L
from anon.publish.attempts import attempt_record, image_of, write_view

ATTEMPTS = "attempts.jsonl"


@dataclass
class Settings:
    """What the loop needs from ``conf/publish``: the ladder, the utility retry and the fallback."""

    rungs: list = field(default_factory=list)
    utility_retry: dict | None = None       # {config key: factor} applied once, None: no retry
    fallback: str = "withhold"              # withhold | mask | blur
    on_utility_failure: str = "withhold"    # withhold | publish (with the verdict recorded)
    blur_sigma: float = 8.0
    mask_box: tuple = (0.2, 0.2, 0.8, 0.9)


def read_history(work: Path) -> dict[str, list[dict]]:
    """``{id: attempt records in attempt order}`` (a record written twice: the last one counts)."""
    path = Path(work) / ATTEMPTS
    by_key = {}
    for rec in _parse_lines(path.read_text()) if path.is_file() else []:
        by_key[(rec["id"], rec["attempt"])] = rec
    history: dict[str, list[dict]] = {}
    for (item_id, _), rec in sorted(by_key.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        history.setdefault(item_id, []).append(rec)
    return history


def ladder_history(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] != "fallback"]


def folder_name(kind: str, rung: int | None, rungs: list, base: str | None = None) -> str:
    if kind == "privacy":
        return f"privacy-{rung + 1}-{rungs[rung].name}"
    if kind == "utility":
        return f"utility-after-{base}"
    return kind


def setting_of(kind: str, rung: int | None, rungs: list, utility_scale: dict | None = None) -> dict:
    """What the manifest records as an attempt's setting."""
    if kind == "initial":
        return {"name": "initial (the run's own setting)"}
    if kind == "privacy":
        return rungs[rung].describe()
    base = rungs[rung].describe() if rung is not None else {"name": "initial"}
    return {"name": f"attributes raised after {base['name']}", "base": base, "scale": dict(utility_scale or {})}


def run_loop(run_dir: Path, run_records: dict[str, dict], work: Path, settings: Settings, optimise: Callable,
             verify: Callable, log: Callable = print) -> dict[str, dict]:
    """Drive every ``done`` item of ``run_records`` to a final decision; returns ``{id: decision}`` with
    ``action`` (publish | utility_failed | fallback | failed), the deciding ``record`` and its ``history``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    done = {i: r for i, r in sorted(run_records.items()) if r.get("status") == "done"}
    history = read_history(work)

    missing = [i for i in done if i not in history]
    if missing:  # attempt 0: the run's own outputs, verified in a view folder (the run folder is not written)
        images = {i: image_of(run_dir, done[i]) for i in missing}
        lines = verify(write_view(work / "initial", {i: (done[i]["source"], images[i]) for i in missing}))
        append_jsonl(work / ATTEMPTS, [attempt_record(i, 0, "initial", None, setting_of("initial", None, []),
                                                      images[i], lines.get(i), None if i in lines else "not verified")
                                       for i in missing])
        history = read_history(work)

    while True:
        groups: dict[tuple, list[str]] = {}
        for item_id in done:
            action, value = L.next_step(ladder_history(history[item_id]), len(settings.rungs),
                                        settings.utility_retry is not None)
            if action == L.ESCALATE:
                groups.setdefault(("privacy", value, None), []).append(item_id)
            elif action == L.RETRY_UTILITY:
                last = history[item_id][-1]
                base = "initial" if last["kind"] == "initial" else folder_name("privacy", last["rung"], settings.rungs)
                groups.setdefault(("utility", last["rung"], base), []).append(item_id)
        if not groups:
            break
        for (kind, rung, base), ids in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]), str(kv[0][2]))):
            name = folder_name(kind, rung, settings.rungs, base)
            log(f"[anon] publish: attempt {name} for {len(ids)} image(s)")
            folder = work / name
            rung_obj = settings.rungs[rung] if rung is not None else None
            scale = settings.utility_retry if kind == "utility" else None
            results = optimise(rung_obj, scale, {i: done[i]["source"] for i in ids}, folder)
            lines = verify(folder / "run") if any(r.get("status") == "done" for r in results.values()) else {}
            setting = setting_of(kind, rung, settings.rungs, settings.utility_retry)
            records = []
            for item_id in ids:
                rec = results.get(item_id) or {}
                ok = rec.get("status") == "done"
                image = image_of(folder / "run", rec) if ok else None
                error = None if ok else f"anonymisation {rec.get('status', 'missing')}: {rec.get('error')}"
                records.append(attempt_record(item_id, len(history[item_id]), kind, rung, setting, image,
                                              lines.get(item_id) if ok else None, error))
            append_jsonl(work / ATTEMPTS, records)
            history = read_history(work)

    decisions = {}
    for item_id, rec in sorted(run_records.items()):
        if item_id not in done:
            decisions[item_id] = {"action": "failed", "record": rec, "history": []}
            continue
        steps = ladder_history(history[item_id])
        action, value = L.next_step(steps, len(settings.rungs), settings.utility_retry is not None)
        chosen = next(h for h in steps if h["attempt"] == value) if value is not None else steps[-1]
        decisions[item_id] = {"action": action, "record": chosen, "history": history[item_id]}
    return decisions


__all__ = ["Settings", "ATTEMPTS", "read_history", "run_loop", "folder_name", "setting_of"]
