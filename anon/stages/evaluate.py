"""Stage ``evaluate``: verify a finished run image by image, and summarise it honestly.

For every ``done`` record of ``run_dir/manifest.jsonl`` three images are scored: the original
(``source``), the *inversion* (the run's inversion code rendered by its generator:
:mod:`anon.stages.inversion_images`) and the anonymised PNG. Under each identity evaluator
(:mod:`anon.metrics.evaluators`) the three attacks of :mod:`anon.metrics.attacks` run on the outputs
and on the inversions, so the report separates what the inverter alone did from the anonymisation's
own gain. Then face detection, head pose (dlib's 68 landmarks, :mod:`anon.metrics.pose68`, with the
5-point MTCNN fit as fallback), attributes and expression, and the two-half verdict per image
(:mod:`anon.metrics.verdict`). Writes:

* ``verification.jsonl``: one line per image with all of the above;
* ``report.json`` (schema :mod:`anon.report_schema`) / ``report.md``;
* ``failed_ids.txt``: ids that did not pass; ``plots/*.png``: similarity histograms.

``python -m anon.stages.evaluate run_dir=outputs/runs/<run>`` (config ``conf/evaluate.yaml``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from anon.errors import ConfigError, MissingDataError
from anon.manifest import current_records
from anon.metrics import attacks
from anon.metrics.attributes import AttributeAgreement, PoseError, angle_difference, pose_from_landmarks
from anon.metrics.detection import DetectionRate, MemoDetector, detect_fn
from anon.metrics.expression import ExpressionAgreement
from anon.metrics.reid import ReIdentificationRate, has_face, pair_scores, same_person, stack_embeddings
from anon.metrics.thresholds import (Calibration, Threshold, calibrate_threshold, lfw_calibration,  # noqa: F401
                                     read_rgb, resolve_thresholds, write_atomic)
from anon.metrics.verdict import VerdictThresholds, privacy, utility
from anon.stages.common import chunks
from anon.wandb_record import record_evaluation

VERIFICATION = "verification.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FAILED_IDS = "failed_ids.txt"
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
FIVE_POINT = "5-landmark weak-perspective fit on the detector's landmarks (anon.metrics.attributes.pose_from_landmarks)"


# ------------------------------------------------------------------------------------------- inputs
def done_records(run_dir: str | Path) -> list[dict]:
    """The run's ``done`` records, one per id (the last wins), sorted by id.

    Reads the rank shards (``manifest.jsonl`` when a folder has none).
    """
    run_dir = Path(run_dir)
    merged = run_dir / "manifest.jsonl"
    records = current_records(run_dir)  # the rank shards' truth (the merged file may be stale)
    if not records and not merged.is_file():
        raise MissingDataError(merged, "run manifest", "run `anon anonymize` first, or fix `run_dir`")
    latest = {r["id"]: r for r in records}
    return [latest[k] for k in sorted(latest) if latest[k].get("status") == "done"]


def landmark_pose(detector) -> Callable[[np.ndarray], np.ndarray | None]:
    """``image -> (yaw, pitch, roll)`` degrees from the detector's first face's 5 landmarks (None: no face)."""
    detect = detect_fn(detector)

    def pose(image: np.ndarray) -> np.ndarray | None:
        found = detect(image)
        if not found or len(found[0]) < 3 or found[0][2] is None:
            return None
        return pose_from_landmarks(np.asarray(found[0][2], dtype=np.float64).reshape(5, 2))

    pose.name = FIVE_POINT
    return pose


class PosePair:
    """Pose of an (original, other) pair: the main estimator when it sees both faces, else the fallback
    for both (never one estimator for one image and another for the other)."""

    def __init__(self, main: Callable | None, fallback: Callable | None = None):
        self.main, self.fallback = main, fallback
        self.name = getattr(main, "name", type(main).__name__) if main is not None else None
        self.fallback_name = getattr(fallback, "name", None) if fallback is not None else None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
        for estimator, label in ((self.main, "main"), (self.fallback, "fallback")):
            if estimator is None:
                continue
            p_a, p_b = estimator(a), estimator(b)
            if p_a is not None and p_b is not None:
                return np.asarray(p_a, np.float64).reshape(3), np.asarray(p_b, np.float64).reshape(3), label
        return None, None, None


def identity_labels(kind, ids: Sequence[str]) -> tuple[Callable[[str], object], str]:
    """``identity_labels`` config -> ``(id -> person, description)``.

    ``folder``: the first path component (LFW ``Name/Name_0001``); ``auto``: folder when ids have
    folders, else each image its own person; ``null``: each image its own person; a callable as is.
    """
    if callable(kind):
        return kind, getattr(kind, "description", "configured identity labels")
    if kind == "auto":
        kind = "folder" if any("/" in i for i in ids) else None
    if kind == "folder":
        return folder_identity, "folder name (LFW Name/Name_0001 layout)"
    if kind is None:
        return (lambda i: i), "none: every image is its own person"
    raise ConfigError(f"identity_labels={kind!r}: use auto, folder (LFW's Name/Name_0001 ids) or null")


# ------------------------------------------------------------------------------------------- the stage
def run_evaluate(run_dir: str | Path, evaluators: dict, detector=None, thresholds: dict | None = None,
                 attributes: Callable | None = None, attribute_names: Sequence[str] | None = None,
                 pose: Callable | str | None = "landmarks", identities=None,
                 inversion_dir: str | Path | None = None, calibration: Calibration | None = None,
                 calibration_keys: dict[str, str] | None = None, fid=None, batch_size: int = 16,
                 plots: bool = True, expression: Callable | None = None,
                 expression_skipped: str | None = None, verdict: VerdictThresholds | None = None,
                 inversion_source: str | None = None) -> dict:
    """Evaluate every ``done`` image of a run; write ``verification.jsonl``, ``report.json``, ``report.md``.

    Args:
        run_dir: the run folder (``manifest.jsonl``, ``images/<id>.png``).
        evaluators: ``{name: evaluator}`` (``embed``, ``higher_is_same``; :mod:`anon.metrics.evaluators`).
        detector: ``image -> [(box, prob, landmarks), ...]`` (e.g. MTCNN); None skips detection.
        thresholds: ``{name: value or {"value", "source"}}`` overriding the evaluators' own thresholds.
        attributes: attribute classifier ``image -> A scores`` (binarised at 0.5); ``attribute_names``
            labels them (default: the classifier's ``names`` attribute, else ``attr<k>``).
        pose: ``"landmarks"`` (5-point fit on the detector's landmarks), a callable
            ``image -> (yaw, pitch, roll) or None`` (e.g. :class:`anon.metrics.pose68.Dlib68Pose`; the
            5-point fit is its fallback when a detector is given), or None.
        identities: ``id -> person`` or ``"auto"`` / ``"folder"`` / None (:func:`identity_labels`): the
            labels of the other-photo and closed-set attacks.
        inversion_dir: folder of ``<id>.png`` inversions (:func:`anon.stages.inversion_images.render_inversions`);
            ``inversion_source`` says in the report where they come from.
        calibration, calibration_keys: pairs for thresholds that are neither configured nor built in.
        fid: a torchmetrics ``FrechetInceptionDistance``; originals real, anonymised fake.
        batch_size: images loaded and embedded together.
        plots: write ``plots/*.png``.
        expression: ``list of images -> N x C`` expression probabilities, NaN rows without a face.
        expression_skipped: why no expression classifier runs (stated in the report), if one was wanted.
        verdict: the utility thresholds (default :class:`VerdictThresholds`).
    Returns: the report (``report.json``, schema :class:`anon.report_schema.Report`) as a dict.
    """
    from anon import report as reporting
    from anon.stages.evaluate_summary import summarise

    run_dir = Path(run_dir)
    records = done_records(run_dir)
    if not evaluators:
        raise ConfigError("no evaluator selected: set `evaluators=[...]`")
    limits = resolve_thresholds(evaluators, thresholds, calibration, calibration_keys, batch_size)
    verdict = verdict or VerdictThresholds()
    if detector is not None and not isinstance(detector, MemoDetector):
        detector = MemoDetector(detector)
    if detector is not None:  # every image of a batch is detected a few times (crops, count, pose)
        detector.size = max(detector.size, 6 * batch_size)
    five_point = landmark_pose(detector) if detector is not None else None
    if pose == "landmarks":
        pose_pair = PosePair(five_point) if five_point is not None else None
    elif callable(pose):
        pose_pair = PosePair(pose, five_point)
    else:
        pose_pair = None
    label_of, label_description = identity_labels(identities, [r["id"] for r in records])
    state = {
        "reid": {n: ReIdentificationRate(limits[n].value, e.higher_is_same) for n, e in evaluators.items()},
        "emb": {n: {"o": [], "a": [], "i": []} for n in evaluators},
        "detection": DetectionRate() if detector is not None else None,
        "pose": PoseError() if pose_pair is not None else None, "pose_fallback": 0,
        "attributes": None, "attribute_names": list(attribute_names or getattr(attributes, "names", None) or []),
        "expression": ExpressionAgreement(len(expression.names)) if expression is not None else None,
    }

    lines, unreadable, evaluated = [], [], []
    for part in chunks(len(records), batch_size):
        batch = []
        for rec in records[part.start:part.stop]:
            try:
                original = read_rgb(rec["source"])
                anonymised = read_rgb(run_dir / rec.get("image", f"images/{rec['id']}.png"))
            except (OSError, ValueError) as err:
                unreadable.append(rec["id"])
                lines.append({"id": rec["id"], "source": rec.get("source"), "passed": None, "evaluable": False,
                              "error": f"{type(err).__name__}: {err}"})
                continue
            inversion = None
            if inversion_dir is not None and (Path(inversion_dir) / f"{rec['id']}.png").is_file():
                inversion = read_rgb(Path(inversion_dir) / f"{rec['id']}.png")
            batch.append((rec, original, anonymised, inversion))
        if batch:
            new = _evaluate_batch(batch, evaluators, limits, detector, pose_pair, attributes, fid, state, expression)
            lines += new
            evaluated += new
    labels = [label_of(line["id"]) for line in evaluated]
    attack_results = _attacks(evaluated, evaluators, limits, state, labels)
    checks = [c for c, on in (("pose", pose_pair is not None), ("expression", expression is not None
                                                                and verdict.same_expression),
                              ("attributes", attributes is not None)) if on]
    for line in evaluated:
        line["privacy"] = privacy(line)
        line["utility"], line["utility_failures"] = utility(line, verdict, checks)
        line["passed"] = bool(line["privacy"] and line["utility"])

    report = summarise(run_dir, records, lines, unreadable, evaluators, limits, state, attack_results, fid,
                       calibration, label_description, verdict, checks, pose_pair, expression, expression_skipped,
                       inversion_source if inversion_dir is not None else None)
    data = _clean(report.to_dict())
    lines = _clean(lines)
    write_atomic(run_dir / VERIFICATION, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    write_atomic(run_dir / FAILED_IDS, "".join(i + "\n" for i in data["failed_ids"]))
    if plots:
        data["plots"] = reporting.write_plots(run_dir, lines, data)
    write_atomic(run_dir / REPORT_JSON, json.dumps(data, indent=2, sort_keys=True) + "\n")
    write_atomic(run_dir / REPORT_MD, reporting.markdown(data))
    return data


def _evaluate_batch(batch, evaluators, limits, detector, pose_pair, attributes, fid, state: dict,
                    expression=None) -> list[dict]:
    """Evaluate a list of ``(record, original, anonymised, inversion-or-None)``; returns their verification lines."""
    records = [b[0] for b in batch]
    originals, anonymised, inversions = [b[1] for b in batch], [b[2] for b in batch], [b[3] for b in batch]
    lines = [{"id": r["id"], "source": r.get("source"), "image": r.get("image"),
              "inversion": inv is not None,
              "identity_similarity_before": r.get("identity_similarity_before"),
              "identity_similarity_after": r.get("identity_similarity_after"), "evaluators": {}}
             for r, inv in zip(records, inversions)]

    for name, evaluator in evaluators.items():
        kind = "similarity" if evaluator.higher_is_same else "distance"
        threshold = limits[name].value
        emb_o, emb_a = evaluator.embed(originals), evaluator.embed(anonymised)
        present = [i for i, inv in enumerate(inversions) if inv is not None]
        emb_i: list = [None] * len(batch)
        for i, e in zip(present, evaluator.embed([inversions[i] for i in present]) if present else []):
            emb_i[i] = e
        store = state["emb"][name]
        store["o"] += emb_o
        store["a"] += emb_a
        store["i"] += emb_i
        dim = next((len(e) for e in emb_o + emb_a + emb_i if e is not None), 1)
        t_o, t_a, t_i = (stack_embeddings(e, dim) for e in (emb_o, emb_a, emb_i))
        state["reid"][name].update(t_o, t_a)
        scores, scores_i = pair_scores(t_o, t_a, evaluator.higher_is_same), pair_scores(t_o, t_i, evaluator.higher_is_same)
        same = same_person(scores, threshold, evaluator.higher_is_same)
        same_i = same_person(scores_i, threshold, evaluator.higher_is_same)
        face_o, face_a, face_i = has_face(t_o), has_face(t_a), has_face(t_i)
        for i, line in enumerate(lines):
            judged = bool(face_o[i])
            reidentified = bool(same[i] and face_a[i]) if judged else None
            entry = {kind: _num(scores[i]), "threshold": threshold, "face_original": judged,
                     "face_anonymised": bool(face_a[i]), "reidentified": reidentified,
                     "pass": None if reidentified is None else not reidentified}
            if inversions[i] is not None:
                entry[f"{kind}_inversion"] = _num(scores_i[i])
                entry["reidentified_inversion"] = bool(same_i[i] and face_i[i]) if judged else None
            line["evaluators"][name] = entry

    if detector is not None:
        detect = detect_fn(detector)
        counts = torch.tensor([len(detect(im)) for im in anonymised])
        state["detection"].update(counts)
        for line, n in zip(lines, counts.tolist()):
            line["faces_detected"], line["face_detected"] = n, n > 0

    if pose_pair is not None:
        for line, o, a, inv in zip(lines, originals, anonymised, inversions):
            p_o, p_a, used = pose_pair(o, a)
            nan3 = torch.full((1, 3), float("nan"), dtype=torch.float64)
            t_po = nan3 if p_o is None else torch.as_tensor(p_o).reshape(1, 3)
            t_pa = nan3 if p_a is None else torch.as_tensor(p_a).reshape(1, 3)
            state["pose"].update(t_po, t_pa)
            state["pose_fallback"] += used == "fallback"
            line["pose_estimator"] = None if used is None else (pose_pair.name if used == "main" else pose_pair.fallback_name)
            line["pose_original"] = None if p_o is None else [round(float(v), 4) for v in p_o]
            line["pose_anonymised"] = None if p_a is None else [round(float(v), 4) for v in p_a]
            line["pose_delta"] = None if p_o is None else [
                round(float(v), 4) for v in angle_difference(torch.as_tensor(p_a), torch.as_tensor(p_o))]
            if inv is not None:
                q_o, q_i, _ = pose_pair(o, inv)
                line["pose_delta_inversion"] = None if q_o is None else [
                    round(float(v), 4) for v in angle_difference(torch.as_tensor(q_i), torch.as_tensor(q_o))]

    if attributes is not None:
        names = state["attribute_names"]
        pred_o = torch.stack([torch.as_tensor(np.asarray(attributes(im), dtype=np.float64)).reshape(-1)
                              for im in originals])
        pred_a = torch.stack([torch.as_tensor(np.asarray(attributes(im), dtype=np.float64)).reshape(-1)
                              for im in anonymised])
        if state["attributes"] is None:
            state["attributes"] = AttributeAgreement(pred_o.shape[1])
            names[:] = names or [f"attr{k}" for k in range(pred_o.shape[1])]
        state["attributes"].update(pred_o, pred_a)
        for line, po, pa in zip(lines, pred_o, pred_a):
            bo, ba = (po > 0.5).tolist(), (pa > 0.5).tolist()
            changed = [n for n, x, y in zip(names, bo, ba) if x != y]
            line["attributes"] = {"original": po.tolist(), "anonymised": pa.tolist(), "changed": changed,
                                  "agreement": 1.0 - len(changed) / len(names)}

    if expression is not None:
        present = [i for i, inv in enumerate(inversions) if inv is not None]
        prob = expression(originals + anonymised + [inversions[i] for i in present])  # one pass
        n = len(originals)
        prob_o, prob_a, prob_i = prob[:n], prob[n:2 * n], prob[2 * n:]
        state["expression"].update(prob_o, prob_a)
        for line, po, pa in zip(lines, prob_o, prob_a):
            line["expression"] = _expression_line(po, pa, expression.names)
        for k, i in enumerate(present):
            lines[i]["expression_inversion"] = _expression_line(prob_o[i], prob_i[k], expression.names)["anonymised"]

    if fid is not None:
        for o, a in zip(originals, anonymised):
            fid.update(torch.from_numpy(o).permute(2, 0, 1)[None].contiguous(), real=True)
            fid.update(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(), real=False)

    for line in lines:
        line["evaluable"] = any(e["pass"] is not None for e in line["evaluators"].values())
    return lines


def _attacks(lines, evaluators, limits, state, labels) -> dict:
    """``{evaluator: {attack: {"output": per-item, "inversion": per-item}}}``; also written into the lines."""
    out = {}
    has_inv = [line["inversion"] for line in lines]
    for name, evaluator in evaluators.items():
        store = state["emb"][name]
        if not lines:
            out[name] = {}
            continue
        dim = next((len(e) for e in store["o"] + store["a"] + store["i"] if e is not None), 1)
        t_o, t_a, t_i = (stack_embeddings(store[k], dim) for k in ("o", "a", "i"))
        higher, threshold = evaluator.higher_is_same, limits[name].value
        result = {}
        for probe_name, probes in (("output", t_a), ("inversion", t_i)):
            per = {"own_original": attacks.own_original(t_o, probes, threshold, higher),
                   "other_photo": attacks.other_photo(t_o, probes, labels, threshold, higher),
                   "closed_set": attacks.closed_set(t_o, probes, labels, higher)}
            if probe_name == "inversion":
                per = {k: [v if inv else None for v, inv in zip(vals, has_inv)] for k, vals in per.items()}
            for kind, vals in per.items():
                result.setdefault(kind, {})[probe_name] = vals
        for k, line in enumerate(lines):
            line["evaluators"][name]["attacks"] = {
                kind: {"output": r["output"][k], "inversion": r["inversion"][k]} for kind, r in result.items()}
        out[name] = result
    return out


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


# ------------------------------------------------------------------------------------------- Hydra entry
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
    attributes = instantiate(cfg.attributes) if cfg.get("attributes") else None
    pose = cfg.get("pose")
    pose = instantiate(pose) if pose is not None and not isinstance(pose, str) else pose
    fid = build_fid(cfg.fid.checkpoint) if cfg.get("fid") and cfg.fid.get("enabled") else None
    thresholds = {k: v for k, v in (cfg.get("thresholds") or {}).items()}
    expression, expression_skipped = build_expression(cfg, detector)
    inversion_dir, inversion_source = resolve_inversions(cfg)
    v = cfg.get("verdict") or {}
    verdict = VerdictThresholds(**{k: v[k] for k in ("max_yaw_deg", "max_pitch_deg", "same_expression",
                                                     "min_attribute_agreement") if k in v},
                                source=v.get("source") or "conf/evaluate.yaml `verdict`")
    report = run_evaluate(cfg.run_dir, evaluators, detector=detector, thresholds=thresholds, attributes=attributes,
                          pose=pose, identities=run_identities(cfg), inversion_dir=inversion_dir,
                          inversion_source=inversion_source, calibration=calibration, calibration_keys=keys, fid=fid,
                          batch_size=cfg.batch_size, plots=cfg.get("plots", True), expression=expression,
                          expression_skipped=expression_skipped, verdict=verdict)
    if report["inversion"]["warning"]:
        print(f"[anon] WARNING: {report['inversion']['warning']}", flush=True)
    for name, ev in report["evaluators"].items():
        for kind, attack in ev["attacks"].items():
            out, inv = attack["output"], attack["inversion"]
            text = f"output {_pct(out['rate'])} ({out['matched']} of {out['evaluable']})"
            if inv is not None:
                text += f", inversion {_pct(inv['rate'])} ({inv['matched']} of {inv['evaluable']})"
            print(f"[anon] {name} {kind}: {text}", flush=True)
    vd = report["verdict"]
    print(f"[anon] privacy {vd['privacy']}/{vd['evaluated']}, utility {vd['utility']}/{vd['evaluated']}, "
          f"passed {vd['passed']}/{vd['evaluated']}; report in {Path(cfg.run_dir) / REPORT_MD}", flush=True)
    record_evaluation(cfg, report)  # into the run's W&B run, if it has one (anon/wandb_record.py)
    return report


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def run_identities(cfg):
    """``identity_labels: auto`` on a run whose dataset knows who is who (CelebA-HQ with
    ``dataset.identities``): its ``identity(id)``; otherwise the setting as is (:func:`identity_labels`)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    setting = cfg.get("identity_labels", "auto")
    config = Path(cfg.run_dir) / "config.yaml"
    if setting != "auto" or not config.is_file():
        return setting
    dataset = OmegaConf.select(OmegaConf.load(config), "dataset")
    if dataset is None or not dataset.get("identities"):
        return setting
    data = instantiate(dataset)
    if not callable(getattr(data, "identity", None)):
        return setting

    def person(image_id: str):
        try:
            return data.identity(image_id)
        except (KeyError, ValueError):
            return f"unknown:{image_id}"  # not in the identity file: its own person

    person.description = f"dataset identities ({dataset.identities})"
    return person


def resolve_inversions(cfg) -> tuple[Path | None, str | None]:
    """``inversion_dir``: ``auto`` renders the run's inversion codes (:mod:`anon.stages.inversion_images`),
    a path uses ``<id>.png`` images there, null scores no inversion."""
    from anon.stages.common import pick_device
    from anon.stages.inversion_images import render_inversions

    setting = cfg.get("inversion_dir", "auto")
    if setting is None:
        return None, None
    if setting != "auto":
        return Path(setting), f"images in {setting}"
    folder, description = render_inversions(cfg.run_dir, [r["id"] for r in done_records(cfg.run_dir)],
                                            batch_size=cfg.batch_size, device=pick_device(cfg.device))
    if folder is None:
        print(f"[anon] inversion not scored: {description}", flush=True)
    return folder, description


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
