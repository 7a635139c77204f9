"""anon/photos/face_outline.py and the photos' hull paste-back: the generated face goes inside the face's outline only.

Expected masks and regions are written here from the geometry (an axis-aligned rectangle's distances, an
ellipse's equation), not taken from the code under test.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from anon.photos.face_outline import box_ellipse, convex_hull, hull_mask
from tests.requires import unavailable
from tests.test_photos import Constant, lfw, needs_mtcnn, stub_anonymizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ELLIPSE_BOX = np.array([60.0, 50.0, 140.0, 150.0])  # x1 y1 x2 y2: semi-axes 40 x 50 around (100, 100)


def smoothstep(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def ellipse_radius(xs, ys, box=ELLIPSE_BOX):
    """Normalised radius of pixel centres for the ellipse inscribed in ``box`` (1 on it)."""
    cx, cy, rx, ry = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    return np.hypot((xs - cx) / rx, (ys - cy) / ry)


def test_convex_hull_drops_inner_points_and_is_counter_clockwise():
    corners = np.array([[0, 0], [10, 0], [10, 6], [0, 6]], float)
    inner = np.array([[5, 3], [2, 1], [9, 5], [5, 0]], float)  # (5, 0) lies on an edge
    hull = convex_hull(np.concatenate([inner, corners]))
    assert sorted(map(tuple, hull)) == sorted(map(tuple, corners))
    x, y = hull[:, 0], hull[:, 1]
    assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0  # positive signed area
    with pytest.raises(ValueError):
        convex_hull(np.array([[0, 0], [1, 1], [2, 2]], float))


def test_hull_mask_of_a_rectangle_is_the_smoothstep_of_the_distance_to_its_sides():
    x0, y0, x1, y1 = 20.0, 30.0, 120.0, 90.0
    hull = convex_hull(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [70, 60]]))
    window = (0, 0, 150, 110)
    mask = hull_mask(hull, window, feather=0.1)
    ys, xs = np.mgrid[0:110, 0:150].astype(float)
    d = np.minimum.reduce([xs - x0, x1 - xs, ys - y0, y1 - ys])
    ramp = 0.1 * np.sqrt((x1 - x0) * (y1 - y0))
    assert mask.dtype == np.float32 and mask.shape == (110, 150)
    assert np.allclose(mask, smoothstep(d / ramp), atol=1e-6)
    assert np.all(mask[d <= 0] == 0) and np.all(mask[d >= ramp] == 1)
    # a window elsewhere in the photo sees the same mask at the same photo pixels
    assert np.array_equal(hull_mask(hull, (40, 20, 100, 70), 0.1), mask[20:70, 40:100])


def test_hull_mask_of_the_box_ellipse_is_zero_outside_the_ellipse_and_one_deep_inside():
    hull = convex_hull(box_ellipse(ELLIPSE_BOX))
    mask = hull_mask(hull, (0, 0, 200, 200), feather=0.1)
    ys, xs = np.mgrid[0:200, 0:200].astype(float)
    r = ellipse_radius(xs, ys)
    ramp = 0.1 * np.sqrt(np.pi * 40 * 50)  # ~7.9 px; the 32-gon lies within 0.5 % of the ellipse
    assert np.all(mask[r >= 1] == 0)
    assert np.all(mask[r <= 1 - (ramp + 1) / 40] == 1)
    assert 0 < mask[(r > 0.9) & (r < 0.95)].min()


def test_pasted_face_stays_inside_the_outline_and_everything_else_is_bitwise_the_photo():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    eyes = 40.0
    pts = np.array([[-0.5, -0.25], [0.5, -0.25], [0.0, 0.15], [-0.4, 0.6], [0.4, 0.6]]) * eyes + [100, 100]
    detection = (ELLIPSE_BOX.astype(np.float32), 0.99, pts.astype(np.float32))
    result = stub_anonymizer([detection], Constant(), crop_size=64, zoom=0.6, min_face_size=10,
                             outline="box_ellipse").process(image)
    (face,) = result.faces
    record = face.record()
    assert record["mask"] == "box_ellipse" and record["generated_px"] == 64 and record["pasted_px"] > 64
    ys, xs = np.mgrid[0:200, 0:200].astype(float)
    r = ellipse_radius(xs, ys)
    assert np.array_equal(result.image[r >= 1], image[r >= 1])
    core = r <= 0.5  # deep inside the outline and inside the crop's square: the anonymiser's grey
    assert np.abs(result.image[core].astype(int) - 127.5).max() <= 1
    # the square crop mask, as before, changes pixels outside the outline (the box's corners)
    square = stub_anonymizer([detection], Constant(), crop_size=64, zoom=0.6, min_face_size=10,
                             mask_shape="square").process(image)
    assert np.any(square.image[r >= 1.1] != image[r >= 1.1])


@pytest.mark.real_data
def test_real_face_gets_the_dlib_outline_and_keeps_the_photo_outside_it(shared_data):
    from anon.photos import Anonymizer

    needs_mtcnn()
    if importlib.util.find_spec("dlib") is None:
        unavailable("dlib not installed: make install-lite")
    image = lfw(shared_data, "Abdullah/Abdullah_0001.jpg")
    anonymizer = Anonymizer.from_config(["photos.face_anonymizer=identity"])
    anonymizer.face_anonymizer = Constant()
    result = anonymizer.process(image)
    (face,) = result.faces
    assert face.info["mask"] == "dlib68"
    changed = np.any(result.image != image, axis=-1)
    hull = face.outline
    inside = np.zeros(changed.shape, bool)
    inside[int(hull[:, 1].min()):int(hull[:, 1].max()) + 1, int(hull[:, 0].min()):int(hull[:, 0].max()) + 1] = True
    assert changed.any() and not np.any(changed & ~inside)  # nothing changes outside the outline's extent
    # the outline is a face, not a square: the corners of its bounding box keep the photo's pixels
    x0, y0 = int(hull[:, 0].min()), int(hull[:, 1].min())
    x1, y1 = int(hull[:, 0].max()), int(hull[:, 1].max())
    for x, y in [(x0 + 2, y0 + 2), (x1 - 2, y0 + 2), (x0 + 2, y1 - 2), (x1 - 2, y1 - 2)]:
        assert not changed[y, x]
    cx, cy = np.rint(face.transform.centre).astype(int)
    assert np.abs(result.image[cy, cx].astype(int) - 127.5).max() <= 1
    assert torch.get_num_threads() == 1  # the photos tests' one-thread fixture is in force
