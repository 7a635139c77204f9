"""anon/photos/anonymizer.py and anon/photos/cli.py: whole photos in, whole photos out.

Geometry and policies use a stub detector (known landmarks) on synthetic images; the real-data tests run
MTCNN (weights inside the installed facenet-pytorch) on LFW photos from ``../shared/data``. Torch runs on
one intra-op thread here: on this shared 2-core machine MTCNN's and the lite networks' many small ops
are several times faster that way (the fixture restores the setting).
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from anon.data.align import AlignTransform
from anon.errors import MissingDataError
from anon.photos.paste import feather_mask, shifted_transform
from anon.photos import Anonymizer, FaceAnonymizer, IdentityFaceAnonymizer
from anon.photos.cli import anonymize_folder, read_photo, strip_jpeg_metadata
from tests.requires import unavailable

REPO = Path(__file__).resolve().parents[1]
#: LFW photos with exactly one face (checked with MTCNN).
ONE_FACE = ["AJ_Cook/AJ_Cook_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
            "Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abdullah/Abdullah_0001.jpg"]
#: Round trip with the identity anonymiser on real photos (levels of 255; crops at least as large as
#: the face, so the only loss is bilinear resampling there and back, i.e. a slight blur of sharp edges):
ROUND_TRIP_MEAN, ROUND_TRIP_P999 = 0.6, 40.0
#: ... and on a smooth synthetic photo, where resampling is exact up to rounding: any misregistration
#: (half a pixel gives ~4 levels here) would exceed this.
SMOOTH_MAX = 1.5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------------------- helpers
class StubDetector:
    """Returns the given detections whatever the image (``min_face_size`` is set by the anonymiser)."""

    def __init__(self, detections):
        self.detections, self.min_face_size = list(detections), 20.0

    def detect(self, image):
        return list(self.detections)


def face_at(cx: float, cy: float, eyes: float = 40.0, angle_deg: float = 0.0):
    """A detection (box, prob, 5 landmarks) of an upright-ish face centred near (cx, cy)."""
    pts = np.array([[-0.5, -0.25], [0.5, -0.25], [0.0, 0.15], [-0.4, 0.6], [0.4, 0.6]]) * eyes
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = pts @ rot.T + [cx, cy]
    box = np.array([cx - eyes, cy - eyes, cx + eyes, cy + 1.2 * eyes])
    return box.astype(np.float32), 0.99, lm.astype(np.float32)


def smooth_image(height: int, width: int) -> np.ndarray:
    """Low-frequency RGB pattern (wavelengths >= 50 px), uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [128 + 60 * np.sin(2 * np.pi * x / 50 + 0.3) + 40 * np.cos(2 * np.pi * y / 70),
                128 + 70 * np.sin(2 * np.pi * (x + y) / 90),
                128 + 50 * np.cos(2 * np.pi * (x - 0.5 * y) / 60) + 30 * np.sin(2 * np.pi * y / 55)]
    return np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8)


def stub_anonymizer(detections, face_anonymizer=None, **kw) -> Anonymizer:
    return Anonymizer(StubDetector(detections), face_anonymizer or IdentityFaceAnonymizer(), **kw)


class Constant:
    """Every crop becomes mid-grey (0 in [-1, 1]); counts the batch sizes it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, crops):
        self.calls.append(crops.shape[0])
        return torch.zeros_like(crops)


def quad_mask(transform: AlignTransform, height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    uv = transform.to_aligned(np.stack([xs, ys], -1))
    return np.all((uv >= -0.5) & (uv <= transform.size - 0.5), axis=-1)


def needs_mtcnn():
    if importlib.util.find_spec("facenet_pytorch") is None:
        unavailable("facenet-pytorch (MTCNN weights) not installed: make install-lite")


def lfw(shared_data: Path, name: str) -> np.ndarray:
    with Image.open(shared_data / "lfw_sample" / name) as im:
        return np.asarray(im.convert("RGB")).copy()


def identity_anonymizer(*overrides: str) -> Anonymizer:
    needs_mtcnn()
    return Anonymizer.from_config(["photos.face_anonymizer=identity", *overrides])


# ---------------------------------------------------------------------------------------------- geometry
def test_feather_mask_is_zero_outside_one_inside_and_smooth():
    t = AlignTransform.from_landmarks(face_at(100, 90, eyes=60, angle_deg=25)[2], 64, zoom=0.6)
    mask = feather_mask(t, 200, 220, "ellipse", feather=0.25)
    ys, xs = np.mgrid[0:200, 0:220].astype(np.float64)
    ab = (t.to_aligned(np.stack([xs, ys], -1)) + 0.5) * 2 / 64 - 1
    r = np.hypot(ab[..., 0], ab[..., 1])
    assert mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    assert np.all(mask[r >= 1] == 0) and np.all(mask[r <= 0.75] == 1)
    ramp = (r > 0.75) & (r < 1)
    assert 0 < mask[ramp].min() and mask[ramp].max() < 1
    # no step anywhere: neighbouring pixels differ by at most the smoothstep's slope (1.5 / ramp width)
    ramp_px = 0.25 * t.qsize / 2
    assert max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max()) < 1.6 / ramp_px
    square = feather_mask(t, 200, 220, "square", feather=0.25)
    inf = np.abs(ab).max(-1)
    assert np.all(square[inf >= 1] == 0) and np.all(square[inf <= 0.75] == 1)


@pytest.mark.parametrize("centre, border_blur", [((120, 100), 0.02), ((30, 25), 0.0)])
def test_crop_from_window_equals_warp_of_whole_image(centre, border_blur):
    image = smooth_image(200, 260)
    anonymizer = stub_anonymizer([face_at(*centre, eyes=50, angle_deg=-15)], crop_size=96, zoom=0.6,
                                 border_blur=border_blur)
    (face,) = anonymizer.plan(image)
    assert face.status == "aligned" and face.crop.shape == (3, 96, 96)
    full = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    reference = face.transform.warp(full, border_blur=border_blur)[0]
    assert torch.allclose(face.crop, reference, atol=1e-5)
    x0, y0, x1, y1 = face.window
    assert (x1 - x0) * (y1 - y0) < 0.5 * image.shape[0] * image.shape[1]


@pytest.mark.parametrize("crop_size", [64, 256])
def test_identity_round_trip_on_smooth_photo_is_exact_up_to_rounding(crop_size):
    image = smooth_image(240, 320)
    faces = [face_at(90, 100, eyes=45, angle_deg=20), face_at(230, 120, eyes=35, angle_deg=-30)]
    anonymizer = stub_anonymizer(faces, crop_size=crop_size, zoom=0.6, min_face_size=10)
    result = anonymizer.process(image)
    assert [f.status for f in result.faces] == ["aligned"] * 2
    error = np.abs(result.image.astype(int) - image.astype(int))
    assert error.max() <= SMOOTH_MAX
    # A face reaching past the photo's corner: outside the photo the crop repeats the edge pixels, so
    # the outermost pixel column differs from the continuous pattern by up to its slope (7.5 levels/px)
    # times the 0.5 px to the border; FFHQ's border blur (on by default) also smooths pixels within
    # 0.1 x the quad side of the edge (border_blur=0 turns it off).
    corner = stub_anonymizer([face_at(20, 210, eyes=40)], crop_size=crop_size, zoom=0.6, min_face_size=10,
                             border_blur=0.0)
    assert np.abs(corner.process(image).image.astype(int) - image.astype(int)).max() <= 4
    covered = np.zeros(image.shape[:2], bool)
    for f in result.faces:
        covered |= quad_mask(f.transform, *image.shape[:2])
    assert np.array_equal(result.image[~covered], image[~covered])  # bit for bit outside every crop


def test_paste_blends_over_a_feathered_ramp_without_a_box_edge():
    image = np.full((160, 160, 3), 200, np.uint8)
    anonymizer = stub_anonymizer([face_at(80, 75, eyes=40, angle_deg=10)], Constant(), crop_size=64, zoom=0.6,
                                 min_face_size=10, mask_shape="ellipse")
    result = anonymizer.process(image)
    (face,) = result.faces
    local = shifted_transform(face.transform, 0, 0)
    alpha = feather_mask(local, 160, 160, "ellipse", 0.25)
    expected = np.rint(200 + alpha * (127.5 - 200))  # grey (127.5) blended over white by the mask
    assert np.abs(result.image[..., 0].astype(float) - expected).max() <= 1
    assert result.image[75, 80, 0] in (127, 128) and np.all(result.image[alpha == 0] == 200)


# ---------------------------------------------------------------------------------------------- policies, batching, API
@pytest.mark.parametrize("policy", ["leave", "blur", "fill"])
def test_small_faces_follow_the_policy(policy):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    small, unusable = face_at(50, 60, eyes=12), face_at(120, 60, eyes=12)
    unusable = (unusable[0], 0.9, np.full((5, 2), np.nan, np.float32))
    constant = Constant()
    anonymizer = stub_anonymizer([small, unusable], constant, min_face_size=100, small_face_policy=policy)
    result = anonymizer.process(image)
    assert [f.status for f in result.faces] == ["too_small", "bad_landmarks"]
    assert {f.policy for f in result.faces} == {"leave": {"left"}, "blur": {"blurred"}, "fill": {"filled"}}[policy]
    assert constant.calls == []  # nothing was sent to the face anonymiser
    records = [f.record() for f in result.faces]
    assert all(r["transform"] is None and len(r["box"]) == 4 for r in records)
    if policy == "leave":
        assert np.array_equal(result.image, image) and not result.changed
        return
    for box, _, _ in (small, unusable):  # the face's centre is smoothed (blur) or flat (fill)
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        inner = result.image[cy - 4:cy + 5, cx - 4:cx + 5].astype(float)
        assert inner.std(axis=(0, 1)).max() < (0.5 if policy == "fill" else 0.25 * image.std())
    changed = np.any(result.image != image, axis=-1)
    windows = np.zeros(image.shape[:2], bool)
    for face in result.faces:
        x0, y0, x1, y1 = face.window
        windows[y0:y1, x0:x1] = True
    assert changed.any() and not np.any(changed & ~windows)


def test_faces_of_several_photos_share_batches_and_get_their_own_results():
    class Negate:
        def __init__(self):
            self.calls = []

        def __call__(self, crops):
            self.calls.append(crops.shape[0])
            return -crops

    photos = [(i, smooth_image(120, 150 + 10 * i)) for i in range(5)]
    dets = [face_at(45, 60, eyes=30), face_at(105, 60, eyes=25, angle_deg=15)]
    negate = Negate()
    batched = stub_anonymizer(dets, negate, crop_size=32, zoom=0.6, min_face_size=10, batch_size=4)
    results = dict(batched.process_many(photos))
    assert negate.calls == [4, 4, 2] and sorted(results) == list(range(5))
    alone = stub_anonymizer(dets, lambda c: -c, crop_size=32, zoom=0.6, min_face_size=10, batch_size=1)
    for key, image in photos:
        assert np.array_equal(results[key].image, alone.process(image).image)
    # at most max_pending photos wait: with max_pending=2 a partial batch runs every second photo
    negate.calls = []
    limited = stub_anonymizer(dets, negate, crop_size=32, zoom=0.6, min_face_size=10, batch_size=16, max_pending=2)
    assert len(dict(limited.process_many(photos))) == 5 and negate.calls == [4, 4, 2]


def test_call_keeps_the_input_type_mode_and_alpha():
    rgb = smooth_image(100, 120)
    anonymizer = stub_anonymizer([face_at(60, 50, eyes=30)], Constant(), crop_size=32, zoom=0.6, min_face_size=10)
    assert isinstance(anonymizer.face_anonymizer, FaceAnonymizer)
    out = anonymizer(rgb)
    assert isinstance(out, np.ndarray) and out.shape == rgb.shape and out.dtype == np.uint8
    assert not np.array_equal(out, rgb)
    alpha = np.linspace(0, 255, 100 * 120).reshape(100, 120).astype(np.uint8)
    rgba = np.dstack([rgb, alpha])
    out4 = anonymizer(rgba)
    assert out4.shape == rgba.shape and np.array_equal(out4[..., 3], alpha)
    for mode in ("RGB", "RGBA", "L", "LA"):
        image = Image.fromarray(rgba, "RGBA").convert(mode)
        out_image = anonymizer(image)
        assert isinstance(out_image, Image.Image) and out_image.mode == mode and out_image.size == image.size
    gray = anonymizer(np.asarray(Image.fromarray(rgb).convert("L")))
    assert gray.shape == (100, 120)
    with pytest.raises(TypeError):
        anonymizer(rgb.astype(np.float32))


# ---------------------------------------------------------------------------------------------- files
def _png_text(key: str, value: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(key, value)
    return info


def jpeg_with_metadata(pixels: np.ndarray, **save) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Camera maker", "Model X"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPS latitude
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-123456"  # body serial number
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, exif=exif, comment=b"secret comment",
                                 xmp=b"<x:xmpmeta>who</x:xmpmeta>", icc_profile=b"\0" * 128, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"restart_marker_blocks": 2}])
def test_strip_jpeg_metadata_is_lossless_and_complete(save):
    pixels = smooth_image(64, 80)
    data = jpeg_with_metadata(pixels, **save) + b"\xff\xd8 a second picture (MPO) after the first"
    stripped, dropped = strip_jpeg_metadata(data, keep_icc=True)
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(stripped)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert "exif" not in b.info and "xmp" not in b.info and "comment" not in b.info
        assert b.info.get("icc_profile") == b"\0" * 128 and len(b.getexif()) == 0
    assert {"exif", "xmp", "comment", "data after the image"} <= set(dropped)
    for secret in (b"SERIAL-123456", b"Camera maker", b"secret comment", b"who", b"second picture"):
        assert secret not in stripped
    no_icc, _ = strip_jpeg_metadata(data, keep_icc=False)
    assert "icc_profile" not in Image.open(io.BytesIO(no_icc)).info
    with pytest.raises(ValueError):
        strip_jpeg_metadata(b"\x89PNG not a jpeg")


# ---------------------------------------------------------------------------------------------- real photos
@pytest.mark.real_data
def test_identity_round_trip_on_real_photos(shared_data):
    anonymizer = identity_anonymizer("photos.crop_size=256")
    for name in ONE_FACE + ["Lars_Von_Trier/Lars_Von_Trier_0003.jpg", "Yashwant_Sinha/Yashwant_Sinha_0002.jpg"]:
        image = lfw(shared_data, name)
        result = anonymizer.process(image)
        assert result.faces and all(f.status == "aligned" for f in result.faces)
        error = np.abs(result.image.astype(float) - image)
        assert error.mean() <= ROUND_TRIP_MEAN and np.percentile(error, 99.9) <= ROUND_TRIP_P999, name
        covered = np.zeros(image.shape[:2], bool)
        for f in result.faces:
            covered |= quad_mask(f.transform, *image.shape[:2])
        assert np.array_equal(result.image[~covered], image[~covered]), name


@pytest.mark.real_data
def test_several_faces_on_one_canvas(shared_data):
    tiles = [lfw(shared_data, n) for n in ONE_FACE]
    canvas = np.full((2 * 250 + 60, 2 * 250 + 60, 3), 90, np.uint8)
    origins = [(20, 20), (20, 290), (290, 20), (290, 290)]
    for (y, x), tile in zip(origins, tiles):
        canvas[y:y + 250, x:x + 250] = tile
    anonymizer = identity_anonymizer()
    constant = Constant()
    anonymizer.face_anonymizer = constant
    result = anonymizer.process(canvas)
    anonymised = [f for f in result.faces if f.policy == "anonymised"]
    assert len(anonymised) >= 4 and constant.calls == [len(anonymised)]  # one batch for all faces
    for y, x in origins:  # one face per tile, its centre now the anonymiser's grey
        inside = [f for f in anonymised if x <= f.transform.centre[0] < x + 250 and y <= f.transform.centre[1] < y + 250]
        assert len(inside) >= 1
        cx, cy = np.rint(inside[0].transform.centre).astype(int)
        assert np.abs(result.image[cy, cx].astype(int) - 127.5).max() <= 1
    gaps = np.ones(canvas.shape[:2], bool)
    for y, x in origins:
        gaps[y - 5:y + 255, x - 5:x + 255] = False
    assert np.array_equal(result.image[gaps], canvas[gaps])
    anonymizer.face_anonymizer = IdentityFaceAnonymizer()
    assert np.abs(anonymizer.process(canvas).image.astype(float) - canvas).mean() < ROUND_TRIP_MEAN * 2


@pytest.mark.real_data
def test_folder_noise_passes_through_and_rotated_photo_comes_out_upright(shared_data, tmp_path):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(source / "noise.png")
    (source / "sub" / "noise.jpg").write_bytes(jpeg_with_metadata(noise))
    upright = lfw(shared_data, ONE_FACE[0])[20:220]  # 250 wide x 200 high: not square
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 200 x 250 on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)
    stored.save(source / "sub" / "rotated.jpg", quality=95, exif=exif)
    with Image.open(source / "sub" / "rotated.jpg") as im:
        transposed = np.asarray(ImageOps.exif_transpose(im)).copy()
    assert transposed.shape == (200, 250, 3)
    (source / "broken.jpg").write_bytes(b"not an image")
    face_rgba = np.dstack([lfw(shared_data, ONE_FACE[1]), np.full((250, 250), 200, np.uint8)])
    Image.fromarray(face_rgba, "RGBA").save(source / "face.png", pnginfo=_png_text("Author", "someone"))

    anonymizer = identity_anonymizer()
    counts = anonymize_folder(anonymizer, source, tmp_path / "out")
    out = tmp_path / "out"
    records = {Path(r["source"]).name: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert counts["no_face"] == 2 and counts["done"] == 2 and counts["failed"] == 1
    rec = records["face.png"]
    assert rec["format"] == "PNG" and rec["faces"][0]["policy"] == "anonymised" and rec["metadata_stripped"] == ["Author"]
    with Image.open(out / "face.png") as result:
        assert result.format == "PNG" and result.mode == "RGBA" and "Author" not in result.info
        pixels = np.asarray(result)
    assert np.array_equal(pixels[..., 3], face_rgba[..., 3]) and not np.array_equal(pixels, face_rgba)
    assert np.abs(pixels.astype(float) - face_rgba).mean() < ROUND_TRIP_MEAN
    assert records["broken.jpg"]["status"] == "failed" and "unreadable" in records["broken.jpg"]["error"]

    for name in ("noise.png", "noise.jpg"):
        rec = records[name]
        assert rec["status"] == "no_face" and rec["faces"] == [] and rec["pixels_unchanged"]
        with Image.open(out / rec["output"]) as a, Image.open(source / rec["output"]) as b:
            assert a.format == b.format and np.array_equal(np.asarray(a), np.asarray(b))
            assert len(a.getexif()) == 0 and "comment" not in a.info
    assert records["noise.jpg"]["reencoded"] is False and "exif" in records["noise.jpg"]["metadata_stripped"]
    assert records["noise.jpg"]["exif_gps"] is True

    rec = records["rotated.jpg"]
    assert rec["status"] == "done" and rec["orientation"] == 6 and rec["size"] == [250, 200]
    assert [f["status"] for f in rec["faces"]] == ["aligned"] and rec["faces"][0]["transform"]["size"] == 64
    with Image.open(out / "sub" / "rotated.jpg") as result:
        assert result.format == "JPEG" and result.size == (250, 200)
        assert len(result.getexif()) == 0 and "exif" not in result.info
        pixels = np.asarray(result).astype(float)
    assert np.abs(pixels - transposed).mean() < 2.0  # upright (a transposed result would differ by ~50)
    assert "exif" in rec["metadata_stripped"] and rec["reencoded"] is True

    again = anonymize_folder(anonymizer, source, out)  # resume: everything is already recorded
    assert again["skipped"] == 5 and len((out / "manifest.jsonl").read_text().splitlines()) == 5


@pytest.mark.real_data
def test_photo_read_applies_orientation(shared_data, tmp_path):
    upright = lfw(shared_data, ONE_FACE[1])[:, 10:210]
    for orientation, op in [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                            (8, Image.Transpose.ROTATE_270)]:
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        Image.fromarray(upright).transpose(op).save(path, exif=exif)
        photo = read_photo(path)
        assert photo.orientation == orientation and np.array_equal(photo.rgb, upright)


@pytest.mark.slow
@pytest.mark.real_data
def test_large_photo_stays_within_memory_and_never_goes_whole_to_torch(shared_data, tmp_path):
    """A 4000 x 3000 JPEG with three faces, in a fresh process: peak RSS growth < 1.5 GB, no torch
    tensor with half the photo's pixels or more."""
    needs_mtcnn()
    height, width = 3000, 4000
    yy, xx = np.mgrid[0:height, 0:width]
    canvas = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 128)], -1).astype(np.uint8)
    del yy, xx
    for x, y, side, name in [(300, 400, 1200, ONE_FACE[0]), (2200, 1200, 900, ONE_FACE[2]), (1600, 300, 250, ONE_FACE[1])]:
        canvas[y:y + side, x:x + side] = np.asarray(Image.fromarray(lfw(shared_data, name)).resize((side, side)))
    (tmp_path / "in").mkdir()
    Image.fromarray(canvas).save(tmp_path / "in" / "large.jpg", quality=90)
    del canvas
    script = f"""
import json, resource, numpy as np, torch
from torch.utils._python_dispatch import TorchDispatchMode
from anon.photos import Anonymizer
from anon.photos.cli import anonymize_folder
torch.set_num_threads(1)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
anonymizer = Anonymizer.from_config(["photos.face_anonymizer=identity"])
anonymizer(np.full((200, 200, 3), 100, np.uint8))  # warm up
class Largest(TorchDispatchMode):
    area = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {{}}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.ndim >= 2:
                Largest.area = max(Largest.area, t.shape[-1] * t.shape[-2])
        return out
before = rss()
with Largest():
    counts = anonymize_folder(anonymizer, {str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r})
print(json.dumps({{"growth": rss() - before, "area": Largest.area, "counts": counts}}))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["growth"] < 1.5 * 2**30, facts
    assert facts["area"] < height * width / 2, facts
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert record["size"] == [width, height] and sum(f["status"] == "aligned" for f in record["faces"]) == 3
    with Image.open(tmp_path / "out" / "large.jpg") as out:
        assert out.size == (width, height) and out.format == "JPEG"


@pytest.mark.slow
@pytest.mark.real_data
def test_cli_writes_photos_manifest_and_config_only(shared_data, tmp_path):
    needs_mtcnn()
    (tmp_path / "in").mkdir()
    for name in ONE_FACE[:2]:
        (tmp_path / "in" / Path(name).name).write_bytes((shared_data / "lfw_sample" / name).read_bytes())
    run = subprocess.run([sys.executable, "-m", "anon.photos.cli", f"input={tmp_path / 'in'}",
                          f"output={tmp_path / 'out'}", "photos.face_anonymizer=identity", "threads=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 with faces" in run.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["AJ_Cook_0001.jpg", "Aaron_Peirsol_0001.jpg", "config.yaml", "manifest.jsonl"])
    records = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["done", "done"]
    config = (tmp_path / "out" / "config.yaml").read_text()
    assert "face_anonymizer: identity" in config and "zoom: 0.6" in config


def test_missing_input_is_a_one_line_error(tmp_path):
    with pytest.raises(MissingDataError, match="input photo or folder not found"):
        anonymize_folder(stub_anonymizer([]), tmp_path / "nothing", tmp_path / "out")


@pytest.mark.real_data
def test_falco_lite_face_anonymizer_changes_the_face_only(shared_data, tmp_path):
    from tests.test_demo import lite_available

    lite_available()
    anonymizer = Anonymizer.from_config([f"cache_root={tmp_path / 'cache'}", "fakes.num_samples=32",
                                         "fakes.chunk_size=32", "inverter.steps=5", "inverter.starts=1",
                                         "module.steps=3"])
    image = lfw(shared_data, ONE_FACE[0])
    result = anonymizer.process(image)
    (face,) = result.faces
    assert face.policy == "anonymised" and face.info["fake"].startswith("fake")
    assert {"pair_similarity", "identity_similarity_before", "identity_similarity_after"} <= set(face.info)
    covered = quad_mask(face.transform, *image.shape[:2])
    assert np.array_equal(result.image[~covered], image[~covered])
    x, y = np.rint(face.transform.centre).astype(int)
    core = (slice(y - 20, y + 20), slice(x - 20, x + 20))
    assert np.abs(result.image[core].astype(float) - image[core]).mean() > 5


@pytest.mark.real_data
def test_sixteen_bit_face_is_anonymised_and_blank_frames_fail_instead_of_passing(shared_data, tmp_path):
    """A 16-bit grey face is found (not clipped white and passed through as ``no_face``); a white or
    constant frame, where no face can be searched, is ``failed`` with no output written."""
    source = tmp_path / "in"
    source.mkdir()
    grey = np.asarray(Image.fromarray(lfw(shared_data, ONE_FACE[0])).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(source / "face16.png")
    Image.new("RGB", (200, 160), (255, 255, 255)).save(source / "white.png")
    Image.new("L", (200, 160), 90).save(source / "grey.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(source / "noise.png")
    counts = anonymize_folder(identity_anonymizer(), source, tmp_path / "out")
    records = {Path(r["source"]).name: r for r in
               map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert records["face16.png"]["status"] == "done" and len(records["face16.png"]["faces"]) == 1
    for name in ("white.png", "grey.jpg"):
        assert records[name]["status"] == "failed" and "degenerate image" in records[name]["error"]
        assert records[name]["output"] is None and not (tmp_path / "out" / name).exists()
    assert counts["failed"] == 2 and counts["no_face"] == 1 and records["noise.png"]["status"] == "no_face"
    strict = anonymize_folder(identity_anonymizer("photos.no_face_policy=fail"), source, tmp_path / "strict")
    records = {Path(r["source"]).name: r for r in
               map(json.loads, (tmp_path / "strict" / "manifest.jsonl").read_text().splitlines())}
    assert records["noise.png"]["status"] == "failed" and "no_face_policy=fail" in records["noise.png"]["error"]
    assert strict["failed"] == 3 and strict["done"] == 1 and not (tmp_path / "strict" / "noise.png").exists()
    with pytest.raises(Exception, match="no_face_policy must be one of"):
        identity_anonymizer("photos.no_face_policy=maybe")


@pytest.mark.real_data
def test_symlink_loop_same_stems_and_taken_output_names_each_get_a_record(shared_data, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    face = Image.fromarray(lfw(shared_data, ONE_FACE[0]))
    face.save(source / "a.jpg", quality=95)
    face.save(source / "a.png")
    face.save(source / "x.webp", lossless=True)
    face.save(source / "x.webp.png")  # the name x.webp's output would take
    (source / "loop.jpg").symlink_to("loop.jpg")
    counts = anonymize_folder(identity_anonymizer(), source, tmp_path / "out")
    records = {Path(r["source"]).name: r for r in
               map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert sorted(records) == ["a.jpg", "a.png", "loop.jpg", "x.webp", "x.webp.png"]
    assert records["loop.jpg"]["status"] == "failed" and "unreadable" in records["loop.jpg"]["error"]
    assert records["a.jpg"]["status"] == records["a.png"]["status"] == "done"
    assert (tmp_path / "out" / "a.jpg").is_file() and (tmp_path / "out" / "a.png").is_file()
    assert records["x.webp"]["output"] == "x.webp.png" and records["x.webp.png"]["status"] == "failed"
    assert "already taken by" in records["x.webp.png"]["error"]
    assert counts["failed"] == 2 and counts["done"] == 3


@pytest.mark.slow
@pytest.mark.real_data
def test_photos_run_killed_midway_and_resumed_matches_the_uninterrupted_run(shared_data, tmp_path):
    """kill -9 after the first photo (one face per batch), rerun with four faces per batch: every photo
    equals the uninterrupted run's (four per batch) up to float rounding, though its faces sat at other
    places in other batches."""
    import signal
    import time

    from tests.test_demo import lite_available

    lite_available()
    source = tmp_path / "in"
    source.mkdir()
    for name in ONE_FACE:
        Image.fromarray(lfw(shared_data, name)).save(source / (Path(name).stem + ".png"))
    common = [f"input={source}", f"cache_root={tmp_path / 'cache'}", "fakes.num_samples=32", "fakes.chunk_size=32",
              "inverter.steps=10", "inverter.starts=2", "module.steps=4", "threads=1"]

    def command(out: Path, batch: int) -> list[str]:
        return [sys.executable, "-m", "anon.photos.cli", f"output={out}", f"photos.batch_size={batch}", *common]

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(command(tmp_path / "whole", 4), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    manifest = tmp_path / "resumed" / "manifest.jsonl"
    killed = subprocess.Popen(command(tmp_path / "resumed", 1), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if manifest.is_file() and manifest.read_text().count("\n") >= 1:
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    first = manifest.read_text().count("\n")
    assert 1 <= first < len(ONE_FACE) - 1  # at least two photos left for one resumed batch
    resumed = subprocess.run(command(tmp_path / "resumed", 4), cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(Path(r["source"]).name for r in records) == sorted(p.name for p in source.iterdir())
    assert all(r["status"] == "done" for r in records)
    for record in records:
        a = np.asarray(Image.open(tmp_path / "whole" / record["output"])).astype(int)
        b = np.asarray(Image.open(tmp_path / "resumed" / record["output"])).astype(int)
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.05, (record["output"], np.abs(a - b).max())


def test_unreadable_fake_code_is_passed_over_for_the_next_nearest_fake(tmp_path):
    """A corrupt ``codes/<fake>.pt`` in the fake pool's cache (a pickled object) does not stop the run."""
    import pickle

    from anon.photos import FalcoFaceAnonymizer

    class Module(torch.nn.Module):
        def optimise(self, x, codes, neighbours):
            self.neighbours = neighbours
            zeros = torch.zeros(x.shape[0])
            return {"images": x, "initial": {"similarity": zeros}, "final": {"similarity": zeros}}

    class Pairing(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    (tmp_path / "f0.pt").write_bytes(pickle.dumps(Path("not a tensor")))
    torch.save(torch.full((2, 4), 1.0), tmp_path / "f1.pt")
    load = lambda fake: torch.load(tmp_path / f"{fake}.pt", weights_only=True)  # noqa: E731
    features = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.9], [-1.0, 0.0, 0.0]])
    module = Module()
    anonymizer = FalcoFaceAnonymizer(module, lambda x: torch.zeros(x.shape[0], 2, 4), ["f0", "f1", "f2"], features,
                                     load, Pairing(), image_size=8)
    out = anonymizer(torch.full((1, 3, 8, 8), 0.5))
    assert out.shape == (1, 3, 8, 8) and anonymizer.last[0]["fake"] == "f1"
    assert torch.equal(module.neighbours[0], torch.full((2, 4), 1.0))
