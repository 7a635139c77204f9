"""anon/metrics/registry.py: metrics registered by name with what they need and the report field they fill;
`metrics=[...]` selects them; a selection leaves the other metrics' numbers unchanged."""
from __future__ import annotations

import dataclasses
import json

import pytest

from anon.errors import ConfigError
from anon.metrics.registry import (NEEDS, EvaluationMetric, METRICS, register_metric, registered,
                                   select_metrics)
from anon.report.schema import Report
from anon.stages.evaluate import run_evaluate
from tests.stages.evaluate_fakes import golden_run

ALL = ["reidentification", "detection", "pose", "attributes", "expression", "fid"]


def test_every_metric_is_registered_once_with_its_needs_and_report_field():
    metrics = registered()
    assert list(metrics) == ALL  # report order
    fields = {f.name for f in dataclasses.fields(Report)}
    assert {m.report_field for m in metrics.values()} == {"evaluators", "detection", "pose", "attributes",
                                                          "expression", "fid"} <= fields
    for name, cls in metrics.items():
        assert cls.name == name and cls.needs and set(cls.needs) <= set(NEEDS) and cls.description
    assert metrics["reidentification"].needs == ("images", "crops", "labels")
    assert "landmarks" in metrics["pose"].needs


def test_selection_is_validated_with_one_line_errors():
    assert select_metrics(None) == ALL
    assert select_metrics(["pose", "reidentification"]) == ["reidentification", "pose"]  # registry order
    with pytest.raises(ConfigError, match=r"no metric named 'psnr' \(registered: reidentification, detection"):
        select_metrics(["reidentification", "psnr"])
    with pytest.raises(ConfigError, match="must include reidentification"):
        select_metrics(["pose"])


def test_register_refuses_unknown_needs_fields_and_a_second_class_of_one_name():
    def metric(name, needs=("images",), report_field="fid"):
        return type("M", (EvaluationMetric,), {"name": name, "needs": needs, "report_field": report_field})

    with pytest.raises(ValueError, match="needs \\['pixels'\\]"):
        register_metric(metric("x", needs=("pixels",)))
    with pytest.raises(ValueError, match="report field 'psnr'"):
        register_metric(metric("x", report_field="psnr"))
    with pytest.raises(ValueError, match="two metrics are named 'pose'"):
        register_metric(metric("pose"))
    assert "x" not in METRICS


def test_a_selection_runs_only_its_metrics_and_leaves_their_numbers_unchanged(tmp_path):
    full_run, evaluators, kwargs = golden_run(tmp_path / "full")
    full = run_evaluate(full_run, evaluators, **kwargs)
    some_run, evaluators, kwargs = golden_run(tmp_path / "some")
    some = run_evaluate(some_run, evaluators, **kwargs, metrics=["reidentification", "pose"])
    assert full["detection"] and full["attributes"] and full["expression"] and full["fid"] is not None
    assert (some["detection"], some["attributes"], some["expression"], some["fid"]) == (None, None, None, None)
    assert some["pose"] == full["pose"] and some["verdict"]["utility_checks"] == ["pose"]
    assert json.dumps(some["evaluators"], sort_keys=True) == json.dumps(full["evaluators"], sort_keys=True).replace(
        str(tmp_path / "full"), str(tmp_path / "some"))
    line = json.loads((some_run / "verification.jsonl").read_text().splitlines()[0])
    assert "pose_delta" in line and "evaluators" in line
    assert not {"face_detected", "attributes", "expression"} & set(line)
    with pytest.raises(ConfigError, match="no metric named 'psnr'"):
        run_evaluate(some_run, evaluators, **kwargs, metrics=["reidentification", "psnr"])


def test_anon_evaluate_metrics_override_is_checked_before_any_network_is_built(tmp_path):
    from tests.stages.test_evaluate import _compose

    from anon.stages.evaluate import evaluate

    cfg = _compose(f"run_dir={tmp_path}", "metrics=[reidentification,psnr]", f"output_root={tmp_path}")
    assert list(_compose(f"run_dir={tmp_path}").metrics) == ALL  # the default: every registered metric
    with pytest.raises(ConfigError, match="no metric named 'psnr'"):
        evaluate(cfg)


def test_expression_is_measured_but_not_judged_when_the_verdict_does_not_ask_for_it(tmp_path):
    from anon.metrics.verdict import VerdictThresholds

    run, evaluators, kwargs = golden_run(tmp_path)
    kwargs["verdict"] = VerdictThresholds(same_expression=False)
    report = run_evaluate(run, evaluators, **kwargs, metrics=["reidentification", "expression"])
    assert report["expression"]["count"] == 4 and report["verdict"]["utility_checks"] == []
    assert report["verdict"]["utility"] == 0 and report["passed"] == 0  # nothing measured: nothing can pass
