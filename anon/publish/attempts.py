"""One attempt: re-optimise some items of a run under a setting, and verify images under an evaluator set.

Every attempt lives in a folder of its own under the publish work folder (a run folder of its own,
with its manifest, lock and resume), so a killed attempt resumes where it stopped. Verification calls
the evaluate stage's public entry (:func:`anon.stages.evaluate.evaluate`) on a folder; a *view* folder
holds only a manifest pointing at images elsewhere (the run's own outputs, a fallback), so the run
folder itself is never written to.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from anon.errors import ConfigError
from anon.runtime.manifest import current_records, write_atomic
from anon.publish.ladder import Rung, apply_setting

VERIFICATION = "verification.jsonl"


def latest_records(run_dir: Path) -> dict[str, dict]:
    """``{id: latest manifest record}`` of a run folder (rank shards, else ``manifest.jsonl``)."""
    return {r["id"]: r for r in current_records(run_dir)}


def image_of(run_dir: Path, record: dict) -> Path:
    """The output image of a ``done`` record, as an absolute path."""
    return (Path(run_dir) / record.get("image", f"images/{record['id']}.png")).resolve()


def link_inputs(folder: Path, sources: dict[str, str]) -> Path:
    """``folder/<id><suffix>`` symlinks to the items' source images: the dataset of a re-optimisation
    (ids are relative paths, so nested ids keep their folders)."""
    for item_id, source in sorted(sources.items()):
        link = folder / f"{item_id}{Path(source).suffix}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and os.readlink(link) == str(Path(source).resolve()):
            continue
        tmp = link.with_name(f"{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(Path(source).resolve(), tmp)
        os.replace(tmp, link)
    return folder


def neighbour_pairs(run_cfg: DictConfig, ids: list[str], rank: int, path: Path) -> Path:
    """A pairs file mapping each id to its ``rank``-th nearest fake (0: the nearest) from the pair stage's
    ``neighbours.json`` beside the run's ``dataset.pairs``."""
    pairs = OmegaConf.select(run_cfg, "dataset.pairs")
    table = Path(pairs).with_name("neighbours.json") if pairs else None
    if table is None or not table.is_file():
        raise ConfigError(f"neighbour_rank={rank} needs the pair stage's neighbours.json beside dataset.pairs "
                          f"({pairs}); run the run through `anon pipeline`")
    neighbours = json.loads(table.read_text())
    chosen = {}
    for item_id in ids:
        ranked = neighbours.get(item_id, {}).get("ids", [])
        if rank >= len(ranked):
            raise ConfigError(f"neighbour_rank={rank}: the pair stage kept {len(ranked)} neighbour(s) for {item_id}; "
                              f"rerun the pipeline with pair.k={rank + 1} or more")
        chosen[item_id] = ranked[rank]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(chosen, indent=1, sort_keys=True) + "\n")
    return path


def reoptimise(run_cfg: DictConfig, rung: Rung | None, scale: dict | None, sources: dict[str, str],
               folder: Path) -> dict[str, dict]:
    """Anonymise ``sources`` again into the run folder ``folder`` with ``rung`` and ``scale`` applied to the
    run's config; resumes what ``folder`` already holds. Returns ``{id: latest record}`` there."""
    from anon.runtime.run import anonymize

    cfg = apply_setting(run_cfg, rung, scale)
    with open_dict(cfg):
        cfg.run_dir = str(folder / "run")
        cfg.retry_failed = False
        if OmegaConf.select(cfg, "dataset.limit") is not None:
            cfg.dataset.limit = None
        if rung is not None and rung.neighbour_rank:
            cfg.dataset.pairs = str(neighbour_pairs(run_cfg, sorted(sources), rung.neighbour_rank,
                                                    folder / "pairs.json"))
    inputs = link_inputs(folder / "input", sources)
    anonymize(cfg, images=inputs)
    return latest_records(folder / "run")


def write_view(folder: Path, items: dict[str, tuple[str, Path]]) -> Path:
    """A folder whose manifest lists ``{id: (source, image)}`` as done records: what evaluate reads."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"id": i, "source": str(s), "image": str(Path(im).resolve()), "status": "done"}
             for i, (s, im) in sorted(items.items())]
    write_atomic(folder / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    return folder


def verify(eval_cfg: DictConfig, folder: Path, evaluators: list[str], plots: bool = False) -> dict[str, dict]:
    """Evaluate the done records of ``folder`` under ``evaluators``; ``{id: verification line}``."""
    from anon.stages.evaluate import evaluate

    cfg = OmegaConf.create(OmegaConf.to_container(eval_cfg, resolve=False))
    with open_dict(cfg):
        cfg.run_dir = str(folder)
        cfg.evaluators = list(evaluators)
        cfg.inversion_dir = None
        cfg.plots = plots
        cfg.fid.enabled = False
        if "wandb_record" in cfg:
            cfg.wandb_record = False  # work folders are not runs of their own in W&B
    evaluate(cfg)
    lines = [json.loads(s) for s in (folder / VERIFICATION).read_text().splitlines() if s.strip()]
    return {line["id"]: line for line in lines}


def file_sha256(path: Path | None) -> str | None:
    """The sha256 of a file's bytes (None: no file): what was verified is what gets copied."""
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def attempt_record(item_id: str, attempt: int, kind: str, rung: int | None, setting: dict, image: Path | None,
                   line: dict | None, error: str | None = None) -> dict:
    """The manifest record of one attempt for one item, from its verification line (None: not verified)."""
    line = line or {}
    evaluators = line.get("evaluators") or {}
    measure = {n: ("similarity" if "similarity" in e else "distance") for n, e in evaluators.items()}
    evaluable = bool(line.get("evaluable"))
    privacy = bool(line.get("privacy")) and evaluable
    error = error or line.get("error")
    return {
        "id": item_id, "attempt": attempt, "kind": kind, "rung": rung, "setting": setting,
        "image": None if image is None else str(image), "sha256": file_sha256(image) if line else None,
        # False only when no deciding evaluator found a face in the original: no attempt can be verified
        "verifiable": evaluable or error is not None or not evaluators,
        "privacy": privacy, "utility": line.get("utility"), "utility_failures": line.get("utility_failures", []),
        "passed": bool(privacy and line.get("utility")),
        "face_detected": line.get("face_detected"),
        "score": {n: e.get(measure[n]) for n, e in evaluators.items()},
        "measure": measure,
        "threshold": {n: e.get("threshold") for n, e in evaluators.items()},
        "reidentified": {n: e.get("reidentified") for n, e in evaluators.items()},
        **({"error": error} if error else {}),
    }


__all__ = ["file_sha256", "latest_records", "image_of", "link_inputs", "neighbour_pairs", "reoptimise", "write_view", "verify",
           "attempt_record"]
