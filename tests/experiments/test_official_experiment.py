"""experiment=celebahq_falco_official sets every official switch (each switch's effect has its own
test: tests/test_loss_target.py, tests/stages/test_pair_switches.py, tests/test_outputs.py)."""
import subprocess
import sys

from hydra import compose, initialize_config_dir

from anon.runtime.run import CONFIG_DIR
from tests.helpers import REPO, env

OFFICIAL = {"dataset.split": "all", "dataset.image_size": None, "loss.target": "unaligned",
            "loss.official_value_ranges": True, "pair.originals": "unaligned", "pair.official_value_ranges": True,
            "fakes.official_value_ranges": True, "attribute.preprocess": "raw", "output.format": "official_jpeg", "align.fallback": "unaligned_512",
            "detector._target_": "anon.nets.sfd_fan.SFDFANDetector", "detector.input_format": "rgb_raw",
            # the paper values the experiment inherits from celebahq_falco
            "loss.margin": 0.0, "loss.lambda_id": 10.0, "loss.lambda_attr": 0.1, "module.steps": 50,
            "fakes.num_samples": 60000, "method.name": "falco"}


def pipeline_cfg(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("pipeline", overrides=["dataset.images=/data/CelebA-HQ-img", *overrides])


def select(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def test_official_experiment_sets_every_switch():
    cfg = pipeline_cfg("experiment=celebahq_falco_official")
    assert {k: select(cfg, k) for k in OFFICIAL} == OFFICIAL


def test_defaults_stay_ours():
    cfg = pipeline_cfg("experiment=celebahq_falco")
    ours = {"dataset.split": "test", "dataset.image_size": 256, "loss.target": "aligned",
            "loss.official_value_ranges": False, "pair.originals": "aligned", "pair.official_value_ranges": False,
            "fakes.official_value_ranges": False, "attribute.preprocess": "clip", "output.format": "png", "align.fallback": None, "align.min_face_size": 32,
            "detector._target_": "anon.nets.mtcnn.MTCNNDetector"}
    assert {k: select(cfg, k) for k in ours} == ours


def test_cfg_job_shows_every_switch():
    out = subprocess.run([sys.executable, "-m", "anon.runtime.cli", "pipeline", "experiment=celebahq_falco_official",
                          "dataset.images=/data/CelebA-HQ-img", "--cfg", "job"], cwd=REPO, env=env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for line in ("format: official_jpeg", "target: unaligned", "official_value_ranges: true", "originals: unaligned",
                 "split: all", "image_size: null", "fallback: unaligned_512", "input_format: rgb_raw", "preprocess: raw"):
        assert line in out.stdout, line
