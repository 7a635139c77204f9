"""Reports: the markdown page of an evaluation, its plots (matplotlib, :mod:`anon.report.plots`), and the sweep trade-off table.

* :func:`markdown` renders a ``report.json`` (written by :mod:`anon.stages.evaluate`) as ``report.md``;
* :func:`write_plots` draws the similarity histograms of a run into ``plots/`` (each PNG with the
  ``.json`` of the numbers drawn);
* :func:`tradeoff_table` reads several runs' ``config.yaml`` + ``report.json`` into rows (run, margin,
  lambda_id, lambda_attr, re-identification rate, attribute metric); :func:`write_tradeoff` writes
  them as JSON / markdown and plots re-identification against attribute preservation.

``python -m anon.report.render tradeoff RUN_DIR [RUN_DIR ...] --out DIR [--evaluator NAME]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from anon.report.plots import histogram_png, scatter_png

# ------------------------------------------------------------------------------------------- one run
def write_plots(run_dir: str | Path, lines: Sequence[dict], report: dict) -> list[str]:
    """``plots/similarity_<evaluator>.png`` (output, and inversion when scored; the threshold) and
    ``plots/loss_network_similarity.png`` (the manifest's in-loop identity similarity before/after),
    each beside a ``.json`` of the numbers drawn (:mod:`anon.report.plots`). Returns the PNG paths relative
    to ``run_dir``."""
    run_dir = Path(run_dir)
    figures = {}
    lines = [line for line in lines if "error" not in line]
    for name, ev in report["evaluators"].items():
        kind = "similarity" if ev["score"] == "cosine similarity" else "distance"
        series = {"output: original vs anonymised": [line["evaluators"][name].get(kind) for line in lines]}
        inversion = [line["evaluators"][name].get(f"{kind}_inversion") for line in lines]
        if any(v is not None for v in inversion):
            series = {"inversion: original vs inversion": inversion, **series}
        value_range = (-1.0, 1.0) if kind == "similarity" else None
        path = run_dir / "plots" / f"similarity_{name}.png"
        figures[path] = histogram_png(series, path, f"{name}: {ev['score']}, re-identified "
                                      f"{_pct(ev['reidentification_rate'])}", ev["score"],
                                      threshold=ev["threshold"], value_range=value_range)
    before = [line.get("identity_similarity_before") for line in lines]
    after = [line.get("identity_similarity_after") for line in lines]
    if any(v is not None for v in before + after):
        path = run_dir / "plots" / "loss_network_similarity.png"
        figures[path] = histogram_png({"before (initial code)": before, "after (final code)": after}, path,
                                      "loss network identity similarity (manifest)", "cosine similarity",
                                      value_range=(-1.0, 1.0))
    for path, data in figures.items():
        path.with_suffix(".json").write_text(json.dumps(data.to_dict(), indent=1) + "\n")
    return [path.relative_to(run_dir).as_posix() for path in figures]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    """``report.json`` (schema :class:`anon.report.schema.Report`) -> the ``report.md`` page."""
    from anon.report.schema import Report

    r = Report.from_dict(report)
    out = [f"# Verification report: `{Path(r.run_dir).name}`", ""]
    if r.inversion.warning:
        out += [f"> **Warning.** {r.inversion.warning}", ""]
    v = r.verdict
    out.append(f"{r.images} images done in the manifest, {r.evaluated} evaluated, {len(r.unreadable)} unreadable. "
               f"**{v.passed} passed** ({_pct(v.pass_rate)}): privacy {v.privacy} ({_pct(v.privacy_rate)}), "
               f"utility {v.utility} ({_pct(v.utility_rate)}).")
    out += ["", "## Verdict", "",
            "Privacy: no evaluator re-identifies the image against its own original"
            + (" and a face is still detected." if r.detection else "."),
            "Utility: " + (", ".join(_utility_check(c, v.thresholds) for c in v.utility_checks)
                           if v.utility_checks else "not measured (no pose, expression or attribute check "
                                                    "configured), so no image can pass") + ".",
            f"Thresholds from: {v.source}.", "",
            "| | images | share |", "|---|---|---|",
            f"| privacy | {v.privacy} of {v.evaluated} | {_pct(v.privacy_rate)} |",
            f"| utility | {v.utility} of {v.evaluated} | {_pct(v.utility_rate)} |",
            f"| passed (both) | {v.passed} of {v.evaluated} | {_pct(v.pass_rate)} |"]
    out += ["", "## Re-identification: inversion vs output", "",
            f"Inversion: {r.inversion.source or 'not scored'} ({r.inversion.images} images). "
            f"Identity labels: {r.identity_labels}."]
    if r.calibration:
        out.append(f"Calibration pairs: {r.calibration}.")
    out += ["", "| evaluator | attack | threshold (source) | inversion re-identified | output re-identified | "
            "gain (inversion - output) |", "|---|---|---|---|---|---|"]
    for name, ev in r.evaluators.items():
        for kind, a in ev.attacks.items():
            threshold = "—" if a.threshold is None else f"{a.threshold:.4f}"
            inv = "—" if a.inversion is None else f"{_pct(a.inversion.rate)} ({a.inversion.matched} of {a.inversion.evaluable})"
            out_ = f"{_pct(a.output.rate)} ({a.output.matched} of {a.output.evaluable})"
            if a.not_run:
                out_ = f"not run: {a.not_run}"
            gain = "—" if a.gain is None else f"{100 * a.gain:+.1f} points"
            out.append(f"| `{name}` | {kind}: {a.description} | {threshold} ({a.threshold_source}) | {inv} | {out_} "
                       f"| {gain} |")
    for name, ev in r.evaluators.items():
        rows = [("score", f"{ev.score} (same person if {ev.same_person_if})"),
                ("threshold", f"{ev.threshold:.4f}"), ("threshold from", ev.threshold_source),
                ("re-identified against own original", f"{_pct(ev.reidentification_rate)} "
                                                       f"({ev.reidentified} of {ev.evaluable})"),
                ("no face in anonymised output", f"{ev.no_face_anonymised} (counted as not re-identified)"),
                ("no face in original (not judged)", str(ev.no_face_original)),
                (f"mean {ev.score}, original vs inversion", _fmt(ev.mean_inversion) + f" ({ev.inversion_pairs} pairs)"),
                (f"mean {ev.score}, original vs output", _fmt(ev.mean_after))]
        if r.detection:
            rows.append(("face detection rate (output)", f"{_pct(r.detection.rate)} "
                                                         f"({r.detection.detected} of {r.detection.total})"))
        out += ["", f"## Evaluator `{name}`", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    pose = r.pose
    if pose:
        fallback = (f"; fallback where it finds no face in either image: {pose.fallback} (used for "
                    f"{pose.fallback_used} images)") if pose.fallback else ""
        out += ["", "## Head pose", "", f"Estimator: {pose.estimator}{fallback}. Mean absolute difference "
                f"original vs anonymised over {pose.count} images ({pose.missing} without landmarks):", "",
                "| yaw | pitch | roll | mean |", "|---|---|---|---|",
                f"| {_fmt(pose.yaw, 2)}° | {_fmt(pose.pitch, 2)}° | {_fmt(pose.roll, 2)}° | {_fmt(pose.mean, 2)}° |"]
        if pose.inversion_count:
            out += ["", f"Original vs inversion over {pose.inversion_count} images: |Δyaw| "
                    f"{_fmt(pose.inversion_yaw, 2)}°, |Δpitch| {_fmt(pose.inversion_pitch, 2)}°."]
    attrs = r.attributes
    if attrs:
        out += ["", "## Attributes", "", f"Classifier agreement original vs anonymised over {attrs.count} "
                f"images: mean {_pct(attrs.mean)}.", "", "| attribute | agreement |", "|---|---|"]
        out += [f"| {k} | {_pct(v)} |" for k, v in attrs.per_attribute.items()]
    out += _expression_section(report.get("expression"))
    if r.fid is not None:
        out += ["", "## FID", "", f"FID (originals vs anonymised, FID Inception-v3 pool features): {r.fid:.3f}"]
    m = r.manifest
    if m.identity_similarity_before is not None:
        out += ["", "## Optimisation (from the manifest)", "",
                f"Loss-network identity similarity, mean: {_fmt(m.identity_similarity_before)} (initial code) -> "
                f"{_fmt(m.identity_similarity_after)} (final code); attribute loss {_fmt(m.loss_attribute)}."]
    if r.plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r.plots]
    out += ["", "## Images that did not pass", ""]
    if r.failed_ids:
        out.append(f"{len(r.failed_ids)} images (also in `failed_ids.txt`, one id per line; why, per image, in "
                   f"`verification.jsonl`: `privacy`, `utility_failures`):")
        out += [""] + [f"- `{i}`" for i in r.failed_ids]
    else:
        out.append("None.")
    if r.not_evaluable_ids:
        out += ["", "No evaluator found a face in these originals (not judged): "
                + ", ".join(f"`{i}`" for i in r.not_evaluable_ids)]
    if r.unreadable:
        out += ["", "Unreadable: " + ", ".join(f"`{i}`" for i in r.unreadable)]
    return "\n".join(out) + "\n"


def _utility_check(check: str, thresholds: dict) -> str:
    if check == "pose":
        return f"|Δyaw| <= {thresholds['max_yaw_deg']:g}° and |Δpitch| <= {thresholds['max_pitch_deg']:g}°"
    if check == "expression":
        return "same expression class"
    return f"attribute agreement >= {100 * thresholds['min_attribute_agreement']:g} %"


def _expression_section(expr: dict | None) -> list[str]:
    """The ``## Expression`` lines: argmax agreement, mean total-variation distance, confusion counts."""
    if not expr:
        return []
    if expr.get("skipped"):
        return ["", "## Expression", "", f"Not measured: {expr['skipped']}"]
    out = ["", "## Expression", "", f"Classifier `{expr.get('classifier', '')}`, original vs anonymised over "
           f"{expr['count']} images ({expr['missing']} without a face in one of the two):", "",
           "| same expression (argmax) | mean total-variation distance |", "|---|---|",
           f"| {_pct(expr['agreement'])} ({expr['same']} of {expr['count']}) | {_fmt(expr['tv_distance'])} |"]
    if expr.get("inversion_count"):
        out += ["", f"Inversion: same expression class as the original in {expr['inversion_same']} of "
                f"{expr['inversion_count']} images."]
    classes, confusion = expr.get("classes") or [], expr.get("confusion") or []
    if expr["count"] and classes and len(confusion) == len(classes):
        out += ["", "Confusion (rows: original, columns: anonymised):", "",
                "| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        out += [f"| {c} | " + " | ".join(str(n) for n in row) + " |" for c, row in zip(classes, confusion)]
    return out


# ------------------------------------------------------------------------------------------- sweeps
ATTRIBUTE_METRICS = {  # name -> (where in report.json, higher is better)
    "attribute_agreement": (("attributes", "mean"), True),
    "pose_error": (("pose", "mean"), False),
    "loss_attribute": (("manifest", "loss_attribute"), False),
    "expression_agreement": (("expression", "agreement"), True),
}


def _dig(tree: dict | None, keys: Sequence[str]):
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def tradeoff_table(run_dirs: Sequence[str | Path], evaluator: str | None = None,
                   attribute_metric: str = "auto") -> list[dict]:
    """One row per run: ``run, margin, lambda_id, lambda_attr, evaluator, reid_rate, attribute_metric,
    attribute_value``, from each run's ``config.yaml`` (loss weights) and ``report.json``.

    ``evaluator``: whose re-identification rate (default: the first in the first report).
    ``attribute_metric``: ``attribute_agreement`` (classifier agreement, higher is better),
    ``pose_error`` (mean absolute degrees), ``loss_attribute`` (mean final FaRL token L1 from the
    manifest), ``expression_agreement`` (same FER2013 expression, higher is better) or ``auto``: the
    first of these, in this order, that every run has.
    """
    from omegaconf import OmegaConf

    reports, configs = [], []
    for run_dir in map(Path, run_dirs):
        path = run_dir / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `python -m anon.stages.evaluate run_dir={run_dir}` first")
        from anon.report.schema import Report

        report = json.loads(path.read_text())
        Report.from_dict(report, str(path))  # a report of another schema is an error, not blank cells
        reports.append(report)
        cfg_path = run_dir / "config.yaml"
        configs.append(OmegaConf.load(cfg_path) if cfg_path.is_file() else OmegaConf.create({}))
    if not reports:
        return []
    evaluator = evaluator or next(iter(reports[0]["evaluators"]))
    if attribute_metric == "auto":
        attribute_metric = next((m for m, (keys, _) in ATTRIBUTE_METRICS.items()
                                 if all(_dig(r, keys) is not None for r in reports)), "loss_attribute")
    if attribute_metric not in ATTRIBUTE_METRICS:
        raise ValueError(f"attribute_metric={attribute_metric!r}; use auto or one of {', '.join(ATTRIBUTE_METRICS)}")
    keys = ATTRIBUTE_METRICS[attribute_metric][0]
    rows = []
    for run_dir, report, cfg in zip(map(Path, run_dirs), reports, configs):
        ev = report["evaluators"].get(evaluator)
        rows.append({
            "run": run_dir.name, "run_dir": str(run_dir),
            "margin": OmegaConf.select(cfg, "loss.margin"), "lambda_id": OmegaConf.select(cfg, "loss.lambda_id"),
            "lambda_attr": OmegaConf.select(cfg, "loss.lambda_attr"), "evaluator": evaluator,
            "reid_rate": None if ev is None else ev["reidentification_rate"],
            "attribute_metric": attribute_metric, "attribute_value": _dig(report, keys),
        })
    return rows


def tradeoff_markdown(rows: Sequence[dict]) -> str:
    if not rows:
        return "No runs.\n"
    metric = rows[0]["attribute_metric"]
    out = [f"| run | margin | lambda_id | lambda_attr | re-id rate ({rows[0]['evaluator']}) | {metric} |",
           "|---|---|---|---|---|---|"]
    out += [f"| {r['run']} | {_fmt(r['margin'], 3)} | {_fmt(r['lambda_id'], 3)} | {_fmt(r['lambda_attr'], 3)} | "
            f"{_pct(r['reid_rate'])} | {_fmt(r['attribute_value'])} |" for r in rows]
    return "\n".join(out) + "\n"


def write_tradeoff(run_dirs: Sequence[str | Path], out_dir: str | Path, evaluator: str | None = None,
                   attribute_metric: str = "auto") -> list[dict]:
    """``tradeoff.json``, ``tradeoff.md`` and ``tradeoff.png`` (re-identification vs attribute metric, its
    numbers in ``tradeoff_plot.json``) in ``out_dir``."""
    rows = tradeoff_table(run_dirs, evaluator, attribute_metric)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tradeoff.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out_dir / "tradeoff.md").write_text(tradeoff_markdown(rows))
    if rows:
        metric = rows[0]["attribute_metric"]
        better = "higher" if ATTRIBUTE_METRICS[metric][1] else "lower"
        labelled = [(r["attribute_value"], r["reid_rate"],
                     f"m={_fmt(r['margin'], 2)} id={_fmt(r['lambda_id'], 2)} at={_fmt(r['lambda_attr'], 2)}")
                    for r in rows]
        drawn = scatter_png(labelled, out_dir / "tradeoff.png",
                            f"re-identification ({rows[0]['evaluator']}) vs attribute preservation",
                            f"{metric} ({better} is better)", "re-id rate")
        (out_dir / "tradeoff_plot.json").write_text(json.dumps(drawn.to_dict(), indent=1) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anon.report.render", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    trade = sub.add_parser("tradeoff", help="re-identification vs attribute preservation over runs")
    trade.add_argument("run_dirs", nargs="+")
    trade.add_argument("--out", required=True)
    trade.add_argument("--evaluator")
    trade.add_argument("--attribute-metric", default="auto")
    args = parser.parse_args(argv)
    rows = write_tradeoff(args.run_dirs, args.out, args.evaluator, args.attribute_metric)
    sys.stdout.write(tradeoff_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
