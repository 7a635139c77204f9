"""The evaluate stage on a tiny run folder with fake evaluators whose similarities are set by hand.

Every image is a flat 8 x 8 colour whose value names it (originals k, anonymised 100 + k, inversion
images 200 + k); the fake evaluators and detector look the value up in tables, so every number of
the report can be computed by hand.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from anon.errors import ConfigError, MissingCheckpointError
from anon.metrics.evaluators import DlibEvaluator, FaceCropper, TorchIdentityEvaluator, as_evaluator
from anon.report.render import tradeoff_table, write_tradeoff
from anon.stages.evaluate import Calibration, folder_identity, run_evaluate
from tests.helpers import caused_by
from tests.stages.evaluate_fakes import (COS_ANONYMISED, DISTANCE, IDS, LENIENT, R, FakeCosine, FakeDistance,
                                         _png, fake_classifier, fake_detector, make_run)


@pytest.fixture
def evaluated(tmp_path):
    run = make_run(tmp_path)
    report = run_evaluate(run, {"cos": FakeCosine(), "dist": FakeDistance()}, detector=fake_detector,
                          thresholds={"cos": 0.5}, attributes=fake_classifier, identities=folder_identity,
                          inversion_dir=tmp_path / "inversions", batch_size=2, verdict=LENIENT)
    lines = {json.loads(s)["id"]: json.loads(s) for s in (run / "verification.jsonl").read_text().splitlines()}
    return run, report, lines


def test_reidentification_numbers_match_hand_computation(evaluated):
    run, report, _ = evaluated
    cos, dist = report["evaluators"]["cos"], report["evaluators"]["dist"]
    # cos: a 0.9 (re-id), b 0 (no), c no face in output (no, counted), d no face in original (not judged),
    # e 0.7071 (re-id) -> 2 of 4
    assert (cos["reidentified"], cos["evaluable"]) == (2, 4)
    assert cos["reidentification_rate"] == pytest.approx(0.5)
    assert (cos["no_face_anonymised"], cos["no_face_original"]) == (1, 1)
    assert cos["mean_after"] == pytest.approx((0.9 + 0.0 + R) / 3)
    assert cos["mean_inversion"] == pytest.approx((1.0 + R) / 2) and cos["inversion_pairs"] == 2
    assert cos["threshold"] == 0.5 and "configured" in cos["threshold_source"]
    # dist: 0.1, 1.0, 0.6, 2.0, 0.3 with "same if <= 0.6" -> 3 of 5
    assert (dist["reidentified"], dist["evaluable"]) == (3, 5)
    assert dist["reidentification_rate"] == pytest.approx(0.6)
    assert dist["threshold"] == 0.6 and dist["threshold_source"] == "fake default"
    assert dist["mean_after"] == pytest.approx(np.mean(list(DISTANCE.values())))
    assert report["images"] == 6 and report["evaluated"] == 5 and report["unreadable"] == ["p5/g"]


def test_detection_pose_attributes_rank1_and_manifest_means(evaluated):
    _, report, _ = evaluated
    assert report["detection"] == {"rate": pytest.approx(4 / 5), "detected": 4, "total": 5}
    # originals frontal, anonymised turned by 10 degrees of yaw; c has no face in its output
    assert report["pose"]["yaw"] == pytest.approx(10.0, abs=1e-6)
    assert report["pose"]["pitch"] == pytest.approx(0.0, abs=1e-6)
    assert report["pose"]["roll"] == pytest.approx(0.0, abs=1e-6)
    assert (report["pose"]["count"], report["pose"]["missing"]) == (4, 1)
    # attributes at 0.5: Smiling o=[T,F,T,F,T] a=[T,F,F,F,T] -> 4/5; Young o=[F,T,T,F,F] a=[T,T,T,T,F] -> 3/5
    assert report["attributes"]["per_attribute"] == {"Smiling": pytest.approx(0.8), "Young": pytest.approx(0.6)}
    assert report["attributes"]["mean"] == pytest.approx(0.7)
    m = report["manifest"]
    assert m["identity_similarity_before"] == pytest.approx(np.mean([0.8, 0.7, 0.6, 0.5, 0.4, 0.5]))
    assert m["loss_attribute"] == pytest.approx(3.0)


def test_per_image_verification_and_failed_ids(evaluated):
    run, report, lines = evaluated
    # a: cos re-identified; c: dist re-identified (0.6 <= 0.6) and no face detected; e: both re-identify
    # utility (|dyaw| 10 <= 15, attribute agreement >= 0.5): a, b, d, e; c has no face, so no pose
    assert {i: (x["privacy"], x["utility"], x["passed"]) for i, x in lines.items() if "error" not in x} == {
        "p1/a": (False, True, False), "p1/b": (True, True, True), "p2/c": (False, False, False),
        "p3/d": (True, True, True), "p3/e": (False, True, False)}
    assert lines["p2/c"]["utility_failures"] == ["pose not measured"]
    verdict = report["verdict"]
    assert (verdict["privacy"], verdict["utility"], verdict["passed"], verdict["evaluated"]) == (2, 4, 2, 5)
    assert verdict["utility_checks"] == ["pose", "attributes"] and verdict["source"] == "test bounds"
    assert report["failed_ids"] == ["p1/a", "p2/c", "p3/e"]
    assert report["passed"] == 2 and report["pass_rate"] == pytest.approx(2 / 5)
    assert (run / "failed_ids.txt").read_text().split() == ["p1/a", "p2/c", "p3/e"]
    a, c, d = lines["p1/a"], lines["p2/c"], lines["p3/d"]
    assert a["evaluators"]["cos"]["similarity"] == pytest.approx(0.9) and a["evaluators"]["cos"]["reidentified"]
    assert a["evaluators"]["cos"]["similarity_inversion"] == pytest.approx(1.0)
    c_cos = {k: v for k, v in c["evaluators"]["cos"].items() if k != "attacks"}
    assert c_cos == {"similarity": None, "threshold": 0.5, "face_original": True,
                     "face_anonymised": False, "reidentified": False, "pass": True}
    assert c["evaluators"]["dist"]["distance"] == pytest.approx(0.6) and c["face_detected"] is False
    assert d["evaluators"]["cos"]["reidentified"] is None and d["privacy"] is True and d["faces_detected"] == 2
    assert a["pose_anonymised"][0] == pytest.approx(10.0, abs=1e-6)
    assert a["attributes"]["changed"] == ["Young"]
    assert lines["p5/g"]["passed"] is None and "error" in lines["p5/g"]
    assert "p4/f" not in lines  # failed in the manifest: nothing to evaluate


def test_three_attacks_on_outputs_and_inversions_by_hand(evaluated):
    _, report, lines = evaluated
    cos, dist = report["evaluators"]["cos"]["attacks"], report["evaluators"]["dist"]["attacks"]
    rate = lambda r: (r["matched"], r["evaluable"])  # noqa: E731
    # own original, outputs: as the re-identification numbers above; inversions (a, b only): a 1.0, b .71 -> 2 of 2;
    # outputs on those two: a yes, b no -> gain (2 - 1) / 2
    assert rate(cos["own_original"]["output"]) == (2, 4)
    assert rate(cos["own_original"]["inversion"]) == (2, 2) and cos["own_original"]["gain"] == pytest.approx(0.5)
    # other photo of the same person (p1: a, b; p3: d, e; c alone; d's original has no face):
    # a vs orig b .44 no; b vs orig a 1.0 yes; c none; d vs orig e .71 yes; e: its only other photo has no face
    assert rate(cos["other_photo"]["output"]) == (2, 3)
    assert [lines[i]["evaluators"]["cos"]["attacks"]["other_photo"]["output"] for i in IDS] == [
        False, True, None, True, None]
    # dist: originals all at 0, so each output's distance is its own: a .1 yes, b 1.0 no, d 2.0 no, e .3 yes
    assert rate(dist["other_photo"]["output"]) == (2, 4)
    # closed set (gallery: originals a, b, c, e): a -> e (p3) miss; b -> a (p1, first of a tie with c) hit;
    # c no face: miss; e -> a (p1) miss; d's original is not in the gallery: not judged
    assert rate(cos["closed_set"]["output"]) == (1, 4) and cos["closed_set"]["threshold"] is None
    # inversions a [1, 0] -> a (p1) hit; b [R, R] -> e (p3) miss
    assert rate(cos["closed_set"]["inversion"]) == (1, 2)
    assert cos["other_photo"]["threshold"] == 0.5 and "configured" in cos["other_photo"]["threshold_source"]


def test_weak_inversion_opens_the_report_with_a_warning(tmp_path):
    run = make_run(tmp_path)
    report = run_evaluate(run, {"cos": FakeCosine()}, thresholds={"cos": 0.99}, inversion_dir=tmp_path / "inversions",
                          inversion_source="test inversions", plots=False, pose=None)
    # inversions: a 1.0 (matched), b .71 (not): 1 of 2 is not under half -> no warning yet
    assert report["inversion"]["warning"] is None
    report = run_evaluate(run, {"cos": FakeCosine()}, thresholds={"cos": 1.5}, inversion_dir=tmp_path / "inversions",
                          inversion_source="test inversions", plots=False, pose=None)
    assert "cos: 0 of 2 (0.0 %)" in report["inversion"]["warning"]
    head = (run / "report.md").read_text().splitlines()[:4]
    assert any("cannot represent these faces" in line and "do not measure the anonymisation" in line for line in head)


def test_default_verdict_bounds_fail_a_ten_degree_turn(tmp_path):
    run = make_run(tmp_path)
    report = run_evaluate(run, {"dist": FakeDistance()}, detector=fake_detector, plots=False)
    assert report["verdict"]["thresholds"]["max_yaw_deg"] == 5.0 and report["verdict"]["utility"] == 0
    lines = [json.loads(s) for s in (run / "verification.jsonl").read_text().splitlines()]
    assert any("|Δyaw| 10.0° > 5°" in f for line in lines for f in line.get("utility_failures", []))
    assert report["passed"] == 0 and report["verdict"]["privacy"] == 2


def test_report_files_and_plots(evaluated):
    run, report, _ = evaluated
    assert json.loads((run / "report.json").read_text())["failed_ids"] == report["failed_ids"]
    md = (run / "report.md").read_text()
    assert "## Evaluator `cos`" in md and "## Evaluator `dist`" in md
    assert "fake default" in md and "50.0 % (2 of 4)" in md and "`p3/e`" in md
    assert "Warning" not in md and "| passed (both) | 2 of 5 | 40.0 % |" in md
    assert set(report["plots"]) == {"plots/similarity_cos.png", "plots/similarity_dist.png",
                                    "plots/loss_network_similarity.png"}
    for rel in report["plots"]:
        with Image.open(run / rel) as im:
            assert im.size == (640, 400)
            im.load()  # decodes


def test_plot_data_behind_the_similarity_histograms(evaluated):
    """The numbers each PNG draws (``plots/<name>.json``), against the fake evaluators' tables."""
    run, _, _ = evaluated
    cos = json.loads((run / "plots" / "similarity_cos.json").read_text())
    assert cos["kind"] == "histogram" and cos["threshold"] == 0.5
    assert cos["edges"] == pytest.approx(np.linspace(-1.0, 1.0, 31).tolist())  # 30 bins over [-1, 1]
    # outputs: a 0.9, b 0.0, e 0.7071 (c: no face in its output, d: none in its original); inversions a 1.0, b 0.7071
    assert cos["sizes"] == {"inversion: original vs inversion": 2, "output: original vs anonymised": 3}
    out, inv = cos["counts"]["output: original vs anonymised"], cos["counts"]["inversion: original vs inversion"]
    assert out[28] == 1 and out[25] == 1 and out[14] + out[15] == 1 and sum(out) == 3
    assert inv[29] == 1 and inv[25] == 1 and sum(inv) == 2
    dist = json.loads((run / "plots" / "similarity_dist.json").read_text())
    assert dist["threshold"] == 0.6 and dist["edges"][0] == pytest.approx(0.0) and dist["edges"][-1] == 2.0
    assert dist["sizes"]["output: original vs anonymised"] == 5 and sum(dist["counts"]["output: original vs anonymised"]) == 5
    loss = json.loads((run / "plots" / "loss_network_similarity.json").read_text())
    before, after = loss["counts"]["before (initial code)"], loss["counts"]["after (final code)"]
    assert loss["sizes"] == {"before (initial code)": 5, "after (final code)": 5} and loss["threshold"] is None
    # before 0.8 .. 0.4, after 0.1 .. 0.5 (the unreadable p5/g left out): before is right of after
    assert sum(before[20:28]) == 5 and sum(after[16:23]) == 5


def test_threshold_calibrated_on_pairs_and_cached(tmp_path):
    run = make_run(tmp_path)
    # calibration images: same-person pairs at similarities 0.9, 0.8, 0.7, 0.4; different 0.1, 0.2, 0.5, 0.3
    # -> EER threshold 0.5, EER 0.25 (hand case of tests/metrics/test_reid.py)
    sims = [(0.9, True), (0.8, True), (0.7, True), (0.4, True), (0.1, False), (0.2, False), (0.5, False), (0.3, False)]
    pairs = []
    for n, (s, same) in enumerate(sims):
        _png(tmp_path / "cal" / f"{n}a.png", 1)   # COS_ORIGINAL[1] = [1, 0]
        value = 150 + n
        _png(tmp_path / "cal" / f"{n}b.png", value)
        COS_ANONYMISED[value - 100] = [s, math.sqrt(1 - s * s)]
        pairs.append((tmp_path / "cal" / f"{n}a.png", tmp_path / "cal" / f"{n}b.png", same))
    try:
        calibration = Calibration(pairs, "test pairs", tmp_path / "cache.json")
        evaluator = FakeCosine()
        report = run_evaluate(run, {"cos": evaluator}, calibration=calibration, plots=False)
        ev = report["evaluators"]["cos"]
        assert ev["threshold"] == pytest.approx(0.5) and ev["calibration_eer"] == pytest.approx(0.25)
        assert "equal-error-rate threshold on test pairs" in ev["threshold_source"]
        assert (tmp_path / "cache.json").is_file()
        calls_first = evaluator.calls
        second = FakeCosine()
        run_evaluate(run, {"cos": second}, calibration=calibration, plots=False)
        assert second.calls < calls_first  # the calibration images were not embedded again
    finally:
        for n in range(len(sims)):
            COS_ANONYMISED.pop(50 + n, None)


def test_a_threshold_is_required(tmp_path):
    with pytest.raises(ConfigError, match="thresholds.cos"):
        run_evaluate(make_run(tmp_path), {"cos": FakeCosine()})


def test_tradeoff_table_reads_config_and_report(tmp_path):
    runs = []
    for n, (margin, lambda_id) in enumerate([(0.0, 10.0), (0.5, 1.0)]):
        run = make_run(tmp_path / f"sweep{n}", margin=margin, lambda_id=lambda_id)
        run_evaluate(run, {"cos": FakeCosine(), "dist": FakeDistance()}, thresholds={"cos": 0.5 + 0.25 * n},
                     detector=fake_detector, plots=False)
        runs.append(run)
    rows = tradeoff_table(runs, evaluator="cos")
    assert [(r["margin"], r["lambda_id"], r["lambda_attr"]) for r in rows] == [(0.0, 10.0, 0.1), (0.5, 1.0, 0.1)]
    # threshold 0.75: only a (0.9) is re-identified among the 4 evaluable
    assert [r["reid_rate"] for r in rows] == [pytest.approx(0.5), pytest.approx(0.25)]
    assert rows[0]["attribute_metric"] == "pose_error" and rows[0]["attribute_value"] == pytest.approx(10 / 3)
    written = write_tradeoff(runs, tmp_path / "out", attribute_metric="loss_attribute")
    assert written[1]["attribute_value"] == pytest.approx(3.0)
    assert (tmp_path / "out" / "tradeoff.png").is_file() and "| 0.500 |" in (tmp_path / "out" / "tradeoff.md").read_text()
    with Image.open(tmp_path / "out" / "tradeoff.png") as im:
        im.load()
    drawn = json.loads((tmp_path / "out" / "tradeoff_plot.json").read_text())
    assert [p[:2] for p in drawn["points"]] == [[pytest.approx(3.0), 0.5], [pytest.approx(3.0), 0.25]]
    assert drawn["xlabel"] == "loss_attribute (lower is better)" and drawn["points"][1][2].startswith("m=0.50")


# ------------------------------------------------------------------------------------------- adapters
def test_face_cropper_box_and_largest_face():
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    small = (np.array([10, 20, 50, 70], np.float32), 0.99, None)
    large = (np.array([0, 0, 60, 90], np.float32), 0.90, None)
    cropper = FaceCropper(lambda im: [small], size=40, margin=8)
    # hand: border 8 * 40 / 32 = 10 px in x, 8 * 50 / 32 = 12.5 px in y, half on each side, truncated
    assert cropper.box(image) == (5, 13, 55, 76)
    assert cropper(image).shape == (40, 40, 3)
    assert FaceCropper(lambda im: [small, large], size=40).box(image) == (0, 0, 60, 90)
    assert FaceCropper(lambda im: [small, large], size=40, select="probability").box(image) == (10, 20, 50, 70)
    assert FaceCropper(lambda im: [], size=40)(image) is None


class MeanColour(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_torch_identity_evaluator_groups_sizes_and_normalises():
    images = [np.full((8, 8, 3), (255, 0, 0), np.uint8), np.full((6, 6, 3), (0, 255, 255), np.uint8),
              np.full((8, 8, 3), (255, 255, 0), np.uint8)]
    crop = lambda im: None if im.shape[0] == 6 else im  # noqa: E731 -- "no face" in the 6 px image
    out = TorchIdentityEvaluator(MeanColour(), crop=crop, batch_size=1).embed(images)
    assert out[1] is None
    np.testing.assert_allclose(out[0], np.array([1, -1, -1]) / math.sqrt(3), atol=1e-6)
    np.testing.assert_allclose(out[2], np.array([1, 1, -1]) / math.sqrt(3), atol=1e-6)
    both = TorchIdentityEvaluator(MeanColour(), batch_size=8).embed(images)  # images 0 and 2 in one forward
    np.testing.assert_allclose(both[1], np.array([-1, 1, 1]) / math.sqrt(3), atol=1e-6)
    np.testing.assert_allclose(both[0], np.array([1, -1, -1]) / math.sqrt(3), atol=1e-6)
    np.testing.assert_allclose(both[2], np.array([1, 1, -1]) / math.sqrt(3), atol=1e-6)


def test_describers_become_distance_evaluators():
    class Describer:
        threshold = 0.55

        def describe(self, image):
            return None if image[0, 0, 0] == 0 else np.ones(128)

    ev = as_evaluator(Describer())
    assert isinstance(ev, DlibEvaluator) and not ev.higher_is_same and ev.threshold == 0.55
    assert ev.embed([np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)])[0] is None


# ------------------------------------------------------------------------------------------- Hydra config
def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from anon.stages.evaluate import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_hydra_config_runs_a_tiny_torch_evaluator(tmp_path):
    from anon.stages.evaluate import evaluate

    run = make_run(tmp_path)
    _png(run / "images" / "p1" / "b.png", 2)  # this output is its original, unchanged
    cfg = _compose(f"run_dir={run}", "evaluators=[tiny_irse]", "~detector", "thresholds.tiny_irse=0.5",
                   "pose=null", "device=cpu", f"output_root={tmp_path}")
    assert cfg.get("detector") is None
    report = evaluate(cfg)
    lines = {json.loads(s)["id"]: json.loads(s) for s in (run / "verification.jsonl").read_text().splitlines()}
    b = lines["p1/b"]["evaluators"]["tiny_irse"]
    assert b["similarity"] == pytest.approx(1.0, abs=1e-5) and b["reidentified"] is True
    assert report["evaluators"]["tiny_irse"]["evaluable"] == 5


def test_hydra_evaluator_without_weights_names_the_download(tmp_path):
    from anon.stages.evaluate import build_evaluators

    cfg = _compose(f"run_dir={tmp_path}", "evaluators=[facenet_vggface2]", "~detector",
                   f"weights_dir={tmp_path / 'weights'}")
    with pytest.raises(Exception) as info:
        build_evaluators(cfg)
    assert "anon download facenet_vggface2" in str(caused_by(info.value, MissingCheckpointError))
    with pytest.raises(ConfigError, match="no evaluator config"):
        build_evaluators(_compose(f"run_dir={tmp_path}", "evaluators=[nope]", "~detector"))
