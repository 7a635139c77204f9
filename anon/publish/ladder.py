"""The escalation ladder and the decision for one item from its attempt history.

A rung is a setting applied on top of the run's own (resolved) config before re-optimising the items
that failed privacy::

    {name: more_steps, scale: {module.steps: 4}}                        # multiply a number
    {name: margin, set: {loss.margin: -0.3}, scale: {module.steps: 4}}  # set a value
    {name: next_fake, neighbour_rank: 1}                                # start from the 2nd nearest fake

Rungs are tried in order; an item climbs one rung per failed verification and stops at its first pass.
Each decision is a pure function of the item's attempt records (:func:`next_step`), so a rerun after
kill -9 takes up exactly where the records stop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from anon.errors import ConfigError


@dataclass(frozen=True)
class Rung:
    """One setting of the ladder (see the module docstring); ``describe()`` is what the manifest records."""

    name: str
    set: dict = field(default_factory=dict)
    scale: dict = field(default_factory=dict)
    neighbour_rank: int = 0

    def describe(self) -> dict:
        return {"name": self.name, "set": dict(self.set), "scale": dict(self.scale),
                "neighbour_rank": self.neighbour_rank}


def parse_rung(item, where: str) -> Rung:
    """A rung from its config node, or a one-line :class:`ConfigError` naming what is wrong."""
    if not hasattr(item, "get") or not item.get("name"):
        raise ConfigError(f"{where}: each rung needs a name, e.g. {{name: more_steps, scale: {{module.steps: 4}}}}")
    unknown = set(item.keys()) - {"name", "set", "scale", "neighbour_rank"}
    if unknown:
        raise ConfigError(f"{where} ({item['name']}): unknown key(s) {sorted(unknown)}; use set, scale, neighbour_rank")
    scale = dict(item.get("scale") or {})
    for key, factor in scale.items():
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise ConfigError(f"{where} ({item['name']}): scale.{key} must be a number > 0, not {factor!r}")
    rank = item.get("neighbour_rank", 0) or 0
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ConfigError(f"{where} ({item['name']}): neighbour_rank must be a whole number >= 0, not {rank!r}")
    return Rung(str(item["name"]), dict(item.get("set") or {}), scale, rank)


def parse_ladder(items) -> list[Rung]:
    """``publish.ladder`` -> rungs (an empty ladder: failures go straight to the fallback)."""
    from omegaconf import Container, OmegaConf

    if isinstance(items, Container):
        items = OmegaConf.to_container(items, resolve=True)
    rungs = [parse_rung(item, f"publish.ladder[{k}]") for k, item in enumerate(items or [])]
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise ConfigError(f"publish.ladder: rung names must differ (they name the attempt folders): {names}")
    return rungs


# Actions of next_step
PUBLISH, ESCALATE, RETRY_UTILITY, UTILITY_FAILED, FALLBACK = (
    "publish", "escalate", "retry_utility", "utility_failed", "fallback")


def next_step(history: list[dict], rungs: int, utility_retry: bool) -> tuple[str, int | None]:
    """What to do with an item after its attempts so far: ``(action, value)``.

    ``history``: the item's attempt records in order (``kind``: initial | privacy | utility, ``rung``,
    ``privacy``, ``utility``, ``passed``, ``verifiable``). ``rungs``: length of the ladder.

    * last attempt passed -> ``(publish, its attempt number)``;
    * no deciding evaluator could judge the original -> ``(fallback, None)`` (re-optimising cannot help);
    * privacy failed -> ``(escalate, next rung)`` while rungs are left, else ``(fallback, None)``; a
      utility retry that lost privacy ends the item on the attempt before it (``utility_failed``);
    * privacy held, utility failed -> ``(retry_utility, None)`` once (if enabled), else
      ``(utility_failed, the attempt to publish or withhold)``.
    """
    if not history:
        raise ValueError("an item has no attempt yet (the initial verification comes first)")
    last = history[-1]
    if last["passed"]:
        return PUBLISH, last["attempt"]
    if not last.get("verifiable", True):
        return FALLBACK, None
    climbed = max([h["rung"] for h in history if h["kind"] == "privacy"], default=-1)
    if not last["privacy"]:
        if last["kind"] == "utility":
            return UTILITY_FAILED, history[-2]["attempt"]
        return (ESCALATE, climbed + 1) if climbed + 1 < rungs else (FALLBACK, None)
    if utility_retry and not any(h["kind"] == "utility" for h in history):
        return RETRY_UTILITY, None
    return UTILITY_FAILED, last["attempt"]


def apply_setting(cfg, rung: Rung | None, scale: dict | None = None):
    """A copy of the run config ``cfg`` with ``rung`` (set, then scale) and the extra ``scale`` applied."""
    from omegaconf import OmegaConf

    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in (rung.set if rung else {}).items():
        OmegaConf.update(out, key, value, force_add=True)
    for factors in ((rung.scale if rung else {}), scale or {}):
        for key, factor in factors.items():
            value = OmegaConf.select(out, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"cannot scale {key}={value!r} of the run config: not a number")
            scaled = value * factor
            OmegaConf.update(out, key, int(round(scaled)) if isinstance(value, int) else float(scaled))
    return out


__all__ = ["Rung", "parse_rung", "parse_ladder", "next_step", "apply_setting",
           "PUBLISH", "ESCALATE", "RETRY_UTILITY", "UTILITY_FAILED", "FALLBACK"]
