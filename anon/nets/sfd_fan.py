"""FALCO's face detector for alignment: S3FD boxes, then FAN 2D-FAN-4 68 landmarks on each box.

Same interface as :class:`anon.nets.mtcnn.MTCNNDetector`, so the align stage can use either:
``detect(image uint8 H x W x 3 RGB)`` -> ``[(box (4,), score, landmarks 5 x 2), ...]``, most
confident first, where the 5 points are derived from the 68 (:func:`anon.nets.fan.landmarks_68_to_5`);
:meth:`SFDFANDetector.detect_68` gives the 68 points themselves.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anon.nets.fan import FAN, crop_centre_scale, crop_face, heatmap_peaks, heatmap_to_image, landmarks_68_to_5
from anon.nets.sfd import SFDDetector


def _device(requested: str) -> torch.device:
    """``auto``: this rank's GPU (``LOCAL_RANK``) when CUDA is available, else the CPU."""
    if requested == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")
    return torch.device(requested)


class SFDFANDetector(nn.Module):
    """S3FD + FAN-68 as FALCO's ``lib/aligner.py`` runs them.

    Args:
        sfd: path of ``s3fd-619a316812.pth`` (``None``: random weights, tests only).
        fan: path of ``2DFAN4-11f355bf06.pth.tar`` (``None``: random weights, tests only).
        score_threshold / nms_threshold: S3FD's box filter (0.5 and 0.3 officially).
        max_faces: landmarks are computed for at most this many boxes (most confident first).
        input_format: S3FD's pixels: ``bgr_mean`` (as trained) or ``rgb_raw`` (what FALCO's code feeds it;
            see :mod:`anon.nets.sfd`).
        device: where both networks run: ``auto`` (the rank's GPU when there is one), ``cpu``, ``cuda:N``.
    """

    def __init__(self, sfd: str | Path | None, fan: str | Path | None, score_threshold: float = 0.5,
                 nms_threshold: float = 0.3, max_faces: int = 1, input_format: str = "bgr_mean",
                 device: str = "cpu"):
        super().__init__()
        self.sfd = SFDDetector(sfd, score_threshold, nms_threshold, input_format)
        self.fan = FAN(fan)
        self.max_faces = int(max_faces)
        self.to(_device(device))

    @torch.no_grad()
    def landmarks_68(self, image: np.ndarray, box) -> np.ndarray:
        """68 x 2 float32 image landmarks of the face in ``box`` (x1, y1, x2, y2, ...)."""
        device = self.fan.conv1.weight.device
        centre, scale = crop_centre_scale(box)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=torch.float32).permute(2, 0, 1)
        heatmaps = self.fan(crop_face(pixels, centre, scale))[-1]
        return heatmap_to_image(heatmap_peaks(heatmaps.cpu())[0].numpy(), centre, scale).astype(np.float32)

    def detect_68(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """``[(box (4,), score, landmarks 68 x 2), ...]``, most confident first. Boxes too small to crop
        (FAN's window under 2 px, or non-finite) are dropped, as if not detected."""
        boxes = self.sfd.detect_boxes(image)
        usable = np.isfinite(boxes).all(axis=1) & ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1]) > 2.0)
        boxes = boxes[usable][: self.max_faces]
        return [(b[:4].copy(), float(b[4]), self.landmarks_68(image, b)) for b in boxes]

    def detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """``[(box (4,), score, landmarks 5 x 2), ...]`` (the MTCNN detector's interface)."""
        return [(box, score, landmarks_68_to_5(lm).astype(np.float32)) for box, score, lm in self.detect_68(image)]

    def forward(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Same as :meth:`detect`."""
        return self.detect(image)


__all__ = ["SFDFANDetector"]
