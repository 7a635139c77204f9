"""Throughput of the anonymisation loop: images/second, TFLOP/s and memory per image, vs the official loop.

    python experiments/bench.py                                  # tiny config on CPU: B = 1, 8, 16
    python experiments/bench.py --full --device cuda --batch-sizes 1 8 16 32 --json out.json
    python experiments/bench.py --rows 16 16,channels_last 16,compile 16,loss32 16,stop0.05  # one process

Every row anonymises the same images for the same number of steps (the paper's 50 by default).
The first row, ``official``, re-creates the official per-image loop: batch 1, fp32, grouped
("fused") modulated convolutions, full-resolution losses, no early stop -- so every speed-up is a
ratio measured in the same run on the same machine. Each row also reports how far its final
identity similarity and attribute loss (both at full resolution) move from the official row's.
``--full`` uses config-f 1024 + IR-SE-50 + FaRL ViT-B/16 with random weights (the compute of the
real networks; no checkpoint needed).
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

from anon.runtime.run import CONFIG_DIR, build_module  # noqa: E402

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


ROW_OPTIONS = {"bf16": ("precision", "bf16"), "tf32": ("precision", "tf32"), "fp32": ("precision", "32"),
               "channels_last": ("channels_last", True), "compile": ("compile", True)}


def parse_row(spec: str) -> dict:
    """``"16,bf16,loss256,stop0.02,channels_last,compile"`` -> batch size and FalcoModule settings."""
    settings = {"precision": "32", "loss_resolution": None, "early_stop_tolerance": None, "channels_last": False,
                "compile": False}
    batch_size = None
    for token in filter(None, spec.split(",")):
        if token.isdigit():
            batch_size = int(token)
        elif token.startswith("loss") and token[4:].isdigit():
            settings["loss_resolution"] = int(token[4:])
        elif token.startswith("stop") and token[4:].replace(".", "", 1).isdigit():
            settings["early_stop_tolerance"] = float(token[4:])
        elif token in ROW_OPTIONS:
            key, value = ROW_OPTIONS[token]
            settings[key] = value
        else:
            raise SystemExit(f"error: unknown row option {token!r} in {spec!r} (a batch size, "
                             f"lossN, stopTOL or one of {', '.join(ROW_OPTIONS)})")
    if batch_size is None:
        raise SystemExit(f"error: row {spec!r} names no batch size")
    return {"batch_size": batch_size, "label": spec, **settings}


def measure(module, problem, row: dict, device: str, flops_per_step: float, limit: int | None = None) -> dict:
    images, w_inv, w_nb = (t[:limit] for t in problem) if limit else problem
    n, batch_size = images.shape[0], row["batch_size"]
    cuda = device.startswith("cuda")
    for key in ("precision", "loss_resolution", "early_stop_tolerance", "channels_last", "compile"):
        setattr(module, key, row[key])
    started = time.perf_counter()
    module.optimise(images[:batch_size], w_inv[:batch_size], w_nb[:batch_size])  # warm-up (and compile)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    warmup = time.perf_counter() - started
    start = time.perf_counter()
    sims, attrs, steps = [], [], []
    for i in range(0, n, batch_size):
        out = module.optimise(images[i:i + batch_size], w_inv[i:i + batch_size], w_nb[i:i + batch_size])
        sims.append(out["final"]["similarity"].float().cpu())
        attrs.append(out["final"]["attribute"].float().cpu())
        steps.append(out["steps"].cpu())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    steps_done = torch.cat(steps).float()  # all equal to module.steps unless early stop is on
    result = {"run": row["label"], **row, "images": n, "seconds": seconds, "warmup_seconds": warmup,
              "images_per_second": n / seconds, "tflops": flops_per_step * float(steps_done.sum()) / seconds / 1e12,
              "mean_steps": float(steps_done.mean()),
              "final_similarity": torch.cat(sims).tolist(), "final_attribute_loss": torch.cat(attrs).tolist()}
    if cuda:
        result["peak_memory_gib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
        result["memory_per_image_gib"] = result["peak_memory_gib"] / batch_size
    return result


def compare_to_official(rows: list[dict]) -> None:
    """Speed-up and the change of the final (full-resolution) loss terms on the same first images."""
    base = rows[0]["images_per_second"]
    sim, attr = torch.tensor(rows[0]["final_similarity"]), torch.tensor(rows[0]["final_attribute_loss"])
    for row in rows:
        row["speedup"] = row["images_per_second"] / base
        row["max_similarity_change"] = float((torch.tensor(row["final_similarity"][:len(sim)]) - sim).abs().max())
        row["max_attribute_loss_change"] = float(
            (torch.tensor(row["final_attribute_loss"][:len(attr)]) - attr).abs().max())


def print_table(rows: list[dict]) -> None:
    print(f"{'run':>28} {'img/s':>9} {'s/img':>8} {'TFLOP/s':>8} {'speed-up':>9} {'max|dsim|':>9} "
          f"{'max|dattr|':>10} {'GiB/img':>8} {'warm-up s':>9}")
    for row in rows:
        mem = f"{row['memory_per_image_gib']:8.2f}" if "memory_per_image_gib" in row else f"{'-':>8}"
        print(f"{row['run']:>28} {row['images_per_second']:9.3f} {1 / row['images_per_second']:8.3f} "
              f"{row['tflops']:8.3f} {row['speedup']:8.2f}x {row['max_similarity_change']:9.4f} "
              f"{row['max_attribute_loss_change']:10.4f} {mem} {row['warmup_seconds']:9.1f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--rows", nargs="+", default=None,
                        help="rows after the official one, each 'B[,bf16|tf32][,lossN][,channels_last][,compile]' "
                             "(default: one per --batch-sizes with --precision/--loss-resolution)")
    parser.add_argument("--images", type=int, default=16, help="images per row (a multiple of each B)")
    parser.add_argument("--baseline-images", type=int, default=None, help="images for the official row (default all)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="config-f 1024 + IR-SE-50 + FaRL (random weights)")
    parser.add_argument("--precision", default="32", choices=["32", "tf32", "bf16"])
    parser.add_argument("--loss-resolution", type=int, default=None)
    parser.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides")
    parser.add_argument("--json", type=Path, help="also write the table here (rewritten after every row)")
    args = parser.parse_args(argv)
    suffix = ({"32": "", "tf32": ",tf32", "bf16": ",bf16"}[args.precision]
              + (f",loss{args.loss_resolution}" if args.loss_resolution else ""))
    specs = args.rows or [f"{b}{suffix}" for b in args.batch_sizes]
    plan = [parse_row(spec) for spec in specs]
    for row in plan:
        if args.images % row["batch_size"]:
            raise SystemExit(f"error: --images {args.images} is not a multiple of the batch size in {row['label']!r}")

    overrides = ["dataset.images=-", "dataset.inversions=-", "dataset.neighbours=-", f"module.steps={args.steps}",
                 *(FULL if args.full else []), *args.overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("anonymize", overrides=overrides)
    torch.manual_seed(0)
    module = build_module(cfg).to(args.device)
    problem = make_problem(module, args.images)
    flops = step_flops(module, *problem)
    print(f"device={args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}) "
          f"torch={torch.__version__} threads={torch.get_num_threads()} resolution={module.generator.resolution} "
          f"steps={args.steps} images={args.images} step={flops / 1e9:.4g} GFLOP/image", flush=True)

    def save(rows):
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
                else "cpu", "torch": torch.__version__, "steps": args.steps, "full": args.full,
                "gflop_per_step_image": flops / 1e9, "rows": rows}, indent=2))

    module.generator.set_fused_modconv(True)
    rows = [measure(module, problem, {**parse_row("1"), "label": "official"}, args.device, flops,
                    args.baseline_images)]
    module.generator.set_fused_modconv(False)
    skipped = []
    for row in plan:
        try:
            rows.append(measure(module, problem, row, args.device, flops))
        except torch.OutOfMemoryError:  # a batch size too big for this device: say so, go on
            torch.cuda.empty_cache()
            skipped.append({"run": row["label"], "error": "out of memory"})
            print(f"  skipped {row['label']}: out of memory", flush=True)
            continue
        compare_to_official(rows)
        print(f"  done {row['label']}: {rows[-1]['images_per_second']:.3f} img/s", flush=True)
        save(rows + skipped)  # a row that finished is kept even if a later one runs out of time
    print_table(rows)
    for row in skipped:
        print(f"{row['run']:>28}  out of memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
