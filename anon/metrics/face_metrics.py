"""Registered metrics of what the anonymised face keeps: ``detection``, ``pose``, ``attributes``,
``expression`` and ``fid`` (each one class; see :mod:`anon.metrics.registry`).

Each reads its items' images, writes its per-image entries into the verification line and its raw
measurements into the item's result, and summarises all items into its report field
(:mod:`anon.report.schema`). A metric whose network is not configured builds to None.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from anon.metrics.attributes import AttributeAgreement, PoseError, angle_difference
from anon.metrics.detection import DetectionRate, detect_fn
from anon.metrics.expression import ExpressionAgreement, total_variation
from anon.metrics.fid import fid_features, frechet_distance
from anon.metrics.registry import EvaluationMetric, StageInputs, register_metric
from anon.metrics.reidentification import LOCAL, vector
from anon.report.schema import Attributes, Detection, Expression, Pose


def _rounded(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def _stack(rows: list[torch.Tensor | None], width: int) -> torch.Tensor:
    """Optional vectors -> ``N x width`` float64 with NaN rows for None."""
    out = torch.full((len(rows), width), float("nan"), dtype=torch.float64)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row.double()
    return out


@register_metric
class FaceDetection(EvaluationMetric):
    name = "detection"
    needs = ("images",)
    report_field = "detection"
    description = "share of anonymised images in which the detector still finds a face"

    def __init__(self, detector):
        self.detector = detector

    @classmethod
    def build(cls, stage: StageInputs) -> "FaceDetection | None":
        return None if stage.detector is None else cls(stage.detector)

    def measure(self, items: list[dict], out: list[dict]) -> None:
        detect = detect_fn(self.detector)
        for res, item in zip(out, items):
            n = len(detect(item["anonymised"]))
            res["faces"] = n
            res["line"]["faces_detected"], res["line"]["face_detected"] = n, n > 0

    def summarise(self, evaluated: list[dict]) -> Detection | None:
        if not evaluated:
            return None
        rate = DetectionRate(**LOCAL)
        rate.update(torch.tensor([r["faces"] for r in evaluated], dtype=torch.long))
        d = rate.compute()
        return Detection(d["rate"].item(), int(d["detected"]), int(d["total"]))


@register_metric
class HeadPose(EvaluationMetric):
    name = "pose"
    needs = ("images", "landmarks")
    report_field = "pose"
    description = "mean absolute yaw / pitch / roll change, original vs anonymised (and vs inversion)"

    def __init__(self, pose_pair):
        self.pair = pose_pair

    @classmethod
    def build(cls, stage: StageInputs) -> "HeadPose | None":
        return None if stage.pose_pair is None else cls(stage.pose_pair)

    def utility_check(self) -> str | None:
        return "pose"

    def measure(self, items: list[dict], out: list[dict]) -> None:
        pair = self.pair
        for res, item in zip(out, items):
            o, a, inv, line = item["original"], item["anonymised"], item["inversion"], res["line"]
            p_o, p_a, used = pair(o, a)
            res["pose"] = [vector(p_o), vector(p_a), used]
            line["pose_estimator"] = None if used is None else (pair.name if used == "main" else pair.fallback_name)
            line["pose_original"] = None if p_o is None else _rounded(p_o)
            line["pose_anonymised"] = None if p_a is None else _rounded(p_a)
            line["pose_delta"] = None if p_o is None else _rounded(
                angle_difference(torch.as_tensor(p_a), torch.as_tensor(p_o)))
            if inv is not None:
                q_o, q_i, _ = pair(o, inv)
                line["pose_delta_inversion"] = None if q_o is None else _rounded(
                    angle_difference(torch.as_tensor(q_i), torch.as_tensor(q_o)))

    def summarise(self, evaluated: list[dict]) -> Pose | None:
        if not evaluated:
            return None
        error = PoseError(**LOCAL)
        error.update(_stack([r["pose"][0] for r in evaluated], 3), _stack([r["pose"][1] for r in evaluated], 3))
        p = {k: v.item() for k, v in error.compute().items()}
        fallback_used = sum(r["pose"][2] == "fallback" for r in evaluated)
        lines = [r["line"] for r in evaluated]
        inv = np.abs([line["pose_delta_inversion"] for line in lines if line.get("pose_delta_inversion")])
        return Pose(self.pair.name, self.pair.fallback_name, p["yaw"], p["pitch"], p["roll"], p["mean"],
                    int(p["count"]), int(p["missing"]), int(fallback_used),
                    float(inv[:, 0].mean()) if len(inv) else None, float(inv[:, 1].mean()) if len(inv) else None,
                    len(inv))


@register_metric
class AttributeKept(EvaluationMetric):
    name = "attributes"
    needs = ("images",)
    report_field = "attributes"
    description = "binary attribute classifier agreement (scores at 0.5), original vs anonymised"

    def __init__(self, classifier: Callable, names: list):
        self.classifier, self.names = classifier, list(names)

    @classmethod
    def build(cls, stage: StageInputs) -> "AttributeKept | None":
        if stage.attributes is None:
            return None
        return cls(stage.attributes, stage.attribute_names or getattr(stage.attributes, "names", None) or [])

    def utility_check(self) -> str | None:
        return "attributes"

    def measure(self, items: list[dict], out: list[dict]) -> None:
        names = self.names
        for res, item in zip(out, items):
            po, pa = vector(self.classifier(item["original"])), vector(self.classifier(item["anonymised"]))
            names[:] = names or [f"attr{k}" for k in range(po.numel())]
            res["attributes"] = [po, pa]
            bo, ba = (po > 0.5).tolist(), (pa > 0.5).tolist()
            changed = [n for n, x, y in zip(names, bo, ba) if x != y]
            res["line"]["attributes"] = {"original": po.tolist(), "anonymised": pa.tolist(), "changed": changed,
                                         "agreement": 1.0 - len(changed) / len(names)}

    def summarise(self, evaluated: list[dict]) -> Attributes | None:
        if not evaluated:
            return None
        width = evaluated[0]["attributes"][0].numel()
        agreement = AttributeAgreement(width, **LOCAL)
        agreement.update(torch.stack([r["attributes"][0] for r in evaluated]),
                         torch.stack([r["attributes"][1] for r in evaluated]))
        a = agreement.compute()
        names = self.names or [f"attr{k}" for k in range(width)]
        return Attributes(a["mean"].item(), int(a["count"]), dict(zip(names, a["per_attribute"].tolist())))


def expression_line(po: torch.Tensor, pa: torch.Tensor, names) -> dict:
    """One image's expressions: class names (None: no face), whether they agree, TV distance, probabilities."""
    ok_o, ok_a = bool(torch.isfinite(po).all()), bool(torch.isfinite(pa).all())
    label_o = names[int(po.argmax())] if ok_o else None
    label_a = names[int(pa.argmax())] if ok_a else None
    judged = ok_o and ok_a
    return {"original": label_o, "anonymised": label_a, "same": (label_o == label_a) if judged else None,
            "tv_distance": float(total_variation(po, pa)) if judged else None,
            "prob_original": [round(float(v), 5) for v in po] if ok_o else None,
            "prob_anonymised": [round(float(v), 5) for v in pa] if ok_a else None}


@register_metric
class ExpressionKept(EvaluationMetric):
    name = "expression"
    needs = ("crops",)
    report_field = "expression"
    description = "expression class agreement and total-variation distance, original vs anonymised"

    def __init__(self, scorer: Callable | None, skipped: str | None, same_expression: bool = True):
        self.scorer, self.skipped, self.same_expression = scorer, skipped, same_expression

    @classmethod
    def build(cls, stage: StageInputs) -> "ExpressionKept | None":
        if stage.expression is None and not stage.expression_skipped:
            return None
        same = True if stage.verdict is None else stage.verdict.same_expression
        return cls(stage.expression, stage.expression_skipped if stage.expression is None else None, same)

    def utility_check(self) -> str | None:
        return "expression" if self.scorer is not None and self.same_expression else None

    def measure(self, items: list[dict], out: list[dict]) -> None:
        if self.scorer is None:
            return
        names = self.scorer.names
        originals, anonymised = [it["original"] for it in items], [it["anonymised"] for it in items]
        present = [i for i, it in enumerate(items) if it["inversion"] is not None]
        prob = torch.as_tensor(self.scorer(originals + anonymised + [items[i]["inversion"] for i in present])).cpu()
        n = len(originals)
        prob_o, prob_a, prob_i = prob[:n], prob[n:2 * n], prob[2 * n:]
        for res, po, pa in zip(out, prob_o, prob_a):
            res["expression"] = [po.double().clone(), pa.double().clone()]
            res["line"]["expression"] = expression_line(po, pa, names)
        for k, i in enumerate(present):
            out[i]["line"]["expression_inversion"] = expression_line(prob_o[i], prob_i[k], names)["anonymised"]

    def summarise(self, evaluated: list[dict]) -> Expression:
        if self.scorer is None:
            return Expression(self.skipped, None, None, None, 0, 0, 0, [], [], 0, 0)
        agreement = ExpressionAgreement(len(self.scorer.names), **LOCAL)
        if evaluated:
            agreement.update(torch.stack([r["expression"][0] for r in evaluated]),
                             torch.stack([r["expression"][1] for r in evaluated]))
        e = agreement.compute()
        lines = [r["line"] for r in evaluated]
        pairs = [(line["expression"]["original"], line["expression_inversion"]) for line in lines
                 if line.get("expression_inversion") and (line.get("expression") or {}).get("original")]
        return Expression(None, getattr(self.scorer, "description", type(self.scorer).__name__),
                          e["agreement"].item(), e["tv_distance"].item(), int(e["same"]), int(e["count"]),
                          int(e["missing"]), list(self.scorer.names), e["confusion"].tolist(),
                          sum(o == i for o, i in pairs), len(pairs))


@register_metric
class FrechetInception(EvaluationMetric):
    name = "fid"
    needs = ("images",)
    report_field = "fid"
    description = "FID of the originals (real) against the anonymised images (fake)"

    def __init__(self, feature: Callable, batch_size: int):
        self.feature, self.batch_size = feature, batch_size

    @classmethod
    def build(cls, stage: StageInputs) -> "FrechetInception | None":
        return None if stage.fid_feature is None else cls(stage.fid_feature, stage.batch_size)

    def measure(self, items: list[dict], out: list[dict]) -> None:
        real = fid_features(self.feature, [it["original"] for it in items], self.batch_size)
        fake = fid_features(self.feature, [it["anonymised"] for it in items], self.batch_size)
        for res, r, f in zip(out, real, fake):
            res["fid"] = [r.clone(), f.clone()]

    def summarise(self, evaluated: list[dict]) -> float | None:
        """From the gathered features (None under two items)."""
        if len(evaluated) < 2:
            return None
        return float(frechet_distance(torch.stack([r["fid"][0] for r in evaluated]),
                                      torch.stack([r["fid"][1] for r in evaluated])))


__all__ = ["FaceDetection", "HeadPose", "AttributeKept", "ExpressionKept", "FrechetInception", "expression_line"]
