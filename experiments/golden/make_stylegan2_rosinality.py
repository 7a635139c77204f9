"""Golden outputs of rosinality's StyleGAN2 generator: synthesis from W+ and the mapping network.

Official code: rosinality/stylegan2-pytorch ``model.py`` (``Generator(64, 512, 8)``, config-f
channels, 64 px). Its ``op`` package compiles CUDA extensions when imported; on CPU tensors its
``fused_leaky_relu`` and ``upfirdn2d`` take their pure-PyTorch branches and never touch the compiled
module, so ``torch.utils.cpp_extension.load`` is replaced during that import by a function returning
a placeholder (recorded in the JSON). Weights are seeded at the official initialisation scale (unit
normal for equalised-lr tensors, mapping weights and biases / lr_mul 0.01, modulation biases + 1);
the FIR kernel buffers keep the official values and are stored in the ``.pt``. Writes
``tests/golden/stylegan2_rosinality.{json,pt}``: the images, and z with its mapping output.

    python experiments/golden/make_stylegan2_rosinality.py \
        --official-git <mirror>/rosinality+stylegan2-pytorch/repo
"""
from __future__ import annotations

import sys

import torch
import torch.utils.cpp_extension

from official import export_sources, load_file, parse_args, seed_official_model, source_record
from tests.golden_data import seeded_tensor, write_golden

WEIGHT_SEED, W_SEED, Z_SEED, BATCH, SIZE, STYLE_DIM, N_MLP = 15031, 15032, 15033, 2, 64, 512, 8
SEEDING = dict(equalized_lr=True, rules=[[r"^style\.\d+\.(weight|bias)$", 100.0, 0.0],
                                         [r"modulation\.bias$", 1.0, 1.0]])


def import_model(src):
    """``model.py`` with its ``op`` package imported while the CUDA build is replaced by a placeholder."""
    sys.path.insert(0, str(src))
    real_load = torch.utils.cpp_extension.load
    torch.utils.cpp_extension.load = lambda *a, **k: "cuda extension not built (CPU run)"
    try:
        return load_file("rosinality_model", src / "model.py")
    finally:
        torch.utils.cpp_extension.load = real_load


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    src, commit = export_sources(args.official_git)
    model = import_model(src)
    g = model.Generator(SIZE, STYLE_DIM, N_MLP).eval()
    layout, constant_tensors = seed_official_model(g, WEIGHT_SEED, SEEDING, "kernel")  # FIR buffers stay official
    # latent_avg: not stored; the test rebuilds it from latent_avg_seed (tests/nets/test_golden.py)

    ws = seeded_tensor((BATCH, g.n_latent, STYLE_DIM), W_SEED)
    z = torch.randn(BATCH, STYLE_DIM, generator=torch.Generator().manual_seed(Z_SEED))
    with torch.no_grad():
        images, _ = g([ws], input_is_latent=True, randomize_noise=False)
        w = g.style(z)
    meta = source_record(
        "rosinality/stylegan2-pytorch", commit, ["model.py", "op/fused_act.py", "op/upfirdn2d.py",
                                                 "op/conv2d_gradfix.py"],
        call="Generator(64, 512, 8).eval(); images = g([ws], input_is_latent=True, randomize_noise=False)[0]; "
             "w = g.style(z)",
        cpu_ops="torch.utils.cpp_extension.load stubbed at import; on CPU the official ops run their "
                "pure-PyTorch branches (fused_leaky_relu: leaky_relu * sqrt(2); upfirdn2d_native)",
        checkpoint="{'g_ema': state_dict, 'latent_avg': latent_avg} (latent_avg: seeded, 512)",
        outputs={"images": "B x 3 x 64 x 64 from ws", "w": "mapping of z (B x 512)"},
        weight_seed=WEIGHT_SEED, seeding=SEEDING, latent_avg_seed=W_SEED + 10, ws_seed=W_SEED,
        ws_shape=list(ws.shape), ws_range=[-1, 1],         torch_version=torch.__version__, layout=layout)
    tensors = {"images": images, "z": z, "w": w,
               **constant_tensors}
    write_golden("stylegan2_rosinality", meta, tensors)
    print(f"images {tuple(images.shape)} std {images.std():.3f}, w std {w.std():.3f}, commit {commit}")


if __name__ == "__main__":
    main()
