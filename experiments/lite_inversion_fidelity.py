"""Inversion fidelity of the lite set: z-only optimisation vs pivotal tuning, on the shared LFW sample.

For the first ``--count`` people of ../shared/data/lfw_sample (one photo each): MTCNN + FFHQ crop at
64 px (zoom 0.6, as conf/experiment/lite.yaml), then each inverter; reports, per inverter, the share
of inversions that dlib (crop settings) matches to their own 64 px original at 0.6, the mean dlib
distance, the pixel MSE and the seconds per face.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python experiments/lite_inversion_fidelity.py --count 24
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from anon.data.align_policy import align_with_policy
from anon.data.images import load_rgb, to_uint8
from anon.method.inversion import OptimisationInverter
from anon.metrics.dlib_identity import DlibIdentity
from anon.nets.dcgan import DCGANGenerator
from anon.nets.mtcnn import MTCNNDetector
from anon.nets.tuned import render
from anon.method.pivotal import PivotalInverter
from anon.stages.align import best_face

LFW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lfw_sample"
Z_ONLY = dict(steps=150, lr=0.05, init="random", starts=1, latent_reg=0.001)


def aligned_faces(root: Path, count: int) -> tuple[list[str], torch.Tensor]:
    detector = MTCNNDetector()
    ids, crops = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        if len(ids) == count:
            break
        photo = sorted(person.glob("*.jpg"))[0]
        pixels = load_rgb(photo)
        crop, _ = align_with_policy(pixels, best_face(detector.detect(pixels)), 64, "unaligned", 32, 0.6)
        ids.append(photo.stem)
        crops.append(torch.from_numpy(np.asarray(crop)).permute(2, 0, 1).float() / 127.5 - 1)
    return ids, torch.stack(crops)


def fidelity(dlib: DlibIdentity, originals: torch.Tensor, inversions: torch.Tensor) -> dict:
    distances = []
    for a, b in zip(to_uint8(originals), to_uint8(inversions)):
        da, db = dlib.describe(a), dlib.describe(b)
        distances.append(np.nan if da is None or db is None else dlib.distance(da, db))
    d = np.asarray(distances)
    return {"match": float(np.mean(d < dlib.threshold)), "distance": float(np.nanmean(d)),
            "mse": float((originals - inversions).square().mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tune-steps", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    ids, faces = aligned_faces(LFW, args.count)
    g = DCGANGenerator().requires_grad_(False)
    dlib = DlibIdentity(upsample=2, fallback_whole_image=True)
    inverters = {"z-only": OptimisationInverter(g, **Z_ONLY),
                 "pivotal": PivotalInverter(g, **Z_ONLY, tune_steps=args.tune_steps)}
    print(f"{len(ids)} LFW faces, 64 px; originals vs themselves: {fidelity(dlib, faces, faces)}")
    for name, inverter in inverters.items():
        started, outputs = time.perf_counter(), []
        for i in range(0, len(ids), args.batch):
            out = inverter(faces[i:i + args.batch], ids[i:i + args.batch])
            with torch.no_grad():
                outputs.append(render(g, out["codes"], out["offsets"]) if isinstance(out, dict) else g(out))
        seconds = (time.perf_counter() - started) / len(ids)
        print(f"{name}: {fidelity(dlib, faces, torch.cat(outputs))}, {seconds:.2f} s/face", flush=True)


if __name__ == "__main__":
    main()
