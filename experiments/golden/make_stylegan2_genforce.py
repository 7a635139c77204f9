"""Golden outputs of the GenForce StyleGAN2 generator FALCO uses: synthesis from W+ and truncated mapping.

Official code: chi0tzp/FALCO (branch cvpr23) ``models/genforce/models/stylegan2_generator.py`` (its copy
of genforce/genforce, built as ``models/load_generator.py`` does, ``latent_is_w=True``) at 64 px with
the FFHQ defaults otherwise. The calls are FALCO's: ``G(wp)`` in ``anonymize.py`` / ``invert.py`` and
``G.get_w(z, truncation=0.7, trunc_layers=18)`` in ``create_fake_dataset.py``. Pure PyTorch, no
stubs. Weights are seeded at the official initialisation scale (unit normal for equalised-lr tensors,
mapping weights and biases / lr_mul 0.01); the FIR kernel buffers keep the official values and are
stored in the ``.pt``. Writes ``tests/golden/stylegan2_genforce.{json,pt}``.

    python experiments/golden/make_stylegan2_genforce.py --official-git <mirror>/chi0tzp+FALCO/repo
"""
from __future__ import annotations

import importlib
import sys

import torch

from official import export_sources, parse_args, seed_official_model, source_record
from tests.golden_data import seeded_tensor, write_golden

WEIGHT_SEED, W_SEED, Z_SEED, BATCH, SIZE, PSI = 15041, 15042, 15043, 2, 64, 0.7
SEEDING = dict(equalized_lr=True, rules=[[r"^mapping\.dense\d+\.(weight|bias)$", 100.0, 0.0]])


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    src, commit = export_sources(args.official_git)
    sys.path.insert(0, str(src))
    genforce = importlib.import_module("models.genforce.models")
    g = genforce.build_generator(gan_type="stylegan2", resolution=SIZE, latent_is_w=True).eval()
    layout, constant_tensors = seed_official_model(g, WEIGHT_SEED, SEEDING, "kernel")  # FIR buffers stay official

    wp = seeded_tensor((BATCH, g.num_layers, g.w_space_dim), W_SEED)
    z = torch.randn(BATCH, g.z_space_dim, generator=torch.Generator().manual_seed(Z_SEED))
    with torch.no_grad():
        images = g(wp)
        w_truncated = g.get_w(z, truncation=PSI, trunc_layers=18)
    meta = source_record(
        "chi0tzp/FALCO", commit, ["models/genforce/models/stylegan2_generator.py", "models/genforce/models/__init__.py"],
        upstream="https://github.com/genforce/genforce (vendored by FALCO)",
        call=f"build_generator(gan_type='stylegan2', resolution={SIZE}, latent_is_w=True).eval(); images = G(wp); "
             f"w = G.get_w(z, truncation={PSI}, trunc_layers=18)",
        checkpoint="{'generator_smooth': state_dict} (what load_generator reads first)",
        outputs={"images": "B x 3 x 64 x 64 from wp", "w": f"B x {g.num_layers} x 512, truncation {PSI}"},
        truncation_psi=PSI, weight_seed=WEIGHT_SEED, seeding=SEEDING, ws_seed=W_SEED, ws_shape=list(wp.shape),
        ws_range=[-1, 1], torch_version=torch.__version__, layout=layout)
    write_golden("stylegan2_genforce", meta, {"images": images, "z": z, "w": w_truncated, **constant_tensors})
    print(f"images {tuple(images.shape)} std {images.std():.3f}, w std {w_truncated.std():.3f}, commit {commit}")


if __name__ == "__main__":
    main()
