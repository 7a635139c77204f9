"""Attribute agreement and pose error against hand computations; the 5-landmark pose estimate recovers
known rotations of its template under a scaled orthographic camera."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anon.metrics.attributes import FACE_TEMPLATE_5, AttributeAgreement, PoseError, pose_from_landmarks


def _rotation(yaw, pitch, roll):
    """Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees (x right, y down, z into the image)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _project(yaw, pitch, roll, scale=2.5, shift=(120.0, 90.0)):
    """Landmarks of the template rotated, scaled orthographically and shifted: 5 x 2 pixels."""
    return scale * (FACE_TEMPLATE_5 @ _rotation(yaw, pitch, roll).T)[:, :2] + np.asarray(shift)


def test_frontal_template_gives_zero_pose():
    np.testing.assert_allclose(pose_from_landmarks(_project(0, 0, 0)), [0, 0, 0], atol=1e-9)


@pytest.mark.parametrize("angles", [(20, 0, 0), (0, -15, 0), (0, 0, 30), (25, -10, 12), (-35, 20, -40)])
def test_recovers_known_rotations(angles):
    np.testing.assert_allclose(pose_from_landmarks(_project(*angles)), angles, atol=1e-6)


def test_batched_landmarks_and_yaw_sign():
    poses = pose_from_landmarks(np.stack([_project(10, 0, 0), _project(-10, 0, 0)]))
    assert poses.shape == (2, 3)
    np.testing.assert_allclose(poses[:, 0], [10, -10], atol=1e-6)
    # positive yaw brings the nose tip (z < 0, towards the camera) to the image's left:
    # x' = cos(y) x + sin(y) z with z = -14 (hand: the nose moves by 2.5 * sin(10 deg) * -14 px)
    nose_shift = _project(10, 0, 0)[2, 0] - _project(0, 0, 0)[2, 0]
    assert nose_shift == pytest.approx(2.5 * np.sin(np.radians(10)) * -14.0)


def test_pose_error_hand_case_with_wrap_and_missing():
    original = torch.tensor([[10.0, 0.0, 179.0], [0.0, 5.0, 0.0], [float("nan"), 0.0, 0.0]])
    anonymised = torch.tensor([[4.0, 2.0, -179.0], [3.0, -5.0, 1.0], [0.0, 0.0, 0.0]])
    metric = PoseError()
    metric.update(original[:1], anonymised[:1])
    metric.update(original[1:], anonymised[1:])
    out = metric.compute()
    # hand: yaw |10-4|=6, |0-3|=3 -> 4.5; pitch 2, 10 -> 6; roll 179 vs -179 is 2 degrees apart, 1 -> 1.5
    assert float(out["yaw"]) == pytest.approx(4.5)
    assert float(out["pitch"]) == pytest.approx(6.0)
    assert float(out["roll"]) == pytest.approx(1.5)
    assert float(out["mean"]) == pytest.approx((4.5 + 6.0 + 1.5) / 3)
    assert int(out["count"]) == 2 and int(out["missing"]) == 1


def test_attribute_agreement_hand_case():
    probs_o = np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.4], [0.7, 0.7, 0.7], [np.nan, 0.5, 0.5]])
    probs_a = np.array([[0.8, 0.3, 0.4], [0.6, 0.9, 0.1], [0.7, 0.2, 0.9], [0.1, 0.1, 0.1]])
    metric = AttributeAgreement(3)
    metric.update(torch.tensor(probs_o), torch.tensor(probs_a))
    out = metric.compute()
    # rows 0..2 (row 3 has a NaN): attr0 agree T,F,T; attr1 T,T,F; attr2 F,T,T
    expected = np.array([2, 2, 2]) / 3
    valid = ~np.isnan(probs_o).any(1)
    hand = ((probs_o[valid] > 0.5) == (probs_a[valid] > 0.5)).mean(0)
    np.testing.assert_allclose(hand, expected)
    np.testing.assert_allclose(out["per_attribute"].numpy(), expected)
    assert float(out["mean"]) == pytest.approx(2 / 3) and int(out["count"]) == 3


def test_attribute_agreement_on_booleans_and_pm1_labels():
    metric = AttributeAgreement(2, threshold=0.0)
    metric.update(torch.tensor([[1, -1], [-1, -1]]), torch.tensor([[1, 1], [1, -1]]))
    np.testing.assert_allclose(metric.compute()["per_attribute"].numpy(), [0.5, 0.5])
    boolean = AttributeAgreement(2)
    boolean.update(torch.tensor([[True, False]]), torch.tensor([[True, True]]))
    np.testing.assert_allclose(boolean.compute()["per_attribute"].numpy(), [1.0, 0.0])
