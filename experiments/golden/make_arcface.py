"""Golden output of FALCO's ArcFace identity features (IR-SE-50 ``Backbone`` + ``IDLoss.extract_feats``).

Runs the official code of chi0tzp/FALCO (branch cvpr23, ``lib/id_loss.py``: the TreB1eN/pSp IR-SE-50
and the crop/pool FALCO applies before it) on seeded random weights and a seeded 256x256 batch, and
writes ``tests/golden/arcface_ir_se50.{json,pt}``. The input is already 256x256, so FALCO's
``Resize(256) + CenterCrop(256)`` leaves it unchanged and is not run (it needs torchvision).

    python experiments/golden/make_arcface.py --official-git <mirror>/chi0tzp+FALCO/repo
"""
from __future__ import annotations

import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, BATCH = 15001, 15002, 2


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    src, commit = export_sources(args.official_git)
    stub_module("torchvision.transforms")  # imported by id_loss.py for IDLoss.__init__, which is not run
    id_loss = load_file("falco_id_loss", src / "lib" / "id_loss.py")

    net = id_loss.Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se")  # as IDLoss builds it
    layout = state_layout(net.state_dict())
    net.load_state_dict(seeded_state(layout, WEIGHT_SEED), strict=True)
    net.eval()
    extractor = id_loss.IDLoss.__new__(id_loss.IDLoss)  # IDLoss.__init__ reads the real checkpoint
    torch.nn.Module.__init__(extractor)
    extractor.facenet, extractor.face_pool = net, torch.nn.AdaptiveAvgPool2d((112, 112))

    images = seeded_tensor((BATCH, 3, 256, 256), INPUT_SEED)
    with torch.no_grad():
        feats = extractor.extract_feats(images)
    meta = source_record("chi0tzp/FALCO", commit, ["lib/id_loss.py"],
                         call="IDLoss.extract_feats on Backbone(112, 50, drop_ratio=0.6, mode='ir_se').eval()",
                         weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED, input_shape=[BATCH, 3, 256, 256],
                         input_range=[-1, 1], torch_version=torch.__version__, layout=layout)
    write_golden("arcface_ir_se50", meta, {"features": feats})
    print(f"features {tuple(feats.shape)}, |mean| {feats.abs().mean():.4f}, commit {commit}")


if __name__ == "__main__":
    main()
