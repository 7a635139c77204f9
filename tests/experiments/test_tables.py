"""`make tables` on runs evaluated by the real evaluate stage (not hand-made reports): every column filled,
and a report whose fields do not follow the schema is an error, never a blank column."""
import csv
import json
import sys
from pathlib import Path

import pytest

from anon.report.schema import ReportSchemaError
from anon.stages.evaluate import folder_identity, run_evaluate
from tests.stages.test_evaluate import (LENIENT, FakeCosine, FakeDistance, fake_classifier, fake_detector,
                                        make_run)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import tables  # noqa: E402


class FakeExpression:
    """Two classes; original k and its output agree except for k = 2 (argmax flips)."""

    names = ("neutral", "happy")
    description = "fake expression"

    def __call__(self, images):
        import torch

        rows = []
        for im in images:
            v = int(im[0, 0, 0]) % 100
            rows.append([0.2, 0.8] if (v == 2 and int(im[0, 0, 0]) >= 100) else [0.7, 0.3])
        return torch.tensor(rows, dtype=torch.float64)


class FakeFid:
    """FID 12.5 by hand: the FID feature is 0 for an original (value < 100) and sqrt(12.5) for an output, so the
    means differ by sqrt(12.5) and both covariances are 0."""

    @staticmethod
    def inception(images):
        return (images[:, :1, 0, 0].float() >= 100).float() * 12.5 ** 0.5


def evaluated_run(root: Path, table: str, cell: str, cos_threshold: float) -> Path:
    run = make_run(root)
    with open(run / "config.yaml", "a") as fh:
        fh.write(f"table: {table}\ncell: '{cell}'\n")
    run_evaluate(run, {"cos": FakeCosine(), "dist": FakeDistance()}, detector=fake_detector,
                 thresholds={"cos": cos_threshold}, attributes=fake_classifier, identities=folder_identity,
                 inversion_dir=root / "inversions", expression=FakeExpression(), fid=FakeFid(), plots=False,
                 verdict=LENIENT)
    return run


def test_two_evaluated_runs_fill_every_column(tmp_path):
    evaluated_run(tmp_path / "a", "lite", "m = 0.0", 0.5)
    evaluated_run(tmp_path / "b", "lite", "m = 0.5", 0.95)
    written = tables.write(tables.collect([tmp_path]), tmp_path / "out")
    assert sorted(p.name for p in written) == ["lite.csv", "lite.md"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "lite.csv")))
    assert [r["cell"] for r in rows] == ["m = 0.0", "m = 0.5"]
    assert len(rows[0]) == 3 + 2 * 3 * 3 + 10 + 1  # cell run images, 2 evaluators x 3 attacks x 3, 10 metrics, notes
    for row in rows:
        assert row.pop("notes") == ""  # nothing n/a, so nothing to explain
        assert all(v not in ("", None, "n/a") for v in row.values()), [k for k, v in row.items() if v in ("", None)]
    a = rows[0]
    # hand numbers of tests/stages/test_evaluate.py (threshold 0.5)
    assert a["re-ID % own_original output (cos)"] == "50.0" and a["re-ID % own_original inversion (cos)"] == "100.0"
    assert a["gain % own_original (cos)"] == "50.0" and a["re-ID % other_photo output (cos)"] == "66.67"
    assert a["re-ID % closed_set output (cos)"] == "25.0" and a["detection %"] == "80.0"
    assert a["|Δyaw| (deg)"] == "10.0" and a["attribute agreement %"] == "70.0"
    assert a["expression agreement %"] == "80.0" and a["FID"] == "12.5"
    # privacy b, d; utility a, d, e (b's expression flips, c has no pose); passed d
    assert (a["privacy %"], a["utility %"], a["passed %"]) == ("40.0", "60.0", "20.0")
    assert rows[1]["re-ID % own_original output (cos)"] == "0.0"  # threshold 0.95: a (0.9) no longer matches
    assert "n/a" not in (tmp_path / "out" / "lite.md").read_text()


def test_a_renamed_or_missing_report_field_is_an_error(tmp_path):
    run = evaluated_run(tmp_path / "a", "lite", "m = 0.0", 0.5)
    report = json.loads((run / "report.json").read_text())
    report["attributes"]["mean_agreement"] = report["attributes"].pop("mean")
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(ReportSchemaError, match="mean_agreement"):
        tables.collect([tmp_path])
    del report["attributes"]["mean_agreement"]
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(ReportSchemaError, match="'mean' of Attributes missing"):
        tables.collect([tmp_path])
    report["schema_version"] = 1
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(ReportSchemaError, match="schema_version 1"):
        tables.collect([tmp_path])


def test_a_metric_no_run_measured_is_named_not_blank(tmp_path):
    run = make_run(tmp_path)
    with open(run / "config.yaml", "a") as fh:
        fh.write("table: t\ncell: c\n")
    run_evaluate(run, {"dist": FakeDistance()}, plots=False, pose=None)  # every image its own person
    rows = tables.collect([tmp_path])["t"]
    md = tables.markdown("t", rows)
    header, _, *body = [line for line in md.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line[2:-2].split(" | ")]  # noqa: E731 ("|Δyaw|" holds a bar)
    cells = dict(zip(split(header), split(body[0])))
    notes = {line.split(" ", 1)[0]: line.split(" ", 1)[1]
             for line in md.split("Not applicable or not measured:")[1].splitlines() if line.startswith("[")}

    def why(column):  # the reason under the table for an n/a cell
        text = cells[column]
        assert text.startswith("n/a ["), (column, text)
        return notes[text[len("n/a "):].rstrip()]
    assert why("FID").startswith("FID not computed")
    assert why("pose error (deg)").startswith("no pose estimator")
    assert why("detection %").startswith("no face detector")
    assert why("re-ID % other_photo output (dist)").startswith("no identity has two photos")
    assert why("attribute agreement %").startswith("no attribute classifier")
    csv_path = tables.write({"t": rows}, tmp_path / "out")[1]
    row = next(csv.DictReader(open(csv_path)))
    assert row["FID"] == "n/a" and "FID: FID not computed" in row["notes"]


def test_tradeoff_figure_is_written_as_png_and_pdf(tmp_path):
    import tradeoff_figure

    evaluated_run(tmp_path / "a", "sweep_margin", "m = 0.0", 0.5)
    evaluated_run(tmp_path / "b", "sweep_margin", "m = 0.5", 0.95)
    rows = tables.collect([tmp_path])
    rows["methods"] = [dict(rows["sweep_margin"][0], cell="no pose", **{"pose error (deg)": None})]
    png, pdf = tradeoff_figure.write(rows, tmp_path / "fig" / "tradeoff", "cos")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert tradeoff_figure.reid_column("cos") in rows["methods"][0]
