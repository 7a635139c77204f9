"""anon/demo.py's result lines (inversion fidelity, two-half verdict) on the hand-computed evaluation of
tests/stages/test_evaluate.py (fast: fake evaluators on 8 x 8 images); the real demo is tests/test_demo.py."""
from __future__ import annotations

import pytest

from anon.demo import result_lines
from anon.report.schema import ReportSchemaError
from tests.stages.test_evaluate import evaluated  # noqa: F401 (fixture)


def test_demo_prints_inversion_fidelity_and_verdict_counts(evaluated):  # noqa: F811
    _, report, _ = evaluated
    fidelity, verdict = result_lines(report, evaluator="cos")
    # by hand (tests/stages/test_evaluate.py): inversions exist for a and b, cos 1.0 and 0.71 >= 0.5 -> 2 of 2
    assert "inversion fidelity: the inversion matches its own original" in fidelity and "in 2/2 (100.0 %)" in fidelity
    v = report["verdict"]
    assert verdict.startswith(f"  verdict ({v['evaluated']} images): privacy {v['privacy']}/{v['evaluated']}")
    assert f"utility {v['utility']}/{v['evaluated']}" in verdict
    assert "passed 2/5 (40.0 %)" in verdict  # the report's "passed (both) | 2 of 5", by hand
    # each count comes from its own field (here privacy and passed are both 2: make them differ)
    changed = {**report, "verdict": {**v, "privacy": 4, "utility": 3, "passed": 1}}
    verdict = result_lines(changed, evaluator="cos")[1]
    assert "privacy 4/5" in verdict and "utility 3/5" in verdict and "passed 1/5" in verdict


def test_demo_lines_refuse_a_report_of_another_schema(evaluated):  # noqa: F811
    _, report, _ = evaluated
    with pytest.raises(ReportSchemaError):
        result_lines({**report, "schema_version": 1}, evaluator="cos")
