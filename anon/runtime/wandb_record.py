"""W&B as the experiment record: one W&B run per run folder, holding the resolved config, the
anonymisation's loss curve and the evaluation's metrics and plots.

* :func:`build_logger` makes the run's logger. With ``logger=wandb`` the W&B run id is kept in the run
  folder (``wandb_run.json``), so a resumed anonymisation and ``anon evaluate`` log into the same W&B run;
  under ``--multirun`` every point gets its own run, grouped by :func:`sweep_group`.
* :func:`close_run` finishes the W&B run at the end of each job (else Lightning reuses it for the next
  point of a multirun in the same process).
* :func:`record_evaluation` resumes the run and logs the report's numbers (``eval/...``), its plots and,
  only when asked for (the originals are private data), a table of example images.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from anon.errors import ConfigError
from anon.runtime.manifest import write_atomic

RECORD = "wandb_run.json"
EXAMPLES_KEY = "eval/examples"


def is_wandb(logger_cfg) -> bool:
    return bool(logger_cfg) and str(logger_cfg.get("_target_", "")).endswith("WandbLogger")


def read_record(run_dir: str | Path) -> dict | None:
    """The run folder's W&B run (id, project, group, next step), or None when it never logged to W&B."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not a W&B run record ({err}); delete it to start a new W&B run") from None
    return record if isinstance(record, dict) and record.get("id") else None


def write_record(run_dir: str | Path, record: dict) -> None:
    write_atomic(Path(run_dir) / RECORD, json.dumps(record, indent=2, sort_keys=True))


def sweep_group() -> str | None:
    """Under Hydra ``--multirun``: a name for the sweep, the same for each of its points -- the swept
    overrides as written (``loss.margin=0.3,0.5``) and a hash of all of the sweep's overrides. None otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    saved = sweep_dir / "multirun.yaml"  # Hydra's sweeper saves the sweep's own overrides there
    overrides = OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task") if saved.is_file() else None
    if not overrides:
        return f"sweep-{sweep_dir.name}"
    overrides = [str(o) for o in overrides]
    swept = " ".join(o for o in overrides if "," in o.split("=", 1)[-1] or "(" in o.split("=", 1)[-1])
    digest = hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:8]
    return f"sweep {swept[:100]} {digest}".replace("  ", " ")


def build_logger(cfg: DictConfig, run_dir: Path, write: bool = True):
    """The configured Lightning logger writing into ``run_dir`` (None without ``logger``). For W&B: the id
    stored in the run folder (a new one the first time; ``write``: store it, false on ranks > 0)."""
    if not cfg.get("logger"):
        return None
    from hydra.utils import instantiate

    if not is_wandb(cfg.logger):
        return instantiate(cfg.logger, save_dir=str(run_dir))
    from wandb.sdk.lib.runid import generate_id

    record = read_record(run_dir) or {"id": generate_id(), "next_step": 0}
    record.update(project=cfg.logger.get("project"), entity=cfg.logger.get("entity"), name=cfg.logger.get("name"),
                  group=cfg.logger.get("group") or sweep_group() or record.get("group"))
    if write:
        write_record(run_dir, record)
    return instantiate(cfg.logger, save_dir=str(run_dir), id=record["id"], group=record["group"])


def loggable_config(cfg: DictConfig) -> dict:
    """The resolved config as plain nested dicts: what the logger records as hyperparameters."""
    return OmegaConf.to_container(cfg, resolve=True)


def close_run(logger, run_dir: Path, next_step: int | None = None, exit_code: int = 0) -> None:
    """Finish this process's W&B run of ``logger`` (nothing for other loggers, or when it never started);
    ``next_step``: the first history step free for the next logging into the run (resume, evaluate)."""
    run = getattr(logger, "_experiment", None) if logger is not None and type(logger).__name__ == "WandbLogger" else None
    if run is None or getattr(run, "_is_finished", False):
        return
    if next_step is not None:
        record = read_record(run_dir)
        if record is not None and record.get("id") == run.id:
            write_record(run_dir, {**record, "next_step": max(int(record.get("next_step", 0)), int(next_step))})
    run.finish(exit_code=exit_code)
    logger._experiment = None


def log_summary_run(cfg: DictConfig, run_dir: Path, summary: dict) -> None:
    """A run without a Trainer (the baselines): its config and summary through the configured logger
    (one W&B run per run folder, as :func:`build_logger`). Rank 0 only."""
    logger = build_logger(cfg, run_dir)
    if logger is None:
        return
    logger.log_hyperparams(loggable_config(cfg))
    step = int((read_record(run_dir) or {}).get("next_step", 0))
    logger.log_metrics({f"run/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, step=step)
    logger.save()
    close_run(logger, run_dir, next_step=step + 1)


# ---------------------------------------------------------------------------------------------- evaluation
def flat_metrics(report: dict, prefix: str = "eval") -> dict[str, float]:
    """Every number of the report under its path (``eval/evaluators/dlib_resnet/reidentification_rate``);
    booleans as 0/1, strings, lists and unmeasured (None) values left out."""
    out: dict[str, float] = {}

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}/{key}")
        elif isinstance(value, bool):
            out[path] = int(value)
        elif isinstance(value, (int, float)):
            out[path] = value
    walk({k: v for k, v in report.items() if k != "plots"}, prefix)
    return out


def record_evaluation(cfg: DictConfig, report: dict) -> str | None:
    """Log ``report`` into the W&B run of ``cfg.run_dir`` (resumed by its stored id); returns the run id,
    or None when the run never logged to W&B or ``wandb_record=false``."""
    run_dir = Path(cfg.run_dir)
    record = read_record(run_dir)
    if record is None or cfg.get("wandb_record", "auto") in (False, "false", None):
        return None
    import wandb

    run = wandb.init(id=record["id"], project=record.get("project"), entity=record.get("entity"),
                     group=record.get("group"), name=record.get("name"), dir=str(run_dir), resume="allow")
    step = int(record.get("next_step", 0))
    try:
        data: dict = dict(flat_metrics(report))
        for rel in report.get("plots") or []:
            if (run_dir / rel).is_file():
                data[f"eval/plots/{Path(rel).stem}"] = wandb.Image(str(run_dir / rel))
        if cfg.get("log_examples"):
            data[EXAMPLES_KEY] = example_table(run_dir, int(cfg.get("log_examples_max", 8)))
        run.log({**data, "trainer/global_step": step}, step=step)  # Lightning's x-axis, after the anonymisation's
        write_record(run_dir, {**record, "next_step": step + 1})
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return record["id"]


def example_table(run_dir: Path, limit: int):
    """A ``wandb.Table`` of the first ``limit`` verified images: id, original, anonymised, per-evaluator
    score and the verdict (originals are faces: only on request)."""
    import wandb

    lines = [json.loads(x) for x in (run_dir / "verification.jsonl").read_text().splitlines() if x.strip()]
    lines = [line for line in lines if line.get("image") and line.get("source") and Path(line["source"]).is_file()
             and (run_dir / line["image"]).is_file()][:limit]
    names = sorted({name for line in lines for name in line.get("evaluators", {})})
    table = wandb.Table(columns=["id", "original", "anonymised", *[f"score/{n}" for n in names], "passed"])
    for line in lines:
        entries = [line["evaluators"].get(n) or {} for n in names]
        scores = [e.get("similarity", e.get("distance")) for e in entries]
        table.add_data(line["id"], wandb.Image(line["source"]), wandb.Image(str(run_dir / line["image"])), *scores,
                       line.get("passed"))
    return table
