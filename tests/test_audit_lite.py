"""The lite set on real LFW faces, then every headline number of the report recomputed from the saved
images by experiments/audit_report_dlib.py, which calls dlib directly and imports nothing of anon."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_demo import lite_available

pytestmark = [pytest.mark.slow, pytest.mark.real_data]
REPO = Path(__file__).resolve().parents[1]
PHOTOS = ["Sergio_Garcia/Sergio_Garcia_0001.jpg", "Sergio_Garcia/Sergio_Garcia_0002.jpg",
          "Tracy_McGrady/Tracy_McGrady_0001.jpg", "Tracy_McGrady/Tracy_McGrady_0002.jpg",
          "Arye_Mekel/Arye_Mekel_0001.jpg", "Arye_Mekel/Arye_Mekel_0002.jpg"]


def test_report_numbers_match_an_independent_dlib_audit(shared_data, tmp_path, capsys):
    lite_available()
    from anon.demo import main

    data = tmp_path / "photos"
    for name in PHOTOS:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes((shared_data / "lfw_sample" / name).read_bytes())
    assert main([f"data={data}", f"out={tmp_path / 'out'}"]) == 0
    run_dir = next((tmp_path / "out" / "runs").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    result = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "audit_report_dlib.py"), str(run_dir), "--upsample", "2",
         "--fallback-whole-image", "--pose-upsample", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    audit = json.loads(result.stdout)
    dlib = report["evaluators"]["dlib_resnet_crops"]
    assert report["evaluated"] == audit["evaluated"] == 6
    assert report["inversion"]["images"] == 6 and "rendered by the run's generator" in report["inversion"]["source"]
    for kind in ("own_original", "other_photo", "closed_set"):
        mine, theirs = dlib["attacks"][kind], audit["attacks"][kind]
        for probe in ("output", "inversion"):
            assert (mine[probe]["matched"], mine[probe]["evaluable"]) == (
                theirs[probe]["matched"], theirs[probe]["evaluable"]), (kind, probe)
        assert mine["gain"] == pytest.approx(theirs["gain"]) if theirs["gain"] is not None else mine["gain"] is None
    assert dlib["attacks"]["other_photo"]["output"]["evaluable"] > 0, "three people with two photos each"
    lines = {json.loads(x)["id"]: json.loads(x) for x in (run_dir / "verification.jsonl").read_text().splitlines()}
    assert report["pose"]["estimator"].startswith("dlib 68-point")
    for image_id, delta in audit["pose_dlib68"]["delta"].items():
        assert lines[image_id]["pose_delta"][:2] == pytest.approx(delta, abs=1e-3)
    assert report["pose"]["count"] == 6 - report["pose"]["missing"]
    e = report["expression"]
    assert (e["same"], e["count"]) == (audit["expression_same"], audit["expression_count"])
    v = report["verdict"]
    assert (v["privacy"], v["utility"], v["passed"]) == (audit["privacy"], audit["utility"], audit["passed"])
    md = (run_dir / "report.md").read_text()
    assert "## Verdict" in md and "Re-identification: inversion vs output" in md and "68-point" in md
