"""The evaluate stage on a tiny run folder with fake evaluators whose similarities are set by hand.

Every image is a flat 8 x 8 colour whose value names it (originals k, anonymised 100 + k, "before"
images 200 + k); the fake evaluators and detector look the value up in tables, so every number of
the report can be computed by hand.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anon.errors import ConfigError, MissingCheckpointError
from anon.metrics.attributes import FACE_TEMPLATE_5
from anon.metrics.evaluators import DlibEvaluator, FaceCropper, TorchIdentityEvaluator, as_evaluator
from anon.report import tradeoff_table, write_tradeoff
from anon.stages.evaluate import Calibration, folder_identity, run_evaluate

IDS = ["p1/a", "p1/b", "p2/c", "p3/d", "p3/e"]  # value k = index + 1
R = 1 / math.sqrt(2)

# cosine evaluator: original / anonymised embeddings (None = no face)
COS_ORIGINAL = {1: [1, 0], 2: [0, 1], 3: [1, 0], 4: None, 5: [R, R]}
COS_ANONYMISED = {1: [0.9, math.sqrt(1 - 0.81)], 2: [1, 0], 3: None, 4: [1, 0], 5: [1, 0]}
COS_BEFORE = {1: [1, 0], 2: [R, R]}  # before images exist for ids 1 and 2 only
# distance evaluator: originals at 0, anonymised at the distance given
DISTANCE = {1: 0.1, 2: 1.0, 3: 0.6, 4: 2.0, 5: 0.3}
FACES_ANONYMISED = {1: 1, 2: 1, 3: 0, 4: 2, 5: 1}
ATTRS = {1: [0.9, 0.1], 2: [0.2, 0.8], 3: [0.7, 0.7], 4: [0.1, 0.1], 5: [0.6, 0.4],
         101: [0.8, 0.9], 102: [0.1, 0.9], 103: [0.2, 0.6], 104: [0.3, 0.9], 105: [0.9, 0.1]}


def _value(image: np.ndarray) -> int:
    return int(image[0, 0, 0])


class FakeCosine:
    higher_is_same = True
    threshold = None
    threshold_source = None

    def __init__(self):
        self.calls = 0

    def embed(self, images):
        self.calls += len(images)
        out = []
        for im in images:
            v = _value(im)
            table, key = (COS_ORIGINAL, v) if v < 100 else (COS_ANONYMISED, v - 100) if v < 200 else (COS_BEFORE, v - 200)
            e = table.get(key)
            out.append(None if e is None else np.asarray(e, dtype=np.float32))
        return out


class FakeDistance:
    higher_is_same = False
    threshold = 0.6
    threshold_source = "fake default"

    def embed(self, images):
        return [np.array([0.0, 0.0]) if _value(im) < 100 else
                np.array([DISTANCE.get(_value(im) - 100, 0.0), 0.0]) for im in images]


def _landmarks(yaw_deg: float) -> np.ndarray:
    y = math.radians(yaw_deg)
    rot = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    return 3.0 * (FACE_TEMPLATE_5 @ rot.T)[:, :2] + 50.0


def fake_detector(image):
    v = _value(image)
    n = FACES_ANONYMISED.get(v - 100, 0) if v >= 100 else 1
    marks = _landmarks(0.0 if v < 100 else 10.0)
    return [(np.array([0, 0, 8, 8], np.float32), 0.99, marks)] * n


def fake_classifier(image):
    return np.asarray(ATTRS[_value(image)])


fake_classifier.names = ["Smiling", "Young"]


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def make_run(root: Path, margin=0.0, lambda_id=10.0) -> Path:
    """A run folder: originals under root/originals, outputs under root/run, manifest and config."""
    run = root / "run"
    lines = []
    for k, image_id in enumerate(IDS, start=1):
        _png(root / "originals" / f"{image_id}.png", k)
        _png(run / "images" / f"{image_id}.png", 100 + k)
        lines.append({"id": image_id, "source": str(root / "originals" / f"{image_id}.png"), "status": "done",
                      "image": f"images/{image_id}.png", "identity_similarity_before": 0.9 - 0.1 * k,
                      "identity_similarity_after": 0.1 * k, "loss": {"total": 1.0, "identity": 0.5, "attribute": k}})
    lines.append({"id": "p4/f", "source": "nowhere.png", "status": "failed", "error": "unreadable image"})
    lines.append({"id": "p5/g", "source": str(root / "originals" / "missing.png"), "status": "done",
                  "image": "images/p5/g.png", "identity_similarity_before": 0.5, "identity_similarity_after": 0.5})
    for k in (1, 2):
        _png(root / "before" / f"{IDS[k - 1]}.png", 200 + k)
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(lines, key=lambda r: r["id"])))
    (run / "config.yaml").write_text(f"loss:\n  margin: {margin}\n  lambda_id: {lambda_id}\n  lambda_attr: 0.1\n")
    return run


@pytest.fixture
def evaluated(tmp_path):
    run = make_run(tmp_path)
    report = run_evaluate(run, {"cos": FakeCosine(), "dist": FakeDistance()}, detector=fake_detector,
                          thresholds={"cos": 0.5}, attributes=fake_classifier, identities=folder_identity,
                          before_dir=tmp_path / "before", batch_size=2)
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
    assert cos["mean_before"] == pytest.approx((1.0 + R) / 2) and cos["before_pairs"] == 2
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
    # rank-1 (cos): gallery = originals with a face (a:p1 [1,0], b:p1 [0,1], c:p2 [1,0], e:p3 [R,R]);
    # queries: a [0.9,.44] -> nearest e (p3, cos .94) miss; b [1,0] -> a or c tie, argmax takes a (p1) ok;
    # c none -> miss; d [1,0] (p3) -> a (p1) miss; e [1,0] (p3) -> a (p1) miss
    gallery = np.array([[1, 0], [0, 1], [1, 0], [R, R]])
    labels = np.array([0, 0, 1, 2])
    queries = [(COS_ANONYMISED[k], lab) for k, lab in ((1, 0), (2, 0), (4, 2), (5, 2))]
    hand = sum(labels[np.argmax(gallery @ (np.asarray(q) / np.linalg.norm(q)))] == lab for q, lab in queries)
    assert report["evaluators"]["cos"]["rank1"] == {"rate": pytest.approx(hand / 5), "correct": hand,
                                                    "queries": 5, "no_face": 1}
    m = report["manifest"]
    assert m["identity_similarity_before"] == pytest.approx(np.mean([0.8, 0.7, 0.6, 0.5, 0.4, 0.5]))
    assert m["loss_attribute"] == pytest.approx(3.0)


def test_per_image_verification_and_failed_ids(evaluated):
    run, report, lines = evaluated
    # a: cos re-identified; c: dist re-identified (0.6 <= 0.6) and no face detected; e: both re-identify
    assert report["failed_ids"] == ["p1/a", "p2/c", "p3/e"]
    assert report["passed"] == 2 and report["pass_rate"] == pytest.approx(2 / 5)
    assert (run / "failed_ids.txt").read_text().split() == ["p1/a", "p2/c", "p3/e"]
    a, c, d = lines["p1/a"], lines["p2/c"], lines["p3/d"]
    assert a["evaluators"]["cos"]["similarity"] == pytest.approx(0.9) and a["evaluators"]["cos"]["reidentified"]
    assert a["evaluators"]["cos"]["similarity_before"] == pytest.approx(1.0)
    assert c["evaluators"]["cos"] == {"similarity": None, "threshold": 0.5, "face_original": True,
                                      "face_anonymised": False, "reidentified": False, "pass": True}
    assert c["evaluators"]["dist"]["distance"] == pytest.approx(0.6) and c["face_detected"] is False
    assert d["evaluators"]["cos"]["reidentified"] is None and d["pass"] is True and d["faces_detected"] == 2
    assert a["pose_anonymised"][0] == pytest.approx(10.0, abs=1e-6)
    assert a["attributes"]["changed"] == ["Young"]
    assert lines["p5/g"]["pass"] is None and "error" in lines["p5/g"]
    assert "p4/f" not in lines  # failed in the manifest: nothing to evaluate


def test_report_files_and_plots(evaluated):
    run, report, _ = evaluated
    assert json.loads((run / "report.json").read_text())["failed_ids"] == report["failed_ids"]
    md = (run / "report.md").read_text()
    assert "## Evaluator `cos`" in md and "## Evaluator `dist`" in md
    assert "fake default" in md and "50.0 % (2 of 4)" in md and "`p3/e`" in md
    assert set(report["plots"]) == {"plots/similarity_cos.png", "plots/similarity_dist.png",
                                    "plots/loss_network_similarity.png"}
    for rel in report["plots"]:
        with Image.open(run / rel) as im:
            assert im.size == (640, 400)


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
    both = TorchIdentityEvaluator(MeanColour(), batch_size=8).embed(images)
    np.testing.assert_allclose(both[1], np.array([-1, 1, 1]) / math.sqrt(3), atol=1e-6)


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
    cause = info.value
    while cause is not None and not isinstance(cause, MissingCheckpointError):
        cause = cause.__cause__
    assert cause is not None and "anon download facenet_vggface2" in str(cause)
    with pytest.raises(ConfigError, match="no evaluator config"):
        build_evaluators(_compose(f"run_dir={tmp_path}", "evaluators=[nope]", "~detector"))
