"""`make sweep-demo`'s table and plot, from runs evaluated by the real evaluate stage (report.json read
through the schema): the weights come from each run's config, the numbers from its report."""
import sys
from pathlib import Path

from omegaconf import OmegaConf

from tests.experiments.test_tables import evaluated_run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import sweep_demo  # noqa: E402


def test_rows_table_and_plot_of_evaluated_runs(tmp_path):
    run = evaluated_run(tmp_path / "a", "lite_sweep_demo", "x", 0.5)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.loss.terms = {"landmark": {"weight": 300.0}}
    OmegaConf.save(cfg, run / "config.yaml")
    row = sweep_demo.row(run, "cos")
    # hand numbers of tests/stages/test_evaluate.py (threshold 0.5), as tests/experiments/test_tables.py
    assert (row["reid_own"], round(row["reid_other"], 4), row["expression_agreement"]) == (0.5, 0.6667, 0.8)
    assert row["yaw"] == 10.0 and abs(row["detection"] - 0.8) < 1e-6 and row["landmark_weight"] == 300.0
    table = sweep_demo.markdown([row])
    assert "| 300 | 50 % | 67 % | 10.0 /" in table and "| 80 % | 80 % |" in table
    png = sweep_demo.plot([row], tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
