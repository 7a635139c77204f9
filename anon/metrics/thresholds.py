"""Decision thresholds of the identity evaluators, and where each comes from.

Order: a configured value -> the evaluator's own (dlib's 0.6) -> the equal-error-rate threshold on
verification pairs (:class:`Calibration`, e.g. LFW ``pairs.txt`` via :func:`lfw_calibration`), cached.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from anon.atomic_write import write_text_atomically
from anon.errors import ConfigError, MissingDataError
from anon.metrics.reid import equal_error_rate_threshold, pair_scores, stack_embeddings
from anon.stages.common import chunks


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file -> ``H x W x 3`` uint8 RGB (EXIF orientation applied)."""
    from anon.data.images import load_rgb

    return load_rgb(path)  # every mode scaled to 8 bits (16-bit grey is not clipped)


@dataclass
class Calibration:
    """Verification pairs to calibrate thresholds on: ``(image_a, image_b, same_person)`` paths.

    ``description`` names them in the report (e.g. "LFW pairs.txt, 6000 pairs"); results are cached
    in the JSON file ``cache`` (keyed by evaluator key and description) when it is set.
    """

    pairs: list[tuple[Path, Path, bool]]
    description: str
    cache: Path | None = None


@dataclass
class Threshold:
    value: float
    source: str
    eer: float | None = None


def calibrate_threshold(evaluator, pairs: Sequence[tuple[Path, Path, bool]], batch_size: int = 32) -> dict:
    """The evaluator's equal-error-rate threshold on verification pairs.

    Every distinct image is embedded once; pairs where either image has no face are left out.
    Returns ``{"value", "eer", "pairs" (used), "skipped" (no face)}``.
    """
    paths = sorted({str(p) for a, b, _ in pairs for p in (a, b)})
    embedding: dict[str, np.ndarray | None] = {}
    for part in chunks(len(paths), batch_size):
        names = paths[part.start:part.stop]
        embedding.update(zip(names, evaluator.embed([read_rgb(p) for p in names])))
    kept = [(a, b, same) for a, b, same in pairs if embedding[str(a)] is not None and embedding[str(b)] is not None]
    if not kept:
        raise ValueError("no calibration pair has a face in both images")
    a = stack_embeddings([embedding[str(p)] for p, _, _ in kept])
    b = stack_embeddings([embedding[str(p)] for _, p, _ in kept])
    scores = pair_scores(a, b, evaluator.higher_is_same)
    value, eer = equal_error_rate_threshold(scores.numpy(), [s for _, _, s in kept], evaluator.higher_is_same)
    return {"value": value, "eer": eer, "pairs": len(kept), "skipped": len(pairs) - len(kept)}


def resolve_thresholds(evaluators: dict, thresholds: dict | None = None, calibration: Calibration | None = None,
                       keys: dict[str, str] | None = None, batch_size: int = 32) -> dict[str, Threshold]:
    """One decision threshold per evaluator, with where it comes from.

    Order: ``thresholds[name]`` (a number, or ``{"value", "source"}``) -> the evaluator's own
    ``threshold`` (e.g. dlib's 0.6) -> the equal-error-rate threshold on ``calibration`` pairs.
    ``keys`` name each evaluator in the calibration cache (default: its name).
    """
    thresholds, keys = dict(thresholds or {}), dict(keys or {})
    out = {}
    for name, evaluator in evaluators.items():
        given = thresholds.get(name)
        if given is not None:
            if isinstance(given, dict):
                out[name] = Threshold(float(given["value"]), str(given.get("source", "configured")))
            else:
                out[name] = Threshold(float(given), "configured (thresholds." + name + ")")
        elif getattr(evaluator, "threshold", None) is not None:
            out[name] = Threshold(float(evaluator.threshold), getattr(evaluator, "threshold_source", None) or "evaluator default")
        elif calibration is not None:
            result = _cached_calibration(evaluator, keys.get(name, name), calibration, batch_size)
            out[name] = Threshold(result["value"], f"equal-error-rate threshold on {calibration.description} "
                                                   f"({result['pairs']} pairs with faces; EER {result['eer']:.4f})",
                                  result["eer"])
        else:
            raise ConfigError(f"no threshold for evaluator {name!r}: set `thresholds.{name}=<value>` or give "
                              "LFW verification pairs (`calibration.images`, `calibration.pairs`) to calibrate one")
    return out


def _cached_calibration(evaluator, key: str, calibration: Calibration, batch_size: int) -> dict:
    cache_key = hashlib.sha256(f"{key}|{calibration.description}".encode()).hexdigest()[:16]
    cache = {}
    if calibration.cache is not None and Path(calibration.cache).is_file():
        cache = json.loads(Path(calibration.cache).read_text())
        if cache_key in cache:
            return cache[cache_key]
    result = calibrate_threshold(evaluator, calibration.pairs, batch_size)
    if calibration.cache is not None:
        cache[cache_key] = {**result, "evaluator": key, "pairs_description": calibration.description}
        write_text_atomically(Path(calibration.cache), json.dumps(cache, indent=1, sort_keys=True))
    return result


def lfw_calibration(images: str | Path, pairs: str | Path, limit: int | None = None,
                    cache: str | Path | None = None) -> Calibration:
    """LFW verification pairs as a :class:`Calibration` (``limit``: the first ``limit / 2`` matched and
    mismatched pairs, in file order)."""
    from anon.data.images import list_images
    from anon.data.lfw import read_pairs

    if not Path(pairs).is_file():
        raise MissingDataError(pairs, "LFW pair list", "set `calibration.pairs` to pairs.txt / pairsDevTest.txt")
    if not Path(images).is_dir():
        raise MissingDataError(images, "LFW image folder", "set `calibration.images`")
    found = list_images(images)
    pair_list = read_pairs(pairs)
    if limit:
        same = [p for p in pair_list if p.same][: limit // 2]
        different = [p for p in pair_list if not p.same][: limit - limit // 2]
        pair_list = same + different
    missing = [i for p in pair_list for i in (p.id_a, p.id_b) if i not in found]
    if missing:
        raise MissingDataError(Path(images) / missing[0], f"LFW image ({len(missing)} referenced by {pairs} missing)",
                               "use the LFW folder the pair list was made for")
    return Calibration([(found[p.id_a], found[p.id_b], p.same) for p in pair_list],
                       f"LFW {Path(pairs).name} ({len(pair_list)} pairs)", Path(cache) if cache else None)


