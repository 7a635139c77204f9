"""anon/report/plots.py: the figures decode, and the numbers they draw are the ones given (not the pixels)."""
from __future__ import annotations

import math

import pytest
from PIL import Image

from anon.report.plots import histogram_png, scatter_png


def test_histogram_counts_shared_bins_and_leaves_out_missing_values(tmp_path):
    data = histogram_png({"a": [0.05, 0.15, 0.15, None, math.nan], "b": [0.95, math.inf]}, tmp_path / "h.png",
                         "title", "x", threshold=0.5, bins=10, value_range=(0.0, 1.0))
    assert data.edges == pytest.approx([k / 10 for k in range(11)])
    assert data.counts == {"a": [1, 2, 0, 0, 0, 0, 0, 0, 0, 0], "b": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]}
    assert data.sizes == {"a": 3, "b": 1} and data.threshold == 0.5
    with Image.open(tmp_path / "h.png") as im:
        im.load()
        assert im.size == (640, 400) and im.format == "PNG"


def test_histogram_range_covers_values_and_threshold(tmp_path):
    data = histogram_png({"a": [2.0, 3.0]}, tmp_path / "h.png", "t", "x", threshold=5.0, bins=3)
    assert data.edges == pytest.approx([2.0, 3.0, 4.0, 5.0]) and data.counts["a"] == [1, 1, 0]
    empty = histogram_png({"a": [None]}, tmp_path / "e.png", "t", "x", bins=2)  # nothing to draw: still a figure
    assert empty.sizes == {"a": 0} and empty.edges == pytest.approx([0.0, 0.5, 1.0])
    assert (tmp_path / "e.png").is_file()


def test_scatter_keeps_drawable_points_only(tmp_path):
    data = scatter_png([(1.0, 0.5, "p"), (None, 0.2, "missing x"), (2.0, math.nan, "nan y"), (3.0, 0.25, "q")],
                       tmp_path / "s.png", "t", "x", "y")
    assert data.points == [[1.0, 0.5, "p"], [3.0, 0.25, "q"]]
    assert data.to_dict()["kind"] == "scatter"
    with Image.open(tmp_path / "s.png") as im:
        im.load()
        assert im.size == (640, 400)
