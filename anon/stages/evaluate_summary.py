"""The evaluation's summary: the per-image lines and the metrics' records -> one :class:`anon.report.schema.Report`.

Each registered metric (:mod:`anon.metrics.registry`) summarises itself into its report field; what is
left here is what spans metrics: the inversion-fidelity warning, the verdict counts, the manifest means.
"""
from __future__ import annotations

import numpy as np

from anon.report.schema import SCHEMA_VERSION, InversionFidelity, ManifestMeans, Report, Verdict

INVERSION_WARNING_BELOW = 0.5  # inversion re-identification share under which the report opens with a warning


def summarise(run_dir, records, lines, unreadable, sections: dict, calibration, labels_description, verdict, checks,
              inversion_source) -> Report:
    """``sections``: ``{report field: record}`` from the metrics' :meth:`summarise` (a field no selected metric
    fills stays None, or ``{}`` for ``evaluators``)."""
    evaluated = [line for line in lines if "error" not in line]
    per_evaluator = sections.get("evaluators") or {}
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
        detection=sections.get("detection"), pose=sections.get("pose"), attributes=sections.get("attributes"),
        expression=sections.get("expression"), fid=sections.get("fid"),
        inversion=InversionFidelity(with_inversion, inversion_source, warning),
        verdict=Verdict(n_priv, n_util, n_pass, n, n_priv / n if n else None, n_util / n if n else None,
                        n_pass / n if n else None, verdict.as_dict(), verdict.source, list(checks)))
    return report


def _mean_loss(records, key) -> float | None:
    values = [r["loss"][key] for r in records if isinstance(r.get("loss"), dict) and key in r["loss"]]
    return float(np.mean(values)) if values else None


__all__ = ["summarise", "INVERSION_WARNING_BELOW"]
