"""Golden outputs of face-alignment's FAN (2D-FAN-4) and its heatmap decoding, on seeded weights.

Runs the official code of 1adrianb/face-alignment (``face_alignment/models/fan.py``: ``FAN(4)``, and
``face_alignment/utils.py``: ``get_preds_fromhm`` with the quarter-pixel shift, ``transform`` for
the crop window) on seeded random weights and one seeded 256 x 256 crop in [0, 1], and writes
``tests/golden/fan_2dfan4.{json,pt}``: four of the 68 heatmaps (``KEPT_CHANNELS``) of the first
and last stack (all four stacks would be 4.4 MB), the decoded landmarks of the
last stack in heatmap and image coordinates for a fixed detection box (centre and scale as
``FaceAlignment.get_landmarks_from_image`` computes them), and the crop window corners.
``utils.py`` imports OpenCV, scikit-image and numba, none of which the used functions need:
the first two are placeholders and numba's ``jit`` leaves the function as plain Python.

    python experiments/golden/make_fan.py --official-git <mirror>/1adrianb+face-alignment/repo
"""
from __future__ import annotations

import numpy as np
import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, SIZE = 19201, 19202, 256
#: Heatmap channels stored (every 17th: 0, 17, 34, 51) to keep the file small.
KEPT_CHANNELS = [0, 17, 34, 51]
#: A detection box (x1, y1, x2, y2) in image pixels: FAN's crop centre and scale come from it.
BOX = [41.3, 57.8, 203.6, 239.1]
FILES = ["face_alignment/models/fan.py", "face_alignment/utils.py", "face_alignment/api.py"]


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    src, commit = export_sources(args.official_git)
    stub_module("cv2")
    stub_module("skimage.io")
    stub_module("skimage.color")
    stub_module("numba", jit=lambda *_a, **_k: (lambda function: function))
    fan = load_file("fa_models_fan", src / "face_alignment" / "models" / "fan.py")
    utils = load_file("fa_utils", src / "face_alignment" / "utils.py")

    net = fan.FAN(4)
    layout = state_layout(net.state_dict())
    net.load_state_dict(seeded_state(layout, WEIGHT_SEED), strict=True)
    net.eval()
    crop = seeded_tensor((1, 3, SIZE, SIZE), INPUT_SEED, 0.0, 1.0)
    with torch.no_grad():
        stacks = net(crop)

    d = BOX  # as FaceAlignment.get_landmarks_from_image (api.py) derives centre and scale from a box
    center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
    center[1] = center[1] - (d[3] - d[1]) * utils.CENTER_Y_OFFSET
    scale = (d[2] - d[0] + d[3] - d[1]) / utils.REFERENCE_SCALE
    preds, preds_orig, _scores = utils.get_preds_fromhm(stacks[-1].numpy(), center, scale)
    window = [utils.transform([1, 1], center, scale, 256.0, True).tolist(),
              utils.transform([256, 256], center, scale, 256.0, True).tolist()]

    tensors = {"stack0": stacks[0][:, KEPT_CHANNELS], "stack3": stacks[-1][:, KEPT_CHANNELS],
               "peaks": torch.from_numpy(preds[0]), "landmarks": torch.from_numpy(preds_orig[0])}
    meta = source_record("1adrianb/face-alignment", commit, FILES,
                         call="FAN(4).eval() with seeded weights on a [0, 1] crop; "
                              "get_preds_fromhm(last stack, center, scale); transform(corner, ..., 256, True)",
                         weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED, input_shape=[1, 3, SIZE, SIZE],
                         input_range=[0, 1], kept_channels=KEPT_CHANNELS, box=BOX,
                         center=center.tolist(), scale=float(scale), crop_window_corners=window,
                         torch_version=torch.__version__, layout=layout)
    write_golden("fan_2dfan4", meta, tensors)
    print(f"peaks {preds[0][:3].tolist()}, landmarks {preds_orig[0][:3].tolist()}, window {window}, commit {commit}")


if __name__ == "__main__":
    main()
