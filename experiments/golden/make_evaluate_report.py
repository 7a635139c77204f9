"""Write ``tests/stages/evaluate_report_golden.json``: the evaluate stage's report and verification lines on the
tiny hand-made run of ``tests/stages/evaluate_fakes.py``, as written by the one-process evaluation loop
(``anon/stages/evaluate.py`` at commit e8d393f, before evaluation ran through the Trainer).

The batched / distributed evaluation is compared with this file (``tests/stages/test_evaluate_trainer.py``):
same numbers, so the new path reproduces the old one. The run and the call's arguments are
``golden_run`` of ``tests/stages/evaluate_fakes.py``. Paths under the temporary folder are written as
``<root>``. Run from the repository root: ``python -m experiments.golden.make_evaluate_report``.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    sys.path.insert(0, str(REPO))
    from anon.stages.evaluate import run_evaluate
    from tests.stages.evaluate_fakes import GOLDEN, golden_run, relative

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
