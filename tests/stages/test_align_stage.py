import numpy as np
import pytest
from PIL import Image

from anon.errors import ConfigError
from anon.stages.align import read_alignment, run_align


class FakeDetector:
    """A face (5 landmarks) in images whose top-left pixel is bright; none elsewhere."""

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        if image[0, 0, 0] < 128:
            return []
        lm = np.array([[20.0, 24], [44, 24], [32, 34], [23, 44], [41, 44]])
        return [(np.array([10.0, 10, 54, 54]), 0.5, lm + 1), (np.array([8.0, 8, 56, 56]), 0.99, lm)]


def make_images(root, n=4):
    images = {}
    rng = np.random.default_rng(0)
    for i in range(n):
        texture = rng.integers(0, 40, (64, 64, 3))  # not a blank frame (those fail: see below)
        a = (255 - texture if i % 2 == 0 else texture).astype(np.uint8)
        a[20:40, 20:40] = 90
        path = root / f"img{i}.png"
        Image.fromarray(a).save(path)
        images[f"img{i}"] = path
    (root / "bad.png").write_bytes(b"nope")
    images["bad"] = root / "bad.png"
    return images


def test_policy_skip_records_every_image_once_and_caches(tmp_path):
    images = make_images(tmp_path)
    detector = FakeDetector()
    aligned = run_align(detector, images, tmp_path / "stage", size=32, policy="skip", min_face_size=8)
    records = read_alignment(tmp_path / "stage")
    assert sorted(records) == sorted(images)
    assert {i: r["status"] for i, r in records.items()} == {
        "img0": "aligned", "img1": "skipped", "img2": "aligned", "img3": "skipped", "bad": "failed"}
    assert records["img1"]["reason"] == "no_face"
    assert sorted(aligned) == ["img0", "img2"]
    assert np.asarray(Image.open(aligned["img0"])).shape == (32, 32, 3)
    # the most confident detection is the one used
    assert records["img0"]["face_size"] == 2 * max(2.0 * 24, 1.8 * 20)  # quad side = 2 x half-width
    calls = detector.calls
    run_align(detector, images, tmp_path / "stage", size=32, policy="skip", min_face_size=8)
    assert detector.calls == calls, "cached: nothing is detected twice"


def test_policy_unaligned_keeps_faceless_images_and_too_small_faces(tmp_path):
    images = make_images(tmp_path)
    aligned = run_align(FakeDetector(), images, tmp_path / "stage", size=32, policy="unaligned", min_face_size=100)
    records = read_alignment(tmp_path / "stage")
    assert sorted(aligned) == ["img0", "img1", "img2", "img3"]
    assert records["img0"]["status"] == "unaligned" and records["img0"]["reason"] == "face_too_small"
    assert records["img0"]["transform"] is not None


def test_blank_frame_without_a_face_fails_instead_of_being_cropped(tmp_path):
    images = make_images(tmp_path, n=2)
    Image.new("RGB", (64, 64), (3, 3, 3)).save(tmp_path / "blank.png")  # dark: FakeDetector finds no face
    images["blank"] = tmp_path / "blank.png"
    aligned = run_align(FakeDetector(), images, tmp_path / "stage", size=32, policy="unaligned", min_face_size=8)
    records = read_alignment(tmp_path / "stage")
    assert records["blank"]["status"] == "failed" and "degenerate image" in records["blank"]["reason"]
    assert records["img1"]["status"] == "unaligned" and "blank" not in aligned


def test_fallback_unaligned_512_is_falcos_threshold_and_resizes_the_whole_image(tmp_path):
    images = make_images(tmp_path)
    del images["bad"]
    # FakeDetector's face has an FFHQ quad of 96 px: FALCO aligns only quads of 512 px and more
    aligned = run_align(FakeDetector(), images, tmp_path / "falco", size=32, fallback="unaligned_512")
    records = read_alignment(tmp_path / "falco")
    assert {i: (r["status"], r["reason"]) for i, r in records.items()} == {
        "img0": ("unaligned", "face_too_small"), "img1": ("unaligned", "no_face"),
        "img2": ("unaligned", "face_too_small"), "img3": ("unaligned", "no_face")}
    # the unaligned crop is the whole (square) 64 px image resized to 32: each pixel a 2 x 2 block mean
    original = np.asarray(Image.open(images["img0"])).astype(np.float64)
    blocks = original.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(np.asarray(Image.open(aligned["img0"])).astype(np.float64) - blocks).max() <= 1.0
    # the project's threshold aligns the same face
    run_align(FakeDetector(), images, tmp_path / "ours", size=32, fallback="unaligned_32")
    assert read_alignment(tmp_path / "ours")["img0"]["status"] == "aligned"


def test_fallback_overrides_policy_and_threshold_and_bad_names_are_one_line_errors(tmp_path):
    images = make_images(tmp_path)
    run_align(FakeDetector(), images, tmp_path / "stage", size=32, policy="unaligned", min_face_size=8,
              fallback="skip_200")
    records = read_alignment(tmp_path / "stage")
    assert records["img0"]["status"] == "skipped" and records["img0"]["reason"] == "face_too_small"
    for bad in ("unaligned", "crop_512", "unaligned_big"):
        with pytest.raises(ConfigError, match="align.fallback"):
            run_align(FakeDetector(), images, tmp_path / "x", fallback=bad)


def test_hydra_config_selects_sfd_fan_and_falcos_fallback(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config("align=ffhq", "detector=sfd_fan", "align.fallback=unaligned_512")
    assert cfg.detector._target_ == "anon.nets.sfd_fan.SFDFANDetector"
    assert compose_config("align=ffhq").align.fallback is None  # the default stays policy + 32 px
    images = make_images(tmp_path)
    instantiate(cfg.align)(FakeDetector(), images, stage_dir=tmp_path / "stage")
    assert read_alignment(tmp_path / "stage")["img0"]["reason"] == "face_too_small"
