"""Golden outputs of face-alignment's S3FD (``s3fd``) and its box decoding + filtering, on seeded weights.

Runs the official code of 1adrianb/face-alignment (``face_alignment/detection/sfd``: ``net_s3fd.s3fd``,
``detect.batch_detect`` (BGR mean subtraction, softmax, anchor decoding) and the NMS 0.3 / score > 0.5
filter of ``SFDDetector._filter_bboxes``) on seeded random weights and one seeded 128 x 128 RGB image in
0..255, and writes ``tests/golden/sfd_s3fd.{json,pt}``: the six (conf, loc) head outputs, the
decoded candidates (K x 5) and the kept boxes. ``detection/core.py`` (which imports OpenCV) is
replaced by a placeholder: ``detect.py`` only re-exports two helpers from it that are not called.

    python experiments/golden/make_sfd.py --official-git /work/.mirror/1adrianb+face-alignment/repo
"""
from __future__ import annotations

import numpy as np
import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, SIZE = 19101, 19102, 128
FILES = ["face_alignment/detection/sfd/net_s3fd.py", "face_alignment/detection/sfd/detect.py",
         "face_alignment/detection/sfd/bbox.py", "face_alignment/detection/sfd/sfd_detector.py"]


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    src, commit = export_sources(args.official_git)

    def not_run(*_args, **_kwargs):
        raise RuntimeError("placeholder called: this golden output would not be official")

    stub_module("fa.detection.core", flip_detect=not_run, pts_to_bb=not_run, FaceDetector=object)
    stub_module("fa.detection.sfd")
    sfd_dir = src / "face_alignment" / "detection" / "sfd"
    net_s3fd = load_file("fa.detection.sfd.net_s3fd", sfd_dir / "net_s3fd.py")
    bbox = load_file("fa.detection.sfd.bbox", sfd_dir / "bbox.py")
    detect = load_file("fa.detection.sfd.detect", sfd_dir / "detect.py")
    sfd_detector = load_file("fa.detection.sfd.sfd_detector", sfd_dir / "sfd_detector.py")

    net = net_s3fd.s3fd()
    layout = state_layout(net.state_dict())
    net.load_state_dict(seeded_state(layout, WEIGHT_SEED), strict=True)
    net.eval()
    image = seeded_tensor((1, 3, SIZE, SIZE), INPUT_SEED, 0.0, 255.0)  # RGB, as batch_detect takes it

    with torch.no_grad():
        heads = net(image.flip(-3) - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1))
    candidates = detect.batch_detect(net, image.clone(), device="cpu")[0]  # K x 5, the official order
    filtering = sfd_detector.SFDDetector.__new__(sfd_detector.SFDDetector)  # __init__ downloads weights
    filtering.filter_threshold = 0.5
    kept = np.array(filtering._filter_bboxes(candidates.copy()), dtype=np.float64).reshape(-1, 5)

    tensors = {f"head{i // 2}.{'conf' if i % 2 == 0 else 'loc'}": t for i, t in enumerate(heads)}
    tensors.update(candidates=torch.from_numpy(candidates), kept=torch.from_numpy(kept))
    meta = source_record("1adrianb/face-alignment", commit, FILES,
                         call="s3fd().eval() with seeded weights; heads = net(BGR - (104, 117, 123)); "
                              "candidates = detect.batch_detect(net, rgb, 'cpu')[0]; "
                              "kept = SFDDetector._filter_bboxes(candidates) (nms 0.3, score > 0.5)",
                         weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED, input_shape=[1, 3, SIZE, SIZE],
                         input_range=[0, 255], torch_version=torch.__version__, layout=layout)
    write_golden("sfd_s3fd", meta, tensors)
    print(f"candidates {candidates.shape}, kept {kept.shape}, commit {commit}")


if __name__ == "__main__":
    main()
