"""Throughput of the anonymisation loop: images/second at several batch sizes, same images, same steps.

    python experiments/bench.py                      # tiny config on CPU, B = 1, 8, 16
    python experiments/bench.py --batch-sizes 1 4 --images 8 --steps 50 --json out.json

Every batch size anonymises the same images for the same number of steps (the paper's 50 by
default), so the ratio to B = 1 -- the official per-image loop -- is the speed-up of batching.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from anon.run import CONFIG_DIR, build_module  # noqa: E402


def make_problem(module, n: int, seed: int = 0):
    g = module.generator
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w_inv = g.mapping(torch.randn(n, g.z_dim, generator=gen))
        w_nb = g.mapping(torch.randn(n, g.z_dim, generator=gen), truncation_psi=0.7)
        images = g(w_inv)
    return images, w_inv, w_nb


def measure(module, images, w_inv, w_nb, batch_size: int, device: str) -> dict:
    n = images.shape[0]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    module.optimise(images[:batch_size].to(device), w_inv[:batch_size].to(device), w_nb[:batch_size].to(device))  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        module.optimise(images[sl].to(device), w_inv[sl].to(device), w_nb[sl].to(device))
    sync()
    seconds = time.perf_counter() - start
    row = {"batch_size": batch_size, "images": n, "seconds": seconds, "images_per_second": n / seconds}
    if device.startswith("cuda"):
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--images", type=int, default=16, help="images per measurement (a multiple of each B)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides, e.g. generator=stylegan2_ffhq1024")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("anonymize", overrides=["dataset.images=-", "dataset.inversions=-", "dataset.neighbours=-",
                                              f"module.steps={args.steps}", *args.overrides])
    torch.manual_seed(0)
    module = build_module(cfg).to(args.device)
    images, w_inv, w_nb = make_problem(module, args.images)
    print(f"device={args.device} threads={torch.get_num_threads()} generator={cfg.generator._target_} "
          f"resolution={module.generator.resolution} steps={args.steps} images={args.images}")
    rows = [measure(module, images, w_inv, w_nb, b, args.device) for b in args.batch_sizes]
    base = rows[0]["images_per_second"]
    print(f"{'B':>4} {'img/s':>10} {'s/img':>10} {'vs B=' + str(rows[0]['batch_size']):>10}")
    for row in rows:
        row["speedup"] = row["images_per_second"] / base
        print(f"{row['batch_size']:>4} {row['images_per_second']:>10.3f} {1 / row['images_per_second']:>10.3f} "
              f"{row['speedup']:>9.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "steps": args.steps, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
