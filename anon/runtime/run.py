"""The anonymisation run: compose networks, data, logger and trainer from the Hydra config and go.

``python -m anon.runtime.run [overrides]`` or ``anon anonymize [overrides]``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from anon.runtime.baseline_run import is_baseline, run_baseline
from anon.runtime.compose import method_parts
from anon.errors import AnonError, ConfigError, find_cause
from anon.runtime.folder_lock import FolderLock
from anon.runtime.manifest import done_ids, write_atomic
from anon.fit.module import FalcoModule
from anon.fit.output_writer import OutputWriter
from anon.fit.precision import effective_precision
from anon.runtime.preemption import Preempted, StopCallback, StopFlag, exit_code, launcher_forward, requeue_slurm_job
from anon.runtime.summary import SUMMARY, refresh_run_summary, write_run_summary
from anon.runtime.run_id import register_resolvers
from anon.runtime.wandb_record import build_logger, close_run, loggable_config, read_record


@contextmanager
def one_line_errors():
    """Print an :class:`AnonError` (also one wrapped by Hydra's instantiate) as one line and exit 2."""
    try:
        yield
    except Exception as err:
        cause = find_cause(err, AnonError)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr, flush=True)
        sys.exit(2)


CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
register_resolvers()


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.output_root) / "runs" / cfg.run_name


def build_module(cfg: DictConfig) -> FalcoModule:
    """The LightningModule of the config: the method's pieces (:func:`anon.runtime.compose.method_parts`) and ``module.*``,
    with ``module.precision`` as ``trainer.precision`` makes it (``bf16-mixed`` -> ``bf16``, :mod:`anon.fit.precision`)."""
    precision = effective_precision(cfg.module.get("precision", "32"), OmegaConf.select(cfg, "trainer.precision"))
    return instantiate(cfg.module, **method_parts(cfg), precision=precision)


def run_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    """The Trainer's callbacks: the run folder's writer, then the stop check (the order matters: see
    :mod:`anon.runtime.preemption`). Built here rather than in a Hydra ``callbacks`` group: the run folder is only
    known at run time (the Hydra output folder, a sweep's subfolder or ``run_dir=``), the writer is what
    makes a run resumable (without it nothing is written or recorded), and neither has a setting of its
    own beyond ``output.format``; the config (and so config.yaml and the run folder hash) stays as it was."""
    return [OutputWriter(run_dir, OmegaConf.select(cfg, "output.format", default="png")), StopCallback()]


def check_run_config(cfg: DictConfig) -> None:
    """Values no run can work with, as one-line :class:`ConfigError` (before anything is built)."""
    for key in ("dataset.batch_size", "module.steps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{key} must be a whole number >= 1, not {value!r} (fix `{key}=...`)")
    if OmegaConf.select(cfg, "module") is not None:
        effective_precision(OmegaConf.select(cfg, "module.precision", default="32"),
                            OmegaConf.select(cfg, "trainer.precision"))


def is_launched_rank() -> bool:
    """True in a process a launcher (Lightning's DDP subprocess launcher, torchrun, srun) started as a
    rank other than the first: it works inside a run folder another process holds."""
    return any(int(os.environ.get(var, "0") or 0) != 0 for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def run_folder_lock(run_dir: Path):
    return nullcontext() if is_launched_rank() else FolderLock(run_dir, "run folder")


def anonymize(cfg: DictConfig, images: str | Path | None = None) -> dict:
    """Run (or resume) one anonymisation run; returns the run summary (rank 0) and the run folder.

    ``images`` replaces ``dataset.images`` (the pipeline passes its aligned crops). A second process
    on the same run folder is refused (:class:`anon.runtime.folder_lock.FolderInUseError`)."""
    check_run_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_folder_lock(run_dir):
        return _anonymize_locked(cfg, run_dir, images)


def _stopped(run_dir: Path, why: str, code: int, requeue: bool = False) -> None:
    """Rank 0 after a stop: merge what the shards hold, say how to resume, exit with ``code``."""
    summary = write_run_summary(run_dir)
    requeued = requeue and requeue_slurm_job()
    print(f"[anon] {why}: {summary['images_done']} images done and recorded in "
          f"{run_dir / 'manifest.jsonl'}; {'job requeued' if requeued else 'run the same command to resume'}",
          flush=True)
    raise SystemExit(code) from None


def _anonymize_locked(cfg: DictConfig, run_dir: Path, images: str | Path | None) -> dict:
    write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if is_baseline(cfg):  # blur / pixelate / mask: no networks, no Trainer
        return run_baseline(cfg, run_dir, images)
    data = instantiate(cfg.dataset, **({"images": str(images)} if images is not None else {}))
    module = build_module(cfg)
    data.attach(run_dir, getattr(module.generator, "num_ws", None), retry_failed=bool(cfg.get("retry_failed", False)))
    if module.loss.target == "unaligned":  # the source images, before any alignment or resizing
        data.use_targets(cfg.dataset.images)
    already = len(done_ids(run_dir))  # every rank's records (the ranks' own counts live in their processes)
    logger = build_logger(cfg, run_dir, write=not is_launched_rank())
    module.config_to_log = loggable_config(cfg)
    module.log_step_base = int((read_record(run_dir) or {}).get("next_step", 0))
    trainer = instantiate(cfg.trainer, logger=logger if logger is not None else False, default_root_dir=str(run_dir),
                          callbacks=run_callbacks(cfg, run_dir))
    # The launching process too: it must outlive the ranks finishing their batch, and pass a signal sent
    # to it alone (SLURM, `kill PID`) on to the ranks it started.
    stop = StopFlag(forward=launcher_forward(trainer), watch_interrupt=True).install()
    try:
        trainer.predict(module, datamodule=data, return_predictions=False)
    except BaseException as err:
        signum = err.signum if isinstance(err, Preempted) else stop.signum
        interrupted = stop.interrupted or isinstance(err, KeyboardInterrupt)
        if trainer.global_rank == 0 and signum is not None:
            _stopped(run_dir, str(Preempted(signum)), exit_code(signum), requeue=signum == signal.SIGUSR1)
        if trainer.global_rank == 0 and interrupted:
            _stopped(run_dir, "interrupted (Ctrl-C)", exit_code(signal.SIGINT))
        if signum is not None:
            raise SystemExit(exit_code(signum)) from None
        if trainer.global_rank == 0:
            try:  # a crash: still leave a merged manifest that matches the shards
                refresh_run_summary(run_dir)
            except Exception:
                pass
        raise
    finally:
        stop.restore()
        close_run(logger, run_dir, exit_code=1)  # a crash or a stop (a finished predict closed it already)
    summary = {}
    if trainer.global_rank == 0:
        refresh_run_summary(run_dir)  # also when nothing was left to do, or a merge was cut short
    if trainer.global_rank == 0 and (run_dir / SUMMARY).exists():
        summary = json.loads((run_dir / SUMMARY).read_text())
        print(f"[anon] {summary['images_done']} done, {summary['images_failed']} failed "
              f"({already} already in the manifest); identity similarity "
              f"{summary['identity_similarity_before']:.3f} -> {summary['identity_similarity_after']:.3f}; "
              f"outputs in {run_dir}", flush=True)
    return {"run_dir": str(run_dir), **summary}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="anonymize")
def hydra_entry(cfg: DictConfig) -> None:
    with one_line_errors():
        anonymize(cfg)


if __name__ == "__main__":
    hydra_entry()
