"""`make demo` end to end on two real LFW photos with the offline lite model set."""
import json
from pathlib import Path

import pytest

from tests.requires import unavailable

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def lite_available():
    from anon.lite.npm import LITE, lite_dir
    from anon.lite.packages import LITE_PACKAGES
    import importlib.util

    missing = [m for m in LITE_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        unavailable(f"lite packages {missing} not installed (make install-lite)")
    if not (lite_dir() / Path(LITE["mobilefacenet"].filename).name).exists():
        unavailable("MobileFaceNet.tflite not fetched (make install-lite runs python -m anon.lite.npm, which needs npm)")


def test_demo_on_two_lfw_photos(shared_data, tmp_path, capsys):
    lite_available()
    from anon.demo import main

    data = tmp_path / "photos"
    data.mkdir()
    for name in ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg"):
        (data / Path(name).name).write_bytes((shared_data / "lfw_sample" / name).read_bytes())
    assert main([f"data={data}", f"out={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert "re-identified by dlib, own_original" in out and "inversion alone" in out
    assert "face detected in the outputs" in out and "verdict (2 images): privacy " in out
    assert "inversion fidelity: the inversion matches its own original (threshold 0.60) in " in out
    assert "/2 (" in out.split("inversion fidelity:")[1].splitlines()[0]
    assert "faces generated at 64 px" in out
    run_dir = next((tmp_path / "out" / "runs").iterdir())
    records = [json.loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["Aaron_Peirsol_0001", "Abel_Pacheco_0001"]
    assert all(r["status"] == "done" and r["loss"]["total"] < r["loss_initial"]["total"]
               for r in records)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["evaluators"]["dlib_resnet_crops"]["evaluable"] == 2
    assert (run_dir / "grid.png").exists() and (run_dir / "report.md").exists()
