"""S3FD face detector (Zhang et al. 2017, "S3FD: Single Shot Scale-invariant Face Detector") in plain PyTorch.

The weights are the official ``s3fd-619a316812.pth`` of 1adrianb/face-alignment, which FALCO's
``lib/aligner.py`` loads from ``models/pretrained/sfd/`` (registry name ``sfd``): a plain state dict
whose keys are the attribute names below (``conv1_1.weight`` ... ``conv7_2_mbox_loc.bias``,
``conv3_3_norm.weight``), so it loads strictly.

Network (VGG16 trunk, every conv 3x3 padding 1 unless said, ReLU after each, max-pool 2/2):

===========  ==================================  ==========================================
block        layers                              head (3x3 convs on the block output)
===========  ==================================  ==========================================
conv1/2      64, 64 | 128, 128
conv3        256 x 3 -> L2Norm(scale 10)         conf 4 (3 background + face), loc 4; stride 4
conv4        512 x 3 -> L2Norm(scale 8)          conf 2, loc 4; stride 8
conv5        512 x 3 -> L2Norm(scale 5)          conf 2, loc 4; stride 16
fc6 / fc7    3x3 1024 (padding 3), 1x1 1024      conf 2, loc 4; stride 32
conv6        1x1 256, 3x3/2 512                  conf 2, loc 4; stride 64
conv7        1x1 128, 3x3/2 256                  conf 2, loc 4; stride 128
===========  ==================================  ==========================================

The L2Norm layers divide each pixel's feature vector by its norm (+1e-10) and multiply by a learned
per-channel scale. The first head's three background scores are reduced by their maximum
("max-out background label").

Pre- and post-processing (face-alignment ``detection/sfd``): RGB pixels in 0..255 are turned into
BGR and the mean (104, 117, 123) is subtracted; per level, the face probability is the softmax's
second class; every cell with probability > 0.05 gives a box decoded from the anchor
``(stride/2 + j*stride, stride/2 + i*stride)`` of side ``4*stride`` with variances (0.1, 0.2);
then NMS at IoU 0.3 (inclusive ``+1`` pixel areas) and boxes with score > 0.5 are kept, most
confident first.

FALCO's copy of this code (``lib/sfd/detect.py``, called through ``detect_from_batch`` by
``FaceAligner.align_face``) feeds the RGB pixels to the network as they are: its ``batch_detect``
neither reorders the channels nor subtracts the mean (only its unused single-image ``detect`` does).
``input_format="rgb_raw"`` reproduces that; ``"bgr_mean"`` (default) is the detector as trained and as
face-alignment runs it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anon.nets.checkpoint import read_state_dict
from anon.nets.frozen import FrozenNetwork

#: Name of the official weights for ``anon download``.
WEIGHTS_NAME = "sfd"
#: BGR channel means subtracted from 0..255 pixels.
BGR_MEAN = (104.0, 117.0, 123.0)
#: Box-regression variances (centre, size).
VARIANCES = (0.1, 0.2)
#: How pixels are fed to the network: ``bgr_mean`` (face-alignment) or ``rgb_raw`` (FALCO's batch path).
INPUT_FORMATS = ("bgr_mean", "rgb_raw")
#: Cells with a face probability above this become candidate boxes.
CANDIDATE_THRESHOLD = 0.05

_TRUNK = (("conv1_1", 3, 64), ("conv1_2", 64, 64), None,
          ("conv2_1", 64, 128), ("conv2_2", 128, 128), None,
          ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), None,
          ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), None,
          ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), None)
#: (feature name, channels, conf channels) of the six detection heads, finest first.
_HEADS = (("conv3_3_norm", 256, 4), ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2),
          ("fc7", 1024, 2), ("conv6_2", 512, 2), ("conv7_2", 256, 2))
_NORM_SCALES = {"conv3_3_norm": (256, 10.0), "conv4_3_norm": (512, 8.0), "conv5_3_norm": (512, 5.0)}


class L2Norm(nn.Module):
    """Per-pixel L2 normalisation over channels times a learned per-channel ``weight``."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


class S3FD(FrozenNetwork):
    """B x 3 x H x W mean-subtracted BGR -> 6 pairs ``(conf B x 2 x h x w logits, loc B x 4 x h x w)``.

    ``checkpoint``: path of ``s3fd-619a316812.pth`` (loaded strictly) or ``None`` for random weights.
    """

    weights = WEIGHTS_NAME

    def __init__(self, checkpoint: str | Path | None = None):
        super().__init__()
        for layer in _TRUNK:
            if layer is not None:
                name, cin, cout = layer
                self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        for name, (channels, scale) in _NORM_SCALES.items():
            self.add_module(name, L2Norm(channels, scale))
        for name, channels, conf in _HEADS:
            self.add_module(f"{name}_mbox_conf", nn.Conv2d(channels, conf, 3, padding=1))
            self.add_module(f"{name}_mbox_loc", nn.Conv2d(channels, 4, 3, padding=1))
        if checkpoint is not None:
            self.load_state_dict(read_state_dict(checkpoint, WEIGHTS_NAME), strict=True)
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = {}
        h = x
        for layer in _TRUNK:
            if layer is None:
                h = F.max_pool2d(h, 2, 2)
            else:
                h = F.relu(self._modules[layer[0]](h))
                if layer[0] in ("conv3_3", "conv4_3", "conv5_3"):
                    features[f"{layer[0]}_norm"] = self._modules[f"{layer[0]}_norm"](h)
        h = F.relu(self.fc7(F.relu(self.fc6(h))))
        features["fc7"] = h
        h = F.relu(self.conv6_2(F.relu(self.conv6_1(h))))
        features["conv6_2"] = h
        features["conv7_2"] = F.relu(self.conv7_2(F.relu(self.conv7_1(h))))
        out = []
        for name, _, _ in _HEADS:
            conf = self._modules[f"{name}_mbox_conf"](features[name])
            if conf.shape[1] == 4:  # three background scores -> their maximum
                conf = torch.cat([conf[:, :3].amax(dim=1, keepdim=True), conf[:, 3:]], dim=1)
            out.append((conf, self._modules[f"{name}_mbox_loc"](features[name])))
        return out


def decode(outputs: list[tuple[torch.Tensor, torch.Tensor]], index: int = 0,
           threshold: float = CANDIDATE_THRESHOLD) -> torch.Tensor:
    """Candidate boxes of image ``index``: K x 5 ``(x1, y1, x2, y2, score)`` in input pixels.

    Order: level by level (finest first), then row-major over the level's cells (the official order).
    """
    boxes = []
    for level, (conf, loc) in enumerate(outputs):
        stride = 2 ** (level + 2)
        prob = conf[index].softmax(dim=0)[1]
        rows, cols = torch.nonzero(prob > threshold, as_tuple=True)
        centre = torch.stack([cols, rows], dim=1).to(loc.dtype) * stride + stride / 2
        offsets = loc[index][:, rows, cols].T
        size = 4.0 * stride
        xy = centre + offsets[:, :2] * VARIANCES[0] * size
        wh = size * torch.exp(offsets[:, 2:] * VARIANCES[1])
        top_left = xy - wh / 2
        boxes.append(torch.cat([top_left, top_left + wh, prob[rows, cols, None]], dim=1))
    return torch.cat(boxes) if boxes else outputs[0][0].new_zeros(0, 5)


def nms(boxes: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS over K x 5 ``(x1, y1, x2, y2, score)``; inclusive pixel areas (``+1``), IoU > threshold
    suppressed. Returns kept indices, highest score first."""
    if len(boxes) == 0:
        return []
    x1, y1, x2, y2, scores = (boxes[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[best] + areas[rest] - inter) <= threshold]
    return keep


class SFDDetector(nn.Module):
    """S3FD on one RGB image: ``detect_boxes(image uint8 H x W x 3)`` -> K x 5 float32 numpy
    ``(x1, y1, x2, y2, score)``, most confident first.

    Args:
        checkpoint: ``s3fd-619a316812.pth`` (plain state dict) or ``None`` for random weights (tests).
        score_threshold: boxes kept after NMS need a score above this (0.5 officially).
        nms_threshold: IoU above which a less confident box is suppressed (0.3 officially).
        input_format: ``bgr_mean`` (face-alignment, the trained preprocessing) or ``rgb_raw`` (FALCO's
            ``detect_from_batch``: RGB 0..255 with no mean subtracted).
    """

    def __init__(self, checkpoint: str | Path | None = None, score_threshold: float = 0.5,
                 nms_threshold: float = 0.3, input_format: str = "bgr_mean"):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"SFD input_format={input_format!r}: expected one of {', '.join(INPUT_FORMATS)}")
        self.net = S3FD(checkpoint)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.input_format = input_format

    @staticmethod
    def preprocess(image: np.ndarray, device: torch.device | str = "cpu", input_format: str = "bgr_mean") -> torch.Tensor:
        """H x W x 3 RGB (0..255) -> 1 x 3 x H x W float32: mean-subtracted BGR, or RGB as is (``rgb_raw``)."""
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB image, got shape {array.shape}")
        x = torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=torch.float32)
        x = x.permute(2, 0, 1)[None]
        if input_format == "rgb_raw":
            return x
        return x.flip(1) - torch.tensor(BGR_MEAN, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def detect_boxes(self, image: np.ndarray) -> np.ndarray:
        device = self.net.conv1_1.weight.device
        x = self.preprocess(image, device, self.input_format)
        candidates = decode(self.net(x)).cpu().numpy().astype(np.float32)
        kept = candidates[nms(candidates, self.nms_threshold)]
        return kept[kept[:, 4] > self.score_threshold].reshape(-1, 5)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Same as :meth:`detect_boxes`."""
        return self.detect_boxes(image)


__all__ = ["S3FD", "SFDDetector", "L2Norm", "decode", "nms", "BGR_MEAN", "INPUT_FORMATS"]
