"""Clean stops on SIGTERM / SIGUSR1 (cluster preemption, time limits, `scancel --signal`).

The handler only records the signal. The fit loop checks it between batches: the batch in
flight is finished and its manifest lines are fsynced, then :class:`Preempted` is raised and the
run exits; starting the same command again (or the requeued SLURM job) resumes from the manifest.

SLURM and users signal the process they started; under DDP that process may only be the launcher of
the ranks, so a flag given ``forward`` passes each stop signal on to them.

Inside ``trainer.predict`` the check is :class:`StopCallback`, placed after the output writer in the
Trainer's callbacks: Lightning calls each ``on_predict_batch_end`` of the callbacks in list order, then
the module's (pytorch_lightning 2.6 ``loops/prediction_loop.py``, ``_predict_step``), so the batch's
files and records are on disk before the check can raise.
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Callable

import pytorch_lightning as pl

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name} after finishing the batch in flight")


class StopFlag:
    """Records the first stop signal; ``check()`` raises :class:`Preempted` once one arrived.

    Args:
        forward: called with each stop signal this process receives (not in processes forked from it),
            e.g. a DDP launcher's ``kill`` that passes it on to the ranks.
        watch_interrupt: also note Ctrl-C (SIGINT) in ``interrupted``; it still raises KeyboardInterrupt.
    """

    def __init__(self, forward: Callable[[int], None] | None = None, watch_interrupt: bool = False):
        self.signum: int | None = None
        self.interrupted = False
        self.forward, self.watch_interrupt = forward, watch_interrupt
        self._owner = os.getpid()
        self._previous: dict[int, object] = {}

    def install(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        if self.watch_interrupt and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _record(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self.forward is not None and os.getpid() == self._owner:
            try:
                self.forward(signum)
            except Exception:  # a rank that already exited: nothing to pass the signal to
                pass

    def _interrupt(self, signum, frame) -> None:
        if os.getpid() == self._owner:
            self.interrupted = True
        signal.default_int_handler(signum, frame)

    def check(self) -> None:
        if self.signum is not None:
            raise Preempted(self.signum)


class StopCallback(pl.Callback):
    """A stop signal ends predict between batches: checked before each batch and after it (after the
    callbacks listed before this one, i.e. the output writer, have written it). While predict runs it
    replaces Lightning's SIGTERM handler (that one broadcasts inside the handler, which can hang ranks
    that are not in a collective); a rank that launched the others (Lightning's subprocess launcher runs
    rank 0 in the launching process) passes the signal on."""

    def __init__(self) -> None:
        self.flag: StopFlag | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        self.flag = StopFlag(forward=launcher_forward(trainer)).install()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.flag.check()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.flag.check()  # the finished batch is on disk; stop before loading the next one

    def on_predict_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.flag is not None:
            self.flag.restore()
            self.flag = None


def requeue_slurm_job() -> bool:
    """Ask SLURM to requeue this job (when running under SLURM); True if ``scontrol`` accepted."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        return subprocess.call(["scontrol", "requeue", job]) == 0
    except FileNotFoundError:
        return False


def exit_code(signum: int) -> int:
    """Shell convention for a run ended by a signal: 128 + signal number."""
    return 128 + int(signum)


def launcher_forward(trainer) -> Callable[[int], None] | None:
    """The trainer's rank launcher's ``kill`` (sends a signal to the ranks it started), if it has one."""
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return getattr(launcher, "kill", None)
