"""Side-by-side grids for people to look at (only written when a run opts in)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from anon.data.images import to_uint8


def comparison_grid(*columns: torch.Tensor, size: int | None = None) -> np.ndarray:
    """Columns of N x 3 x H x W images in [-1, 1] -> one H*N x W*len(columns) x 3 uint8 array (row = sample)."""
    size = size or max(c.shape[-1] for c in columns)
    resized = [F.interpolate(c.detach().float().cpu(), size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False) for c in columns]
    rows = torch.cat([torch.cat(list(c.unbind(0)), dim=1) for c in resized], dim=2)  # 3 x N*S x C*S
    return to_uint8(rows[None])[0]
