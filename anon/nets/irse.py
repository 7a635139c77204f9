"""IR / IR-SE ResNet backbone (InsightFace ArcFace, as in TreB1eN/InsightFace_Pytorch).

This is the network behind ``model_ir_se50.pth``, the identity model of pSp/e4e/FALCO, and
the body of the e4e encoder. Parameter names and shapes follow the official file exactly:

* ``input_layer.{0,1,2}``: 3x3 conv (no bias) -> BatchNorm2d -> PReLU, stride 1;
* ``body.N``: the residual units of all stages, numbered 0..sum(stage_units)-1. The first
  unit of each stage has stride 2. Each unit is ``res_layer`` = BN -> 3x3 conv -> PReLU ->
  3x3 conv (stride) -> BN [-> squeeze-excitation ``fc1``/``fc2`` 1x1 convs, mode ``ir_se``]
  plus ``shortcut_layer``: a 1x1 conv + BN when the width changes, else a parameter-free
  strided subsampling;
* ``output_layer.{0,3,4}``: BatchNorm2d -> Dropout -> flatten -> Linear -> BatchNorm1d.

Default sizes are IR-SE-50 (units 3/4/14/3, widths 64/128/256/512, 112x112 input,
512-d output). Depths and widths are configurable for tiny test models.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Residual units per stage for the official depths.
STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
#: Output width of each stage (the stem has the width of the first stage).
STAGE_WIDTHS = (64, 128, 256, 512)


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``; B x C x H x W -> same."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class Subsample(nn.Module):
    """Identity shortcut that keeps every ``stride``-th pixel (no parameters)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class ResidualUnit(nn.Module):
    """Pre-activation bottleneck unit: B x in_ch x H x W -> B x out_ch x H/stride x W/stride."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, se: bool = True, se_reduction: int = 16):
        super().__init__()
        if in_ch == out_ch:
            self.shortcut_layer = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        layers = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if se:
            layers.append(SqueezeExcite(out_ch, se_reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def resolve_stages(
    num_layers: int = 50, stage_units: Sequence[int] | None = None, stage_widths: Sequence[int] | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return ``(units, widths)`` per stage: explicit values win over the ``num_layers`` preset."""
    if stage_units is None:
        if num_layers not in STAGE_UNITS:
            raise ValueError(f"num_layers must be one of {sorted(STAGE_UNITS)} (or pass stage_units), got {num_layers}")
        stage_units = STAGE_UNITS[num_layers]
    units = tuple(int(u) for u in stage_units)
    widths = tuple(int(w) for w in (STAGE_WIDTHS if stage_widths is None else stage_widths))
    if len(units) != len(widths) or min(units) < 1:
        raise ValueError(f"need one width per stage and >= 1 unit per stage, got units={units}, widths={widths}")
    return units, widths


def make_input_layer(width: int) -> nn.Sequential:
    """Stem: B x 3 x H x W -> B x width x H x W (``input_layer.{0,1,2}``)."""
    return nn.Sequential(nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.PReLU(width))


def make_body(units: Sequence[int], widths: Sequence[int], mode: str = "ir_se", se_reduction: int = 16) -> nn.Sequential:
    """All residual units in one flat ``nn.Sequential`` (``body.N``); each stage halves H and W."""
    if mode not in ("ir", "ir_se"):
        raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
    modules, in_ch = [], widths[0]
    for n, out_ch in zip(units, widths):
        for i in range(n):
            modules.append(ResidualUnit(in_ch, out_ch, 2 if i == 0 else 1, mode == "ir_se", se_reduction))
            in_ch = out_ch
    return nn.Sequential(*modules)


def stage_end_indices(units: Sequence[int]) -> list[int]:
    """Index in ``body`` of the last unit of each stage, e.g. [2, 6, 20, 23] for IR-50."""
    ends, total = [], 0
    for n in units:
        total += n
        ends.append(total - 1)
    return ends


class Backbone(nn.Module):
    """IR / IR-SE ResNet embedding network.

    Input: B x 3 x ``input_size`` x ``input_size`` (the face crop; the official model expects
    112x112 in [-1, 1]). Output: B x ``embedding_dim`` L2-normalised embeddings.
    ``input_size`` must be divisible by 2**len(stages).
    """

    def __init__(
        self,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        drop_ratio: float = 0.4,
        affine: bool = True,
        stage_units: Sequence[int] | None = None,
        stage_widths: Sequence[int] | None = None,
        embedding_dim: int = 512,
        se_reduction: int = 16,
    ):
        super().__init__()
        units, widths = resolve_stages(num_layers, stage_units, stage_widths)
        down = 2 ** len(units)
        if input_size % down:
            raise ValueError(f"input_size must be divisible by {down}, got {input_size}")
        self.input_size = int(input_size)
        self.embedding_dim = int(embedding_dim)
        side = self.input_size // down
        # registration order as in the official file: input_layer, output_layer, body
        self.input_layer = make_input_layer(widths[0])
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(widths[-1]),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, self.embedding_dim),
            nn.BatchNorm1d(self.embedding_dim, affine=affine),
        )
        self.body = make_body(units, widths, mode, se_reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x input_size x input_size -> B x embedding_dim, unit L2 norm."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected B x 3 x {self.input_size} x {self.input_size}, got {tuple(x.shape)}")
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)
