"""Golden output of facenet-pytorch's InceptionResnetV1 embedding (the FaceNet identity evaluator).

Official code: the ``facenet-pytorch`` package from PyPI (``models/inception_resnet_v1.py`` and
``fixed_image_standardization`` of ``models/mtcnn.py``), imported from the project's virtualenv, where
``make install-lite`` puts it (torchvision names it imports for face detection are placeholders, see
``official.import_facenet_pytorch``). ``InceptionResnetV1(num_classes=8631)`` (the VGGFace2 file's
layout, logits included) on seeded weights; input: a seeded 160x160 batch in [-1, 1], mapped to
pixels and standardised the way facenet-pytorch's MTCNN post-processing does. Writes
``tests/golden/facenet_inception_resnet_v1.{json,pt}``.

    python experiments/golden/make_facenet.py
"""
from __future__ import annotations

import torch

from official import import_facenet_pytorch, package_record, parse_args
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, BATCH, NUM_CLASSES = 15061, 15062, 2, 8631


def main() -> None:
    parse_args(__doc__.split("\n")[0], git=False)
    facenet_pytorch = import_facenet_pytorch()
    net = facenet_pytorch.InceptionResnetV1(num_classes=NUM_CLASSES)  # classify=False: embeddings
    layout = state_layout(net.state_dict())
    net.load_state_dict(seeded_state(layout, WEIGHT_SEED), strict=True)
    net.eval()

    images = seeded_tensor((BATCH, 3, 160, 160), INPUT_SEED)
    with torch.no_grad():
        embeddings = net(facenet_pytorch.fixed_image_standardization((images + 1) / 2 * 255))
    meta = dict(package_record("facenet-pytorch", facenet_pytorch, ["models/inception_resnet_v1.py", "models/mtcnn.py"]),
                call="InceptionResnetV1(num_classes=8631).eval()(fixed_image_standardization((x + 1) / 2 * 255))",
                weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED, input_shape=[BATCH, 3, 160, 160], input_range=[-1, 1],
                torch_version=torch.__version__, layout=layout)
    write_golden("facenet_inception_resnet_v1", meta, {"embeddings": embeddings})
    print(f"embeddings {tuple(embeddings.shape)} |mean| {embeddings.abs().mean():.4f}, {meta['official_package']}")


if __name__ == "__main__":
    main()
