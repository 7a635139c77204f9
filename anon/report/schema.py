"""The one schema of an evaluation report: what ``report.json`` holds, typed and versioned.

:mod:`anon.stages.evaluate` builds a :class:`Report` and writes ``report.json`` from it;
:mod:`anon.report.render` (``report.md``, the sweep trade-off) and ``experiments/tables.py`` read it back
with :meth:`Report.from_dict`, which refuses a file of another ``schema_version`` or with a field
missing or unknown (:class:`ReportSchemaError`: one line naming the field). A renamed field thus
breaks every reader at once, never silently leaving a column blank.

A field that was *not measured* is present with the value ``None`` (e.g. ``attributes`` without an
attribute classifier); a field that is *absent* is an error.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from anon.errors import AnonError

SCHEMA_VERSION = 2


class ReportSchemaError(AnonError, ValueError):
    """A ``report.json`` that does not follow :class:`Report` (wrong version, missing or unknown field)."""


@dataclass
class Rate:
    """How many of ``evaluable`` pairs were matched ("same person"), and the share."""

    rate: Optional[float]
    matched: int
    evaluable: int


@dataclass
class Attack:
    """One re-identification attack under one evaluator.

    ``kind``: ``own_original`` (verification of the output against its own original),
    ``other_photo`` (verification against another photo of the same person), ``closed_set``
    (identification: the nearest original in the test set is the right person).
    ``output`` is the attack on the anonymised images, ``inversion`` the same attack on the
    inversions (what the generator/inverter alone already does), ``gain`` = inversion rate - output
    rate (the anonymisation's own contribution).
    """

    kind: str
    description: str
    threshold: Optional[float]
    threshold_source: str
    output: Rate
    inversion: Optional[Rate]
    gain: Optional[float]
    not_run: Optional[str] = None  # why the attack could not be mounted (e.g. no identity has two photos)


@dataclass
class EvaluatorReport:
    score: str
    same_person_if: str
    threshold: float
    threshold_source: str
    calibration_eer: Optional[float]
    reidentification_rate: Optional[float]   # attack own_original on the outputs
    reidentified: int
    evaluable: int
    no_face_anonymised: int
    no_face_original: int
    mean_after: Optional[float]              # mean score original vs anonymised
    mean_inversion: Optional[float]          # mean score original vs inversion
    inversion_pairs: int
    attacks: dict[str, Attack]


@dataclass
class Detection:
    rate: Optional[float]
    detected: int
    total: int


@dataclass
class Pose:
    estimator: str
    fallback: Optional[str]      # the estimator used where the main one found no landmarks, if any
    yaw: Optional[float]
    pitch: Optional[float]
    roll: Optional[float]
    mean: Optional[float]
    count: int
    missing: int
    fallback_used: int           # images (original or output) measured by the fallback
    inversion_yaw: Optional[float]    # the same means for original vs inversion
    inversion_pitch: Optional[float]
    inversion_count: int


@dataclass
class Attributes:
    mean: Optional[float]
    count: int
    per_attribute: dict[str, Optional[float]]


@dataclass
class Expression:
    skipped: Optional[str]
    classifier: Optional[str]
    agreement: Optional[float]
    tv_distance: Optional[float]
    same: int
    count: int
    missing: int
    classes: list[str]
    confusion: list[list[int]]
    inversion_same: int          # inversions with the original's expression class
    inversion_count: int         # inversions compared


@dataclass
class Verdict:
    """The two halves per image: ``privacy`` (no evaluator re-identifies it against its own original
    and a face is still detected) and ``utility`` (pose, expression and attributes kept within
    ``thresholds``); ``passed`` = both. Shares are over ``evaluated`` images."""

    privacy: int
    utility: int
    passed: int
    evaluated: int
    privacy_rate: Optional[float]
    utility_rate: Optional[float]
    pass_rate: Optional[float]
    thresholds: dict[str, Any]
    source: str
    utility_checks: list[str]    # what utility measured on this run (pose, expression, attributes)


@dataclass
class InversionFidelity:
    """How well the generator/inverter alone represents the faces, per evaluator (attack own_original
    on the inversions) and the warning the report opens with when most inversions already fail."""

    images: int                  # evaluated images with an inversion image
    source: Optional[str]        # where the inversion images came from
    warning: Optional[str]


@dataclass
class ManifestMeans:
    identity_similarity_before: Optional[float]
    identity_similarity_after: Optional[float]
    loss_attribute: Optional[float]


@dataclass
class Report:
    schema_version: int
    run_dir: str
    images: int
    evaluated: int
    unreadable: list[str]
    evaluators: dict[str, EvaluatorReport]
    passed: int
    pass_rate: Optional[float]
    failed_ids: list[str]
    not_evaluable_ids: list[str]
    calibration: Optional[str]
    identity_labels: Optional[str]
    manifest: ManifestMeans
    detection: Optional[Detection]
    pose: Optional[Pose]
    attributes: Optional[Attributes]
    expression: Optional[Expression]
    fid: Optional[float]
    inversion: InversionFidelity
    verdict: Verdict
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "report.json") -> "Report":
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ReportSchemaError(f"{where}: schema_version {version!r}, this code reads {SCHEMA_VERSION}: "
                                    f"re-run `anon evaluate run_dir=...`")
        return _build(cls, data, where)


def _build(tp, value, where: str):
    """``value`` (parsed JSON) as type ``tp``, checking every dataclass field is present and no other."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _build(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ReportSchemaError(f"{where}: expected an object for {tp.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ReportSchemaError(f"{where}: unknown field {unknown[0]!r} in {tp.__name__} (schema "
                                    f"v{SCHEMA_VERSION}: {', '.join(sorted(names))})")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name not in value:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise ReportSchemaError(f"{where}: field {f.name!r} of {tp.__name__} missing")
            kwargs[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}")
        return tp(**kwargs)
    if origin is dict:
        _, item = typing.get_args(tp)
        return {k: _build(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_build(item, v, where) for v in value]
    return value


__all__ = ["SCHEMA_VERSION", "ReportSchemaError", "Rate", "Attack", "EvaluatorReport", "Detection", "Pose",
           "Attributes", "Expression", "Verdict", "InversionFidelity", "ManifestMeans", "Report"]
