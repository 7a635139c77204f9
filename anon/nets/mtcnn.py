"""MTCNN face detector (Zhang et al. 2016) in plain PyTorch, with the weights of ``facenet-pytorch``.

``facenet-pytorch`` 2.6.0 ships the P-, R- and O-Net state dicts (converted from David Sandberg's
TensorFlow port of the original Caffe models) as ``facenet_pytorch/data/{pnet,rnet,onet}.pt``. The
networks below use the same parameter names, so those files load strictly; none of
``facenet_pytorch``'s Python code (which imports torchvision) is used.

Networks (all convs unpadded, every activation a per-channel PReLU, max-pools with ``ceil_mode``):

======  =============================================================  ==============================
net     layers                                                         outputs
======  =============================================================  ==============================
P-Net   conv1 3->10 k3, pool 2/2, conv2 10->16 k3, conv3 16->32 k3;    box offsets N x 4 x h x w,
        heads conv4_1 (1x1, 2 classes), conv4_2 (1x1, 4 offsets)       face prob N x h x w
R-Net   conv1 3->28 k3, pool 3/2, conv2 28->48 k3, pool 3/2,           offsets N x 4, prob N
        conv3 48->64 k2, dense4 576->128; dense5_1 (2), dense5_2 (4)   (input 24 x 24)
O-Net   conv1 3->32 k3, pool 3/2, conv2 32->64 k3, pool 3/2,           offsets N x 4, landmarks
        conv3 64->64 k3, pool 2/2, conv4 64->128 k2, dense5 1152->256;  N x 10 (x1..x5, y1..y5, in
        dense6_1 (2), dense6_2 (4), dense6_3 (10)                      box units), prob N (48 x 48)
======  =============================================================  ==============================

The dense layers were converted from TensorFlow, so they read the feature map flattened in
(W, H, C) order (the ``N x C x H x W`` map is permuted to ``N x W x H x C`` before flattening).
Inputs are RGB in ``(x - 127.5) / 128``; probabilities are the softmax's "face" class.

The cascade (:class:`MTCNNDetector`) follows facenet-pytorch's ``detect_face`` numerically (area
resampling, box arithmetic, crop clipping at the image border, NMS variants), so both give the
same boxes up to float rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anon.lite.packages import resolve
from anon.nets.checkpoint import read_checkpoint
from anon.nets.frozen import FrozenNetwork

PACKAGED = {name: f"pkg://facenet_pytorch/data/{name}.pt" for name in ("pnet", "rnet", "onet")}


def _tf_flatten(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x (W * H * C), the element order of the TensorFlow-converted dense layers."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class _Net(FrozenNetwork):
    """A stage network; ``checkpoint`` (pkg:// reference or path) loads strictly, None keeps random weights."""

    def _load(self, checkpoint: str | Path | None) -> None:
        if checkpoint is not None:
            state = read_checkpoint(resolve(checkpoint), None)
            if not isinstance(state, dict):
                raise ValueError(f"{checkpoint}: not a state dict")
            self.load_state_dict(state, strict=True)
        self.freeze()


class PNet(_Net):
    """Proposal net, fully convolutional: N x 3 x H x W -> (offsets N x 4 x h x w, face prob N x h x w).

    h = ceil((H - 2) / 2) - 4 (likewise w): one 12 x 12 window per output cell, stride 2.
    """

    def __init__(self, checkpoint: str | Path | None = PACKAGED["pnet"]):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)
        self._load(checkpoint)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(dim=1)[:, 1]


class RNet(_Net):
    """Refinement net: N x 3 x 24 x 24 -> (offsets N x 4, face prob N)."""

    def __init__(self, checkpoint: str | Path | None = PACKAGED["rnet"]):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        self._load(checkpoint)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_tf_flatten(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), self.dense5_1(x).softmax(dim=1)[:, 1]


class ONet(_Net):
    """Output net: N x 3 x 48 x 48 -> (offsets N x 4, landmarks N x 10, face prob N)."""

    def __init__(self, checkpoint: str | Path | None = PACKAGED["onet"]):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        self._load(checkpoint)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_tf_flatten(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(dim=1)[:, 1]


# ---------------------------------------------------------------------------------------- box utilities
def box_overlap(box: torch.Tensor, others: torch.Tensor, mode: str = "union", plus_one: bool = False) -> torch.Tensor:
    """Overlap of one box (4,) with K boxes (K x 4), all ``x1, y1, x2, y2``.

    ``union``: intersection / union (IoU); ``min``: intersection / the smaller area. ``plus_one``
    counts pixels inclusively (width = x2 - x1 + 1), as MATLAB-era detectors do.
    """
    one = 1.0 if plus_one else 0.0
    iw = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0]) + one).clamp(min=0)
    ih = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1]) + one).clamp(min=0)
    inter = iw * ih
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (others[:, 2] - others[:, 0] + one) * (others[:, 3] - others[:, 1] + one)
    if mode == "union":
        return inter / (area + areas - inter)
    if mode == "min":
        return inter / torch.minimum(area, areas)
    raise ValueError(f"overlap mode must be 'union' or 'min', not {mode!r}")


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union",
        plus_one: bool = False, later_wins_ties: bool = False) -> torch.Tensor:
    """Greedy non-maximum suppression; returns kept indices (int64), highest score first.

    Repeatedly keeps the best remaining box and drops every remaining box whose overlap with it is
    ``> threshold``. boxes: K x 4 (``x1, y1, x2, y2``), scores: K. Of two equal scores the earlier
    box counts as better (torchvision's order), or the later one with ``later_wins_ties``.
    """
    if later_wins_ties:
        order = torch.argsort(scores, stable=True).flip(0)
    else:
        order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel() > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if rest.numel() == 0:
            break
        order = rest[box_overlap(boxes[best], boxes[rest], mode, plus_one) <= threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """K x 4 boxes to squares of side max(w, h) with the same centre (w = x2 - x1)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply R/O-Net offsets (K x 4, in units of the inclusive box size w = x2 - x1 + 1)."""
    size = torch.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, dim=1)
    return boxes + offsets * size


# ---------------------------------------------------------------------------------------- the cascade
class MTCNNDetector(nn.Module):
    """Three-stage MTCNN cascade on one RGB image.

    Args:
        min_face_size: smallest face side searched, in pixels (sets the first pyramid scale 12 / size).
        thresholds: face-probability thresholds of P-, R- and O-Net.
        factor: scale step between pyramid levels.
        pnet, rnet, onet: checkpoints (``pkg://`` reference or local path); default: the files inside
            the installed ``facenet-pytorch``; None: random weights (tests).

    ``detect(image)`` returns ``[(box, prob, landmarks), ...]`` sorted by probability, highest
    first: ``box`` float32 (4,) ``x1, y1, x2, y2`` in pixels, ``prob`` float in (0, 1], ``landmarks``
    float32 5 x 2 ``(x, y)``: left eye, right eye, nose, left and right mouth corner (as seen in the image).
    """

    def __init__(self, min_face_size: float = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, pnet: str | Path | None = PACKAGED["pnet"],
                 rnet: str | Path | None = PACKAGED["rnet"], onet: str | Path | None = PACKAGED["onet"]):
        super().__init__()
        self.min_face_size, self.factor = float(min_face_size), float(factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.pnet, self.rnet, self.onet = PNet(pnet), RNet(rnet), ONet(onet)

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: 12 / min_face_size times factor^k while the scaled short side is >= 12 px."""
        scale = 12.0 / self.min_face_size
        side = min(height, width) * scale
        out = []
        while side >= 12:
            out.append(scale)
            scale *= self.factor
            side *= self.factor
        return out

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) * 0.0078125

    def _crops(self, image: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Area-resampled ``size x size`` crops of boxes clipped to the image (1 x 3 x H x W, 0..255).

        Box corners are truncated to integers (pixels ``x1 - 1 .. x2 - 1``, 1-based corners clipped to
        ``[1, W]``); boxes that leave nothing are dropped. Returns (crops K' x 3 x size x size, kept mask K).
        """
        h, w = image.shape[2:]
        corners = boxes.trunc().long().tolist()
        crops, kept = [], []
        for x1, y1, x2, y2 in corners:
            x1, y1, x2, y2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
            ok = x2 > x1 - 1 and y2 > y1 - 1
            kept.append(ok)
            if ok:
                crops.append(F.interpolate(image[:, :, y1 - 1:y2, x1 - 1:x2], size=(size, size), mode="area"))
        mask = torch.tensor(kept, dtype=torch.bool, device=boxes.device)
        if not crops:
            return image.new_zeros(0, 3, size, size), mask
        return self._normalise(torch.cat(crops)), mask

    def _proposals(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: P-Net over the pyramid -> (squared boxes K x 4, scores K)."""
        h, w = image.shape[2:]
        boxes, scores, offsets = [], [], []
        threshold = self.thresholds[0]
        for scale in self.scales(h, w):
            resized = F.interpolate(image, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, prob = self.pnet(self._normalise(resized))
            ys, xs = torch.nonzero(prob[0] >= threshold, as_tuple=True)
            cell = torch.stack([xs, ys], dim=1).to(image.dtype)
            # each output cell sees a 12 x 12 window at stride 2 of the resized image
            top_left = ((2 * cell + 1) / scale).floor()
            bottom_right = ((2 * cell + 12) / scale).floor()
            b = torch.cat([top_left, bottom_right], dim=1)
            s = prob[0, ys, xs]
            keep = nms(b, s, 0.5)
            boxes.append(b[keep])
            scores.append(s[keep])
            offsets.append(reg[0, :, ys, xs].T[keep])
        if not boxes:
            return image.new_zeros(0, 4), image.new_zeros(0)
        boxes, scores, offsets = torch.cat(boxes), torch.cat(scores), torch.cat(offsets)
        keep = nms(boxes, scores, 0.7)
        boxes, scores, offsets = boxes[keep], scores[keep], offsets[keep]
        # P-Net offsets are in units of the exclusive box size (x2 - x1)
        size = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)
        return square(boxes + offsets * size), scores

    @torch.no_grad()
    def detect_boxes(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cascade as tensors: (boxes K x 4, probs K, landmarks K x 5 x 2), in O-Net NMS order."""
        device = self.pnet.conv1.weight.device
        img = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else torch.as_tensor(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB image, got shape {tuple(img.shape)}")
        img = img.to(device=device, dtype=torch.float32).permute(2, 0, 1)[None].contiguous()
        empty = (img.new_zeros(0, 4), img.new_zeros(0), img.new_zeros(0, 5, 2))

        boxes, _ = self._proposals(img)
        if boxes.shape[0] == 0:
            return empty
        # Stage 2: R-Net on 24 x 24 crops
        crops, kept = self._crops(img, boxes, 24)
        boxes = boxes[kept]
        reg, prob = self.rnet(crops) if crops.shape[0] else (img.new_zeros(0, 4), img.new_zeros(0))
        ok = prob > self.thresholds[1]
        boxes, scores, reg = boxes[ok], prob[ok], reg[ok]
        keep = nms(boxes, scores, 0.7)
        boxes = square(regress(boxes[keep], reg[keep]))
        scores = scores[keep]
        if boxes.shape[0] == 0:
            return empty
        # Stage 3: O-Net on 48 x 48 crops
        crops, kept = self._crops(img, boxes, 48)
        boxes = boxes[kept]
        reg, marks, prob = self.onet(crops) if crops.shape[0] else (img.new_zeros(0, 4), img.new_zeros(0, 10),
                                                                    img.new_zeros(0))
        ok = prob > self.thresholds[2]
        boxes, scores, reg, marks = boxes[ok], prob[ok], reg[ok], marks[ok]
        # landmarks are fractions of the (pre-regression) inclusive box size, from its 1-based corner
        wh = torch.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], dim=1)
        landmarks = torch.stack([marks[:, :5], marks[:, 5:]], dim=2) * wh[:, None] + boxes[:, None, :2] - 1
        boxes = regress(boxes, reg)
        # the last NMS is facenet-pytorch's MATLAB-style one: overlap over the smaller box, inclusive
        # pixel areas, and the later of two equal-score boxes wins (saturated O-Net scores do tie)
        keep = nms(boxes, scores, 0.7, mode="min", plus_one=True, later_wins_ties=True)
        return boxes[keep], scores[keep], landmarks[keep]

    def detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Faces in an H x W x 3 uint8 RGB image: ``[(box (4,), prob, landmarks 5 x 2), ...]``, best first."""
        boxes, probs, landmarks = self.detect_boxes(image)
        order = torch.argsort(probs, descending=True, stable=True).tolist()
        return [(boxes[i].cpu().numpy().astype(np.float32), float(probs[i]),
                 landmarks[i].cpu().numpy().astype(np.float32)) for i in order]

    def forward(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Same as :meth:`detect`."""
        return self.detect(image)


def detection_rate(detector: MTCNNDetector, images) -> float:
    """Fraction of images (H x W x 3 uint8 each) in which at least one face is found."""
    images = list(images)
    return sum(1 for im in images if detector.detect(im)) / max(len(images), 1)


__all__ = ["PNet", "RNet", "ONet", "MTCNNDetector", "nms", "box_overlap", "square", "regress", "detection_rate"]
