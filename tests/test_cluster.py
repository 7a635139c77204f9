"""Cluster runs without a cluster: SLURM rank detection, sweeps as separate jobs (submitit local)."""

import pytest
import yaml
from hydra.utils import instantiate

from tests.conftest import compose_config, tiny_overrides
from tests.helpers import run_anon

pytestmark = pytest.mark.slow


def test_same_command_under_srun_takes_rank_and_world_from_slurm(monkeypatch, tmp_path):
    # What srun sets for task 3 of a 2-node x 2-task allocation.
    for key, value in {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
                       "SLURM_JOB_NAME": "anon", "SLURM_JOB_ID": "123", "SLURM_NODELIST": "node[1-2]",
                       "SLURM_NTASKS_PER_NODE": "2"}.items():
        monkeypatch.setenv(key, value)
    cfg = compose_config("trainer=slurm", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2",
                         "trainer.strategy=ddp", "dataset.images=x", "dataset.inversions=x", "dataset.neighbours=x")
    trainer = instantiate(cfg.trainer, logger=False, default_root_dir=str(tmp_path))
    assert (trainer.global_rank, trainer.world_size, trainer.local_rank, trainer.node_rank) == (3, 4, 1, 1)
    assert type(trainer.strategy.cluster_environment).__name__ == "SLURMEnvironment"
    assert trainer.strategy.cluster_environment.auto_requeue is False


def test_sweep_points_run_as_separate_jobs_with_submitit_local(tiny_world, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_world, tmp_path) if not o.startswith("run_dir=")]
    out = run_anon("anonymize", "--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                   *overrides, "dataset.limit=1", "module.steps=1", f"output_root={tmp_path}", "loss.margin=0,0.5",
                   timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    configs = sorted((tmp_path / "sweeps").glob("*/config.yaml"))
    assert sorted(yaml.safe_load(p.read_text())["loss"]["margin"] for p in configs) == [0.0, 0.5]
    jobs = list((tmp_path / "sweeps" / ".submitit").glob("*/*_result.pkl"))
    assert len(jobs) == 2, "each sweep point is its own submitit job (own process)"
    for config in configs:
        assert (config.parent / "manifest.jsonl").read_text().count("\n") == 1
