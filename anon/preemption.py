"""Clean stops on SIGTERM / SIGUSR1 (cluster preemption, time limits, `scancel --signal`).

The handler only records the signal. The fit loop checks it between batches: the batch in
flight is finished and its manifest lines are fsynced, then :class:`Preempted` is raised and the
run exits; starting the same command again (or the requeued SLURM job) resumes from the manifest.
"""
from __future__ import annotations

import os
import signal
import subprocess

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name} after finishing the batch in flight")


class StopFlag:
    """Records the first stop signal; ``check()`` raises :class:`Preempted` once one arrived."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _record(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Preempted(self.signum)


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
