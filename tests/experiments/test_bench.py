"""The throughput benchmark: its row options, and a table whose ratios follow from its raw numbers."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
from bench import main, parse_row  # noqa: E402


def test_row_specs_parse_into_module_settings():
    row = parse_row("16,bf16,loss256,stop0.02,channels_last,compile")
    assert row == {"batch_size": 16, "label": "16,bf16,loss256,stop0.02,channels_last,compile",
                   "precision": "bf16", "loss_resolution": 256, "early_stop_tolerance": 0.02,
                   "channels_last": True, "compile": True}
    assert parse_row("8")["precision"] == "32" and parse_row("8")["loss_resolution"] is None
    with pytest.raises(SystemExit, match="unknown row option 'fp16'"):
        parse_row("8,fp16")
    with pytest.raises(SystemExit, match="names no batch size"):
        parse_row("bf16")


def test_tiny_benchmark_writes_a_consistent_table(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--images", "4", "--steps", "2", "--rows", "2", "4,channels_last", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    rows = table["rows"]
    assert [r["run"] for r in rows] == ["official", "2", "4,channels_last"]
    assert table["gflop_per_step_image"] > 0
    official = rows[0]
    for row in rows:
        assert row["images"] == 4 and len(row["final_similarity"]) == 4 and row["mean_steps"] == 2
        assert row["images_per_second"] == pytest.approx(4 / row["seconds"])
        assert row["speedup"] == pytest.approx(row["images_per_second"] / official["images_per_second"])
        change = max(abs(a - b) for a, b in zip(row["final_similarity"], official["final_similarity"]))
        assert row["max_similarity_change"] == pytest.approx(change)
    # the same images and steps in every row: batching and layout move the end points by rounding only
    assert max(r["max_similarity_change"] for r in rows) < 1e-3


def test_batch_size_must_divide_the_image_count():
    with pytest.raises(SystemExit, match="not a multiple"):
        main(["--images", "6", "--rows", "4"])
