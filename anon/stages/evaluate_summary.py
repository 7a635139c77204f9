"""The evaluation's summary: the per-image lines and accumulated metrics -> one :class:`anon.report_schema.Report`."""
from __future__ import annotations


import numpy as np

from anon.metrics import attacks as attack_fns
from anon.report_schema import (SCHEMA_VERSION, Attack, Attributes, Detection, EvaluatorReport, Expression,
                                InversionFidelity, ManifestMeans, Pose, Rate, Report, Verdict)

ATTACKS = {  # kind -> what it is, shown in the report
    "own_original": "verification of each image against its own original",
    "other_photo": "verification against another photo of the same person in the test set",
    "closed_set": "closed-set identification: the nearest original in the test set is the right person",
}
INVERSION_WARNING_BELOW = 0.5  # inversion re-identification share under which the report opens with a warning


def _rate(per_item) -> Rate:
    matched, judged = attack_fns.counts(per_item)
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


def summarise(run_dir, records, lines, unreadable, evaluators, limits, state, attack_results, fid, calibration,
              labels_description, verdict, checks, pose_pair, expression, expression_skipped,
              inversion_source) -> Report:
    evaluated = [line for line in lines if "error" not in line]
    per_evaluator = {}
    for name, evaluator in evaluators.items():
        kind = "similarity" if evaluator.higher_is_same else "distance"
        result = {k: v.item() for k, v in state["reid"][name].compute().items()}
        after = [s for s in (line["evaluators"][name].get(kind) for line in evaluated) if s is not None]
        inv = [s for s in (line["evaluators"][name].get(f"{kind}_inversion") for line in evaluated) if s is not None]
        source = limits[name].source
        per_evaluator[name] = EvaluatorReport(
            score="cosine similarity" if evaluator.higher_is_same else "euclidean distance",
            same_person_if=">= threshold" if evaluator.higher_is_same else "<= threshold",
            threshold=limits[name].value, threshold_source=source, calibration_eer=limits[name].eer,
            reidentification_rate=result["rate"], reidentified=int(result["reidentified"]),
            evaluable=int(result["evaluable"]), no_face_anonymised=int(result["no_face_anonymised"]),
            no_face_original=int(result["no_face_original"]),
            mean_after=float(np.mean(after)) if after else None, mean_inversion=float(np.mean(inv)) if inv else None,
            inversion_pairs=len(inv),
            attacks={kind_: _attack(kind_, res, limits[name].value, source, labels_description)
                     for kind_, res in attack_results.get(name, {}).items()})

    with_inversion = sum(1 for line in evaluated if line.get("inversion"))
    weak = []
    for name, ev in per_evaluator.items():
        own = ev.attacks.get("own_original")
        if own is not None and own.inversion is not None and own.inversion.rate is not None \
                and own.inversion.rate < INVERSION_WARNING_BELOW:
            weak.append(f"{name}: {own.inversion.matched} of {own.inversion.evaluable} "
                        f"({100 * own.inversion.rate:.1f} %)")
    warning = None
    if weak:
        warning = ("The inversion alone (before any identity optimisation) is already matched to its original in "
                   "only " + "; ".join(weak) + ". The generator/inverter cannot represent these faces, so the "
                   "privacy numbers below do not measure the anonymisation: read the inversion column and the gain.")

    def mean_of(key):
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        return float(np.mean(values)) if values else None

    n = len(evaluated)
    n_priv = sum(1 for line in evaluated if line["privacy"])
    n_util = sum(1 for line in evaluated if line["utility"])
    n_pass = sum(1 for line in evaluated if line["passed"])
    report = Report(
        schema_version=SCHEMA_VERSION, run_dir=str(run_dir), images=len(records), evaluated=n, unreadable=unreadable,
        evaluators=per_evaluator, passed=n_pass, pass_rate=n_pass / n if n else None,
        failed_ids=sorted(line["id"] for line in evaluated if not line["passed"]),
        not_evaluable_ids=sorted(line["id"] for line in evaluated if not line["evaluable"]),
        calibration=calibration.description if calibration is not None else None,
        identity_labels=labels_description,
        manifest=ManifestMeans(mean_of("identity_similarity_before"), mean_of("identity_similarity_after"),
                               _mean_loss(records, "attribute")),
        detection=None, pose=None, attributes=None, expression=None, fid=None,
        inversion=InversionFidelity(with_inversion, inversion_source, warning),
        verdict=Verdict(n_priv, n_util, n_pass, n, n_priv / n if n else None, n_util / n if n else None,
                        n_pass / n if n else None, verdict.as_dict(), verdict.source, list(checks)))
    if state["detection"] is not None and evaluated:
        d = state["detection"].compute()
        report.detection = Detection(d["rate"].item(), int(d["detected"]), int(d["total"]))
    if state["pose"] is not None and evaluated:
        p = {k: v.item() for k, v in state["pose"].compute().items()}
        inv = np.abs([line["pose_delta_inversion"] for line in evaluated if line.get("pose_delta_inversion")])
        report.pose = Pose(pose_pair.name, pose_pair.fallback_name, p["yaw"], p["pitch"], p["roll"], p["mean"],
                           int(p["count"]), int(p["missing"]), int(state["pose_fallback"]),
                           float(inv[:, 0].mean()) if len(inv) else None,
                           float(inv[:, 1].mean()) if len(inv) else None, len(inv))
    if state["attributes"] is not None:
        a = state["attributes"].compute()
        report.attributes = Attributes(a["mean"].item(), int(a["count"]),
                                       dict(zip(state["attribute_names"], a["per_attribute"].tolist())))
    if state["expression"] is not None:
        e = state["expression"].compute()
        report.expression = Expression(None, getattr(expression, "description", type(expression).__name__),
                                       e["agreement"].item(), e["tv_distance"].item(), int(e["same"]),
                                       int(e["count"]), int(e["missing"]), list(expression.names),
                                       e["confusion"].tolist(), *_inversion_expression(evaluated))
    elif expression_skipped:
        report.expression = Expression(expression_skipped, None, None, None, 0, 0, 0, [], [], 0, 0)
    if fid is not None:  # the FID value (anon.stages.evaluate_merge.fid_value), None under two images
        report.fid = float(fid)
    return report


def _inversion_expression(lines) -> tuple[int, int]:
    pairs = [(line["expression"]["original"], line["expression_inversion"]) for line in lines
             if line.get("expression_inversion") and (line.get("expression") or {}).get("original")]
    return sum(o == i for o, i in pairs), len(pairs)


def _mean_loss(records, key) -> float | None:
    values = [r["loss"][key] for r in records if isinstance(r.get("loss"), dict) and key in r["loss"]]
    return float(np.mean(values)) if values else None


__all__ = ["summarise", "ATTACKS"]
