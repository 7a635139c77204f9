"""Intra-op threads in a rank that Lightning forked (``trainer=ddp_cpu``: ``strategy: ddp_fork``).

GNU OpenMP (torch's CPU thread pool) is not fork-safe: once a process has run a parallel region with more
than one thread, its thread keeps a pool of worker threads, and a forked child inherits the pool's
bookkeeping but not the threads. The child's first parallel region with more than one thread then waits
for those workers forever (a futex wait at 0 % CPU). The parent has run one whenever it did torch work
before the Trainer started: ``anon pipeline`` (the earlier stages run in the same process),
``anonymize(cfg)`` called from Python after other torch work, a test session. Whether the child runs
parallel regions depends on its thread count: Lightning gives it ``cores // ranks`` only when
``OMP_NUM_THREADS`` is unset (one thread on a 2-core machine, which hid the bug) and keeps what the user
exported otherwise (SLURM jobs; torchrun exports 1).

So a forked rank keeps its threads only when its parent had no thread besides its main one at the fork
(no OpenMP pool can exist then: a plain ``anon anonymize``); otherwise it runs one thread, and the ranks
are the parallelism. The results differ only by summation-order noise between thread counts.
"""
from __future__ import annotations

import os

import torch


def parent_may_hold_openmp_pool() -> bool:
    """Whether the process that forked this one has (or may have) worker threads besides its main thread.

    Read from ``/proc/<parent>/task`` while the parent waits for its ranks; where that cannot be read
    (no ``/proc``), assume it may."""
    try:
        return len(os.listdir(f"/proc/{os.getppid()}/task")) > 1
    except OSError:
        return True


def make_forked_rank_thread_safe(start_method: str | None) -> int:
    """Call first thing in every rank (``on_predict_start``): in a forked rank whose parent may hold an
    OpenMP pool, one intra-op thread. Returns the rank's thread count."""
    if start_method == "fork" and parent_may_hold_openmp_pool():
        torch.set_num_threads(1)
    return torch.get_num_threads()


def launcher_start_method(trainer) -> str | None:
    """``"fork"``, ``"spawn"``, ... for a multiprocessing launcher; ``None`` otherwise (one process,
    ``strategy=ddp``'s relaunched scripts: fresh interpreters)."""
    return getattr(getattr(trainer.strategy, "launcher", None), "_start_method", None)
