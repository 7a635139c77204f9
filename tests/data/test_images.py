"""anon/data/images.py: every pixel mode decodes to 8-bit RGB by scaling, the same for every reader.

The inputs are a real LFW face converted into each mode; 16-bit PNGs are also written by a small
independent PNG encoder (zlib + struct) so the test does not trust Pillow's writer for what it reads.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anon.data.images import degenerate, list_images, load_image, load_rgb
from anon.photos.cli import read_photo

FACE = "lfw_sample/AJ_Cook/AJ_Cook_0001.jpg"


def write_png16(array: np.ndarray, path: Path) -> None:
    """H x W x C uint16 (C = 1, 2, 3, 4) as a 16-bit PNG, written without Pillow."""
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


@pytest.fixture
def face(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, grey uint8) of a real face."""
    with Image.open(shared_data / FACE) as im:
        rgb = np.asarray(im.convert("RGB")).copy()
    return rgb, np.asarray(Image.fromarray(rgb).convert("L")).copy()


def make(mode: str, rgb: np.ndarray, grey: np.ndarray, folder: Path) -> tuple[Path, np.ndarray, float]:
    """The face stored in ``mode``: (file, what it should decode to, allowed mean abs difference)."""
    wide = grey.astype(np.uint16) * 257
    path = folder / f"face_{mode.replace(';', '')}"
    grey3 = np.repeat(grey[..., None], 3, axis=-1)
    if mode == "I;16":
        Image.fromarray(wide).save(path := path.with_suffix(".png"))
        return path, grey3, 0.0
    if mode == "I;16 independent":
        write_png16(wide[..., None], path := path.with_suffix(".png"))
        return path, grey3, 0.0
    if mode == "I;16B":
        Image.frombytes("I;16B", wide.shape[::-1], wide.astype(">u2").tobytes()).save(path := path.with_suffix(".tif"))
        return path, grey3, 0.0
    if mode == "I":
        Image.fromarray(wide.astype(np.int32), "I").save(path := path.with_suffix(".tif"))
        return path, grey3, 0.0
    if mode == "F":
        Image.fromarray((grey / 255.0).astype(np.float32), "F").save(path := path.with_suffix(".tif"))
        return path, grey3, 0.51
    if mode == "LA":
        Image.fromarray(np.dstack([grey, np.full_like(grey, 180)]), "LA").save(path := path.with_suffix(".png"))
        return path, grey3, 0.0
    if mode == "RGBA":
        Image.fromarray(np.dstack([rgb, np.full_like(grey, 90)]), "RGBA").save(path := path.with_suffix(".png"))
        return path, rgb, 0.0
    if mode == "P transparency":
        image = Image.fromarray(rgb).quantize(255)
        image.info["transparency"] = 0
        image.save(path := path.with_suffix(".png"), transparency=0)
        return path, rgb, 4.0  # 255 palette colours
    if mode == "CMYK":
        Image.fromarray(rgb).convert("CMYK").save(path := path.with_suffix(".jpg"), quality=98)
        return path, rgb, 3.0
    if mode == "RGB16 independent":
        write_png16(rgb.astype(np.uint16) * 257 + 128, path := path.with_suffix(".png"))
        return path, rgb, 1.0  # Pillow keeps the high byte: within one level of scaling
    if mode == "RGBA16 independent":
        write_png16(np.dstack([rgb.astype(np.uint16) * 257, np.full(grey.shape, 65535, np.uint16)]),
                    path := path.with_suffix(".png"))
        return path, rgb, 1.0
    raise ValueError(mode)


MODES = ["I;16", "I;16 independent", "I;16B", "I", "F", "LA", "RGBA", "P transparency", "CMYK",
         "RGB16 independent", "RGBA16 independent"]


@pytest.mark.real_data
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_decodes_to_the_face_by_scaling_in_every_reader(face, tmp_path, mode):
    path, expected, tolerance = make(mode, *face, tmp_path)
    decoded = load_rgb(path)
    assert decoded.shape == expected.shape and decoded.dtype == np.uint8
    difference = np.abs(decoded.astype(float) - expected)
    assert difference.mean() <= tolerance + 1e-9 and np.percentile(difference, 99) <= max(8 * tolerance, 1), mode
    assert degenerate(decoded) is None
    # The same pixels through the photos reader and the pipeline's tensor reader.
    assert np.array_equal(read_photo(path).rgb, decoded)
    tensor = load_image(path)
    assert np.array_equal(((tensor.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy(), decoded)


@pytest.mark.real_data
def test_sixteen_bit_grey_face_is_still_found_by_mtcnn(face, tmp_path):
    from tests.test_photos import identity_anonymizer

    path, _, _ = make("I;16", *face, tmp_path)
    result = identity_anonymizer().process(load_rgb(path))
    assert result.status == "done" and len(result.faces) == 1


def test_degenerate_images_are_named():
    assert degenerate(np.full((64, 64, 3), 255, np.uint8)).startswith("degenerate image: 100%")
    nearly = np.full((100, 100, 3), 17, np.uint8)
    nearly[:5] = np.random.default_rng(0).integers(0, 256, (5, 100, 3))
    assert "at grey level 17" in degenerate(nearly)
    assert degenerate(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)) is None


def test_every_file_is_its_own_item_symlink_loops_and_same_stems_included(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.png", "a/x.jpg", "a/x.png.jpg", "b.png", "c.tif"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "dangling.png").symlink_to("nowhere.png")
    (tmp_path / "notes.txt").write_text("not an image")
    found = list_images(tmp_path)
    # x.png.jpg's stem (x.png) is x.png's full name: it keeps its suffix too.
    assert found == {"a/x.jpg": tmp_path / "a/x.jpg", "a/x.png": tmp_path / "a/x.png",
                     "a/x.png.jpg": tmp_path / "a/x.png.jpg", "b": tmp_path / "b.png", "c": tmp_path / "c.tif",
                     "dangling": tmp_path / "dangling.png", "loop": tmp_path / "loop.jpg"}
    with pytest.raises(OSError):
        load_image(found["loop"])
