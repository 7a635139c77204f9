"""Module paths from before the package layout (issue 18), for runs made before it.

A run folder's name hashes its config, ``_target_`` paths included (:mod:`anon.runtime.run_id`):
:func:`hashed_target` hashes a moved class under its path from before the move, so a run or a stage
cache made before the move resumes after it, in the same folder. A pre-move run's saved
``config.yaml`` names the old paths: :func:`current_targets` maps them to where the code is now
(``anon publish`` rebuilds the run from it).
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: module now -> its name at the root of ``anon`` before the move (root names, not dotted paths, so
#: that a search for an old dotted path finds only code that still uses it)
ROOT_NAME_BEFORE: dict[str, str] = {
    "anon.fit.module": "module",
    "anon.fit.output_writer": "output_writer",
    "anon.fit.precision": "precision",
    "anon.fit.step_curve": "step_curve",
    "anon.method.attribute_terms": "attribute_terms",
    "anon.method.baselines": "baselines",
    "anon.method.falco": "falco_method",
    "anon.method.inversion": "inversion",
    "anon.method.latent": "latent",
    "anon.method.losses": "losses",
    "anon.method.optimise": "optimise",
    "anon.method.pivotal": "pivotal",
    "anon.method.schedule": "schedule",
    "anon.method.shared_trunk": "shared_trunk",
    "anon.photos.anonymizer": "photos",
    "anon.photos.cli": "photos_cli",
    "anon.photos.face_outline": "face_outline",
    "anon.photos.falco_faces": "photo_falco",
    "anon.photos.paste": "photo_paste",
    "anon.photos.records": "photo_records",
    "anon.report.plots": "plots",
    "anon.report.render": "report",
    "anon.report.schema": "report_schema",
    "anon.report.visuals": "visuals",
    "anon.runtime.baseline_run": "baseline_run",
    "anon.runtime.cli": "cli",
    "anon.runtime.compose": "compose",
    "anon.runtime.download": "download",
    "anon.runtime.folder_lock": "folder_lock",
    "anon.runtime.manifest": "manifest",
    "anon.runtime.outputs": "outputs",
    "anon.runtime.preemption": "preemption",
    "anon.runtime.run": "run",
    "anon.runtime.run_id": "run_id",
    "anon.runtime.summary": "summary",
    "anon.runtime.wandb_record": "wandb_record",
    "anon.runtime.weights": "weights",
    "anon.runtime.weights_download": "weights_download",
}
_BEFORE = {now: "anon." + old for now, old in ROOT_NAME_BEFORE.items()}
_NOW = {old: now for now, old in _BEFORE.items()}


def _swap(target: str, table: dict[str, str]) -> str:
    for prefix in sorted(table, key=len, reverse=True):
        if target == prefix or target.startswith(prefix + "."):
            return table[prefix] + target[len(prefix):]
    return target


def hashed_target(target: str) -> str:
    """``target`` as the run folder hash sees it: a moved module's path from before the move."""
    return _swap(target, _BEFORE)


def current_target(target: str) -> str:
    """A ``_target_`` path from before the move -> where that code is now (others unchanged)."""
    return _swap(target, _NOW)


def current_targets(cfg: Any) -> Any:
    """A loaded (resolved) config with every pre-move ``_target_`` path replaced, in place; returns it."""
    if isinstance(cfg, DictConfig):
        for key in list(cfg.keys()):
            if OmegaConf.is_missing(cfg, key):
                continue
            value = cfg[key]
            if key == "_target_" and isinstance(value, str):
                cfg[key] = current_target(value)
            else:
                current_targets(value)
    elif isinstance(cfg, ListConfig):
        for value in cfg:
            current_targets(value)
    return cfg
