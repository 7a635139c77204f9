"""Why does dlib rarely re-identify 8 px pixelation on LFW? Measures, per baseline and image:

* whether dlib's HOG detector still finds the face in the anonymised image (``detected``);
* the distance when the anonymised image is described *in the original's face box* (detection taken
  from the original, landmarks and descriptor from the anonymised image): what dlib's ResNet itself
  makes of the pixelated face, independent of its detector;
* the face box width in pixels, i.e. how many blocks span the face.

    python experiments/pixelate_dlib_probe.py [--images 30] [--data ../shared/data/lfw_sample]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED_LFW = Path(os.environ.get("ANON_SHARED_DATA") or REPO.parent / "shared" / "data") / "lfw_sample"


def main(argv=None) -> int:
    from anon.method.baselines import GaussianBlur, Pixelate
    from anon.data.images import load_rgb
    from anon.metrics.dlib_identity import DlibIdentity

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--data", type=Path, default=SHARED_LFW)
    args = parser.parse_args(argv)
    paths = sorted(args.data.rglob("*.jpg"))[:args.images]
    dlib = DlibIdentity(upsample=1)
    methods = {"blur σ4": GaussianBlur(4), "pixelate 4": Pixelate(4), "pixelate 8": Pixelate(8), "pixelate 16": Pixelate(16)}
    rows = {m: {"detected": 0, "match_detected": 0, "match_in_original_box": 0, "dist_box": []} for m in methods}
    widths, judged = [], 0
    for path in paths:
        original = load_rgb(path)
        face = dlib.analyse(original)
        if face.descriptor is None:
            continue
        judged += 1
        widths.append(face.box[2] - face.box[0])
        for name, method in methods.items():
            out = method(original)
            own = dlib.analyse(out)
            r = rows[name]
            if own.detected:
                r["detected"] += 1
                r["match_detected"] += dlib.same_person(face.descriptor, own.descriptor)
            chip = dlib.chip(out, face.box)
            d = dlib.distance(face.descriptor, np.asarray(dlib.model.compute_face_descriptor(chip, 0)))
            r["dist_box"].append(d)
            r["match_in_original_box"] += d < dlib.threshold
    print(f"{judged} of {len(paths)} LFW images with a HOG face in the original; face box width "
          f"median {np.median(widths):.0f} px (min {min(widths)}, max {max(widths)}), image {original.shape[1]} px")
    print("| method | HOG finds a face in the output | re-identified (own detection) | re-identified in the "
          "original's box | mean distance in the original's box |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['detected']} / {judged} | {r['match_detected']} / {judged} | "
              f"{r['match_in_original_box']} / {judged} | {np.mean(r['dist_box']):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
