"""Throughput of the anonymisation loop: images/second, TFLOP/s and memory per image, vs the official loop.

    python experiments/bench.py                                  # tiny config on CPU: B = 1, 8, 16
    python experiments/bench.py --full --device cuda --batch-sizes 1 8 16 32 --json out.json

Every row anonymises the same images for the same number of steps (the paper's 50 by default).
The first row, ``official``, re-creates the official per-image loop: batch 1, fp32, grouped
("fused") modulated convolutions, full-resolution losses, no early stop -- so every speed-up is a
ratio measured in the same run on the same machine. ``--full`` uses config-f 1024 + IR-SE-50 +
FaRL ViT-B/16 with random weights (the compute of the real networks; no checkpoint needed).
FLOPs are counted by ``torch.utils.flop_counter`` on one step (forward + backward).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from anon.run import CONFIG_DIR, build_module  # noqa: E402

FULL = ["generator=stylegan2_config_f", "identity=arcface_ir_se50", "identity.checkpoint=null",
        "attribute=farl_vitb16", "attribute.checkpoint=null"]


def make_problem(module, n: int, seed: int = 0):
    g = module.generator
    gen = torch.Generator().manual_seed(seed)
    device = next(g.parameters()).device
    with torch.no_grad():
        w_inv = g.mapping(torch.randn(n, g.z_dim, generator=gen).to(device))
        w_nb = g.mapping(torch.randn(n, g.z_dim, generator=gen).to(device), truncation_psi=0.7)
        images = torch.cat([g(w_inv[i:i + 1]) for i in range(n)]).clamp(-1, 1)
    return images, w_inv, w_nb


def step_flops(module, images, w_inv, w_nb) -> float:
    """FLOPs of one optimisation step for one image (forward + backward)."""
    steps = module.steps
    module.steps = 1
    try:
        with FlopCounterMode(display=False) as counter:
            module.optimise(images[:1], w_inv[:1], w_nb[:1])
    finally:
        module.steps = steps
    # optimise() = reference features + 1 step + the final render and losses; keep only the step.
    with FlopCounterMode(display=False) as final_only:
        with torch.no_grad():
            ref = module.loss.reference(module.identity, module.attribute, images[:1])
            module.loss(module.identity, module.attribute, module.generator(w_inv[:1]), ref)
    return float(counter.get_total_flops() - final_only.get_total_flops())


def measure(module, problem, batch_size: int, device: str, label: str, flops_per_step: float,
            limit: int | None = None) -> dict:
    images, w_inv, w_nb = (t[:limit] for t in problem) if limit else problem
    n = images.shape[0]
    cuda = device.startswith("cuda")
    module.optimise(images[:batch_size], w_inv[:batch_size], w_nb[:batch_size])  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    sims = []
    for i in range(0, n, batch_size):
        out = module.optimise(images[i:i + batch_size], w_inv[i:i + batch_size], w_nb[i:i + batch_size])
        sims.append(out["final"]["similarity"].float().cpu())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {"run": label, "batch_size": batch_size, "images": n, "seconds": seconds, "images_per_second": n / seconds,
           "tflops": flops_per_step * module.steps * n / seconds / 1e12,
           "final_similarity": torch.cat(sims).tolist()}
    if cuda:
        row["peak_memory_gib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
        row["memory_per_image_gib"] = row["peak_memory_gib"] / batch_size
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--images", type=int, default=16, help="images per row (a multiple of each B)")
    parser.add_argument("--baseline-images", type=int, default=None, help="images for the official row (default all)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="config-f 1024 + IR-SE-50 + FaRL (random weights)")
    parser.add_argument("--precision", default="32", choices=["32", "tf32", "bf16"])
    parser.add_argument("--loss-resolution", type=int, default=None)
    parser.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    overrides = ["dataset.images=-", "dataset.inversions=-", "dataset.neighbours=-", f"module.steps={args.steps}",
                 *(FULL if args.full else []), *args.overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("anonymize", overrides=overrides)
    torch.manual_seed(0)
    module = build_module(cfg).to(args.device)
    problem = make_problem(module, args.images)
    flops = step_flops(module, *problem)
    print(f"device={args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}) "
          f"threads={torch.get_num_threads()} resolution={module.generator.resolution} steps={args.steps} "
          f"images={args.images} step={flops / 1e9:.4g} GFLOP/image", flush=True)

    rows = []
    module.generator.set_fused_modconv(True)
    rows.append(measure(module, problem, 1, args.device, "official", flops, args.baseline_images))
    module.generator.set_fused_modconv(False)
    module.precision, module.loss_resolution = args.precision, args.loss_resolution
    for b in args.batch_sizes:
        rows.append(measure(module, problem, b, args.device, "anon", flops))
    base = rows[0]["images_per_second"]
    ref = torch.tensor(rows[0]["final_similarity"])  # the same first images in every row
    print(f"{'run':>9} {'B':>3} {'img/s':>9} {'s/img':>8} {'GFLOP/s':>9} {'speed-up':>9} {'max|dsim|':>9} {'GiB/img':>8}")
    for row in rows:
        row["speedup"] = row["images_per_second"] / base
        row["max_similarity_change"] = float((torch.tensor(row["final_similarity"][:len(ref)]) - ref).abs().max())
        mem = f"{row['memory_per_image_gib']:8.2f}" if "memory_per_image_gib" in row else f"{'-':>8}"
        print(f"{row['run']:>9} {row['batch_size']:>3} {row['images_per_second']:9.3f} "
              f"{1 / row['images_per_second']:8.3f} {row['tflops'] * 1e3:9.1f} {row['speedup']:8.2f}x "
              f"{row['max_similarity_change']:9.4f} {mem}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "steps": args.steps, "full": args.full,
                                         "precision": args.precision, "loss_resolution": args.loss_resolution,
                                         "gflop_per_step_image": flops / 1e9, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
