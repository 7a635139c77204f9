"""A forked rank keeps its threads only when its parent cannot hold a GNU OpenMP pool (anon/fit/forked_threads.py)."""
import subprocess
import sys

from tests.helpers import REPO, env

FORK_BEFORE_AND_AFTER_TORCH_WORK = """
import multiprocessing as mp
import torch
from anon.fit.forked_threads import make_forked_rank_thread_safe

def rank(queue):
    queue.put(make_forked_rank_thread_safe("fork"))
    torch.ones(1 << 20).exp_()  # an OpenMP region with the rank's thread count
    queue.put("ran")

def fork_a_rank():
    context = mp.get_context("fork")
    queue = context.SimpleQueue()
    child = context.Process(target=rank, args=(queue,))
    child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
        return "hung"
    return f"{queue.get()} threads, {queue.get()}"

print("before torch work:", fork_a_rank())
torch.ones(1 << 20).exp_()  # a 2-thread region: this process now holds an OpenMP pool
print("after torch work:", fork_a_rank())
"""


def test_rank_keeps_threads_from_a_fresh_parent_and_runs_one_after_torch_work():
    run = subprocess.run([sys.executable, "-c", FORK_BEFORE_AND_AFTER_TORCH_WORK], cwd=REPO,
                         env={**env(), "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["before torch work: 2 threads, ran", "after torch work: 1 threads, ran"]


def test_start_methods_other_than_fork_keep_their_threads(monkeypatch):
    """Spawned ranks and relaunched scripts are fresh interpreters: no inherited pool, whatever the parent."""
    from anon.fit import forked_threads
    from tests.helpers import torch_threads

    monkeypatch.setattr(forked_threads, "parent_may_hold_openmp_pool", lambda: True)
    for start_method in ("spawn", "forkserver", None):
        with torch_threads(2):
            assert forked_threads.make_forked_rank_thread_safe(start_method) == 2
    with torch_threads(2):
        assert forked_threads.make_forked_rank_thread_safe("fork") == 1
