"""The alignment failure policies: skip with the reason recorded, or the unaligned centre crop
(checked against PIL's crop + resize) that can still be pasted back."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anon.data.align import ffhq_quad
from anon.data.align_policy import AlignmentPolicy, align_with_policy
from tests.data.test_align import canonical_landmarks, similarity, smooth_image


def test_policy_skip_and_reasons():
    image = smooth_image(48, 64, seed=6)
    out, rec = align_with_policy(image, None, 32, policy="skip")
    assert out is None and rec.status == "skipped" and rec.reason == "no_face" and rec.transform is None
    out, rec = align_with_policy(image, np.full((5, 2), np.nan), 32, policy=AlignmentPolicy.SKIP)
    assert out is None and rec.reason == "bad_landmarks"
    tiny = similarity(canonical_landmarks(4, 4), 1.0, 0.0, (30, 20))  # quad side 16 px
    out, rec = align_with_policy(image, tiny, 32, policy="skip", min_face_size=20)
    assert out is None and rec.reason == "face_too_small" and rec.face_size == pytest.approx(16.0)
    out, rec = align_with_policy(image, tiny, 32, policy="skip", min_face_size=10)
    assert rec.status == "aligned" and rec.reason is None and out.shape == (32, 32, 3)
    np.testing.assert_allclose(rec.transform.quad, ffhq_quad(tiny))
    json.dumps(rec.to_dict())
    with pytest.raises(ValueError):
        align_with_policy(image, None, 32, policy="crop")


def test_policy_unaligned_is_a_centre_crop_and_resize():
    image = smooth_image(48, 64, seed=7)  # W = 64, H = 48: the centre square is columns 8..55
    out, rec = align_with_policy(image, None, 96, policy="unaligned")
    assert rec.status == "unaligned" and rec.reason == "no_face"
    ref = np.asarray(Image.fromarray(image).crop((8, 0, 56, 48)).resize((96, 96), Image.Resampling.BILINEAR))
    # 2x bilinear upsampling; the first/last column differ (PIL stops at the crop edge, we see columns 7 / 56)
    assert np.abs(out[:, 1:-1].astype(int) - ref[:, 1:-1]).max() <= 1
    canvas, mask = rec.transform.unwarp(out, image.shape[:2])
    assert mask[:, 8:56].all() and not mask[:, :8].any() and not mask[:, 56:].any()
    tiny = similarity(canonical_landmarks(4, 4), 1.0, 0.0, (30, 20))
    out, rec = align_with_policy(image, tiny, 96, policy="unaligned", min_face_size=20)
    assert rec.status == "unaligned" and rec.reason == "face_too_small" and out.shape == (96, 96, 3)
