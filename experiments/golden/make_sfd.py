"""Golden outputs of face-alignment's S3FD (``s3fd``) and its box decoding + filtering, on seeded weights.

Runs the official code of 1adrianb/face-alignment (``face_alignment/detection/sfd``: ``net_s3fd.s3fd``,
``detect.batch_detect`` (BGR mean subtraction, softmax, anchor decoding) and the NMS 0.3 / score > 0.5
filter of ``SFDDetector._filter_bboxes``) on seeded random weights and one seeded 128 x 128 RGB image in
0..255, and writes ``tests/golden/sfd_s3fd.{json,pt}``: the six (conf, loc) head outputs, the
decoded candidates (K x 5) and the kept boxes. ``detection/core.py`` (which imports OpenCV) is
replaced by a placeholder: ``detect.py`` only re-exports two helpers from it that are not called.

With ``--falco-git`` it also runs FALCO's own copy (chi0tzp/FALCO ``lib/sfd``: its ``s3fd`` and
``SFDDetector.detect_from_batch``, the path ``FaceAligner.align_face`` takes) on the same weights and
image and stores its kept boxes: that path feeds RGB 0..255 without the mean. Its imports of OpenCV,
scikit-image, SciPy and matplotlib are placeholders (not called), and ``torch.cuda.current_device``
(a cuDNN switch) answers 0 on a machine without CUDA.

    python experiments/golden/make_sfd.py --official-git <mirror>/1adrianb+face-alignment/repo \
        --falco-git <mirror>/chi0tzp+FALCO/repo
"""
from __future__ import annotations

import numpy as np
import torch

from official import export_sources, load_file, parse_args, source_record, stub_module
from tests.golden_data import seeded_state, seeded_tensor, state_layout, write_golden

WEIGHT_SEED, INPUT_SEED, SIZE = 19101, 19102, 128
FILES = ["face_alignment/detection/sfd/net_s3fd.py", "face_alignment/detection/sfd/detect.py",
         "face_alignment/detection/sfd/bbox.py", "face_alignment/detection/sfd/sfd_detector.py"]

FALCO_FILES = ["lib/sfd/net_s3fd.py", "lib/sfd/detect.py", "lib/sfd/bbox.py", "lib/sfd/sfd_detector.py"]


def falco_detect_from_batch(git_dir: str, layout: list, image: torch.Tensor) -> tuple[np.ndarray, str]:
    """FALCO's kept boxes (K x 5) for ``image`` (1 x 3 x H x W RGB 0..255) and FALCO's commit."""
    src, commit = export_sources(git_dir)
    for name in ("cv2", "skimage.io", "scipy.io", "matplotlib.pyplot"):
        stub_module(name)
    stub_module("falco_sfd.core", FaceDetector=object)
    sfd_dir = src / "lib" / "sfd"
    net_s3fd = load_file("falco_sfd.net_s3fd", sfd_dir / "net_s3fd.py")
    load_file("falco_sfd.bbox", sfd_dir / "bbox.py")
    load_file("falco_sfd.detect", sfd_dir / "detect.py")
    sfd_detector = load_file("falco_sfd.sfd_detector", sfd_dir / "sfd_detector.py")
    net = net_s3fd.s3fd()
    net.load_state_dict(seeded_state(layout, WEIGHT_SEED), strict=True)
    net.eval()
    detector = sfd_detector.SFDDetector.__new__(sfd_detector.SFDDetector)  # __init__ reads the real file
    detector.face_detector, detector.device = net, "cpu"
    real_current_device, torch.cuda.current_device = torch.cuda.current_device, lambda: 0
    try:
        boxes, error, _ = detector.detect_from_batch(image.clone())
    finally:
        torch.cuda.current_device = real_current_device
    kept = np.array([[float(v) for v in box] for box in boxes[0]], dtype=np.float64).reshape(-1, 5)
    return kept, commit


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], falco_git="git directory of chi0tzp/FALCO")
    src, commit = export_sources(args.official_git)

    def not_run(*_args, **_kwargs):
        raise RuntimeError("placeholder called: this golden output would not be official")

    stub_module("fa.detection.core", flip_detect=not_run, pts_to_bb=not_run, FaceDetector=object)
    stub_module("fa.detection.sfd")
    sfd_dir = src / "face_alignment" / "detection" / "sfd"
    net_s3fd = load_file("fa.detection.sfd.net_s3fd", sfd_dir / "net_s3fd.py")
    load_file("fa.detection.sfd.bbox", sfd_dir / "bbox.py")  # registered for detect.py's import
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

    falco_kept, falco_commit = falco_detect_from_batch(args.falco_git, layout, image)

    tensors = {f"head{i // 2}.{'conf' if i % 2 == 0 else 'loc'}": t for i, t in enumerate(heads)}
    tensors.update(candidates=torch.from_numpy(candidates), kept=torch.from_numpy(kept),
                   falco_kept=torch.from_numpy(falco_kept))
    meta = source_record("1adrianb/face-alignment", commit, FILES,
                         call="s3fd().eval() with seeded weights; heads = net(BGR - (104, 117, 123)); "
                              "candidates = detect.batch_detect(net, rgb, 'cpu')[0]; "
                              "kept = SFDDetector._filter_bboxes(candidates) (nms 0.3, score > 0.5)",
                         weight_seed=WEIGHT_SEED, input_seed=INPUT_SEED, input_shape=[1, 3, SIZE, SIZE],
                         input_range=[0, 255], torch_version=torch.__version__, layout=layout,
                         falco=dict(repository="https://github.com/chi0tzp/FALCO", commit=falco_commit,
                                    files=FALCO_FILES, call="SFDDetector.detect_from_batch(rgb) on lib/sfd "
                                                            "s3fd with the same weights; falco_kept = boxes[0]"))
    write_golden("sfd_s3fd", meta, tensors)
    print(f"candidates {candidates.shape}, kept {kept.shape}, FALCO kept {falco_kept.shape}, commit {commit}")


if __name__ == "__main__":
    main()
