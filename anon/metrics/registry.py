"""The evaluate stage's metric registry: each metric one small class, selected by name.

In the manner of stylegan3's ``metric_main``: a metric registers itself with :func:`register_metric`
under its ``name``; ``anon evaluate metrics=[reidentification,pose]`` runs the named ones
(:func:`select_metrics` checks the names: an unknown one is a one-line error listing the choices).
Every metric states what it ``needs`` from each item (:data:`NEEDS`) and which field of the report
(:class:`anon.report.schema.Report`) its result record fills.

A metric has two halves, so that one item's result is the same alone, in any batch and on any rank:

* :meth:`EvaluationMetric.measure`: a batch of items -> per item, its verification-line entries and raw
  measurements (tensors), written into that item's result;
* :meth:`EvaluationMetric.summarise`: every item's result (merged from all ranks, each once) -> the report's
  record (cross-item statistics: rates, attacks, FID).

A metric whose network is not configured (no attribute classifier, FID off) builds to None
(:meth:`EvaluationMetric.build`) and is left out, as before the registry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

from anon.errors import ConfigError

#: what a metric can need per item: ``images`` (original, inversion, anonymised), ``crops`` (the detector's
#: aligned face crops), ``landmarks`` (the detector's or a landmark model's points), ``labels`` (who is who)
NEEDS = ("images", "crops", "landmarks", "labels")


@dataclass
class StageInputs:
    """What the evaluate stage was given, from which each metric builds itself (:meth:`EvaluationMetric.build`)."""

    evaluators: dict[str, Any]
    thresholds: dict[str, float]           # {evaluator: value}
    limits: dict[str, Any]                 # {evaluator: anon.metrics.thresholds.Threshold}
    detector: Any = None
    pose_pair: Any = None                  # anon.stages.evaluate_items.PosePair
    attributes: Optional[Callable[..., Any]] = None
    attribute_names: list[str] = field(default_factory=list)
    expression: Optional[Callable[..., Any]] = None
    expression_skipped: Optional[str] = None
    fid_feature: Optional[Callable[..., Any]] = None
    batch_size: int = 16
    verdict: Any = None                    # anon.metrics.verdict.VerdictThresholds
    label_description: str = ""


class EvaluationMetric:
    """One registered metric (see the module docstring). Subclasses set the class attributes and implement
    :meth:`build`, :meth:`measure` and :meth:`summarise`."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    report_field: ClassVar[str]            # the field of anon.report.schema.Report it fills
    description: ClassVar[str] = ""

    @classmethod
    def build(cls, stage: StageInputs) -> "EvaluationMetric | None":
        raise NotImplementedError

    def measure(self, items: list[dict[str, Any]], out: list[dict[str, Any]]) -> None:
        """``items`` (readable triples of :class:`anon.stages.evaluate_inputs.EvaluationTriples`) -> entries of
        ``out[k]["line"]`` (the verification line) and raw measurements in ``out[k]``; nothing across items."""

    def summarise(self, evaluated: list[dict[str, Any]]) -> Any:
        """The readable items' results (all ranks, report order) -> the record of :attr:`report_field`."""
        raise NotImplementedError

    def utility_check(self) -> str | None:
        """The verdict's utility check this metric feeds (``pose``, ``expression``, ``attributes``), if any."""
        return None


METRICS: dict[str, type[EvaluationMetric]] = {}


def register_metric(cls: type[EvaluationMetric]) -> type[EvaluationMetric]:
    """Class decorator: ``METRICS[cls.name] = cls`` (a second class of one name is an error)."""
    from anon.report.schema import Report

    if cls.report_field not in {f.name for f in dataclasses.fields(Report)}:
        raise ValueError(f"metric {cls.name!r} fills report field {cls.report_field!r}: not a field of Report")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"metric {cls.name!r} needs {sorted(unknown)}: not among {NEEDS}")
    if cls.name in METRICS and METRICS[cls.name] is not cls:
        raise ValueError(f"two metrics are named {cls.name!r}: {METRICS[cls.name].__qualname__}, {cls.__qualname__}")
    METRICS[cls.name] = cls
    return cls


def registered() -> dict[str, type[EvaluationMetric]]:
    """Every metric, in report order (the metrics' modules imported here, so they have registered)."""
    from anon.metrics import reidentification  # noqa: F401  (registration on import; first: report order)
    from anon.metrics import face_metrics  # noqa: F401

    return dict(METRICS)


#: the one metric every evaluation has: the verdict's privacy half is judged by the identity evaluators
REQUIRED = "reidentification"


def select_metrics(names: Sequence[str] | None) -> list[str]:
    """``metrics=[...]`` -> the validated names in registry order (None: every registered metric)."""
    known = registered()
    if names is None:
        return list(known)
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"metrics: no metric named {unknown[0]!r} (registered: {', '.join(known)})")
    if REQUIRED not in names:
        raise ConfigError(f"metrics must include {REQUIRED}: the verdict's privacy half is judged by it "
                          f"(got {names})")
    return [n for n in known if n in names]


def build_metrics(names: Sequence[str] | None, stage: StageInputs) -> list[EvaluationMetric]:
    """The selected metrics built from the stage's inputs; those whose network is not configured are left out."""
    known = registered()
    built = (known[name].build(stage) for name in select_metrics(names))
    return [metric for metric in built if metric is not None]


__all__ = ["NEEDS", "StageInputs", "EvaluationMetric", "METRICS", "REQUIRED", "register_metric", "registered",
           "select_metrics", "build_metrics"]
