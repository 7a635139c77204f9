"""Image preprocessing shared by the encoders: torchvision's resize + centre crop, on tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """``Resize(size, antialias=True)`` then ``CenterCrop(size)`` as torchvision does on tensors.

    The shorter side becomes ``size`` (the longer one ``int(size * long / short)``), bilinear with
    antialiasing, ``align_corners=False``; the crop offset is ``round((side - size) / 2)``.

    Args:
        x: ``B x C x H x W`` float tensor (any range).
    Returns:
        ``B x C x size x size``; differentiable.
    """
    h, w = x.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return x[..., top:top + size, left:left + size]
