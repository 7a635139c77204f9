"""Issue 17's check: the closed loop on real LFW photos with the lite set and a deliberately weak first
setting (2 optimisation steps). Images that fail the first verification are re-optimised, every published
image passes under the deciding evaluator (measured again on the copied bytes by the report set),
withheld images are listed with their reason, and kill -9 during the escalation then a rerun publishes
the same set.

The deciding threshold is dlib's distance 0.8 instead of its own 0.6: the lite set's 64 px DCGAN outputs
are all beyond 0.6 from their originals already after the inversion, so at 0.6 nothing would fail privacy
and the escalation would not be exercised. Pose bounds are 30 degrees (the lite inversion alone moves the
head by 5-30 degrees), expression is left out and there is no utility retry, so that privacy, not
utility, decides here (the utility retry has its own fast test in test_publish_loop.py).
"""
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from anon.publish.loop import ATTEMPTS
from anon.runtime.run import CONFIG_DIR
from tests.helpers import REPO, anon_command, env
from tests.test_demo import lite_available

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

IMAGES = 6
PUBLISH = ["verify.decide=[dlib_resnet_crops]", "verify.report=[dlib_resnet_crops]", "thresholds.dlib_resnet_crops=0.8",
           "verdict.max_yaw_deg=30", "verdict.max_pitch_deg=30", "~expression", "publish.utility_retry.enabled=false",
           "device=cpu"]


def entries(out: Path) -> dict[str, dict]:
    return {e["id"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def published(out: Path) -> list[str]:
    return sorted(p.relative_to(out / "images").with_suffix("").as_posix() for p in (out / "images").rglob("*.png"))


def test_closed_loop_on_lfw_with_a_weak_first_setting_and_kill_9(shared_data, tmp_path):
    lite_available()
    from anon.stages.pipeline import run_pipeline

    photos = tmp_path / "photos"
    for path in sorted((shared_data / "lfw_sample").rglob("*.jpg"))[:IMAGES]:
        (photos / path.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / path.parent.name / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "published"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=[
            "experiment=lite", f"dataset.images={photos}", f"output_root={tmp_path / 'outputs'}", "device=cpu",
            "fakes.num_samples=256", "inverter.steps=30", "module.steps=2", f"publish_to={out}"])
        with open_dict(cfg):
            cfg.publish_overrides = PUBLISH
        result = run_pipeline(cfg)
    run_dir = Path(result["run_dir"])
    work = Path(result["publish"]["settings"]["work_folder"])
    records = [json.loads(s) for s in (work / ATTEMPTS).read_text().splitlines()]
    first = {r["id"]: r for r in records if r["attempt"] == 0}
    failed_first = sorted(i for i, r in first.items() if not r["privacy"])
    assert len(first) == IMAGES and failed_first, "the weak first setting should leave some image re-identified"
    for item_id in failed_first:  # re-optimised: a record for the first rung, with its setting and score
        retry = next(r for r in records if r["id"] == item_id and r["attempt"] == 1)
        assert retry["kind"] == "privacy" and retry["setting"]["name"] == "more_steps"
        assert set(retry["score"]) == {"dlib_resnet_crops"}
    listing = entries(out)
    assert sorted(listing) == sorted(first)
    for entry in listing.values():
        if entry["status"] == "published":
            assert entry["final"]["passed"] and entry["final"]["privacy"]
            assert entry["final"]["score"]["dlib_resnet_crops"] > 0.8
        else:
            assert entry["status"] == "withheld" and entry["reason"] and entry["image"] is None
    assert published(out) == sorted(i for i, e in listing.items() if e["status"] == "published")
    report = json.loads((out / "report.json").read_text())  # the copied bytes, measured again
    if published(out):
        assert report["evaluators"]["dlib_resnet_crops"]["attacks"]["own_original"]["output"]["matched"] == 0

    # kill -9 during the escalation (a fresh work folder), then the same command again
    again, work2 = tmp_path / "published2", tmp_path / "work2"
    command = anon_command("publish", f"run_dir={run_dir}", f"out={again}", f"publish.work_dir={work2}",
                           f"output_root={tmp_path / 'outputs'}", *PUBLISH)
    proc = subprocess.Popen(command, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    escalating = work2 / "privacy-1-more_steps" / "run" / "config.yaml"
    deadline = time.time() + 300
    while not escalating.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"publish ended before its escalation: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (again / "manifest.jsonl").exists()
    rerun = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert published(again) == published(out)
    assert {i: e["status"] for i, e in entries(again).items()} == {i: e["status"] for i, e in listing.items()}
