"""MTCNN: box utilities against hand computations, network shapes, strict loads of the facenet-pytorch
state dicts, and detection on real faces (shared LFW / CelebA-HQ samples) and on noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from anon.lite.packages import has_package, package_file
from anon.nets.mtcnn import MTCNNDetector, ONet, PNet, RNet, box_overlap, nms, regress, square
from anon.runtime.run import CONFIG_DIR
from tests.requires import require_file, requires, unavailable

needs_weights = requires(has_package("facenet_pytorch"),
                         "facenet-pytorch not installed (make install-lite)")
# A, B overlap A strongly; C is apart; D is the left half of A (and scores highest)
BOXES = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 5, 10]], dtype=torch.float32)
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.95])


@pytest.fixture(scope="module")
def detector():
    if not has_package("facenet_pytorch"):
        unavailable("facenet-pytorch not installed (make install-lite)")
    return MTCNNDetector()


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def real_images(root: Path) -> list[Path]:
    files = sorted((root / "lfw_sample").rglob("*.jpg")) + sorted((root / "celebahq_sample").glob("*.jpg"))
    if not files:
        unavailable(f"no images in the shared samples under {root}")
    return files


def test_overlap_by_hand():
    # A vs B: intersection 9 x 9 = 81, union 100 + 100 - 81 = 119
    assert box_overlap(BOXES[0], BOXES[1:2]).item() == pytest.approx(81 / 119)
    # A vs D: intersection 50; over the smaller box (D, 50) -> 1
    assert box_overlap(BOXES[0], BOXES[3:4], mode="min").item() == pytest.approx(1.0)
    # inclusive pixels: A is 11 x 11 = 121, D 6 x 11 = 66, intersection 66 -> IoU 66 / 121
    assert box_overlap(BOXES[0], BOXES[3:4], plus_one=True).item() == pytest.approx(66 / 121)
    assert box_overlap(BOXES[0], BOXES[2:3]).item() == 0.0


def test_nms_by_hand():
    # order D, A, B, C. IoU(D, A) = 0.5 is not > 0.5, so A stays; IoU(A, B) = 0.68 removes B.
    assert nms(BOXES, SCORES, 0.5).tolist() == [3, 0, 2]
    # over the smaller box: D covers A fully (1.0) and B by 36 / 50 = 0.72 -> only D and C remain
    assert nms(BOXES, SCORES, 0.5, mode="min").tolist() == [3, 2]
    # inclusive pixels: IoU(D, A) = 66 / 121 = 0.545 removes A; IoU(D, B) = 50 / 137 keeps B
    assert nms(BOXES, SCORES, 0.5, plus_one=True).tolist() == [3, 1, 2]
    assert nms(BOXES, SCORES, 0.99).tolist() == [3, 0, 1, 2]
    assert nms(BOXES[:0], SCORES[:0], 0.5).tolist() == []


def test_nms_ties():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11.0]])
    scores = torch.tensor([1.0, 1.0])
    assert nms(boxes, scores, 0.5).tolist() == [0]
    assert nms(boxes, scores, 0.5, later_wins_ties=True).tolist() == [1]


def test_square_and_regress_by_hand():
    # 10 wide, 4 high, centre (5, 2) -> 10 x 10 square centred there
    assert square(torch.tensor([[0.0, 0.0, 10.0, 4.0]])).tolist() == [[0.0, -3.0, 10.0, 7.0]]
    # inclusive size 11 x 5: offsets (0.1, -0.2, 0, 1) move x1 by 1.1, y1 by -1, y2 by 5
    out = regress(torch.tensor([[0.0, 0.0, 10.0, 4.0]]), torch.tensor([[0.1, -0.2, 0.0, 1.0]]))
    assert torch.allclose(out, torch.tensor([[1.1, -1.0, 10.0, 9.0]]))


def test_pyramid_scales_by_hand():
    det = MTCNNDetector(pnet=None, rnet=None, onet=None)
    # 250 px, min face 20: first scale 12/20 = 0.6 (short side 150), then x0.709 while >= 12 px:
    # 150, 106.4, 75.4, 53.5, 37.9, 26.9, 19.1, 13.5 (9.6 stops) -> 8 scales
    scales = det.scales(250, 300)
    assert len(scales) == 8
    assert scales == pytest.approx([0.6 * 0.709 ** k for k in range(8)])


def test_network_shapes_random_weights():
    torch.manual_seed(0)
    reg, prob = PNet(None)(torch.randn(2, 3, 30, 40))
    # 30 x 40 -> conv 28 x 38 -> pool (ceil) 14 x 19 -> two convs 10 x 15
    assert reg.shape == (2, 4, 10, 15) and prob.shape == (2, 10, 15)
    assert ((prob > 0) & (prob < 1)).all()
    reg, prob = RNet(None)(torch.randn(5, 3, 24, 24))
    assert reg.shape == (5, 4) and prob.shape == (5,)
    reg, marks, prob = ONet(None)(torch.randn(5, 3, 48, 48))
    assert reg.shape == (5, 4) and marks.shape == (5, 10) and prob.shape == (5,)


def test_random_weights_cascade_runs():
    det = MTCNNDetector(pnet=None, rnet=None, onet=None, thresholds=(0.0, 0.0, 0.0))
    out = det.detect(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    for box, prob, marks in out:
        assert box.shape == (4,) and marks.shape == (5, 2) and 0 <= prob <= 1
    with pytest.raises(ValueError):
        det.detect(np.zeros((40, 50), dtype=np.uint8))


def test_config_composes():
    cfg = OmegaConf.load(f"{CONFIG_DIR}/detector/mtcnn.yaml")
    det = instantiate(cfg, pnet=None, rnet=None, onet=None)
    assert det.thresholds == (0.6, 0.7, 0.7) and det.min_face_size == 20 and det.factor == 0.709


@needs_weights
def test_packaged_state_dicts_load_strictly():
    for name, net in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        state = torch.load(package_file("facenet_pytorch", f"data/{name}.pt"), map_location="cpu", weights_only=True)
        ours = net().state_dict()
        assert list(ours) == list(state)
        assert all(torch.equal(ours[k], v) for k, v in state.items())


def test_noise_has_no_face(detector, one_thread):
    noise = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
    assert detector.detect(np.full((250, 250, 3), 128, dtype=np.uint8)) == []


def check_face(box, prob, marks, height, width):
    x1, y1, x2, y2 = box
    assert prob > 0.9
    assert 0.15 * width < x2 - x1 < width and 0.15 * height < y2 - y1 < 1.1 * height
    assert ((marks[:, 0] > x1) & (marks[:, 0] < x2) & (marks[:, 1] > y1) & (marks[:, 1] < y2)).all()
    left_eye, right_eye, nose, mouth_left, mouth_right = marks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.real_data
def test_real_faces_subset(shared_data, detector, one_thread):
    files = real_images(shared_data)[::30]  # 12 images from both samples
    for path in files:
        image = read(path)
        faces = detector.detect(image)
        assert faces, path
        assert [p for _, p, _ in faces] == sorted((p for _, p, _ in faces), reverse=True)
        check_face(*faces[0], *image.shape[:2])


# facenet-pytorch 2.6.0's own MTCNN() (torch 2.14.1, torchvision 0.29.1, default settings) on shared images,
# rounded to 1e-3: (box x1, y1, x2, y2), face probability, 5 landmarks (x, y). Ours matched it on all 356
# shared images to 2e-4 px (same number of faces everywhere, identical probabilities).
FACENET_PYTORCH_REFERENCE = {
    "lfw_sample/Aaron_Peirsol/Aaron_Peirsol_0001.jpg": [
        ((75.852, 66.221, 167.767, 188.267), 0.9999536,
         ((102.988, 112.821), (145.434, 112.029), (127.181, 142.279), (105.517, 157.425), (148.174, 155.346)))],
    "celebahq_sample/112.jpg": [
        ((60.856, 50.43, 201.125, 242.979), 0.9999765,
         ((98.68, 123.101), (162.096, 123.547), (128.625, 162.107), (98.44, 190.228), (160.157, 191.022)))],
    "lfw_sample/Adolfo_Aguilar_Zinser/Adolfo_Aguilar_Zinser_0002.jpg": [
        ((76.791, 68.182, 167.335, 187.188), 0.9999983,
         ((106.697, 112.979), (145.73, 111.275), (128.268, 140.099), (111.399, 163.125), (143.335, 161.994))),
        ((27.402, 94.502, 77.969, 157.495), 0.9999789,
         ((43.867, 118.553), (67.838, 116.499), (58.391, 130.11), (48.372, 144.76), (68.598, 143.358)))],
}


@pytest.mark.real_data
def test_matches_facenet_pytorch_reference(shared_data, detector, one_thread):
    for relative, expected in FACENET_PYTORCH_REFERENCE.items():
        faces = detector.detect(read(require_file(shared_data / relative)))
        assert len(faces) == len(expected), relative
        for (box, prob, marks), (ref_box, ref_prob, ref_marks) in zip(faces, expected):
            assert np.abs(box - np.array(ref_box)).max() < 0.01, relative
            assert np.abs(marks - np.array(ref_marks)).max() < 0.01, relative
            assert prob == pytest.approx(ref_prob, abs=1e-6)


@pytest.mark.real_data
def test_flip_and_shift_move_the_box(shared_data, detector, one_thread):
    path = require_file(shared_data / "lfw_sample" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    image = read(path)
    h, w = image.shape[:2]
    box, _, marks = detector.detect(image)[0]
    size = box[2] - box[0]
    # mirrored image: x -> w - x, and left / right landmarks swap. The networks are not exactly
    # mirror-symmetric (measured: up to 6 % of the box size apart), so allow 10 %.
    fbox, _, fmarks = detector.detect(np.ascontiguousarray(image[:, ::-1]))[0]
    assert np.abs(np.array([w - fbox[2], fbox[1], w - fbox[0], fbox[3]]) - box).max() < 0.1 * size
    mirrored = np.stack([w - fmarks[:, 0], fmarks[:, 1]], 1)[[1, 0, 2, 4, 3]]
    assert np.abs(mirrored - marks).max() < 0.1 * size
    # padded by 31 px on the left and 17 on top: everything moves by (31, 17)
    padded = np.pad(image, ((17, 0), (31, 0), (0, 0)), constant_values=127)
    pbox, _, pmarks = detector.detect(padded)[0]
    assert np.abs(pbox - box - np.array([31, 17, 31, 17])).max() < 0.05 * size
    assert np.abs(pmarks - marks - np.array([31, 17])).max() < 0.05 * size


@pytest.mark.slow
@pytest.mark.real_data
def test_detection_rate_on_all_shared_images(shared_data, detector, one_thread):
    """Every image of both samples shows one main face: at least 98 % must give a detection
    (measured: 356 / 356, boxes within 2e-4 px of facenet-pytorch's own MTCNN)."""
    files = real_images(shared_data)
    found = sum(bool(detector.detect(read(p))) for p in files)
    assert found >= 0.98 * len(files), f"{found} / {len(files)}"
