"""``anon publish run_dir=RUN out=DIR``: publish only what passed its verification (config ``conf/publish_run.yaml``).

1. verify every image of the run under the deciding evaluators (``verify.decide``);
2. re-optimise the privacy failures rung by rung (``publish.ladder``), the utility failures once with
   the attribute weights raised (``publish.utility_retry``), re-verifying after each attempt;
3. what never passes: withheld, or masked / blurred (``publish.fallback``) if that image passes;
4. copy the published images into ``DIR/images`` (atomically), write ``DIR/manifest.jsonl`` (every
   image: published or withheld, why, each attempt), evaluate the published images under the report
   evaluators (``verify.report``: ``DIR/report.md``) and write ``DIR/summary.md`` / ``summary.json``.

The work (attempt folders, ``attempts.jsonl``) lives in ``RUN/publish/<hash of the deciding settings>``,
never in ``DIR``: only verified images ever reach ``DIR``. Rerunning the same command resumes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from anon.errors import ConfigError, MissingDataError
from anon.runtime.folder_lock import FolderLock
from anon.runtime.manifest import append_jsonl, write_atomic
from anon.runtime.moved_modules import current_targets
from anon.publish import attempts as A
from anon.publish import ladder as L
from anon.publish.loop import ATTEMPTS, Settings, read_history, run_loop
from anon.publish.release import check_fallback, copy_atomic, fallback_image, prune
from anon.publish.summary import build_summary, markdown, write_summary

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def settings_from(cfg: DictConfig) -> Settings:
    p = cfg.publish
    retry = p.get("utility_retry")
    on_utility = p.get("on_utility_failure", "withhold")
    if on_utility not in ("withhold", "publish"):
        raise ConfigError(f"publish.on_utility_failure={on_utility!r}: choose withhold or publish")
    scale = dict(OmegaConf.to_container(retry.scale, resolve=True)) if retry and retry.get("enabled", True) else None
    return Settings(rungs=L.parse_ladder(p.get("ladder")), utility_retry=scale,
                    fallback=check_fallback(p.get("fallback", "withhold")), on_utility_failure=on_utility,
                    blur_sigma=float(p.get("blur_sigma", 8.0)), mask_box=tuple(p.get("mask_box", (0.2, 0.2, 0.8, 0.9))))


def work_folder(cfg: DictConfig) -> Path:
    """``publish.work_dir``, else ``RUN/publish/<hash>``: one work folder per deciding setup (ladder, retry,
    deciding evaluators, thresholds, verdict); a different report set reuses it."""
    from anon.runtime.run_id import config_hash

    if cfg.publish.get("work_dir"):
        return Path(cfg.publish.work_dir)
    key = config_hash(cfg.publish.get("ladder"), cfg.publish.get("utility_retry"), list(cfg.verify.decide),
                      cfg.get("thresholds"), cfg.get("verdict"), cfg.get("detector"), cfg.get("pose"),
                      cfg.get("expression"))
    return Path(cfg.run_dir) / "publish" / key


def _reason(decision: dict, settings: Settings) -> tuple[str, str]:
    """(kind, sentence) of why an item is not published as anonymised."""
    rec, action = decision["record"], decision["action"]
    if action == "failed":
        return "anonymisation failed", f"anonymisation failed: {rec.get('error')}"
    if action == L.UTILITY_FAILED:
        return "utility failed", f"utility failed after {len(decision['history']) - 1} re-optimisation(s): " + \
            "; ".join(rec.get("utility_failures") or ["not measured"])
    if not rec.get("verifiable", True):
        return "cannot be verified", "no deciding evaluator found a face in the original: it cannot be verified"
    who = [f"{n} ({rec['measure'][n]} {rec['score'][n]:.3f}, threshold {rec['threshold'][n]:.3f})"
           for n, r in rec.get("reidentified", {}).items() if r]
    what = f"re-identified by {', '.join(who)}" if who else (rec.get("error") or "no face detected in the output")
    return "privacy failed", f"privacy failed after {len(settings.rungs)} rung(s) of the ladder: {what}"


def _fallbacks(decisions: dict, run_records: dict, work: Path, settings: Settings, verify) -> dict[str, dict]:
    """Mask / blur every item that fell to the fallback; verify them; ``{id: fallback record}``."""
    kind = settings.fallback
    wanted = {i: d for i, d in decisions.items() if d["action"] == L.FALLBACK and d["record"].get("verifiable", True)}
    if kind == "withhold" or not wanted:
        return {}
    history = read_history(work)
    known = {i: r for i, recs in history.items() for r in recs if r["kind"] == "fallback" and r["setting"]["name"] == kind}
    todo = [i for i in wanted if i not in known]
    if todo:
        folder = work / f"fallback-{kind}"
        images = {}
        for i in todo:
            base = wanted[i]["record"].get("image") or run_records[i]["source"]
            images[i] = fallback_image(kind, Path(base), folder / "images" / f"{i}.png", settings.blur_sigma,
                                       settings.mask_box)
        lines = verify(A.write_view(folder, {i: (run_records[i]["source"], images[i]) for i in todo}))
        records = []
        for i in todo:
            rec = A.attempt_record(i, len(history[i]), "fallback", None, {"name": kind}, images[i], lines.get(i))
            line = lines.get(i) or {}
            # published iff judged and no deciding evaluator re-identifies it (no face left is fine here)
            rec["passed"] = bool(line.get("evaluable")) and not any(rec["reidentified"].values())
            records.append(rec)
        append_jsonl(work / ATTEMPTS, records)
        known.update({r["id"]: r for r in records})
    return {i: known[i] for i in wanted}


def publish_folder(cfg: DictConfig, decisions: dict, fallbacks: dict, settings: Settings, out: Path) -> list[dict]:
    """Copy what is published into ``out/images`` and return every item's manifest entry."""
    entries, keep = [], set()
    for item_id, d in sorted(decisions.items()):
        rec, action = d["record"], d["action"]
        steps = [h for h in d["history"] if h["kind"] != "fallback"]
        entry = {"id": item_id, "status": "withheld", "image": None, "fallback": None, "attempt": rec.get("attempt"),
                 "setting": (rec.get("setting") or {}).get("name"), "reoptimisations": max(len(steps) - 1, 0),
                 "final": {k: v for k, v in rec.items() if k != "image"} if action != "failed" else None,
                 "attempts": [{k: h.get(k) for k in ("attempt", "kind", "setting", "score", "threshold", "privacy",
                                                      "utility", "utility_failures", "passed", "error")} for h in d["history"]]}
        source = None
        if action == L.PUBLISH:
            entry.update(status="published", reason=None, reason_kind=None)
            source = Path(rec["image"])
        elif action == L.UTILITY_FAILED and settings.on_utility_failure == "publish":
            kind, text = _reason(d, settings)
            entry.update(status="published_utility_failed", reason=text, reason_kind=kind)
            source = Path(rec["image"])
        elif action == L.FALLBACK and item_id in fallbacks and fallbacks[item_id]["passed"]:
            kind, text = _reason(d, settings)
            chosen = fallbacks[item_id]
            entry.update(status="published", fallback=settings.fallback, reason=text, reason_kind=kind,
                         final={k: v for k, v in chosen.items() if k != "image"}, attempt=chosen["attempt"],
                         setting=settings.fallback)
            source = Path(fallbacks[item_id]["image"])
        else:
            kind, text = _reason(d, settings)
            if action == L.FALLBACK and item_id in fallbacks:
                kind, text = f"{settings.fallback} fallback re-identified", \
                    f"{text}; its {settings.fallback} fallback was still re-identified or could not be judged"
            entry.update(reason=text, reason_kind=kind)
        if source is not None and A.file_sha256(source) != entry["final"].get("sha256"):
            # the bytes changed after their verification (a run redone in place): never copy them unverified
            entry.update(status="withheld", image=None, reason_kind="changed after verification",
                         reason=f"{source} changed after it was verified: not copied (publish.work_dir afresh "
                                "verifies it again)")
            source = None
        if source is not None:
            target = out / "images" / f"{item_id}{source.suffix}"
            copy_atomic(source, target)
            keep.add(target)
            entry["image"] = str(target.relative_to(out))
        entries.append(entry)
    prune(out / "images", keep)
    return entries


def run_publish(cfg: DictConfig, optimise=None, verify_decide=None, verify_report=None) -> dict:
    """The stage from a composed ``conf/publish_run.yaml``; returns the summary. ``optimise`` and the two
    ``verify_*`` default to the real anonymisation and the evaluate stage (tests pass stand-ins)."""
    run_dir, out = Path(cfg.run_dir), Path(cfg.out)
    decide, report = list(cfg.verify.decide or []), list(cfg.verify.report or [])
    if not decide:
        raise ConfigError("verify.decide is empty: name the evaluators that decide, e.g. verify.decide=[dlib_resnet_crops]")
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise ConfigError(f"out={out} must be a folder outside the run folder {run_dir}")
    run_records = A.latest_records(run_dir)
    if not run_records:
        raise MissingDataError(run_dir / "manifest.jsonl", "run manifest", "anonymise first, or fix `run_dir`")
    settings = settings_from(cfg)
    work = work_folder(cfg)
    run_cfg = current_targets(OmegaConf.load(run_dir / "config.yaml")) if (run_dir / "config.yaml").is_file() else None
    if optimise is None:
        if run_cfg is None:
            raise MissingDataError(run_dir / "config.yaml", "run config", "re-optimisation rebuilds the run from it")
        optimise = lambda rung, scale, sources, folder: A.reoptimise(run_cfg, rung, scale, sources, folder)  # noqa: E731
    verify_decide = verify_decide or (lambda folder: A.verify(cfg, folder, decide))
    verify_report = verify_report or (lambda folder: A.verify(cfg, folder, report, plots=True))
    with FolderLock(work, "publish work folder"), FolderLock(out, "published folder"):
        write_atomic(work / "publish_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        decisions = run_loop(run_dir, run_records, work, settings, optimise, verify_decide)
        fallbacks = _fallbacks(decisions, run_records, work, settings, verify_decide)
        entries = publish_folder(cfg, decisions, fallbacks, settings, out)
        published = {e["id"]: (run_records[e["id"]]["source"], out / e["image"]) for e in entries if e["image"]}
        report_lines = []
        if report and published:
            final = A.write_view(work / "final", published)
            report_lines = list(verify_report(final).values())
            for name in ("report.json", "report.md"):
                if (final / name).is_file():
                    shutil.copyfile(final / name, out / f".{name}.tmp")
                    (out / f".{name}.tmp").replace(out / name)
        write_atomic(out / "manifest.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
        verdict = OmegaConf.to_container(cfg.get("verdict"), resolve=True) if cfg.get("verdict") else {}
        verdict["utility_checks"] = [name for name, on in (("pose", cfg.get("pose") is not None),
                                                           ("expression", bool(cfg.get("expression"))),
                                                           ("attributes", bool(cfg.get("attributes")))) if on]
        summary = build_summary(entries, decide, report, report_lines, settings_record(settings, work), verdict)
        write_summary(out, summary)
    print(markdown(summary), flush=True)
    return summary


def settings_record(settings: Settings, work: Path) -> dict:
    return {"ladder": [r.describe() for r in settings.rungs], "utility_retry": settings.utility_retry,
            "fallback": settings.fallback, "on_utility_failure": settings.on_utility_failure,
            "blur_sigma": settings.blur_sigma, "work_folder": str(work)}


def compose_publish(overrides: list[str]) -> DictConfig:
    """``conf/publish_run.yaml`` with overrides, inside or outside a running Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="publish_run", overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="publish_run", overrides=overrides)


def publish_entry() -> None:
    """``anon publish run_dir=... out=...`` (Hydra reads ``sys.argv``)."""
    import hydra

    from anon.runtime.run import one_line_errors

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="publish_run")
    def main(cfg: DictConfig) -> None:
        with one_line_errors():
            run_publish(cfg)

    main()


if __name__ == "__main__":
    publish_entry()
