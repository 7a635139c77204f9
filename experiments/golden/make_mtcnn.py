"""Golden outputs of facenet-pytorch's MTCNN stage networks (PNet, RNet, ONet) on seeded weights.

Official code: the ``facenet-pytorch`` package from PyPI (``models/mtcnn.py``), imported from the
project's virtualenv (torchvision names imported by its detection helpers are placeholders, see
``official.import_facenet_pytorch``; the networks do not use them). Each network is built with
``pretrained=False``, loaded with a seeded state dict in its own layout, and run on a seeded batch in
[-1, 1] (the range MTCNN feeds them): PNet on 2 x 3 x 30 x 26 (any size), RNet on 3 x 3 x 24 x 24,
ONet on 2 x 3 x 48 x 48. The detection pipeline around them needs torchvision's ``batched_nms`` and is
not run here (tests/nets/test_mtcnn.py compares whole detections with facenet-pytorch's on real
images). Writes ``tests/golden/mtcnn_nets.{json,pt}``.

    python experiments/golden/make_mtcnn.py
"""
from __future__ import annotations

import torch

from official import import_facenet_pytorch, package_record, parse_args
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

SEED = 15081
INPUT_SHAPES = {"pnet": (2, 3, 30, 26), "rnet": (3, 3, 24, 24), "onet": (2, 3, 48, 48)}
OUTPUT_NAMES = {"pnet": ("offsets", "probs"), "rnet": ("offsets", "probs"), "onet": ("offsets", "landmarks", "probs")}


def main() -> None:
    parse_args(__doc__.split("\n")[0], git=False)
    facenet_pytorch = import_facenet_pytorch()
    meta = dict(package_record("facenet-pytorch", facenet_pytorch, ["models/mtcnn.py"]),
                call="PNet/RNet/ONet(pretrained=False).eval() with seeded weights; probs = softmax output[:, 1]",
                torch_version=torch.__version__, nets={})
    tensors = {}
    for i, (name, cls) in enumerate([("pnet", facenet_pytorch.PNet), ("rnet", facenet_pytorch.RNet),
                                      ("onet", facenet_pytorch.ONet)]):
        net = cls(pretrained=False)
        layout = state_layout(net.state_dict())
        net.load_state_dict(seeded_state(layout, SEED + 10 * i), strict=True)
        net.eval()
        x = seeded_tensor(INPUT_SHAPES[name], SEED + 10 * i + 1)
        with torch.no_grad():
            outputs = list(net(x))
        outputs[-1] = outputs[-1][:, 1]  # the face probability (softmax over background / face)
        meta["nets"][name] = dict(weight_seed=SEED + 10 * i, layout=layout, outputs=list(OUTPUT_NAMES[name]))
        tensors[f"{name}.input"] = x
        tensors.update({f"{name}.{out}": value for out, value in zip(OUTPUT_NAMES[name], outputs)})
    write_golden("mtcnn_nets", meta, tensors)
    print({k: tuple(v.shape) for k, v in tensors.items()}, meta["official_package"])


if __name__ == "__main__":
    main()
