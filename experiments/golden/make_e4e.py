"""Golden output of the e4e encoder as FALCO inverts images (``pSp`` + ``invert.get_latents``).

Official code: chi0tzp/FALCO (branch cvpr23) ``models/psp.py``, ``models/encoders/psp_encoders.py``
(``Encoder4Editing(50, 'ir_se', opts)``, the omertov/encoder4editing network FALCO vendors) and
``invert.py``'s ``get_latents`` (encoder output + ``latent_avg``). A seeded official-format
checkpoint (``{'state_dict': {'encoder.*'}, 'opts', 'latent_avg'}``) is written to a temporary
folder and loaded by the official ``pSp.__init__``. ``stylegan_size`` is 32 (8 W+ layers: three read
the 16x16 map, four the 32x32 FPN level, one the 64x64 level) to keep the weights at 113 M numbers;
the IR-SE-50 trunk and the 512-wide style blocks are full size. Input: a seeded 256x256 batch.

``--one-image`` writes ``e4e_encoder_one_image`` (other seeds, one image): the fast golden that
``make mutants`` runs for each e4e mutant. The official encoder cannot be made smaller than this: its
style blocks are 512 wide with 4/5/6 convs whatever the input, the pyramid taps body units 6/20/23
(IR-SE-50 only), and 8 W+ layers is the least that reaches the fine level. It does run on a 64 px
input (4/5/6 convs on 4/8/16 px maps, most then on 1x1), but that is not a network the project's
``Encoder4Editing(input_size=64)`` builds (2/3/4 convs), so the input stays 256 px.

Stubbed imports, none of them called on this path: ``models.stylegan2.op`` (CUDA ops compiled at
import; ``EqualLinear`` without activation does not use them), torchvision, cv2, FALCO's ``lib``
package and ``models.load_generator`` (imported by ``invert.py`` for its ``main``).

    python experiments/golden/make_e4e.py --official-git <mirror>/chi0tzp+FALCO/repo [--one-image]
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, write_golden

STYLEGAN_SIZE = 32
# (weight seed, latent_avg seed, input seed, batch) of the full golden and of the one-image golden
FULL, ONE_IMAGE = (15021, 15022, 15023, 2), (15024, 15025, 15026, 1)


def _not_run(*_args, **_kwargs):
    raise RuntimeError("stubbed official op called: the golden output would not be the official one")


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], flags={"one_image": "write the one-image golden (other seeds)"})
    weight_seed, avg_seed, input_seed, batch = ONE_IMAGE if args.one_image else FULL
    src, commit = export_sources(args.official_git)
    sys.path.insert(0, str(src))
    importlib.import_module("models.stylegan2")
    stub_module("models.stylegan2.op", FusedLeakyReLU=_not_run, fused_leaky_relu=_not_run, upfirdn2d=_not_run)
    psp = importlib.import_module("models.psp")
    stub_module("torchvision.transforms")
    stub_module("cv2")
    stub_module("models.load_generator", load_generator=_not_run)
    stub_module("lib", DATASETS=None, CelebAHQ=None, FaceAligner=None, tensor2image=None)
    invert = load_file("falco_invert", src / "invert.py")

    opts = dict(encoder_type="Encoder4Editing", stylegan_size=STYLEGAN_SIZE, start_from_latent_avg=True)
    encoder = psp.psp_encoders.Encoder4Editing(50, "ir_se", argparse.Namespace(**opts))
    layout = [[f"encoder.{k}", list(v.shape)] for k, v in encoder.state_dict().items()]
    n_styles = encoder.style_count
    latent_avg = seeded_tensor((n_styles, 512), avg_seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e4e_ffhq_encode.pt"
        torch.save({"state_dict": seeded_state(layout, weight_seed), "opts": opts, "latent_avg": latent_avg}, path)
        net = psp.pSp(argparse.Namespace(**opts, checkpoint_path=str(path), device="cpu"))
    net.eval()

    images = seeded_tensor((batch, 3, 256, 256), input_seed)
    with torch.no_grad():
        codes = invert.get_latents(net, images)
    meta = source_record("chi0tzp/FALCO", commit, ["models/psp.py", "models/encoders/psp_encoders.py",
                                                  "models/encoders/helpers.py", "models/stylegan2/model.py",
                                                  "invert.py"],
                         call="invert.get_latents(pSp(opts).eval(), images)", opts=opts,
                         stubs="models.stylegan2.op (CUDA ops, not called by EqualLinear without activation), "
                               "torchvision, cv2, lib, models.load_generator (imports only)",
                         weight_seed=weight_seed, latent_avg_seed=avg_seed, latent_avg_shape=[n_styles, 512],
                         latent_avg_range=[-1, 1], input_seed=input_seed, input_shape=[batch, 3, 256, 256],
                         input_range=[-1, 1], torch_version=torch.__version__, layout=layout)
    if args.one_image:
        write_golden("e4e_encoder_one_image", meta, {"codes": codes})
    else:
        write_golden("e4e_encoder", meta, {"codes": codes})
    deltas = (codes[:, 1:] - codes[:, :1]).abs().mean()
    print(f"codes {tuple(codes.shape)}, |codes - latent_avg| {(codes - latent_avg).abs().mean():.4f}, "
          f"|w_i - w_0| {deltas:.4f}, commit {commit}")


if __name__ == "__main__":
    main()
