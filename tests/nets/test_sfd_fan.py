"""S3FD and FAN-68 (FALCO's alignment networks): strict loading of checkpoints laid out as the official
files, the post-processing facts (crop centre/scale, quarter-pixel peaks, 68 -> 5 points) against
hand computations, and the combined detector's interface. Forward passes against the official code
are in tests/nets/test_golden.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from anon.data.align import ffhq_quad
from anon.errors import MissingCheckpointError
from anon.nets.fan import (FAN, crop_centre_scale, crop_face, crop_window, heatmap_peaks, heatmap_to_image,
                           landmarks_68_to_5)
from anon.nets.sfd import S3FD, nms
from anon.nets.sfd_fan import SFDFANDetector
from tests.golden_data import read_golden, seeded_state

CONF = Path(__file__).resolve().parents[2] / "conf" / "detector"
#: The official layouts ([key, shape] in state-dict order) were recorded from face-alignment's own classes.
OFFICIAL = {"sfd": (S3FD, "sfd_s3fd", "s3fd-619a316812.pth"), "fan": (FAN, "fan_2dfan4", "2DFAN4-11f355bf06.pth.tar")}


def official_layout(net: str) -> list:
    return read_golden(OFFICIAL[net][1])[0]["layout"]


@pytest.mark.parametrize("net", ["sfd", "fan"])
def test_checkpoint_with_the_official_keys_and_shapes_loads_strictly(tmp_path, net):
    cls, _, filename = OFFICIAL[net]
    layout = official_layout(net)
    state = seeded_state(layout, 7)
    path = tmp_path / filename
    torch.save(state, path, _use_new_zipfile_serialization=not filename.endswith(".tar"))
    model = cls(path)
    loaded = model.state_dict()
    assert {k: list(v.shape) for k, v in loaded.items()} == {k: shape for k, shape in layout}
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("net", ["sfd", "fan"])
@pytest.mark.parametrize("edit", ["missing", "unexpected", "shape", "prefixed"])
def test_loading_refuses_a_checkpoint_that_differs_from_the_official_layout(tmp_path, net, edit):
    cls, _, filename = OFFICIAL[net]
    state = seeded_state(official_layout(net), 3)
    key = [k for k in sorted(state) if k.endswith(".weight")][len(state) // 4]  # (BN tolerates a missing
    # num_batches_tracked: checkpoints from before PyTorch 0.4.1 lack it, and load strictly regardless)
    if edit == "missing":
        del state[key]
    elif edit == "unexpected":
        state["extra.weight"] = torch.zeros(3)
    elif edit == "shape":
        state[key] = torch.zeros(*state[key].shape, 1)
    else:  # a DataParallel dump
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / filename)
    with pytest.raises(RuntimeError):
        cls(tmp_path / filename)


def test_pickled_code_in_a_checkpoint_is_not_run(tmp_path):
    path = tmp_path / "s3fd-619a316812.pth"
    torch.save({"conv1_1.weight": torch.zeros(1), "hook": Path("x")}, path)  # a Python object, not a tensor
    with pytest.raises(Exception, match="weights_only"):
        S3FD(path)


@pytest.mark.parametrize("net,name", [("sfd", "sfd"), ("fan", "fan_2dfan4")])
def test_missing_checkpoint_names_the_download(tmp_path, net, name):
    with pytest.raises(MissingCheckpointError, match=f"anon download {name}"):
        OFFICIAL[net][0](tmp_path / "absent.pth")


def test_detector_config_points_at_the_registry_layout(tmp_path):
    cfg = OmegaConf.create({"weights_dir": str(tmp_path), "detector": OmegaConf.load(CONF / "sfd_fan.yaml")})
    assert cfg.detector.sfd == f"{tmp_path}/sfd/s3fd-619a316812.pth"  # anon/runtime/weights.py filenames
    assert cfg.detector.fan == f"{tmp_path}/fan/2DFAN4-11f355bf06.pth.tar"
    with pytest.raises(Exception, match="anon download sfd"):
        instantiate(cfg.detector)


# ------------------------------------------------------------------------------ post-processing facts


def test_crop_centre_and_scale_by_hand():
    centre, scale = crop_centre_scale([10.0, 20.0, 110.0, 220.0, 0.9])
    # centre: (60, 120) moved up by 0.12 * 200 = 24; scale (100 + 200) / 195; window 200 * scale wide
    np.testing.assert_allclose(centre, [60.0, 96.0])
    assert scale == pytest.approx(300 / 195)
    span = 200 * 300 / 195  # 307.69...; corners (1, 1) and (256, 256) of the crop, truncated
    assert crop_window(centre, scale) == (int(1 * span / 256 + 60 - span / 2), int(1 * span / 256 + 96 - span / 2),
                                          int(256 * span / 256 + 60 - span / 2), int(256 * span / 256 + 96 - span / 2))


def test_crop_face_pads_outside_the_image_with_zeros_and_scales_to_unit_range():
    image = torch.full((3, 40, 40), 255.0)
    centre, scale = np.array([10.0, 20.0]), 40 * 256 / 200 / 256  # a 40 px window from x = -10 to 30
    window = crop_window(centre, scale, resolution=40)
    assert window[0] < 0 < window[2] <= 40
    crop = crop_face(image, centre, scale, resolution=40)
    assert crop.shape == (1, 3, 40, 40)
    inside = -window[0]  # crop columns left of the image are zero, the rest one
    assert torch.all(crop[..., : inside - 1] == 0) and torch.allclose(crop[..., inside + 1:], torch.ones(1))


def test_crop_face_resamples_like_pils_antialiased_bilinear():
    # FALCO's crop_torch resizes with torchvision's antialiased bilinear Resize, which follows PIL's filter
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)
    centre, scale = crop_centre_scale([200.0, 200.0, 370.0, 390.0])
    left, top, right, bottom = crop_window(centre, scale)
    assert 0 <= left < right <= 600 and 0 <= top < bottom <= 600 and right - left > 256
    crop = crop_face(torch.from_numpy(image).permute(2, 0, 1).float(), centre, scale)[0].permute(1, 2, 0).numpy()
    pil = Image.fromarray(image).crop((left, top, right, bottom)).resize((256, 256), Image.Resampling.BILINEAR)
    assert np.abs(crop * 255 - np.asarray(pil, dtype=np.float64)).max() <= 1.5


def test_peaks_move_a_quarter_pixel_towards_the_larger_neighbour_and_not_on_the_border():
    hm = torch.zeros(1, 5, 64, 64)
    hm[0, 0, 20, 10] = 1.0                                   # peak at x = 10, y = 20
    hm[0, 0, 20, 11], hm[0, 0, 20, 9] = 0.6, 0.2              # right > left  -> x + 0.25
    hm[0, 0, 21, 10], hm[0, 0, 19, 10] = 0.1, 0.3             # below < above -> y - 0.25
    hm[0, 1, 30, 0], hm[0, 1, 30, 1] = 1.0, 0.9               # on the left border: no shift
    hm[0, 2, 5, 40] = 1.0                                     # equal neighbours: no shift
    hm[0, 3, 12, 63], hm[0, 3, 12, 62] = 1.0, 0.9             # on the right border: no shift
    hm[0, 4, 63, 25], hm[0, 4, 62, 25] = 1.0, 0.5             # on the bottom border: no shift
    peaks = heatmap_peaks(hm)[0]
    expected = torch.tensor([[10 + 0.5 + 0.25, 20 + 0.5 - 0.25], [0 + 0.5, 30 + 0.5], [40 + 0.5, 5 + 0.5],
                             [63 + 0.5, 12 + 0.5], [25 + 0.5, 63 + 0.5]])
    torch.testing.assert_close(peaks, expected, rtol=0, atol=0)


def test_heatmap_points_map_back_through_the_crop_and_truncate_toward_zero():
    centre, scale = np.array([100.0, 80.0]), 1.3  # window 260 px: heatmap pixel = 260 / 64 image px
    points = np.array([[32.0, 32.0], [0.25, 10.75]])
    by_hand = points * 260 / 64 + centre - 130
    np.testing.assert_array_equal(heatmap_to_image(points, centre, scale), np.trunc(by_hand))
    assert by_hand[1, 0] < 0 and heatmap_to_image(points, centre, scale)[1, 0] == np.ceil(by_hand[1, 0])


def test_68_to_5_points_give_the_ffhq_quad_of_the_68_point_recipe():
    lm = np.random.default_rng(0).uniform(0, 500, (68, 2))
    five = landmarks_68_to_5(lm)
    np.testing.assert_allclose(five[2], lm[30])  # nose tip
    # the 68-point FFHQ recipe written out (NVlabs/ffhq-dataset, FALCO lib/aligner.py)
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    mouth_left, mouth_right = lm[48], lm[54]
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    np.testing.assert_allclose(ffhq_quad(five), np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), rtol=1e-12)
    with pytest.raises(ValueError, match="68 x 2"):
        landmarks_68_to_5(lm[:5])


def test_nms_keeps_the_best_box_and_drops_overlaps_above_the_threshold():
    boxes = np.array([[0, 0, 9, 9, 0.8], [1, 0, 10, 9, 0.9], [20, 20, 29, 29, 0.7], [0, 5, 9, 14, 0.6]], float)
    # inclusive areas 100; box 1 vs 0: overlap 9 x 10 = 90 -> IoU 90 / 110 > 0.3; box 3 vs 1: 9 x 5 / 155 < 0.3
    assert nms(boxes, 0.3) == [1, 2, 3]


def test_combined_detector_reports_the_5_points_of_its_68():
    torch.manual_seed(0)
    detector = SFDFANDetector(None, None, score_threshold=0.0)
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    full = detector.detect_68(image)
    five = detector.detect(image)
    assert len(full) == len(five) == 1  # max_faces
    box, score, lm68 = full[0]
    assert lm68.shape == (68, 2) and np.all(lm68 == np.trunc(lm68))
    np.testing.assert_array_equal(five[0][0], box)
    assert five[0][1] == score
    np.testing.assert_allclose(five[0][2], landmarks_68_to_5(lm68), rtol=1e-6)
    assert detector.sfd.detect_boxes(image)[0, 4] == pytest.approx(score)


def test_input_format_is_checked_and_reaches_the_detector():
    with pytest.raises(ValueError, match="input_format='bgr'"):
        SFDFANDetector(None, None, input_format="bgr")
    assert SFDFANDetector(None, None, input_format="rgb_raw").sfd.input_format == "rgb_raw"
    assert OmegaConf.load(CONF / "sfd_fan.yaml").input_format == "bgr_mean"  # the detector as trained


def test_degenerate_boxes_count_as_no_face_instead_of_failing_the_run():
    detector = SFDFANDetector(None, None)
    image = np.zeros((64, 64, 3), np.uint8)
    boxes = np.array([[10.0, 10.0, 10.4, 10.3, 0.99], [np.nan, 0, 5, 5, 0.9]], np.float32)
    detector.sfd.detect_boxes = lambda _image: boxes
    assert detector.detect(image) == []
