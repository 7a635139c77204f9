"""The command line as a user meets it: sweeps and one-line errors."""
import pytest
import yaml

from tests.conftest import tiny_overrides
from tests.helpers import run_anon

pytestmark = pytest.mark.slow


def test_missing_folder_is_a_one_line_error(tmp_path):
    out = run_anon("anonymize", f"dataset.images={tmp_path / 'no_such_folder'}", "dataset.inversions=x",
                   "dataset.neighbours=y", f"output_root={tmp_path}")
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_folder" in errors[0] and "dataset.images" in errors[0]
    assert "Traceback" not in out.stderr


def test_multirun_sweep_gives_one_folder_per_point(tiny_world, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_world, tmp_path) if not o.startswith("run_dir=")]
    out = run_anon("anonymize", "--multirun", *overrides, "dataset.limit=1", "module.steps=1",
                   f"output_root={tmp_path}", "loss.margin=0,0.5", "loss.lambda_id=1,10")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "sweeps").glob("*/config.yaml"))
    points = {(c["loss"]["margin"], c["loss"]["lambda_id"]) for c in (yaml.safe_load(p.read_text()) for p in runs)}
    assert points == {(0.0, 1.0), (0.0, 10.0), (0.5, 1.0), (0.5, 10.0)}
    for config in runs:
        assert (config.parent / "manifest.jsonl").read_text().count("\n") == 1


def test_missing_checkpoint_is_a_one_line_error_naming_the_download(tiny_world, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_world, tmp_path) if not o.startswith("run_dir=")]
    out = run_anon("anonymize", *overrides, "identity=arcface_ir_se50", f"weights_dir={tmp_path / 'weights'}",
                   f"output_root={tmp_path}")
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model_ir_se50.pth" in errors[0] and "anon download arcface_ir_se50" in errors[0]
