"""Stage ``evaluate``: verify a finished run image by image, and summarise it.

For every ``done`` record of ``run_dir/manifest.jsonl`` the original (``source``) and the anonymised
PNG are compared under each identity evaluator (see :mod:`anon.metrics.evaluators`): the
similarity (or distance), whether the recogniser still says "same person" at its threshold, whether
a face is found in the output, and, when configured, pose, attribute and expression differences
(:mod:`anon.metrics.expression`: argmax agreement and total-variation distance). Writes:

* ``verification.jsonl``: one line per image with all of the above and an overall ``pass``;
* ``report.json`` / ``report.md``: rates per evaluator (with each threshold and where it comes
  from), detection rate, pose / attribute / expression / FID numbers, the ids that failed;
* ``failed_ids.txt``: the ids to re-run; ``plots/*.png``: similarity histograms.

An image *passes* when no evaluator re-identifies it (evaluators that find no face in the original
cannot judge and are ignored) and, with a detector, a face is still detected in the output.

``python -m anon.stages.evaluate run_dir=outputs/runs/<run>`` (config ``conf/evaluate.yaml``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from anon.errors import ConfigError, MissingDataError
from anon.manifest import read_records
from anon.metrics.attributes import AttributeAgreement, PoseError, pose_from_landmarks
from anon.metrics.detection import DetectionRate, MemoDetector, detect_fn
from anon.metrics.expression import ExpressionAgreement
from anon.metrics.reid import (Rank1Identification, ReIdentificationRate, equal_error_rate_threshold, has_face,
                               pair_scores, same_person, stack_embeddings)
from anon.stages.common import chunks

VERIFICATION = "verification.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FAILED_IDS = "failed_ids.txt"
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


# ------------------------------------------------------------------------------------------- inputs
def done_records(run_dir: str | Path) -> list[dict]:
    """The run's ``done`` records, one per id (the last wins), sorted by id.

    Reads ``manifest.jsonl``; a run that was interrupted before merging is read from its rank shards.
    """
    run_dir = Path(run_dir)
    merged = run_dir / "manifest.jsonl"
    if merged.is_file():
        records = [json.loads(line) for line in merged.read_text().splitlines() if line.strip()]
    else:
        records = read_records(run_dir)
    if not records and not merged.is_file():
        raise MissingDataError(merged, "run manifest", "run `anon anonymize` first, or fix `run_dir`")
    latest = {r["id"]: r for r in records}
    return [latest[k] for k in sorted(latest) if latest[k].get("status") == "done"]


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
        _write_atomic(Path(calibration.cache), json.dumps(cache, indent=1, sort_keys=True))
    return result


# ------------------------------------------------------------------------------------------- the stage
@dataclass
class _Metrics:
    """The torchmetrics objects one evaluation accumulates into."""

    reid: dict[str, ReIdentificationRate]
    rank1: dict[str, Rank1Identification] = field(default_factory=dict)
    before: dict[str, list[float]] = field(default_factory=dict)
    detection: DetectionRate | None = None
    pose: PoseError | None = None
    attributes: AttributeAgreement | None = None
    expression: ExpressionAgreement | None = None


def landmark_pose(detector) -> Callable[[np.ndarray], np.ndarray | None]:
    """``image -> (yaw, pitch, roll)`` degrees from the detector's first face's 5 landmarks (None: no face)."""
    detect = detect_fn(detector)

    def pose(image: np.ndarray) -> np.ndarray | None:
        found = detect(image)
        if not found or len(found[0]) < 3 or found[0][2] is None:
            return None
        return pose_from_landmarks(np.asarray(found[0][2], dtype=np.float64).reshape(5, 2))

    return pose


def run_evaluate(run_dir: str | Path, evaluators: dict, detector=None, thresholds: dict | None = None,
                 attributes: Callable | None = None, attribute_names: Sequence[str] | None = None,
                 pose: Callable | str | None = "landmarks", identities: Callable[[str], object] | None = None,
                 before_dir: str | Path | None = None, calibration: Calibration | None = None,
                 calibration_keys: dict[str, str] | None = None, fid=None, batch_size: int = 16,
                 plots: bool = True, expression: Callable | None = None,
                 expression_skipped: str | None = None) -> dict:
    """Evaluate every ``done`` image of a run; write ``verification.jsonl``, ``report.json``, ``report.md``.

    Args:
        run_dir: the run folder (``manifest.jsonl``, ``images/<id>.png``).
        evaluators: ``{name: evaluator}`` (``embed``, ``higher_is_same``; :mod:`anon.metrics.evaluators`).
        detector: ``image -> [(box, prob, landmarks), ...]`` (e.g. MTCNN); None skips detection and pose.
        thresholds: ``{name: value or {"value", "source"}}`` overriding the evaluators' own thresholds.
        attributes: attribute classifier ``image -> A scores`` (binarised at 0.5); ``attribute_names``
            labels them (default: the classifier's ``names`` attribute, else ``attr<k>``).
        pose: ``"landmarks"`` (:func:`anon.metrics.attributes.pose_from_landmarks` on the detector's
            landmarks), a callable ``image -> (yaw, pitch, roll) or None``, or None.
        identities: ``id -> identity label``; enables rank-1 identification of the anonymised images
            against the gallery of all originals.
        before_dir: optional folder of ``<id>.png`` "before anonymisation" images (e.g. the inversion's
            reconstruction): each evaluator's original<->before score is reported as *before*.
        calibration, calibration_keys: pairs for thresholds that are neither configured nor built in.
        fid: a torchmetrics ``FrechetInceptionDistance`` (:func:`anon.metrics.fid.build_fid`); originals
            are its real set, anonymised images its fake set.
        batch_size: images loaded and embedded together.
        plots: write ``plots/*.png``.
        expression: ``list of images -> N x C`` expression probabilities, NaN rows without a face
            (:class:`anon.metrics.expression.ExpressionScorer`; its ``names`` label the classes).
        expression_skipped: why no expression classifier runs (stated in the report), if one was wanted.
    Returns: the report (also in ``report.json``).
    """
    from anon import report as reporting

    run_dir = Path(run_dir)
    records = done_records(run_dir)
    if not evaluators:
        raise ConfigError("no evaluator selected: set `evaluators=[...]`")
    limits = resolve_thresholds(evaluators, thresholds, calibration, calibration_keys, batch_size)
    if detector is not None and not isinstance(detector, MemoDetector):
        detector = MemoDetector(detector)
    if detector is not None:  # every image of a batch is detected a few times (crops, count, pose)
        detector.size = max(detector.size, 4 * batch_size)
    pose_fn = landmark_pose(detector) if pose == "landmarks" and detector is not None else (
        pose if callable(pose) else None)
    labels: dict[object, int] = {}
    metrics = _Metrics(
        reid={n: ReIdentificationRate(limits[n].value, e.higher_is_same) for n, e in evaluators.items()},
        rank1={n: Rank1Identification(e.higher_is_same) for n, e in evaluators.items()} if identities else {},
        before={n: [] for n in evaluators},
        detection=DetectionRate() if detector is not None else None,
        pose=PoseError() if pose_fn is not None else None)
    if expression is not None:
        metrics.expression = ExpressionAgreement(len(expression.names))
    names = list(attribute_names or getattr(attributes, "names", None) or [])

    lines, unreadable = [], []
    for part in chunks(len(records), batch_size):
        batch = []
        for rec in records[part.start:part.stop]:
            try:
                original = read_rgb(rec["source"])
                anonymised = read_rgb(run_dir / rec.get("image", f"images/{rec['id']}.png"))
            except (OSError, ValueError) as err:
                unreadable.append(rec["id"])
                lines.append({"id": rec["id"], "source": rec.get("source"), "pass": None, "evaluable": False,
                              "error": f"{type(err).__name__}: {err}"})
                continue
            before = None
            if before_dir is not None and (Path(before_dir) / f"{rec['id']}.png").is_file():
                before = read_rgb(Path(before_dir) / f"{rec['id']}.png")
            batch.append((rec, original, anonymised, before))
        if batch:
            lines += _evaluate_batch(batch, evaluators, limits, detector, pose_fn, attributes, names, identities,
                                     labels, fid, metrics, expression)

    report = _summarise(run_dir, records, lines, unreadable, evaluators, limits, metrics, names, fid, calibration)
    report["expression"] = _expression_summary(metrics.expression, expression, expression_skipped)
    report = _clean(report)
    lines = _clean(lines)
    _write_atomic(run_dir / VERIFICATION, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    _write_atomic(run_dir / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True) + "\n")
    _write_atomic(run_dir / FAILED_IDS, "".join(i + "\n" for i in report["failed_ids"]))
    if plots:
        report["plots"] = reporting.write_plots(run_dir, lines, report)
        _write_atomic(run_dir / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True) + "\n")
    _write_atomic(run_dir / REPORT_MD, reporting.markdown(report))
    return report


def _evaluate_batch(batch, evaluators, limits, detector, pose_fn, attributes, names, identities, labels, fid,
                    metrics: _Metrics, expression=None) -> list[dict]:
    """Evaluate a list of ``(record, original, anonymised, before-or-None)``; returns their verification lines."""
    records = [b[0] for b in batch]
    originals, anonymised = [b[1] for b in batch], [b[2] for b in batch]
    lines = [{"id": r["id"], "source": r.get("source"), "image": r.get("image"),
              "identity_similarity_before": r.get("identity_similarity_before"),
              "identity_similarity_after": r.get("identity_similarity_after"), "evaluators": {}} for r in records]

    for name, evaluator in evaluators.items():
        kind = "similarity" if evaluator.higher_is_same else "distance"
        threshold = limits[name].value
        emb_o, emb_a = evaluator.embed(originals), evaluator.embed(anonymised)
        dim = next((len(e) for e in emb_o + emb_a if e is not None), 1)
        t_o, t_a = stack_embeddings(emb_o, dim), stack_embeddings(emb_a, dim)
        metrics.reid[name].update(t_o, t_a)
        if name in metrics.rank1:
            ids = torch.tensor([labels.setdefault(identities(r["id"]), len(labels)) for r in records])
            metrics.rank1[name].update(t_a, ids, t_o, ids)
        scores = pair_scores(t_o, t_a, evaluator.higher_is_same)
        same = same_person(scores, threshold, evaluator.higher_is_same)
        face_o, face_a = has_face(t_o), has_face(t_a)
        before_scores = _before_scores(evaluator, batch, t_o, dim)
        for i, line in enumerate(lines):
            judged = bool(face_o[i])
            reidentified = bool(same[i] and face_a[i]) if judged else None
            entry = {kind: _num(scores[i]), "threshold": threshold, "face_original": judged,
                     "face_anonymised": bool(face_a[i]), "reidentified": reidentified,
                     "pass": None if reidentified is None else not reidentified}
            if before_scores is not None:
                entry[f"{kind}_before"] = _num(before_scores[i])
                if entry[f"{kind}_before"] is not None:
                    metrics.before[name].append(entry[f"{kind}_before"])
            line["evaluators"][name] = entry

    if detector is not None:
        detect = detect_fn(detector)
        counts = torch.tensor([len(detect(im)) for im in anonymised])
        metrics.detection.update(counts)
        for line, n in zip(lines, counts.tolist()):
            line["faces_detected"], line["face_detected"] = n, n > 0

    if pose_fn is not None:
        for line, o, a in zip(lines, originals, anonymised):
            p_o, p_a = pose_fn(o), pose_fn(a)
            nan3 = torch.full((1, 3), float("nan"))
            t_po = nan3 if p_o is None else torch.as_tensor(np.asarray(p_o, dtype=np.float64)).reshape(1, 3)
            t_pa = nan3 if p_a is None else torch.as_tensor(np.asarray(p_a, dtype=np.float64)).reshape(1, 3)
            metrics.pose.update(t_po, t_pa)
            line["pose_original"] = None if p_o is None else [round(float(v), 4) for v in np.asarray(p_o).reshape(3)]
            line["pose_anonymised"] = None if p_a is None else [round(float(v), 4) for v in np.asarray(p_a).reshape(3)]

    if attributes is not None:
        pred_o = torch.stack([torch.as_tensor(np.asarray(attributes(im), dtype=np.float64)).reshape(-1)
                              for im in originals])
        pred_a = torch.stack([torch.as_tensor(np.asarray(attributes(im), dtype=np.float64)).reshape(-1)
                              for im in anonymised])
        if metrics.attributes is None:
            metrics.attributes = AttributeAgreement(pred_o.shape[1])
            names[:] = names or [f"attr{k}" for k in range(pred_o.shape[1])]
        metrics.attributes.update(pred_o, pred_a)
        for line, po, pa in zip(lines, pred_o, pred_a):
            changed = [n for n, x, y in zip(names, (po > 0.5).tolist(), (pa > 0.5).tolist()) if x != y]
            line["attributes"] = {"original": po.tolist(), "anonymised": pa.tolist(), "changed": changed}

    if expression is not None:
        prob = expression(originals + anonymised)  # one pass: equal-size crops share forward batches
        prob_o, prob_a = prob[:len(originals)], prob[len(originals):]
        metrics.expression.update(prob_o, prob_a)
        for line, po, pa in zip(lines, prob_o, prob_a):
            line["expression"] = _expression_line(po, pa, expression.names)

    if fid is not None:
        for o, a in zip(originals, anonymised):
            fid.update(torch.from_numpy(o).permute(2, 0, 1)[None].contiguous(), real=True)
            fid.update(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(), real=False)

    for line in lines:
        verdicts = [e["pass"] for e in line["evaluators"].values() if e["pass"] is not None]
        line["evaluable"] = bool(verdicts)
        line["pass"] = all(verdicts) and line.get("face_detected", True)
    return lines


def _expression_line(po: torch.Tensor, pa: torch.Tensor, names) -> dict:
    """One image's expressions: class names (None: no face), whether they agree, TV distance, probabilities."""
    ok_o, ok_a = bool(torch.isfinite(po).all()), bool(torch.isfinite(pa).all())
    label_o = names[int(po.argmax())] if ok_o else None
    label_a = names[int(pa.argmax())] if ok_a else None
    judged = ok_o and ok_a
    return {"original": label_o, "anonymised": label_a, "same": (label_o == label_a) if judged else None,
            "tv_distance": float(0.5 * (po - pa).abs().sum()) if judged else None,
            "prob_original": [round(float(v), 5) for v in po] if ok_o else None,
            "prob_anonymised": [round(float(v), 5) for v in pa] if ok_a else None}


def _expression_summary(metric: ExpressionAgreement | None, expression, skipped: str | None) -> dict | None:
    if metric is None:
        return {"skipped": skipped} if skipped else None
    e = metric.compute()
    return {"agreement": e["agreement"].item(), "tv_distance": e["tv_distance"].item(), "same": int(e["same"]),
            "count": int(e["count"]), "missing": int(e["missing"]), "classes": list(expression.names),
            "classifier": getattr(expression, "description", type(expression).__name__),
            "confusion": e["confusion"].tolist()}


def _before_scores(evaluator, batch, t_o: torch.Tensor, dim: int) -> torch.Tensor | None:
    befores = [b[3] for b in batch]
    if all(b is None for b in befores):
        return None
    present = [i for i, b in enumerate(befores) if b is not None]
    emb = evaluator.embed([befores[i] for i in present])
    full: list = [None] * len(befores)
    for i, e in zip(present, emb):
        full[i] = e
    return pair_scores(t_o, stack_embeddings(full, dim), evaluator.higher_is_same)


def _summarise(run_dir, records, lines, unreadable, evaluators, limits, metrics: _Metrics, names, fid,
               calibration) -> dict:
    evaluated = [line for line in lines if "error" not in line]
    per_evaluator = {}
    for name, evaluator in evaluators.items():
        result = {k: v.item() for k, v in metrics.reid[name].compute().items()}
        scores = [line["evaluators"][name].get("similarity" if evaluator.higher_is_same else "distance")
                  for line in evaluated]
        scores = [s for s in scores if s is not None]
        per_evaluator[name] = {
            "score": "cosine similarity" if evaluator.higher_is_same else "euclidean distance",
            "same_person_if": ">= threshold" if evaluator.higher_is_same else "<= threshold",
            "threshold": limits[name].value, "threshold_source": limits[name].source,
            "calibration_eer": limits[name].eer,
            "reidentification_rate": result["rate"], "reidentified": int(result["reidentified"]),
            "evaluable": int(result["evaluable"]), "no_face_anonymised": int(result["no_face_anonymised"]),
            "no_face_original": int(result["no_face_original"]),
            "mean_after": float(np.mean(scores)) if scores else None,
            "mean_before": float(np.mean(metrics.before[name])) if metrics.before.get(name) else None,
            "before_pairs": len(metrics.before.get(name, [])),
        }
        if name in metrics.rank1:
            r1 = {k: v.item() for k, v in metrics.rank1[name].compute().items()}
            per_evaluator[name]["rank1"] = {"rate": r1["rate"], "correct": int(r1["correct"]),
                                            "queries": int(r1["queries"]), "no_face": int(r1["no_face"])}

    def mean_of(key):
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        return float(np.mean(values)) if values else None

    report = {
        "run_dir": str(run_dir), "images": len(records), "evaluated": len(evaluated), "unreadable": unreadable,
        "evaluators": per_evaluator,
        "passed": sum(1 for line in evaluated if line["pass"]),
        "pass_rate": (sum(1 for line in evaluated if line["pass"]) / len(evaluated)) if evaluated else None,
        "failed_ids": sorted(line["id"] for line in evaluated if not line["pass"]),
        "not_evaluable_ids": sorted(line["id"] for line in evaluated if not line["evaluable"]),
        "calibration": calibration.description if calibration is not None else None,
        "manifest": {"identity_similarity_before": mean_of("identity_similarity_before"),
                     "identity_similarity_after": mean_of("identity_similarity_after"),
                     "loss_attribute": _mean_loss(records, "attribute")},
        "detection": None, "pose": None, "attributes": None, "expression": None, "fid": None,
    }
    if metrics.detection is not None and evaluated:
        d = metrics.detection.compute()
        report["detection"] = {"rate": d["rate"].item(), "detected": int(d["detected"]), "total": int(d["total"])}
    if metrics.pose is not None and evaluated:
        p = metrics.pose.compute()
        report["pose"] = {k: (v.item() if v.ndim == 0 else v.tolist()) for k, v in p.items()}
        report["pose"]["estimator"] = "5-landmark weak-perspective fit (anon.metrics.attributes.pose_from_landmarks)"
    if metrics.attributes is not None:
        a = metrics.attributes.compute()
        report["attributes"] = {"mean": a["mean"].item(), "count": int(a["count"]),
                                "per_attribute": dict(zip(names, a["per_attribute"].tolist()))}
    if fid is not None and len(evaluated) >= 2:
        report["fid"] = float(fid.compute())
    return report


def _mean_loss(records, key) -> float | None:
    values = [r["loss"][key] for r in records if isinstance(r.get("loss"), dict) and key in r["loss"]]
    return float(np.mean(values)) if values else None


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _clean(value):
    """JSON-safe: NaN/inf -> None, tensors and numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- Hydra entry
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


def folder_identity(image_id: str) -> str:
    """The identity of an id laid out as ``Person/file`` (LFW): its first path component."""
    return image_id.split("/")[0]


def build_evaluators(cfg) -> tuple[dict, dict[str, str], object]:
    """``cfg.evaluators`` (names of ``conf/evaluator/*.yaml``) -> ``({name: evaluator}, cache keys, detector)``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from anon.metrics.evaluators import FaceCropper, as_evaluator
    from anon.run_id import config_hash
    from anon.stages.common import pick_device

    device = pick_device(cfg.device)
    detector = MemoDetector(instantiate(cfg.detector)) if cfg.get("detector") else None
    crop = FaceCropper(detector, **cfg.face_crop) if detector is not None and cfg.get("face_crop") else None
    root = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    evaluators, keys = {}, {}
    for name in cfg.evaluators:
        path = Path(CONFIG_DIR) / "evaluator" / f"{name}.yaml"
        if not path.is_file():
            choices = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
            raise ConfigError(f"no evaluator config {path.name} in conf/evaluator/ (choices: {choices})")
        root[f"_evaluator_{name}"] = OmegaConf.load(path)
        node = root[f"_evaluator_{name}"]
        evaluators[name] = as_evaluator(instantiate(node), crop=crop, batch_size=cfg.batch_size, device=device)
        keys[name] = f"{name}-{config_hash(node, cfg.get('face_crop'), cfg.get('detector'))}"
    return evaluators, keys, detector


def build_expression(cfg, detector=None):
    """``cfg.expression`` (null or a classifier node, e.g. ``conf/expression/mini_xception.yaml``) ->
    ``(ExpressionScorer, None)``, or ``(None, reason)`` when the classifier's optional package is not
    installed (the report then says so), or ``(None, None)`` when none is configured.

    Faces are the MTCNN crops of ``cfg.face_crop`` (the identity evaluators' crops) when a detector is
    configured, else whole images.
    """
    from hydra.utils import instantiate

    from anon.lite.packages import MissingPackageError
    from anon.metrics.evaluators import FaceCropper
    from anon.metrics.expression import ExpressionScorer
    from anon.stages.common import pick_device

    if not cfg.get("expression"):
        return None, None
    try:
        net = instantiate(cfg.expression)
    except Exception as err:  # Hydra wraps the loader's error
        cause = err
        while cause is not None and not isinstance(cause, MissingPackageError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"[anon] expression agreement not measured: {cause}", flush=True)
        return None, str(cause)
    crop = FaceCropper(detector, **cfg.face_crop) if detector is not None and cfg.get("face_crop") else None
    return ExpressionScorer(net, crop=crop, batch_size=cfg.batch_size, device=pick_device(cfg.device)), None


def evaluate(cfg) -> dict:
    """Run the stage from a composed ``conf/evaluate.yaml``."""
    from hydra.utils import instantiate

    from anon.metrics.fid import build_fid

    evaluators, keys, detector = build_evaluators(cfg)
    cal = cfg.get("calibration") or {}
    calibration = (lfw_calibration(cal["images"], cal["pairs"], cal.get("limit"), cal.get("cache"))
                   if cal.get("images") and cal.get("pairs") else None)
    if cfg.get("identity_labels") not in ("folder", None):
        raise ConfigError(f"identity_labels={cfg.identity_labels!r}: use null or folder (LFW's Name/Name_0001 ids)")
    identities = folder_identity if cfg.get("identity_labels") == "folder" else None
    attributes = instantiate(cfg.attributes) if cfg.get("attributes") else None
    pose = cfg.get("pose")
    pose = instantiate(pose) if pose is not None and not isinstance(pose, str) else pose
    fid = build_fid(cfg.fid.checkpoint) if cfg.get("fid") and cfg.fid.get("enabled") else None
    thresholds = {k: v for k, v in (cfg.get("thresholds") or {}).items()}
    expression, expression_skipped = build_expression(cfg, detector)
    report = run_evaluate(cfg.run_dir, evaluators, detector=detector, thresholds=thresholds, attributes=attributes,
                          pose=pose, identities=identities, before_dir=cfg.get("before_dir"), calibration=calibration,
                          calibration_keys=keys, fid=fid, batch_size=cfg.batch_size, plots=cfg.get("plots", True),
                          expression=expression, expression_skipped=expression_skipped)
    for name, ev in report["evaluators"].items():
        rate = "n/a" if ev["reidentification_rate"] is None else f"{100 * ev['reidentification_rate']:.1f} %"
        print(f"[anon] {name}: re-identified {ev['reidentified']} of {ev['evaluable']} ({rate}) at threshold "
              f"{ev['threshold']:.4f} [{ev['threshold_source']}]", flush=True)
    print(f"[anon] {report['passed']}/{report['evaluated']} passed; report in {Path(cfg.run_dir) / REPORT_MD}", flush=True)
    return report


def _hydra_main():
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
    def evaluate_entry(cfg) -> None:
        from anon.run import one_line_errors

        with one_line_errors():
            evaluate(cfg)

    return evaluate_entry


def evaluate_entry() -> None:
    """``python -m anon.stages.evaluate run_dir=...`` (Hydra reads ``sys.argv``)."""
    _hydra_main()()


if __name__ == "__main__":
    evaluate_entry()
