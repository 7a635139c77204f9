"""Golden outputs of NVIDIA's StyleGAN2 generator (stylegan2-ada-pytorch): synthesis from W+ and mapping.

Official code: NVlabs/stylegan2-ada-pytorch ``training/networks.py`` with its ``torch_utils`` and
``dnnlib``: ``Generator`` at 64 px with config-f widths (channel_base 32768, channel_max 512, 8 mapping
layers) and the ADA training's ``conv_clamp=256``; ``num_fp16_res=0`` and ``force_fp32=True`` keep it in
float32. On CPU tensors the official ``bias_act`` / ``upfirdn2d`` / ``conv2d_gradfix`` choose their own
reference (pure PyTorch) implementations; nothing is stubbed or compiled. Weights are seeded at the
official initialisation scale (unit normal for equalised-lr tensors, mapping weights and biases /
lr_mul 0.01, affine biases + 1); the ``resample_filter`` buffers keep the official values and are stored
in the ``.pt``. The network pickle itself is not committed (it embeds the official source code); the
test rebuilds it from the seed with the project's pickle-layout helper. Writes
``tests/golden/stylegan2_nvidia.{json,pt}``.

    python experiments/golden/make_stylegan2_nvidia.py --official-git <mirror>/NVlabs+stylegan2-ada-pytorch/repo
"""
from __future__ import annotations

import importlib
import sys

import torch

from official import export_sources, parse_args, seed_official_model, source_record
from tests.golden_data import seeded_tensor, write_golden

WEIGHT_SEED, W_SEED, Z_SEED, BATCH, PSI = 15051, 15052, 15053, 2, 0.7
ARCH = dict(resolution=64, z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768, channel_max=512,
            mapping_lr_mul=0.01, conv_clamp=256)
SEEDING = dict(equalized_lr=True, rules=[[r"^mapping\.fc\d+\.(weight|bias)$", 100.0, 0.0],
                                         [r"affine\.bias$", 1.0, 1.0]])


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    src, commit = export_sources(args.official_git)
    sys.path.insert(0, str(src))
    networks = importlib.import_module("training.networks")
    g = networks.Generator(z_dim=ARCH["z_dim"], c_dim=0, w_dim=ARCH["w_dim"], img_resolution=ARCH["resolution"],
                           img_channels=3, mapping_kwargs=dict(num_layers=ARCH["mapping_layers"]),
                           synthesis_kwargs=dict(channel_base=ARCH["channel_base"], channel_max=ARCH["channel_max"],
                                                 num_fp16_res=0, conv_clamp=ARCH["conv_clamp"])).eval()
    layout, constant_tensors = seed_official_model(g, WEIGHT_SEED, SEEDING, "resample_filter")  # FIR: official

    ws = seeded_tensor((BATCH, g.num_ws, g.w_dim), W_SEED)
    z = torch.randn(BATCH, g.z_dim, generator=torch.Generator().manual_seed(Z_SEED))
    with torch.no_grad():
        images = g.synthesis(ws, noise_mode="const", force_fp32=True)
        w_truncated = g.mapping(z, None, truncation_psi=PSI)
    meta = source_record(
        "NVlabs/stylegan2-ada-pytorch", commit, ["training/networks.py", "torch_utils/ops/bias_act.py",
                                                 "torch_utils/ops/upfirdn2d.py", "torch_utils/ops/conv2d_resample.py",
                                                 "torch_utils/ops/conv2d_gradfix.py", "torch_utils/ops/fma.py",
                                                 "torch_utils/misc.py", "torch_utils/persistence.py"],
        call="Generator(512, 0, 512, 64, 3, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict("
             "channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=256)).eval(); "
             f"images = G.synthesis(ws, noise_mode='const', force_fp32=True); w = G.mapping(z, None, truncation_psi={PSI})",
        cpu_ops="the official ops' own reference implementations (impl='cuda' needs CUDA tensors)",
        checkpoint="network pickle dict(G, D, G_ema, augment_pipe) with G_ema = the seeded Generator",
        outputs={"images": "B x 3 x 64 x 64 from ws", "w": f"B x {g.num_ws} x 512, truncation {PSI}"},
        arch=ARCH, truncation_psi=PSI, weight_seed=WEIGHT_SEED, seeding=SEEDING, ws_seed=W_SEED,
        ws_shape=list(ws.shape), ws_range=[-1, 1], torch_version=torch.__version__, layout=layout)
    write_golden("stylegan2_nvidia", meta, {"images": images, "z": z, "w": w_truncated, **constant_tensors})
    print(f"images {tuple(images.shape)} std {images.std():.3f}, w std {w_truncated.std():.3f}, commit {commit}")


if __name__ == "__main__":
    main()
