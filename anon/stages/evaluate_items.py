"""Per-item measurements of the evaluate stage, a batch at a time: what one (original, inversion, anonymised)
triple gives under every selected metric (:mod:`anon.metrics.registry`: the identity evaluators, the
detector, the pose estimators, the attribute and expression classifiers, the FID feature network).

:meth:`Measures.measure` turns a batch of :class:`anon.stages.evaluate_inputs.EvaluationTriples` items into
one *result* per item: its verification line (the per-image part of ``verification.jsonl``) and its raw
measurements (embeddings, poses, predictions, FID features) as tensors. Nothing here depends on the other
items of the batch, so a result is the same alone, in any batch and on any rank; the cross-item metrics
(attacks, rates, FID statistics, verdicts) are computed once from all results
(:mod:`anon.stages.evaluate_merge`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from anon.metrics.attributes import pose_from_landmarks
from anon.metrics.detection import detect_fn
from anon.metrics.registry import EvaluationMetric

FIVE_POINT = "5-landmark weak-perspective fit on the detector's landmarks (anon.metrics.attributes.pose_from_landmarks)"


def landmark_pose(detector) -> Callable[[np.ndarray], np.ndarray | None]:
    """``image -> (yaw, pitch, roll)`` degrees from the detector's first face's 5 landmarks (None: no face)."""
    detect = detect_fn(detector)

    def pose(image: np.ndarray) -> np.ndarray | None:
        found = detect(image)
        if not found or len(found[0]) < 3 or found[0][2] is None:
            return None
        return pose_from_landmarks(np.asarray(found[0][2], dtype=np.float64).reshape(5, 2))

    pose.name = FIVE_POINT
    return pose


class PosePair:
    """Pose of an (original, other) pair: the main estimator when it sees both faces, else the fallback
    for both (never one estimator for one image and another for the other)."""

    def __init__(self, main: Callable | None, fallback: Callable | None = None):
        self.main, self.fallback = main, fallback
        self.name = getattr(main, "name", type(main).__name__) if main is not None else None
        self.fallback_name = getattr(fallback, "name", None) if fallback is not None else None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
        for estimator, label in ((self.main, "main"), (self.fallback, "fallback")):
            if estimator is None:
                continue
            p_a, p_b = estimator(a), estimator(b)
            if p_a is not None and p_b is not None:
                return np.asarray(p_a, np.float64).reshape(3), np.asarray(p_b, np.float64).reshape(3), label
        return None, None, None


class Measures:
    """Everything measured per item: the selected metrics (:mod:`anon.metrics.registry`), in registry order."""

    def __init__(self, metrics: list[EvaluationMetric]):
        self.metrics = list(metrics)

    def measure(self, batch: list[dict]) -> list[dict]:
        """Items -> results ``{"index", "id", "label", "line", ...measurements}`` (see the module docstring)."""
        results = [{"index": it["index"], "id": it["id"], "label": it["label"], "line": _error_line(it)}
                   for it in batch if "error" in it]
        items = [it for it in batch if "error" not in it]
        if not items:
            return results
        out = [{"index": it["index"], "id": it["id"], "label": it["label"],
                "line": {"id": it["id"], "source": it["record"].get("source"), "image": it["record"].get("image"),
                         "inversion": it["inversion"] is not None,
                         "identity_similarity_before": it["record"].get("identity_similarity_before"),
                         "identity_similarity_after": it["record"].get("identity_similarity_after"),
                         "evaluators": {}}} for it in items]
        for metric in self.metrics:
            metric.measure(items, out)
        for res in out:
            res["line"]["evaluable"] = any(e["pass"] is not None for e in res["line"]["evaluators"].values())
        return results + out


def _error_line(item: dict) -> dict:
    return {"id": item["id"], "source": item["record"].get("source"), "passed": None, "evaluable": False,
            "error": item["error"]}


__all__ = ["Measures", "PosePair", "landmark_pose", "FIVE_POINT"]
