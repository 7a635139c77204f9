"""One optimisation step of the paper's networks at batch 1: time and peak memory on this machine.

    python experiments/bench_step.py [--device cpu] [--repeats 3] [--batch-size 1]
        [--channels-last] [--compile] [--loss-resolution 256] [--precision bf16]

Config-f 1024 StyleGAN2 + ArcFace IR-SE-50 + FaRL ViT-B/16 with random weights (the same compute
as the real checkpoints): one forward of the generator and both loss networks and one backward to
the trainable W+ rows, as in every step of the anonymisation loop.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from anon.runtime.run import CONFIG_DIR, build_module  # noqa: E402
from experiments.bench import FULL  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--loss-resolution", type=int, default=None)
    parser.add_argument("--precision", default="32", choices=["32", "tf32", "bf16"])
    parser.add_argument("--compare-eager", action="store_true",
                        help="also run the plain step once and print how far these options move its outputs")
    parser.add_argument("--profile", type=Path, default=None,
                        help="profile one more step with torch.profiler; write its top operators by device time here")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("anonymize", overrides=["dataset.images=-", "dataset.inversions=-", "dataset.neighbours=-",
                                              *FULL])
    torch.manual_seed(0)
    module = build_module(cfg).to(args.device)
    g, n = module.generator, args.batch_size
    with torch.no_grad():
        w = g.mapping(torch.randn(2 * n, g.z_dim, device=args.device))
        target = torch.cat([g(w[i:i + 1]) for i in range(n)]).clamp(-1, 1)
        ref = module.loss.reference(module.identity, module.attribute, target)
    frozen, trainable = module.latent.split(w[:n], w[n:])
    eager = one_step(module.step_function(), frozen, trainable, ref) if args.compare_eager else None
    module.channels_last, module.compile = args.channels_last, args.compile
    module.loss_resolution, module.precision = args.loss_resolution, args.precision
    step = module.step_function()
    print(f"device={args.device} threads={torch.get_num_threads()} after setup: peak RSS {peak_rss_gib():.2f} GiB",
          flush=True)
    times = []
    for _ in range(args.repeats):
        code = trainable.clone().requires_grad_(True)
        start = time.perf_counter()
        _, terms = step(frozen, code, ref)
        terms["total"].sum().backward()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        print(f"  forward+backward: {times[-1]:.2f} s", flush=True)
    options = " ".join(f"{k}={v}" for k, v in vars(args).items() if k not in ("device", "repeats"))
    print(f"one step (1024 px G + IR-SE-50 + FaRL; {options}): median {sorted(times)[len(times) // 2]:.2f} s "
          f"= {sorted(times)[len(times) // 2] / n:.2f} s/image; peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    if eager is not None:
        report_deviation(eager, one_step(step, frozen, trainable, ref))
    if args.profile is not None:
        profile_step(step, frozen, trainable, ref, args.profile)
    return 0


def profile_step(step, frozen, trainable, ref, path: Path) -> None:
    """Where one step's time goes: the 25 operators (and kernels) with the most device time."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        one_step(step, frozen, trainable, ref)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=25)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    print(table, flush=True)


def one_step(step, frozen, trainable, ref) -> dict:
    code = trainable.clone().requires_grad_(True)
    _, terms = step(frozen, code, ref)
    terms["total"].sum().backward()
    return {"terms": {k: v.detach() for k, v in terms.items()}, "grad": code.grad}


def report_deviation(eager: dict, other: dict) -> None:
    """How far an option moves one step's loss terms and the gradient on the trainable rows."""
    for key, value in eager["terms"].items():
        print(f"  {key}: eager {value.tolist()} -> {other['terms'][key].tolist()}")
    a, b = eager["grad"].flatten(), other["grad"].flatten()
    print(f"  gradient: relative error {float((a - b).norm() / a.norm()):.3g}, "
          f"cosine {float(torch.nn.functional.cosine_similarity(a, b, dim=0)):.6f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
