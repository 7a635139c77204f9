"""Registered metric ``reidentification``: under every identity evaluator, the original against the
anonymised output and against the inversion, then the three attacks of :mod:`anon.metrics.attacks`.

Report field ``evaluators`` (``{name: anon.report.schema.EvaluatorReport}``); per image, the line's
``evaluators.<name>`` (score, re-identified, pass, and after the merge each attack's outcome).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from anon.metrics import attacks
from anon.metrics.registry import EvaluationMetric, StageInputs, register_metric
from anon.metrics.reid import ReIdentificationRate, has_face, pair_scores, same_person, stack_embeddings
from anon.report.schema import Attack, EvaluatorReport, Rate

ATTACKS = {  # kind -> what it is, shown in the report
    "own_original": "verification of each image against its own original",
    "other_photo": "verification against another photo of the same person in the test set",
    "closed_set": "closed-set identification: the nearest original in the test set is the right person",
}
#: the metrics are fed every rank's items on rank 0: no cross-rank reduction on compute (it would wait for
#: ranks that are not computing)
LOCAL = {"sync_on_compute": False}


def vector(value) -> torch.Tensor | None:
    """An embedding / score vector as a CPU float64 tensor (None stays None)."""
    return None if value is None else torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1).clone()


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _stacked(rows: list) -> tuple[torch.Tensor, ...]:
    """Originals, anonymised, inversions (lists of optional vectors) -> three ``N x D`` tensors, NaN rows for None."""
    dim = next((len(e) for e in rows[0] + rows[1] + rows[2] if e is not None), 1)
    return tuple(stack_embeddings(e, dim) for e in rows)


@register_metric
class ReIdentification(EvaluationMetric):
    name = "reidentification"
    needs = ("images", "crops", "labels")
    report_field = "evaluators"
    description = "re-identification of output and inversion under each identity evaluator; three attacks"

    def __init__(self, evaluators: dict, thresholds: dict, limits: dict, label_description: str):
        self.evaluators, self.thresholds, self.limits = evaluators, thresholds, limits
        self.label_description = label_description

    @classmethod
    def build(cls, stage: StageInputs) -> "ReIdentification":
        return cls(stage.evaluators, stage.thresholds, stage.limits, stage.label_description)

    # ------------------------------------------------------------------------------------------- per item
    def measure(self, items: list[dict], out: list[dict]) -> None:
        originals, anonymised = [it["original"] for it in items], [it["anonymised"] for it in items]
        inversions = [it["inversion"] for it in items]
        for res in out:
            res.setdefault("emb", {})
        for name, evaluator in self.evaluators.items():
            self._one(name, evaluator, originals, anonymised, inversions, out)

    def _one(self, name, evaluator, originals, anonymised, inversions, out) -> None:
        kind = "similarity" if evaluator.higher_is_same else "distance"
        threshold, higher = self.thresholds[name], evaluator.higher_is_same
        emb_o, emb_a = evaluator.embed(originals), evaluator.embed(anonymised)
        present = [i for i, inv in enumerate(inversions) if inv is not None]
        emb_i: list = [None] * len(out)
        for i, e in zip(present, evaluator.embed([inversions[i] for i in present]) if present else []):
            emb_i[i] = e
        t_o, t_a, t_i = _stacked([emb_o, emb_a, emb_i])
        scores, scores_i = pair_scores(t_o, t_a, higher), pair_scores(t_o, t_i, higher)
        same, same_i = same_person(scores, threshold, higher), same_person(scores_i, threshold, higher)
        face_o, face_a, face_i = has_face(t_o), has_face(t_a), has_face(t_i)
        for i, res in enumerate(out):
            res["emb"][name] = [vector(emb_o[i]), vector(emb_a[i]), vector(emb_i[i])]
            judged = bool(face_o[i])
            reidentified = bool(same[i] and face_a[i]) if judged else None
            entry = {kind: _num(scores[i]), "threshold": threshold, "face_original": judged,
                     "face_anonymised": bool(face_a[i]), "reidentified": reidentified,
                     "pass": None if reidentified is None else not reidentified}
            if inversions[i] is not None:
                entry[f"{kind}_inversion"] = _num(scores_i[i])
                entry["reidentified_inversion"] = bool(same_i[i] and face_i[i]) if judged else None
            res["line"]["evaluators"][name] = entry

    # ------------------------------------------------------------------------------------------- all items
    def summarise(self, evaluated: list[dict]) -> dict[str, EvaluatorReport]:
        """Rates and attacks over all items; each attack's per-item outcome also goes into the lines."""
        lines, labels = [r["line"] for r in evaluated], [r["label"] for r in evaluated]
        has_inv = [line["inversion"] for line in lines]
        report = {}
        for name, evaluator in self.evaluators.items():
            higher, threshold = evaluator.higher_is_same, self.thresholds[name]
            rows = [[r["emb"][name][j] for r in evaluated] for j in range(3)]
            rate = ReIdentificationRate(threshold, higher, **LOCAL)
            results: dict = {}
            if evaluated:
                t_o, t_a, t_i = _stacked(rows)
                rate.update(t_o, t_a)
                for probe_name, probes in (("output", t_a), ("inversion", t_i)):
                    per = {"own_original": attacks.own_original(t_o, probes, threshold, higher),
                           "other_photo": attacks.other_photo(t_o, probes, labels, threshold, higher),
                           "closed_set": attacks.closed_set(t_o, probes, labels, higher)}
                    if probe_name == "inversion":
                        per = {k: [v if inv else None for v, inv in zip(vals, has_inv)] for k, vals in per.items()}
                    for kind, vals in per.items():
                        results.setdefault(kind, {})[probe_name] = vals
                for k, line in enumerate(lines):
                    line["evaluators"][name]["attacks"] = {
                        kind: {"output": r["output"][k], "inversion": r["inversion"][k]} for kind, r in results.items()}
            report[name] = self._evaluator_report(name, evaluator, rate, results, lines)
        return report

    def _evaluator_report(self, name, evaluator, rate, results, lines) -> EvaluatorReport:
        kind = "similarity" if evaluator.higher_is_same else "distance"
        counts = {k: v.item() for k, v in rate.compute().items()}
        after = [s for s in (line["evaluators"][name].get(kind) for line in lines) if s is not None]
        inv = [s for s in (line["evaluators"][name].get(f"{kind}_inversion") for line in lines) if s is not None]
        limit = self.limits[name]
        return EvaluatorReport(
            score="cosine similarity" if evaluator.higher_is_same else "euclidean distance",
            same_person_if=">= threshold" if evaluator.higher_is_same else "<= threshold",
            threshold=limit.value, threshold_source=limit.source, calibration_eer=limit.eer,
            reidentification_rate=counts["rate"], reidentified=int(counts["reidentified"]),
            evaluable=int(counts["evaluable"]), no_face_anonymised=int(counts["no_face_anonymised"]),
            no_face_original=int(counts["no_face_original"]),
            mean_after=float(np.mean(after)) if after else None, mean_inversion=float(np.mean(inv)) if inv else None,
            inversion_pairs=len(inv),
            attacks={kind_: _attack(kind_, res, limit.value, limit.source, self.label_description)
                     for kind_, res in results.items()})


def _rate(per_item) -> Rate:
    matched, judged = attacks.counts(per_item)
    return Rate(matched / judged if judged else None, matched, judged)


def _attack(kind: str, result: dict, threshold, threshold_source: str, labels_description: str) -> Attack:
    output, inversion = result["output"], result["inversion"]
    out_rate, inv_rate = _rate(output), _rate(inversion)
    both = [(o, i) for o, i in zip(output, inversion) if o is not None and i is not None]
    gain = None
    if both:
        gain = (sum(i for _, i in both) - sum(o for o, _ in both)) / len(both)
    not_run = None
    if out_rate.evaluable == 0:
        not_run = ("no identity has two photos with a face in the test set (identity labels: "
                   f"{labels_description})") if kind == "other_photo" else "no original with a face"
    if kind == "closed_set":
        threshold, threshold_source = None, f"none: nearest neighbour (identity labels: {labels_description})"
    return Attack(kind, ATTACKS[kind], threshold, threshold_source, out_rate,
                  inv_rate if inv_rate.evaluable else None, gain, not_run)


__all__ = ["ReIdentification", "ATTACKS", "LOCAL", "vector"]
