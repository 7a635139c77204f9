"""Stage ``evaluate``: verify a finished run image by image, and summarise it honestly.

For every ``done`` record of ``run_dir/manifest.jsonl`` three images are scored: the original
(``source``), the *inversion* (the run's inversion code rendered by its generator:
:mod:`anon.stages.inversion_images`) and the anonymised PNG. Under each identity evaluator
(:mod:`anon.metrics.evaluators`) the three attacks of :mod:`anon.metrics.attacks` run on the outputs
and on the inversions, so the report separates what the inverter alone did from the anonymisation's
own gain. Then face detection, head pose (dlib's 68 landmarks, :mod:`anon.metrics.pose68`, with the
5-point MTCNN fit as fallback), attributes and expression, FID, and the two-half verdict per image
(:mod:`anon.metrics.verdict`). Each of these is a registered metric (:mod:`anon.metrics.registry`);
``metrics=[...]`` selects them (default: all). Writes:

* ``verification.jsonl``: one line per image with all of the above;
* ``report.json`` (schema :mod:`anon.report.schema`) / ``report.md``;
* ``failed_ids.txt``: ids that did not pass; ``plots/*.png``: similarity histograms.

The evaluation runs through the Trainer (``trainer=`` of ``conf/trainer/``): the run's triples
(:mod:`anon.stages.evaluate_inputs`) are measured in batches on every device
(:mod:`anon.stages.evaluate_items`, :mod:`anon.stages.evaluate_module`), and the cross-item metrics are
computed once from all items (:mod:`anon.stages.evaluate_merge`).

``anon evaluate run_dir=outputs/runs/<run> [trainer=ddp_cpu trainer.devices=2]`` (config ``conf/evaluate.yaml``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from anon.errors import ConfigError
from anon.metrics.detection import MemoDetector
from anon.metrics.registry import StageInputs, build_metrics, select_metrics
from anon.metrics.thresholds import (Calibration, Threshold, calibrate_threshold, lfw_calibration,  # noqa: F401
                                     resolve_thresholds)
from anon.metrics.verdict import VerdictThresholds
from anon.stages.evaluate_build import (CONFIG_DIR, build_evaluators, build_expression,  # noqa: F401
                                        build_trainer, resolve_inversions, run_identities)
from anon.stages.evaluate_inputs import (EvaluationTriples, done_records, folder_identity,  # noqa: F401
                                         identity_labels)
from anon.stages.evaluate_items import FIVE_POINT, Measures, PosePair, landmark_pose  # noqa: F401
from anon.stages.evaluate_merge import FAILED_IDS, REPORT_JSON, REPORT_MD, VERIFICATION  # noqa: F401
from anon.stages.evaluate_module import EvaluationModule, EvaluationPlan
from anon.runtime.wandb_record import record_evaluation


def run_evaluate(run_dir: str | Path, evaluators: dict, detector=None, thresholds: dict | None = None,
                 attributes: Callable | None = None, attribute_names: Sequence[str] | None = None,
                 pose: Callable | str | None = "landmarks", identities=None,
                 inversion_dir: str | Path | None = None, calibration: Calibration | None = None,
                 calibration_keys: dict[str, str] | None = None, fid=None, batch_size: int = 16,
                 plots: bool = True, expression: Callable | None = None,
                 expression_skipped: str | None = None, verdict: VerdictThresholds | None = None,
                 inversion_source: str | None = None, trainer=None, num_workers: int = 0,
                 metrics: Sequence[str] | None = None) -> dict:
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
        fid: a torchmetrics ``FrechetInceptionDistance`` (its ``inception`` extracts the features, in batches;
            the statistics are computed once over all items); originals real, anonymised fake.
        batch_size: items per step (loaded and embedded together).
        plots: write ``plots/*.png``.
        expression: ``list of images -> N x C`` expression probabilities, NaN rows without a face.
        expression_skipped: why no expression classifier runs (stated in the report), if one was wanted.
        verdict: the utility thresholds (default :class:`VerdictThresholds`).
        trainer: the ``pytorch_lightning.Trainer`` to predict with (default: one CPU process); with several
            devices each rank measures its share and rank 0 writes the report.
        num_workers: DataLoader workers reading the images.
        metrics: names of registered metrics to run (:mod:`anon.metrics.registry`; None: all). A selected
            metric whose network is not given (no ``attributes``, no ``fid``...) is left out.
    Returns: the report (``report.json``, schema :class:`anon.report.schema.Report`) as a dict.
    """
    run_dir = Path(run_dir)
    select_metrics(metrics)  # a misspelt name fails before any network runs
    records = done_records(run_dir)
    if not evaluators:
        raise ConfigError("no evaluator selected: set `evaluators=[...]`")
    limits = resolve_thresholds(evaluators, thresholds, calibration, calibration_keys, batch_size)
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
    verdict = verdict or VerdictThresholds()
    stage = StageInputs(evaluators, {n: t.value for n, t in limits.items()}, limits, detector, pose_pair, attributes,
                        list(attribute_names or []), expression, expression_skipped,
                        fid.inception if fid is not None else None, batch_size, verdict, label_description)
    measures = Measures(build_metrics(metrics, stage))
    plan = EvaluationPlan(run_dir, records, measures, verdict, label_description, calibration,
                          inversion_source if inversion_dir is not None else None, plots)
    module = EvaluationModule(plan, EvaluationTriples(run_dir, records, label_of, inversion_dir), batch_size,
                              num_workers)
    if trainer is None:
        trainer = build_trainer({})
    trainer.predict(module, return_predictions=False)
    if module.report is not None:
        return module.report
    return json.loads((run_dir / REPORT_JSON).read_text())  # written by rank 0 (another process)


def evaluate(cfg) -> dict:
    """Run the stage from a composed ``conf/evaluate.yaml``."""
    from hydra.utils import instantiate

    from anon.metrics.fid import build_fid
    from anon.stages.common import pick_device

    if cfg.get("seed") is not None:  # every rank builds its own networks: random-weight ones must agree
        import torch

        torch.manual_seed(int(cfg.seed))
    metrics = select_metrics(cfg.get("metrics"))  # only the selected metrics' networks are built
    evaluators, keys, detector = build_evaluators(cfg)
    cal = cfg.get("calibration") or {}
    calibration = (lfw_calibration(cal["images"], cal["pairs"], cal.get("limit"), cal.get("cache"))
                   if cal.get("images") and cal.get("pairs") else None)
    attributes = instantiate(cfg.attributes) if cfg.get("attributes") and "attributes" in metrics else None
    pose = cfg.get("pose") if "pose" in metrics else None
    pose = instantiate(pose) if pose is not None and not isinstance(pose, str) else pose
    fid = build_fid(cfg.fid.checkpoint) if cfg.get("fid") and cfg.fid.get("enabled") and "fid" in metrics else None
    if fid is not None:  # the features are extracted on the evaluation device, in batches
        fid = fid.to(pick_device(cfg.device))
    thresholds = {k: v for k, v in (cfg.get("thresholds") or {}).items()}
    expression, expression_skipped = build_expression(cfg, detector) if "expression" in metrics else (None, None)
    inversion_dir, inversion_source = resolve_inversions(cfg)
    v = cfg.get("verdict") or {}
    verdict = VerdictThresholds(**{k: v[k] for k in ("max_yaw_deg", "max_pitch_deg", "same_expression",
                                                     "min_attribute_agreement") if k in v},
                                source=v.get("source") or "conf/evaluate.yaml `verdict`")
    trainer = build_trainer(cfg)
    report = run_evaluate(cfg.run_dir, evaluators, detector=detector, thresholds=thresholds, attributes=attributes,
                          pose=pose, identities=run_identities(cfg), inversion_dir=inversion_dir,
                          inversion_source=inversion_source, calibration=calibration, calibration_keys=keys, fid=fid,
                          batch_size=cfg.batch_size, plots=cfg.get("plots", True), expression=expression,
                          expression_skipped=expression_skipped, verdict=verdict, trainer=trainer,
                          num_workers=cfg.get("num_workers", 0), metrics=metrics)
    if trainer.global_rank != 0:
        return report
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
    record_evaluation(cfg, report)  # into the run's W&B run, if it has one (anon/runtime/wandb_record.py)
    return report


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _hydra_main():
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
    def evaluate_entry(cfg) -> None:
        from anon.runtime.run import one_line_errors

        with one_line_errors():
            evaluate(cfg)

    return evaluate_entry


def evaluate_entry() -> None:
    """``python -m anon.stages.evaluate run_dir=...`` (Hydra reads ``sys.argv``)."""
    _hydra_main()()


if __name__ == "__main__":
    evaluate_entry()
