"""Write ``tests/golden/evaluate_report.json``: the evaluate stage's report and verification lines on the
tiny hand-made run of ``tests/stages/evaluate_fakes.py``, as written by the one-process evaluation loop
(``anon/stages/evaluate.py`` at commit e8d393f, before evaluation ran through the Trainer).

The batched / distributed evaluation is compared with this file (``tests/stages/test_evaluate_trainer.py``):
same numbers, so the new path reproduces the old one. Paths under the temporary folder are written as
``<root>``. Run from the repository root: ``python -m experiments.golden.make_evaluate_report``.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "evaluate_report.json"


def golden_run(root: Path):
    """The tiny run and the ``run_evaluate`` arguments both paths are called with."""
    from anon.metrics.fid import build_fid
    from anon.stages.evaluate import folder_identity
    from tests.stages.evaluate_fakes import (LENIENT, ChannelMoments, FakeCosine, FakeDistance, fake_classifier,
                                             fake_detector, fake_expression, make_run)

    run = make_run(root)
    kwargs = dict(detector=fake_detector, thresholds={"cos": 0.5}, attributes=fake_classifier,
                  identities=folder_identity, inversion_dir=root / "inversions", inversion_source="test inversions",
                  fid=build_fid(feature=ChannelMoments()), expression=fake_expression, batch_size=2,
                  verdict=LENIENT)
    return run, {"cos": FakeCosine(), "dist": FakeDistance()}, kwargs


def relative(value, root: str):
    """Every string with the temporary root in it, with ``<root>`` instead."""
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    return value.replace(root, "<root>") if isinstance(value, str) else value


def main() -> None:
    sys.path.insert(0, str(REPO))
    from anon.stages.evaluate import run_evaluate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        run, evaluators, kwargs = golden_run(root)
        report = run_evaluate(run, evaluators, **kwargs)
        lines = [json.loads(s) for s in (run / "verification.jsonl").read_text().splitlines()]
        data = {"written_by": "anon/stages/evaluate.py run_evaluate at commit e8d393f (one-process loop)",
                "report": relative(report, str(root)), "verification": relative(lines, str(root))}
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
