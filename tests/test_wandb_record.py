"""W&B as the experiment record, read back from the offline files with wandb's own protobuf records."""
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from anon.runtime.run import CONFIG_DIR, anonymize
from anon.fit.step_curve import StepCurve, curve_rows
from anon.runtime.wandb_record import RECORD, flat_metrics, record_evaluation
from tests.conftest import TINY_IMAGES
from tests.helpers import run_anon
from tests.wandb_reader import read_runs


def evaluate_config(run_dir: Path, *extra: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"run_dir={run_dir}", "evaluators=[tiny_irse]", "~detector",
                                              "thresholds.tiny_irse=0.5", "pose=null", "device=cpu",
                                              "inversion_dir=null", f"output_root={run_dir.parent}", *extra])


@pytest.mark.slow
def test_multirun_points_are_own_runs_in_one_group_with_config_and_evaluation(tiny_world, tmp_path, monkeypatch):
    """A 2-point ``anon pipeline --multirun ... logger=wandb`` then ``anon evaluate`` of each point."""
    from anon.stages.evaluate import evaluate

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    out = tmp_path / "out"
    done = run_anon("pipeline", "--multirun", "loss.margin=0.3,0.5", "logger=wandb",
                    f"dataset.images={tiny_world / 'images'}", f"output_root={out}", "dataset.image_size=64",
                    "module.steps=2", "fakes.num_samples=32", "device=cpu", "dataset.batch_size=4")
    assert done.returncode == 0, done.stderr[-3000:]
    points = sorted(p for p in (out / "sweeps").iterdir() if (p / "config.yaml").is_file())
    assert len(points) == 2
    margins = {p: OmegaConf.load(p / "config.yaml").loss.margin for p in points}
    assert sorted(margins.values()) == [0.3, 0.5]
    ids = {p: json.loads((p / RECORD).read_text())["id"] for p in points}
    for i, point in enumerate(points):  # the examples table only where asked for
        evaluate(evaluate_config(point, f"log_examples={i == 0}"))

    runs = read_runs(tmp_path, files=4)  # each point: the anonymisation's file, the evaluation's (resumed)
    assert sorted(runs) == sorted(ids.values()) and len(set(ids.values())) == 2, "each point its own W&B run"
    groups = {g for run in runs.values() for g in run.groups}
    assert len(groups) == 1 and "loss.margin=0.3,0.5" in next(iter(groups)), groups
    for point in points:
        run = runs[ids[point]]
        assert all(point in f.parents for f in run.files), "a point's run lives in its own folder"
        assert run.groups == groups, "the evaluation's resumed run keeps the group"
        keys = run.keys()
        assert {"step/total", "step/identity", "run/identity_similarity_after"} <= keys
        assert run.config["loss"]["margin"] == margins[point] and run.config["module"]["steps"] == 2
        assert run.config["dataset"]["images"] == str(tiny_world / "images")
        assert "eval/evaluators/tiny_irse/reidentification_rate" in keys and "eval/verdict/passed" in keys
        report = json.loads((point / "report.json").read_text())
        row = next(r for r in run.history if "eval/verdict/passed" in r)
        assert row["eval/verdict/passed"] == report["verdict"]["passed"]
        assert row["eval/evaluators/tiny_irse/reidentified"] == report["evaluators"]["tiny_irse"]["reidentified"]
        assert any(k.startswith("eval/plots/similarity_tiny_irse") for k in keys)
        assert row["_step"] > max(r["_step"] for r in run.history if "step/total" in r), "after the curve"
    assert [any(k.startswith("eval/examples") for k in runs[ids[p]].keys()) for p in points] == [True, False]


def test_step_curve_is_the_mean_over_every_image_of_every_rank(tiny_cfg):
    """``step/<term>`` at step s: the mean over all images; step 0 is every image's initial loss."""
    import csv

    import torch

    # Two 'ranks' with different numbers of images and an early-stopped step on one of them; the ranks'
    # tables are summed (what trainer.strategy.reduce(..., "sum") does), a rank without images adds zeros.
    a, b = StepCurve(3, ["total"]), StepCurve(3, ["total"])
    a.add(0, {"total": torch.tensor([1.0, 3.0])})
    a.add(1, {"total": torch.tensor([5.0])})
    b.add(0, {"total": torch.tensor([8.0])})
    b.add(1, {"total": torch.tensor([2.0, 2.0])})
    assert curve_rows(a.table() + b.table(), ["total"]) == [(0, 3, {"total": 4.0}), (1, 3, {"total": 3.0})]
    empty = StepCurve(3, ["total"]).table()
    assert empty.shape == a.table().shape and not empty.any()
    assert curve_rows(empty + a.table(), ["total"]) == [(0, 2, {"total": 2.0}), (1, 1, {"total": 5.0})]
    with pytest.raises(ValueError, match="differ from the curve's"):
        a.add(2, {"total": torch.tensor([1.0]), "colour": torch.tensor([1.0])})

    run_dir = Path(anonymize(tiny_cfg("dataset.batch_size=4"))["run_dir"])  # batches of 4 and 2
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    first = next(r for r in rows if r.get("step/images") and int(float(r["step"])) == 0)
    records = [json.loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert int(float(first["step/images"])) == TINY_IMAGES
    expected = sum(r["loss_initial"]["total"] for r in records) / len(records)
    assert float(first["step/total"]) == pytest.approx(expected, rel=1e-5)
    hparams = (next(run_dir.rglob("hparams.yaml"))).read_text()
    assert "margin:" in hparams and "lambda_id:" in hparams, "the resolved config is the logger's hyperparameters"


def test_a_resumed_run_logs_into_its_w_and_b_run_and_a_corrupt_record_is_one_line(tiny_cfg, tmp_path, monkeypatch):
    from anon.errors import ConfigError

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = Path(anonymize(tiny_cfg("logger=wandb", "dataset.limit=2"))["run_dir"])
    first = json.loads((run_dir / RECORD).read_text())
    anonymize(tiny_cfg("logger=wandb", "dataset.limit=3"))  # resumes the folder: one more image
    runs = read_runs(run_dir, files=2)
    assert list(runs) == [first["id"]] and len(runs[first["id"]].files) == 2
    curve = [r for r in runs[first["id"]].history if "step/images" in r]
    assert [r["step/images"] for r in curve] == [2] * 4 + [1] * 4  # the second session: its one image
    steps = [r["trainer/global_step"] for r in runs[first["id"]].history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), "the resumed session logs after the first"
    (run_dir / RECORD).write_text("{not json")
    with pytest.raises(ConfigError, match="wandb_run.json is not a W&B run record"):
        anonymize(tiny_cfg("logger=wandb", "dataset.limit=3"))


def test_a_baseline_run_records_its_config_and_summary(tiny_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = Path(anonymize(tiny_cfg("method=blur", "logger=wandb", "dataset.limit=2"))["run_dir"])
    (run,) = read_runs(run_dir, files=1).values()
    assert run.id == json.loads((run_dir / RECORD).read_text())["id"]
    assert run.config["method"]["_target_"].endswith("Blur") and run.config["dataset"]["limit"] == 2
    assert [r["run/images_done"] for r in run.history if "run/images_done" in r] == [2]


def test_evaluation_of_a_run_without_wandb_logs_nowhere(tmp_path):
    (tmp_path / "run").mkdir()
    cfg = evaluate_config(tmp_path / "run")
    assert record_evaluation(cfg, {"verdict": {"passed": 1}}) is None
    assert not (tmp_path / "run" / "wandb").exists()


def test_report_numbers_flatten_under_their_path():
    report = {"verdict": {"passed": 2, "privacy_rate": 0.5, "ok": True}, "fid": None, "name": "x",
              "evaluators": {"dlib": {"attacks": {"closed_set": {"output": {"rate": 0.25}}}}}, "plots": ["a.png"]}
    assert flat_metrics(report) == {"eval/verdict/passed": 2, "eval/verdict/privacy_rate": 0.5, "eval/verdict/ok": 1,
                                    "eval/evaluators/dlib/attacks/closed_set/output/rate": 0.25}
