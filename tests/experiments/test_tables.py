import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import tables  # noqa: E402


def fake_run(root: Path, name: str, table: str, cell: str, reid: float, detected: int, total: int):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"table: {table}\ncell: '{cell}'\nloss: {{margin: 0.0}}\n")
    (run / "report.json").write_text(json.dumps({
        "evaluated": total, "evaluators": {"facenet": {"reidentification_rate": reid}},
        "detection": {"rate": detected / total, "detected": detected, "total": total}, "pose": None,
        "attributes": None, "fid": None}))


def test_rows_per_cell_with_hand_computed_percentages(tmp_path):
    fake_run(tmp_path, "a", "celebahq_margin", "m = 0.5", reid=1 / 8, detected=7, total=8)
    fake_run(tmp_path, "b", "celebahq_margin", "m = 0.0", reid=0.0, detected=8, total=8)
    fake_run(tmp_path, "c", "lfw_main", "ours", reid=0.25, detected=3, total=4)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "report.json").write_text("{}")  # no config: not in a table
    written = tables.write(tables.collect([tmp_path]), tmp_path / "out")
    assert sorted(p.name for p in written) == ["celebahq_margin.csv", "celebahq_margin.md", "lfw_main.csv",
                                               "lfw_main.md"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "celebahq_margin.csv")))
    assert [r["cell"] for r in rows] == ["m = 0.0", "m = 0.5"]
    assert rows[1]["re-ID % (facenet)"] == "12.5" and rows[1]["detection %"] == "87.5"
    assert "pose error (deg)" not in rows[0], "metrics no run measured are left out"
    assert "| m = 0.5 | a | 8 | 12.5 | 87.5 |" in (tmp_path / "out" / "celebahq_margin.md").read_text()
