"""FAN 2D-FAN-4 68-point face landmarks (Bulat & Tzimiropoulos 2017) in plain PyTorch.

The weights are the official ``2DFAN4-11f355bf06.pth.tar`` of 1adrianb/face-alignment, which
FALCO's ``lib/aligner.py`` loads (registry name ``fan_2dfan4``): a plain state dict whose keys are
the module names below (``conv1``, ``bn1``, ``conv2..conv4``, and per stack ``m<i>.b1_4 ...``,
``top_m_<i>``, ``conv_last<i>``, ``bn_end<i>``, ``l<i>``, ``bl<i>``, ``al<i>``), so it loads strictly.

Network: a 256 x 256 RGB crop in [0, 1] -> conv 7x7/2 (64) + BN + ReLU -> block 64->128 -> avg-pool
2/2 -> blocks 128->128, 128->256 -> four stacked hourglasses of depth 4 (256 features). Each stack
gives 68 heatmaps of 64 x 64 (``l<i>``); all but the last feed back through ``bl<i>`` and ``al<i>``.
A block is pre-activation (BN, ReLU, 3x3 conv) x 3 with widths out/2, out/4, out/4, concatenated,
plus the input (through BN, ReLU, 1x1 conv when the width changes). Hourglass levels down-sample
by 2x2 average pooling and up-sample by nearest-neighbour x2.

Crop and decoding (FALCO ``lib/aligner.py`` / face-alignment ``utils.py``): for a detection box
``(x1, y1, x2, y2)`` the crop centre is the box centre moved up by 0.12 of its height and the
scale is ``(w + h) / 195``; the crop spans ``200 * scale`` pixels (:func:`crop_window`). A
landmark is the arg-max of its heatmap, moved a quarter pixel towards the larger neighbour along
x and y (when not on the border), minus half a pixel (:func:`heatmap_peaks`); it is mapped back to
the image by the inverse crop map and truncated to an integer, as the official code does
(:func:`heatmap_to_image`).
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
WEIGHTS_NAME = "fan_2dfan4"
CROP_SIZE, HEATMAP_SIZE, NUM_LANDMARKS = 256, 64, 68
#: The crop spans ``SCALE_FACTOR * scale`` image pixels; ``scale = (w + h) / REFERENCE_SCALE``.
SCALE_FACTOR, REFERENCE_SCALE = 200.0, 195.0
#: The crop centre is moved up by this fraction of the box height.
CENTRE_Y_SHIFT = 0.12


class ConvBlock(nn.Module):
    """Pre-activation block: three BN-ReLU-3x3 convs (out/2, out/4, out/4 channels), concatenated, + skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        half, quarter = cout // 2, cout // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, half, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(half), nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(quarter), nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        self.downsample = None if cin == cout else nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.cat([a, b, c], dim=1) + skip


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels; level ``k`` owns blocks ``b1_k``, ``b2_k``, ``b3_k``
    (and the innermost ``b2_plus_1``)."""

    def __init__(self, depth: int = 4, features: int = 256):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):  # the official registration order: b1, b2 of each level first
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))
        for level in range(1, depth + 1):
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{level}"](low)
        return upper + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FAN(FrozenNetwork):
    """B x 3 x 256 x 256 RGB in [0, 1] -> list of ``stacks`` heatmap tensors B x 68 x 64 x 64 (last is final).

    ``checkpoint``: path of ``2DFAN4-11f355bf06.pth.tar`` (loaded strictly) or ``None`` for random weights.
    """

    weights = WEIGHTS_NAME

    def __init__(self, checkpoint: str | Path | None = None, stacks: int = 4):
        super().__init__()
        self.stacks = stacks
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(4, 256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, NUM_LANDMARKS, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(NUM_LANDMARKS, 256, 1))
        if checkpoint is not None:
            self.load_state_dict(read_state_dict(checkpoint, WEIGHTS_NAME), strict=True)
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        heatmaps = []
        for i in range(self.stacks):
            features = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](x))
            features = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](features)))
            heatmaps.append(self._modules[f"l{i}"](features))
            if i < self.stacks - 1:
                x = x + self._modules[f"bl{i}"](features) + self._modules[f"al{i}"](heatmaps[-1])
        return heatmaps


# ----------------------------------------------------------------------------------------------
# Crop and heatmap decoding


def crop_centre_scale(box) -> tuple[np.ndarray, float]:
    """Official crop centre (x, y) and scale of a detection box ``(x1, y1, x2, y2, ...)``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    centre = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0 - (y2 - y1) * CENTRE_Y_SHIFT])
    return centre, (x2 - x1 + y2 - y1) / REFERENCE_SCALE


def _to_image(points: np.ndarray, centre: np.ndarray, scale: float, resolution: float) -> np.ndarray:
    """Inverse crop map (crop/heatmap coordinates at ``resolution`` -> image pixels), before truncation."""
    span = SCALE_FACTOR * scale
    return np.asarray(points, dtype=np.float64) * (span / resolution) + np.asarray(centre) - span / 2.0


def crop_window(centre: np.ndarray, scale: float, resolution: int = CROP_SIZE) -> tuple[int, int, int, int]:
    """Image pixel window ``(left, top, right, bottom)`` (right/bottom exclusive, may leave the image)
    that the official crop resamples to ``resolution``: the images of the crop's 1-based corners
    ``(1, 1)`` and ``(resolution, resolution)``, each truncated to an integer."""
    ul = np.trunc(_to_image([1.0, 1.0], centre, scale, resolution)).astype(int)
    br = np.trunc(_to_image([resolution, resolution], centre, scale, resolution)).astype(int)
    return int(ul[0]), int(ul[1]), int(br[0]), int(br[1])


def crop_face(image: torch.Tensor, centre: np.ndarray, scale: float, resolution: int = CROP_SIZE) -> torch.Tensor:
    """The FAN input: 3 x H x W (0..255) -> 1 x 3 x resolution x resolution in [0, 1].

    The window of :func:`crop_window` is cut out (zeros outside the image) and resized with
    antialiased bilinear interpolation (FALCO's ``crop_torch``: torchvision ``Resize``).
    """
    left, top, right, bottom = crop_window(centre, scale, resolution)
    if right <= left or bottom <= top:
        raise ValueError(f"empty face crop window {(left, top, right, bottom)}")
    height, width = image.shape[-2:]
    window = image.new_zeros(image.shape[0], bottom - top, right - left)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if x1 > x0 and y1 > y0:
        window[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    out = F.interpolate(window[None].float(), size=(resolution, resolution), mode="bilinear",
                        align_corners=False, antialias=True)
    return out / 255.0


def heatmap_peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """B x N x H x W heatmaps -> B x N x 2 (x, y) peak positions in heatmap pixels (official convention).

    The arg-max cell ``(x, y)`` (0-based) gives ``x + 0.5`` (``y + 0.5``), moved by 0.25 towards the
    larger of its two neighbours along each axis when the cell is not on the heatmap border.
    """
    b, n, h, w = heatmaps.shape
    idx = heatmaps.reshape(b, n, h * w).argmax(dim=-1)
    x, y = idx % w, torch.div(idx, w, rounding_mode="floor")
    inner = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    xc, yc = x.clamp(1, w - 2), y.clamp(1, h - 2)
    flat = heatmaps.reshape(b * n, h, w)
    rows = torch.arange(b * n)

    def at(yy, xx):
        return flat[rows, yy.reshape(-1), xx.reshape(-1)].reshape(b, n)

    dx = torch.sign(at(yc, xc + 1) - at(yc, xc - 1))
    dy = torch.sign(at(yc + 1, xc) - at(yc - 1, xc))
    px = x.to(heatmaps.dtype) + 0.5 + torch.where(inner, 0.25 * dx, torch.zeros_like(dx))
    py = y.to(heatmaps.dtype) + 0.5 + torch.where(inner, 0.25 * dy, torch.zeros_like(dy))
    return torch.stack([px, py], dim=-1)


def heatmap_to_image(peaks: np.ndarray | torch.Tensor, centre: np.ndarray, scale: float,
                     resolution: int = HEATMAP_SIZE) -> np.ndarray:
    """N x 2 heatmap peaks -> N x 2 image pixels, truncated toward zero as the official code does."""
    return np.trunc(_to_image(np.asarray(peaks, dtype=np.float64), centre, scale, resolution))


def landmarks_68_to_5(landmarks68: np.ndarray) -> np.ndarray:
    """68 (iBUG/300-W order) -> 5 points: left eye centre (mean of 36..41), right eye centre (42..47),
    nose tip (30), mouth left (48), mouth right (54). With these, :func:`anon.data.align.ffhq_quad`
    gives the same quad as the FFHQ recipe on the 68 points (eye means, mouth corners 48 and 54)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected 68 x 2 landmarks, got shape {lm.shape}")
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]])


__all__ = ["FAN", "ConvBlock", "HourGlass", "crop_centre_scale", "crop_window", "crop_face", "heatmap_peaks",
           "heatmap_to_image", "landmarks_68_to_5"]
