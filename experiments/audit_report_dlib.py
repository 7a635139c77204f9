"""Audit a run's ``report.json`` with dlib called directly: no code of ``anon`` is imported.

From the saved images (the original ``source`` of each manifest record, ``inversions/<id>.png`` and
``images/<id>.png``) it recomputes, for dlib's ResNet (HOG detector, 5-point chip, 128-d descriptor,
same person at distance <= threshold):

* re-identification against the image's own original, for the inversion and the output, and their
  difference;
* verification against another photo of the same person (folder name = person);
* closed-set identification among the originals;
* head pose from dlib's 68 landmarks (the same 21-point weak-perspective model the report names)
  for the images the report measured with it;
* the verdict shares, from these numbers plus the report's per-image face detection and expression
  classes (MTCNN and the expression network are not dlib).

    python experiments/audit_report_dlib.py RUN_DIR [--evaluator dlib_resnet_crops] [--upsample 2]
        [--fallback-whole-image] [--pose-upsample 2]

Prints one JSON object; ``tests/test_audit_lite.py`` compares it with ``report.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MODELS = "face_recognition_models"

# The 68-point model of the report's pose estimator: iBUG index -> (x, y, z), x right, y down, z into the
# image. Restated here on purpose: the audit must not import the code it audits.
POSE_POINTS = {0: (-42.0, 6.0, 26.0), 16: (42.0, 6.0, 26.0), 8: (0.0, 66.0, -4.0), 17: (-30.0, -10.0, 4.0),
               21: (-8.0, -12.0, -3.0), 22: (8.0, -12.0, -3.0), 26: (30.0, -10.0, 4.0), 27: (0.0, -1.0, -3.0),
               30: (0.0, 20.1, -14.0), 31: (-7.0, 24.0, -5.0), 33: (0.0, 25.5, -9.0), 35: (7.0, 24.0, -5.0),
               36: (-24.0, 0.5, 4.0), 39: (-11.0, 0.5, 0.0), 42: (11.0, 0.5, 0.0), 45: (24.0, 0.5, 4.0),
               48: (-14.6, 40.7, -3.0), 54: (14.6, 40.7, -3.0), 51: (0.0, 36.0, -8.0), 57: (0.0, 46.0, -7.0),
               62: (0.0, 40.0, -7.0)}


class Dlib:
    def __init__(self, upsample: int, fallback_whole_image: bool, pose_upsample: int):
        import dlib
        import face_recognition_models

        models = Path(face_recognition_models.__file__).parent / "models"
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.sp68 = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample, self.fallback, self.pose_upsample = upsample, fallback_whole_image, pose_upsample

    def descriptor(self, image: np.ndarray):
        faces = list(self.detector(image, self.upsample))
        if faces:
            box = max(faces, key=lambda r: r.width() * r.height())
        elif self.fallback:
            box = self.dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
        else:
            return None
        chip = self.dlib.get_face_chip(image, self.sp5(image, box), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip, 0), dtype=np.float64)

    def pose(self, image: np.ndarray):
        faces = list(self.detector(image, self.pose_upsample))
        if not faces:
            return None
        box = max(faces, key=lambda r: r.width() * r.height())
        shape = self.sp68(image, box)
        index = sorted(POSE_POINTS)
        q = np.array([[shape.part(k).x, shape.part(k).y] for k in index], dtype=np.float64)
        X = np.array([POSE_POINTS[k] for k in index])
        X, q = X - X.mean(axis=0), q - q.mean(axis=0)
        m = np.linalg.lstsq(X, q, rcond=None)[0].T          # 2 x 3: scale * first two rotation rows
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        r = u @ vt
        r3 = np.cross(r[0], r[1])
        yaw = np.degrees(np.arcsin(np.clip(-r3[0], -1, 1)))
        pitch = np.degrees(np.arctan2(r3[1], r3[2]))
        return yaw, pitch


def rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def share(values):
    judged = [v for v in values if v is not None]
    return {"matched": int(sum(judged)), "evaluable": len(judged),
            "rate": (sum(judged) / len(judged)) if judged else None}


def audit(run_dir: Path, evaluator: str, upsample: int, fallback: bool, pose_upsample: int) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    lines = [json.loads(x) for x in (run_dir / "verification.jsonl").read_text().splitlines()]
    lines = [x for x in lines if "error" not in x]
    threshold = report["evaluators"][evaluator]["threshold"]
    d = Dlib(upsample, fallback, pose_upsample)
    ids = [x["id"] for x in lines]
    person = [i.split("/")[0] for i in ids]
    orig = [d.descriptor(rgb(x["source"])) for x in lines]
    out = [d.descriptor(rgb(run_dir / "images" / f"{i}.png")) for i in ids]
    inv = [d.descriptor(rgb(run_dir / "inversions" / f"{i}.png")) if (run_dir / "inversions" / f"{i}.png").is_file()
           else "absent" for i in ids]

    def same(a, b):
        return a is not None and b is not None and float(np.linalg.norm(a - b)) <= threshold

    result = {}
    for name, probes in (("output", out), ("inversion", inv)):
        own, other, closed = [], [], []
        gallery = [j for j in range(len(ids)) if orig[j] is not None]
        for i, p in enumerate(probes):
            if isinstance(p, str):  # no inversion image
                own.append(None), other.append(None), closed.append(None)
                continue
            own.append(same(orig[i], p) if orig[i] is not None else None)
            others = [j for j in gallery if j != i and person[j] == person[i]]
            other.append(any(same(orig[j], p) for j in others) if others else None)
            if orig[i] is None:
                closed.append(None)
            elif p is None:
                closed.append(False)
            else:
                dist = [float(np.linalg.norm(orig[j] - p)) for j in gallery]
                closed.append(person[gallery[int(np.argmin(dist))]] == person[i])
        result[name] = {"own_original": own, "other_photo": other, "closed_set": closed}
    attacks = {}
    for kind in ("own_original", "other_photo", "closed_set"):
        o, v = result["output"][kind], result["inversion"][kind]
        both = [(a, b) for a, b in zip(o, v) if a is not None and b is not None]
        attacks[kind] = {"output": share(o), "inversion": share(v),
                         "gain": (sum(b for _, b in both) - sum(a for a, _ in both)) / len(both) if both else None}

    poses, dlib68_ids = {}, []
    for x in lines:
        if x.get("pose_estimator") and x["pose_estimator"].startswith("dlib 68"):
            po, pa = d.pose(rgb(x["source"])), d.pose(rgb(run_dir / "images" / f"{x['id']}.png"))
            poses[x["id"]] = None if po is None or pa is None else (pa[0] - po[0], pa[1] - po[1])
            dlib68_ids.append(x["id"])
    limits = report["verdict"]["thresholds"]
    privacy, utility = [], []
    for k, x in enumerate(lines):
        privacy.append(not result["output"]["own_original"][k] and x.get("face_detected", True))
        delta = poses.get(x["id"]) if x["id"] in poses else (x.get("pose_delta") or None)
        kept = delta is not None and abs(delta[0]) <= limits["max_yaw_deg"] and abs(delta[1]) <= limits["max_pitch_deg"]
        if "expression" in report["verdict"]["utility_checks"]:
            kept = kept and bool((x.get("expression") or {}).get("same"))
        utility.append(kept)
    n = len(lines)
    same_expr = [(x.get("expression") or {}).get("same") for x in lines]
    return {"evaluated": n, "threshold": threshold, "attacks": attacks,
            "pose_dlib68": {"images": len(dlib68_ids), "delta": poses},
            "expression_same": sum(1 for s in same_expr if s), "expression_count": sum(1 for s in same_expr if s is not None),
            "privacy": sum(privacy), "utility": sum(utility), "passed": sum(p and u for p, u in zip(privacy, utility))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--evaluator", default="dlib_resnet_crops")
    parser.add_argument("--upsample", type=int, default=2)
    parser.add_argument("--fallback-whole-image", action="store_true")
    parser.add_argument("--pose-upsample", type=int, default=2)
    args = parser.parse_args(argv)
    result = audit(args.run_dir, args.evaluator, args.upsample, args.fallback_whole_image, args.pose_upsample)
    json.dump(result, sys.stdout, indent=1, default=lambda o: o.item())  # numpy scalars
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
