"""The two-half verdict of one evaluated image: was the identity removed, and was the face kept?

* ``privacy``: no identity evaluator re-identifies the output against its own original (evaluators
  that find no face in the original cannot judge and are ignored) and, with a detector, a face is
  still detected in the output;
* ``utility``: every configured check holds: ``|Δyaw|`` and ``|Δpitch|`` within ``max_yaw_deg`` /
  ``max_pitch_deg`` (a pose that could not be measured fails), the same expression class (argmax;
  a face the classifier could not see fails), and an attribute agreement of at least
  ``min_attribute_agreement``. With no check configured, utility is None (not measured) and the image
  cannot pass;
* ``passed``: both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VerdictThresholds:
    max_yaw_deg: float = 5.0
    max_pitch_deg: float = 5.0
    same_expression: bool = True
    min_attribute_agreement: float = 1.0
    source: str = "defaults of anon.metrics.verdict.VerdictThresholds"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}


def privacy(line: dict) -> bool:
    verdicts = [e["pass"] for e in line["evaluators"].values() if e["pass"] is not None]
    return all(verdicts) and line.get("face_detected", True)


def utility(line: dict, limits: VerdictThresholds, checks: list[str]) -> tuple[bool | None, list[str]]:
    """``(kept, reasons it was not)`` for one verification line; ``checks`` names what the run measures."""
    reasons = []
    if "pose" in checks:
        delta = line.get("pose_delta")
        if delta is None:
            reasons.append("pose not measured")
        else:
            if abs(delta[0]) > limits.max_yaw_deg:
                reasons.append(f"|Δyaw| {abs(delta[0]):.1f}° > {limits.max_yaw_deg:g}°")
            if abs(delta[1]) > limits.max_pitch_deg:
                reasons.append(f"|Δpitch| {abs(delta[1]):.1f}° > {limits.max_pitch_deg:g}°")
    if "expression" in checks and limits.same_expression:
        same = (line.get("expression") or {}).get("same")
        if same is None:
            reasons.append("expression not measured")
        elif not same:
            reasons.append(f"expression {line['expression']['original']} -> {line['expression']['anonymised']}")
    if "attributes" in checks:
        agreement = (line.get("attributes") or {}).get("agreement")
        if agreement is None or agreement < limits.min_attribute_agreement:
            reasons.append(f"attribute agreement {agreement} < {limits.min_attribute_agreement:g}")
    if not checks:
        return None, ["no utility check configured"]
    return not reasons, reasons


__all__ = ["VerdictThresholds", "privacy", "utility"]
