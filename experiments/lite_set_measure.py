"""The lite set end to end on a folder (as ``make demo``), with extra Hydra overrides, plus the
inversion's own re-identification: what the issue-16 target table needs.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python experiments/lite_set_measure.py DIR OUT [override ...]

Prints one JSON line: inversion match share and pixel MSE (the invert cache rendered, with its weight
offsets if any, vs the aligned 64 px crop; dlib crop settings at 0.6), output re-identification vs
the own original and (where people have two photos) another photo of the same person, for the
outputs and the inversions (``reid_<attack>_<probe>``: matched/judged), detection, pose, expression agreement (``anon evaluate`` as main has it) and
seconds per face for all stages.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from anon.data.codes import CodeFolder
from anon.data.images import load_image, to_uint8
from anon.metrics.dlib_identity import DlibIdentity
from anon.nets.tuned import render
from anon.runtime.run import CONFIG_DIR


def inversion_fidelity(cfg, run_dir: Path) -> dict:
    records = [json.loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    done = [r for r in records if r["status"] == "done"]
    g = instantiate(cfg.generator).requires_grad_(False)
    codes = CodeFolder(cfg.stages.invert_dir + "/codes")
    dlib = DlibIdentity(upsample=2, fallback_whole_image=True)
    matches, errors = [], []
    for r in done:
        original = load_image(r["source"], 64)[None]
        offsets = codes.load_offsets(r["id"])
        offsets = None if offsets is None else {k: v[None] for k, v in offsets.items()}
        with torch.no_grad():
            inverted = render(g, codes.load(r["id"], g.num_ws)[None], offsets)
        a, b = (dlib.describe(x) for x in to_uint8(torch.cat([original, inverted])))
        matches.append(a is not None and b is not None and dlib.distance(a, b) < dlib.threshold)
        errors.append(float((original - inverted).square().mean()))
    return {"inversion_match": float(np.mean(matches)), "inversion_mse": float(np.mean(errors)), "faces": len(done)}


def attack_rates(evaluator: dict) -> dict:
    """``reid_<attack>_<probe>``: matched / judged of each attack the evaluation ran (other photo: only on a
    folder where people have two photos, as ``experiments/lfw_halves.py`` writes)."""
    out = {}
    for kind, attack in (evaluator.get("attacks") or {}).items():
        for probe in ("output", "inversion"):
            rate = attack.get(probe) or {}
            if rate.get("evaluable"):
                out[f"reid_{kind}_{probe}"] = f"{rate['matched']}/{rate['evaluable']}"
    return out


def main(data: str, out: str, *overrides: str) -> None:
    from anon.stages.evaluate import evaluate
    from anon.stages.pipeline import run_pipeline

    started = time.time()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pipeline", overrides=["experiment=lite", f"dataset.images={Path(data).resolve()}",
                                             f"output_root={out}", *overrides])
        eval_cfg = compose("evaluate", overrides=["evaluators=[dlib_resnet_crops]",
                                                  "+thresholds.dlib_resnet_crops=null", f"output_root={out}"])
    run_dir = Path(run_pipeline(cfg)["run_dir"])
    with open_dict(eval_cfg):
        eval_cfg.run_dir = str(run_dir)
    report = evaluate(eval_cfg)
    seconds = time.time() - started
    result = inversion_fidelity(cfg, run_dir)
    result["seconds_per_face_all_stages"] = seconds / max(result["faces"], 1)
    evaluator = report["evaluators"]["dlib_resnet_crops"]
    result["output_reid"] = evaluator["reidentification_rate"]
    result.update(attack_rates(evaluator))
    result["detection"] = (report.get("detection") or {}).get("rate")
    result["pose"] = report.get("pose")
    result["expression"] = report.get("expression")
    print(json.dumps({"overrides": list(overrides), **result}, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:])
