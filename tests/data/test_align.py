"""FFHQ alignment from 5 landmarks: geometry against hand-derived positions, PIL as the independent
resampler, rotation equivariance and the warp/unwarp round trip (the failure policies: test_align_policy.py).

Coordinates are pixel-centre (x, y): pixel ``image[i, j]`` is centred at ``(j, i)``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anon.data.align import AlignTransform, align_face, face_size, ffhq_quad


def smooth_image(height: int, width: int, seed: int = 0, cells: int = 10) -> np.ndarray:
    """A smooth random RGB uint8 image (bicubic upsampling of a coarse random grid)."""
    coarse = np.random.default_rng(seed).uniform(20, 235, (cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def canonical_landmarks(e: float, m: float, mouth_half_width: float = 40.0) -> np.ndarray:
    """Upright face with the eye midpoint at the origin: eyes (+-e/2, 0), mouth corners (+-w, m)."""
    return np.array([[-e / 2, 0.0], [e / 2, 0.0], [0.0, 0.6 * m], [-mouth_half_width, m], [mouth_half_width, m]])


def similarity(points: np.ndarray, scale: float, degrees: float, shift) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])  # proper rotation, no mirror
    return scale * points @ rot.T + np.asarray(shift, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- (a)


def test_quad_of_an_upright_face_from_the_ffhq_constants_by_hand():
    # e = |eye_to_eye| = 100, m = |eye_to_mouth| = 100: half side s = max(2.0 * 100, 1.8 * 100) = 200,
    # centre = eye_avg + 0.1 * eye_to_mouth = (0, 10); the square spans x in [-200, 200], y in [-190, 210].
    quad = ffhq_quad(canonical_landmarks(100, 100))
    np.testing.assert_allclose(quad, [[-200, -190], [-200, 210], [200, 210], [200, -190]], atol=1e-12)
    # tall face: e = 60, m = 100 -> s = max(120, 180) = 180, centre (0, 10).
    quad = ffhq_quad(canonical_landmarks(60, 100))
    np.testing.assert_allclose(quad, [[-180, -170], [-180, 190], [180, 190], [180, -170]], atol=1e-12)
    assert face_size(canonical_landmarks(60, 100)) == pytest.approx(360.0)


def test_quad_of_a_turned_face_by_hand():
    # eyes (0,0), (100,0); mouth corners (50,100), (90,100): eye_to_eye = (100, 0), eye_avg = (50, 0),
    # eye_to_mouth = (20, 100). flipud(eye_to_mouth) * [-1, 1] = (-100, 20), so x ~ (200, -20);
    # |x| scaled to max(200, 1.8 * sqrt(10400)) = 200; y = (20, 200) * 200 / |(200, -20)|;
    # c = (50, 0) + (2, 10) = (52, 10). The nose plays no part.
    lm = np.array([[0.0, 0.0], [100.0, 0.0], [-999.0, 7.0], [50.0, 100.0], [90.0, 100.0]])
    k = 200.0 / np.hypot(200.0, -20.0)
    x, y, c = np.array([200.0, -20.0]) * k, np.array([20.0, 200.0]) * k, np.array([52.0, 10.0])
    np.testing.assert_allclose(ffhq_quad(lm), [c - x - y, c - x + y, c + x + y, c + x - y], atol=1e-9)


@pytest.mark.parametrize("e, m", [(100.0, 100.0), (60.0, 100.0)])
@pytest.mark.parametrize("scale, degrees, shift", [(1.0, 0.0, (0, 0)), (0.7, 23.0, (412.3, 280.9)),
                                                   (2.5, -140.0, (-35.0, 1200.0))])
def test_landmarks_land_on_their_canonical_ffhq_positions(e, m, scale, degrees, shift):
    # Where a point P of the upright face lands in a 1024 FFHQ crop, by hand: the square has half
    # side s = max(2e, 1.8m) and centre (0, 0.1m); PIL's QUAD puts the quad corners on the outer
    # corners of the crop pixels, so pixel centres are at u = (P_x + s) * 1024 / (2s) - 0.5 and
    # v = (P_y - 0.1m + s) * 1024 / (2s) - 0.5. E.g. e = m = 100: s = 200, 2.56 px per unit, the
    # left eye (-50, 0) lands at (150 * 2.56 - 0.5, 190 * 2.56 - 0.5) = (383.5, 485.9).
    canon = canonical_landmarks(e, m)
    s = max(2 * e, 1.8 * m)
    expected = np.stack([(canon[:, 0] + s) * 1024 / (2 * s) - 0.5,
                         (canon[:, 1] - 0.1 * m + s) * 1024 / (2 * s) - 0.5], axis=1)
    if e == m == 100.0:
        np.testing.assert_allclose(expected[0], [383.5, 485.9], atol=1e-9)
        np.testing.assert_allclose(expected[1], [639.5, 485.9], atol=1e-9)
    image_lm = similarity(canon, scale, degrees, shift)
    transform = AlignTransform.from_landmarks(image_lm, 1024)
    np.testing.assert_allclose(transform.to_aligned(image_lm), expected, atol=1e-7)
    np.testing.assert_allclose(transform.to_image(expected), image_lm, atol=1e-7)
    np.testing.assert_allclose(np.c_[image_lm, np.ones(5)] @ transform.matrix.T, expected, atol=1e-7)
    assert transform.qsize == pytest.approx(2 * s * scale)
    assert transform.angle == pytest.approx((degrees + 180) % 360 - 180)


# ---------------------------------------------------------------------------------- resampler vs PIL


def test_warp_matches_pils_quad_transform_as_ffhq_calls_it():
    image = smooth_image(160, 200, seed=1)
    lm = similarity(canonical_landmarks(30, 30), 1.0, 12.0, (100, 70))
    for size in (64, 120):  # qsize = 120: a down- and a 1:1 resampling
        transform = AlignTransform.from_landmarks(lm, size)
        assert transform.qsize == pytest.approx(120.0)
        ours = transform.warp(image, antialias=False).astype(int)
        # FFHQ's call: img.transform((S, S), QUAD, (quad + 0.5).flatten(), BILINEAR)
        ref = np.asarray(Image.fromarray(image).transform((size, size), Image.Transform.QUAD,
                                                          (transform.quad + 0.5).flatten(), Image.Resampling.BILINEAR))
        ref = ref.astype(int)
        assert np.abs(ours - ref).max() <= 1  # quad inside the image: only uint8 rounding differs


def test_reflection_outside_the_image_and_ffhq_border_blend():
    image = smooth_image(100, 120, seed=2)
    lm = similarity(canonical_landmarks(24, 24), 1.0, 0.0, (8, 30))  # quad sticks out top and left
    transform = AlignTransform.from_landmarks(lm, 96)
    assert transform.quad[:, 0].min() == pytest.approx(-40.0)
    raw = transform.warp(image, border_blur=0).astype(int)
    # independent: pad by mirroring with the edge pixel repeated, then PIL's QUAD transform
    pad = 60
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    ref = np.asarray(Image.fromarray(padded).transform(
        (96, 96), Image.Transform.QUAD, (transform.quad + pad + 0.5).flatten(), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(raw - ref).max() <= 1

    blended = transform.warp(image).astype(int)
    points = transform.to_image(np.stack(np.meshgrid(np.arange(96.0), np.arange(96.0)), -1))
    outside = np.max(np.stack([-0.5 - points[..., 0], points[..., 0] - 119.5,
                               -0.5 - points[..., 1], points[..., 1] - 99.5]), 0)
    far_inside = outside < -0.1 * transform.qsize - 1   # blur weight clip(3 s / (0.3 qsize) + 1) is 0
    far_outside = outside >= 0.3 * transform.qsize      # median weight is 1
    assert far_inside.any() and far_outside.any()
    np.testing.assert_array_equal(blended[far_inside], raw[far_inside])
    median = np.median(image.reshape(-1, 3), axis=0)
    assert np.abs(blended[far_outside] - median).max() <= 1


def test_antialiasing_averages_fine_stripes_instead_of_aliasing():
    stripes = np.zeros((192, 192, 3), np.uint8)
    stripes[:, ::3] = 255  # period-3 stripes (mean 85); a 3x downscale should give flat grey 85
    transform = AlignTransform.centre_crop(192, 192, 64)
    assert transform.qsize / transform.size == 3.0
    smooth = transform.warp(stripes).astype(float)
    assert np.abs(smooth - 85).max() <= 1.0
    # bilinear point sampling at x = 3u + 1 only ever sees the dark columns
    aliased = transform.warp(stripes, antialias=False).astype(float)
    assert aliased.max() == 0


# ---------------------------------------------------------------------------------------------- (b)


def test_rotated_input_gives_the_same_aligned_crop():
    image = smooth_image(256, 256, seed=3)
    lm = similarity(canonical_landmarks(40, 40), 1.0, 0.0, (128, 120))  # quad side 160, inside the disc
    degrees = 33.0
    rotated = np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR))
    # PIL rotates counter-clockwise on screen about the area centre (W/2, H/2) = pixel-centre (127.5, 127.5):
    # an offset d from the centre moves to (cos t dx + sin t dy, -sin t dx + cos t dy) (y points down).
    t = np.radians(degrees)
    d = lm - 127.5
    lm_rot = 127.5 + np.stack([np.cos(t) * d[:, 0] + np.sin(t) * d[:, 1],
                               -np.sin(t) * d[:, 0] + np.cos(t) * d[:, 1]], axis=1)
    a, ta = align_face(image, lm, 160)
    b, tb = align_face(rotated, lm_rot, 160)
    assert tb.angle == pytest.approx(ta.angle - degrees)
    diff = np.abs(a.astype(int) - b.astype(int))
    # the rotated copy went through one more bilinear resampling and uint8 rounding
    assert diff.mean() < 1.0 and diff.max() <= 4  # measured: mean 0.49, max 2


# ---------------------------------------------------------------------------------------------- (c)


@pytest.mark.parametrize("degrees", [0.0, 27.0])
def test_warp_then_unwarp_restores_the_face_region(degrees):
    image = torch.from_numpy(smooth_image(200, 240, seed=4).copy()).permute(2, 0, 1).float() / 127.5 - 1.0  # 3 x H x W
    lm = similarity(canonical_landmarks(30, 30), 1.0, degrees, (120, 95))
    aligned, transform = align_face(image, lm, 120)  # 1:1 scale, no resampling filter in either direction
    assert aligned.shape == (3, 120, 120)
    canvas, mask = transform.unwarp(aligned, (200, 240))
    assert canvas.shape == image.shape and mask.shape == (200, 240) and mask.dtype == torch.bool
    # mask: the canvas pixels inside the quad (area qsize^2, up to the pixels along its perimeter)
    assert abs(int(mask.sum()) - transform.qsize ** 2) < 4 * transform.qsize
    assert float(canvas[:, ~mask].abs().max()) == 0.0
    # the face region: canvas pixels at least 2 crop pixels inside the quad
    ys, xs = np.mgrid[0:200, 0:240]
    uv = transform.to_aligned(np.stack([xs, ys], -1).astype(float))
    face = torch.from_numpy(np.all((uv >= 1.5) & (uv <= 120 - 2.5), axis=-1))
    err = (canvas - image)[:, face].abs()
    # two bilinear resamplings of a smooth image, values in [-1, 1]: measured max 0.012, mean 0.002
    assert float(err.max()) < 0.04 and float(err.mean()) < 0.005


def test_numpy_round_trip_and_batched_tensors():
    image = smooth_image(120, 100, seed=5)
    lm = similarity(canonical_landmarks(16, 16), 1.0, -15.0, (50, 55))
    aligned, transform = align_face(image, lm, 64)
    assert aligned.shape == (64, 64, 3) and aligned.dtype == np.uint8
    canvas, mask = transform.unwarp(aligned, image.shape[:2])
    assert canvas.shape == image.shape and canvas.dtype == np.uint8 and mask.dtype == bool
    batch = torch.from_numpy(np.stack([image, image[::-1].copy()])).permute(0, 3, 1, 2).float()
    out = transform.warp(batch)
    assert out.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), aligned, atol=0.51)
    restored = AlignTransform.from_dict(json.loads(json.dumps(transform.to_dict())))
    assert restored.quad.tolist() == transform.quad.tolist() and restored.size == transform.size


def test_a_mirrored_or_skewed_quad_is_rejected():
    quad = ffhq_quad(canonical_landmarks(40, 40))
    with pytest.raises(ValueError):
        AlignTransform(quad[[3, 2, 1, 0]], 64)  # mirrored
    with pytest.raises(ValueError):
        AlignTransform(quad * np.array([1.0, 2.0]), 64)  # not a square
