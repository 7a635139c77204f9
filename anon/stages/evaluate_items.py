"""Per-item measurements of the evaluate stage, a batch at a time: what one (original, inversion, anonymised)
triple gives under every evaluator, the detector, the pose estimators, the attribute and expression
classifiers and the FID feature network.

:meth:`Measures.measure` turns a batch of :class:`anon.stages.evaluate_inputs.EvaluationTriples` items into
one *result* per item: its verification line (the per-image part of ``verification.jsonl``) and its raw
measurements (embeddings, poses, predictions, FID features) as tensors. Nothing here depends on the other
items of the batch, so a result is the same alone, in any batch and on any rank; the cross-item metrics
(attacks, rates, FID statistics, verdicts) are computed once from all results
(:mod:`anon.stages.evaluate_merge`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from anon.metrics.attributes import angle_difference, pose_from_landmarks
from anon.metrics.detection import detect_fn
from anon.metrics.fid import fid_features
from anon.metrics.reid import has_face, pair_scores, same_person, stack_embeddings

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


def _vector(value) -> torch.Tensor | None:
    """An embedding / score vector as a CPU float64 tensor (None stays None)."""
    return None if value is None else torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1).clone()


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _rounded(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def expression_line(po: torch.Tensor, pa: torch.Tensor, names) -> dict:
    """One image's expressions: class names (None: no face), whether they agree, TV distance, probabilities."""
    ok_o, ok_a = bool(torch.isfinite(po).all()), bool(torch.isfinite(pa).all())
    label_o = names[int(po.argmax())] if ok_o else None
    label_a = names[int(pa.argmax())] if ok_a else None
    judged = ok_o and ok_a
    return {"original": label_o, "anonymised": label_a, "same": (label_o == label_a) if judged else None,
            "tv_distance": float(0.5 * (po - pa).abs().sum()) if judged else None,
            "prob_original": [round(float(v), 5) for v in po] if ok_o else None,
            "prob_anonymised": [round(float(v), 5) for v in pa] if ok_a else None}


@dataclass
class Measures:
    """Everything measured per item.

    Args:
        evaluators: ``{name: evaluator}`` (:mod:`anon.metrics.evaluators`); ``thresholds``: ``{name: value}``.
        detector: ``image -> [(box, prob, landmarks), ...]`` or None; ``pose_pair``: :class:`PosePair` or None.
        attributes: ``image -> A scores`` or None; ``expression``: ``images -> N x C`` (with ``names``) or None.
        fid_feature: ``B x 3 x H x W uint8 -> B x F`` (the FID metric's ``inception``) or None.
    """

    evaluators: dict
    thresholds: dict
    detector: object = None
    pose_pair: PosePair | None = None
    attributes: Callable | None = None
    expression: Callable | None = None
    fid_feature: Callable | None = None
    fid_batch_size: int = 16
    extra: dict = field(default_factory=dict)

    def measure(self, batch: list[dict]) -> list[dict]:
        """Items -> results ``{"index", "id", "label", "line", ...measurements}`` (see the module docstring)."""
        results = [{"index": it["index"], "id": it["id"], "label": it["label"], "line": _error_line(it)}
                   for it in batch if "error" in it]
        items = [it for it in batch if "error" not in it]
        if not items:
            return results
        originals, anonymised = [it["original"] for it in items], [it["anonymised"] for it in items]
        inversions = [it["inversion"] for it in items]
        out = [{"index": it["index"], "id": it["id"], "label": it["label"], "emb": {},
                "line": {"id": it["id"], "source": it["record"].get("source"), "image": it["record"].get("image"),
                         "inversion": it["inversion"] is not None,
                         "identity_similarity_before": it["record"].get("identity_similarity_before"),
                         "identity_similarity_after": it["record"].get("identity_similarity_after"),
                         "evaluators": {}}} for it in items]
        for name, evaluator in self.evaluators.items():
            self._identity(name, evaluator, originals, anonymised, inversions, out)
        if self.detector is not None:
            detect = detect_fn(self.detector)
            for res, image in zip(out, anonymised):
                n = len(detect(image))
                res["faces"] = n
                res["line"]["faces_detected"], res["line"]["face_detected"] = n, n > 0
        if self.pose_pair is not None:
            self._pose(originals, anonymised, inversions, out)
        if self.attributes is not None:
            self._attributes(originals, anonymised, out)
        if self.expression is not None:
            self._expression(originals, anonymised, inversions, out)
        if self.fid_feature is not None:
            real = fid_features(self.fid_feature, originals, self.fid_batch_size)
            fake = fid_features(self.fid_feature, anonymised, self.fid_batch_size)
            for res, r, f in zip(out, real, fake):
                res["fid"] = [r.clone(), f.clone()]
        for res in out:
            res["line"]["evaluable"] = any(e["pass"] is not None for e in res["line"]["evaluators"].values())
        return results + out

    def _identity(self, name, evaluator, originals, anonymised, inversions, out) -> None:
        kind = "similarity" if evaluator.higher_is_same else "distance"
        threshold, higher = self.thresholds[name], evaluator.higher_is_same
        emb_o, emb_a = evaluator.embed(originals), evaluator.embed(anonymised)
        present = [i for i, inv in enumerate(inversions) if inv is not None]
        emb_i: list = [None] * len(out)
        for i, e in zip(present, evaluator.embed([inversions[i] for i in present]) if present else []):
            emb_i[i] = e
        dim = next((len(e) for e in emb_o + emb_a + emb_i if e is not None), 1)
        t_o, t_a, t_i = (stack_embeddings(e, dim) for e in (emb_o, emb_a, emb_i))
        scores, scores_i = pair_scores(t_o, t_a, higher), pair_scores(t_o, t_i, higher)
        same, same_i = same_person(scores, threshold, higher), same_person(scores_i, threshold, higher)
        face_o, face_a, face_i = has_face(t_o), has_face(t_a), has_face(t_i)
        for i, res in enumerate(out):
            res["emb"][name] = [_vector(emb_o[i]), _vector(emb_a[i]), _vector(emb_i[i])]
            judged = bool(face_o[i])
            reidentified = bool(same[i] and face_a[i]) if judged else None
            entry = {kind: _num(scores[i]), "threshold": threshold, "face_original": judged,
                     "face_anonymised": bool(face_a[i]), "reidentified": reidentified,
                     "pass": None if reidentified is None else not reidentified}
            if inversions[i] is not None:
                entry[f"{kind}_inversion"] = _num(scores_i[i])
                entry["reidentified_inversion"] = bool(same_i[i] and face_i[i]) if judged else None
            res["line"]["evaluators"][name] = entry

    def _pose(self, originals, anonymised, inversions, out) -> None:
        pair = self.pose_pair
        for res, o, a, inv in zip(out, originals, anonymised, inversions):
            line = res["line"]
            p_o, p_a, used = pair(o, a)
            res["pose"] = [_vector(p_o), _vector(p_a), used]
            line["pose_estimator"] = None if used is None else (pair.name if used == "main" else pair.fallback_name)
            line["pose_original"] = None if p_o is None else _rounded(p_o)
            line["pose_anonymised"] = None if p_a is None else _rounded(p_a)
            line["pose_delta"] = None if p_o is None else _rounded(
                angle_difference(torch.as_tensor(p_a), torch.as_tensor(p_o)))
            if inv is not None:
                q_o, q_i, _ = pair(o, inv)
                line["pose_delta_inversion"] = None if q_o is None else _rounded(
                    angle_difference(torch.as_tensor(q_i), torch.as_tensor(q_o)))

    def _attributes(self, originals, anonymised, out) -> None:
        names = self.extra.setdefault("attribute_names", list(getattr(self.attributes, "names", None) or []))
        for res, o, a in zip(out, originals, anonymised):
            po, pa = _vector(self.attributes(o)), _vector(self.attributes(a))
            names[:] = names or [f"attr{k}" for k in range(po.numel())]
            res["attributes"] = [po, pa]
            bo, ba = (po > 0.5).tolist(), (pa > 0.5).tolist()
            changed = [n for n, x, y in zip(names, bo, ba) if x != y]
            res["line"]["attributes"] = {"original": po.tolist(), "anonymised": pa.tolist(), "changed": changed,
                                         "agreement": 1.0 - len(changed) / len(names)}

    def _expression(self, originals, anonymised, inversions, out) -> None:
        names = self.expression.names
        present = [i for i, inv in enumerate(inversions) if inv is not None]
        prob = torch.as_tensor(self.expression(originals + anonymised + [inversions[i] for i in present])).cpu()
        n = len(originals)
        prob_o, prob_a, prob_i = prob[:n], prob[n:2 * n], prob[2 * n:]
        for res, po, pa in zip(out, prob_o, prob_a):
            res["expression"] = [po.double().clone(), pa.double().clone()]
            res["line"]["expression"] = expression_line(po, pa, names)
        for k, i in enumerate(present):
            out[i]["line"]["expression_inversion"] = expression_line(prob_o[i], prob_i[k], names)["anonymised"]


def _error_line(item: dict) -> dict:
    return {"id": item["id"], "source": item["record"].get("source"), "passed": None, "evaluable": False,
            "error": item["error"]}


__all__ = ["Measures", "PosePair", "landmark_pose", "expression_line", "FIVE_POINT"]
