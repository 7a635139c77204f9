"""How far an image optimised in a batch ends from the same image optimised alone, on the paper's networks.

    python experiments/batch_drift.py [--resolution 256] [--batch-size 3] [--steps 50] [--device cpu]

Config-f StyleGAN2 + IR-SE-50 + FaRL ViT-B/16 with random weights, Adam (the paper's settings). Each
step of a batch equals each image's solo step up to float32 rounding (tests/test_batch_step.py); over
the steps the optimisation amplifies that rounding, so the end points differ by far more. Also runs
the solo problem again from a start one float32 ulp away, to show the same drift without batching.
Prints the largest |difference| of the trainable W+ rows and of the final identity similarity.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from anon.runtime.run import CONFIG_DIR, build_module  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("anonymize", overrides=[
            "dataset.images=-", "dataset.inversions=-", "dataset.neighbours=-", f"module.steps={args.steps}",
            "generator=stylegan2_config_f", f"generator.resolution={args.resolution}", "identity=arcface_ir_se50",
            "identity.checkpoint=null", "attribute=farl_vitb16", "attribute.checkpoint=null"])
    torch.manual_seed(0)
    module = build_module(cfg).to(args.device)
    g, n = module.generator, args.batch_size
    with torch.no_grad():
        w = g.mapping(torch.randn(2 * n, g.z_dim, device=args.device))
        images = torch.cat([g(w[n + i:n + i + 1]) for i in range(n)]).clamp(-1, 1)
        w_nb = g.mapping(torch.randn(n, g.z_dim, device=args.device), truncation_psi=0.7)
    rows = slice(*module.latent.rows(g.num_ws))
    batched = module.optimise(images, w[:n], w_nb)
    alone = module.optimise(images[:1], w[:1], w_nb[:1])
    nudged_start = w_nb[:1].clone()
    nudged_start[:, rows] = torch.nextafter(nudged_start[:, rows], torch.full_like(nudged_start[:, rows], 1e9))
    nudged = module.optimise(images[:1], w[:1], nudged_start)

    def gap(a: dict, b: dict) -> str:
        return (f"W+ rows {float((a['ws'][:1, rows] - b['ws'][:, rows]).abs().amax()):.3g}, identity similarity "
                f"{float((a['final']['similarity'][:1] - b['final']['similarity']).abs().amax()):.3g}")

    moved = float((alone["ws"][:, rows] - w_nb[:1, rows]).abs().amax())
    print(f"{args.resolution} px, {args.steps} steps: image 0 moves up to {moved:.3g} in W+ from its start")
    print(f"  batch of {n} vs alone:                  {gap(batched, alone)}")
    print(f"  alone vs alone from one ulp away:     {gap(nudged, alone)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
