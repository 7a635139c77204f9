"""``import anon`` makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE), which changes no result.

Each case runs in a fresh interpreter: the policy is read once, when torch loads OpenMP.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A 2-thread forward and input-gradient of a seeded MobileFaceNet: the policy printed, then a digest
# of the embeddings' and the gradient's bytes.
PROBE = """
import hashlib, os
import anon
import torch
from anon.nets.mobilefacenet import MobileFaceNetIdentity
torch.set_num_threads(2)
torch.manual_seed(0)
net = MobileFaceNetIdentity(None)
x = torch.rand(4, 3, 64, 64).mul(2).sub(1).requires_grad_(True)
emb = net(x)
emb.square().sum().backward()
print(os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads(),
      hashlib.sha256(emb.detach().numpy().tobytes() + x.grad.numpy().tobytes()).hexdigest())
"""


def run_probe(policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_import_anon_sets_passive_wait_keeps_a_users_choice_and_changes_no_result():
    default = run_probe(None)
    chosen = run_probe("ACTIVE")
    assert default[:2] == ["PASSIVE", "2"]
    assert chosen[:2] == ["ACTIVE", "2"]
    assert default[2] == chosen[2]  # bitwise: same embeddings and input gradient
