"""A tiny run folder with fake evaluators whose similarities are set by hand (shared by the evaluate tests).

Every image is a flat 8 x 8 colour whose value names it (originals k, anonymised 100 + k, inversion
images 200 + k); the fake evaluators, detector, attribute and expression classifiers and the FID
feature look the value up in tables, so every number of the report can be computed by hand.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anon.metrics.attributes import FACE_TEMPLATE_5
from anon.metrics.verdict import VerdictThresholds

LENIENT = VerdictThresholds(max_yaw_deg=15.0, min_attribute_agreement=0.5, source="test bounds")

IDS = ["p1/a", "p1/b", "p2/c", "p3/d", "p3/e"]  # value k = index + 1
R = 1 / math.sqrt(2)

# cosine evaluator: original / anonymised embeddings (None = no face)
COS_ORIGINAL = {1: [1, 0], 2: [0, 1], 3: [1, 0], 4: None, 5: [R, R]}
COS_ANONYMISED = {1: [0.9, math.sqrt(1 - 0.81)], 2: [1, 0], 3: None, 4: [1, 0], 5: [1, 0]}
COS_BEFORE = {1: [1, 0], 2: [R, R]}  # inversion images exist for ids 1 and 2 only
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
        _png(root / "inversions" / f"{IDS[k - 1]}.png", 200 + k)
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(lines, key=lambda r: r["id"])))
    (run / "config.yaml").write_text(f"loss:\n  margin: {margin}\n  lambda_id: {lambda_id}\n  lambda_attr: 0.1\n")
    return run


EXPRESSIONS = ["neutral", "happy", "sad"]


EXPRESSION_CLASS = {1: 0, 2: 1, 3: 2, 5: 0, 101: 0, 102: 2, 103: 2, 105: 1, 201: 1, 202: 1}  # absent: no face


def fake_expression(images):
    """``list of images -> N x 3`` probabilities: 0.5 on the class of :data:`EXPRESSION_CLASS`, 0.3 on the next
    one, 0.2 on the last; a row of NaN (no face) for values not in the table."""
    rows = []
    for im in images:
        c = EXPRESSION_CLASS.get(_value(im))
        row = [float("nan")] * 3
        if c is not None:
            row = [0.0] * 3
            row[c], row[(c + 1) % 3], row[(c + 2) % 3] = 0.5, 0.3, 0.2
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)


fake_expression.names = EXPRESSIONS
fake_expression.description = "fake expression table"


class ChannelMoments(torch.nn.Module):
    """A tiny FID feature: per-channel mean and mean square of uint8 images -> B x 6."""

    num_features = 6

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.double() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), (x ** 2).mean(dim=(2, 3))], dim=1).float()


# ------------------------------------------------------------------------------------------- golden run
#: the report and verification lines of :func:`golden_run`, written by the one-process loop before evaluation ran
#: through the Trainer (``experiments/golden/make_evaluate_report.py``)
GOLDEN = Path(__file__).resolve().parent / "evaluate_report_golden.json"  # the old loop's report (not a network golden)


def golden_run(root: Path):
    """The tiny run and the ``run_evaluate`` arguments both paths are called with."""
    from anon.metrics.fid import build_fid
    from anon.stages.evaluate import folder_identity  # (also where the one-process loop had it)

    run = make_run(root)
    kwargs = dict(detector=fake_detector, thresholds={"cos": 0.5}, attributes=fake_classifier,
                  identities=folder_identity, inversion_dir=root / "inversions", inversion_source="test inversions",
                  fid=build_fid(feature=ChannelMoments()), expression=fake_expression, batch_size=2,
                  verdict=LENIENT)
    return run, {"cos": FakeCosine(), "dist": FakeDistance()}, kwargs


def relative(value, root: str):
    """Every string with the temporary root in it, with ``<root>`` instead."""
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    return value.replace(root, "<root>") if isinstance(value, str) else value
