"""Side-by-side grids for people to look at (only written when a run opts in)."""
from __future__ import annotations

from pathlib import Path

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


def save_captioned_grid(path: Path, columns: list[torch.Tensor], titles: list[str], size: int = 128,
                        dpi: int = 100) -> Path:
    """:func:`comparison_grid` of ``columns`` saved with one title per column (matplotlib), e.g. the
    generator's resolution, so a reader knows what a blurry face was generated at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(titles) != len(columns):
        raise ValueError(f"{len(titles)} titles for {len(columns)} columns")
    grid = comparison_grid(*columns, size=size)
    height, width = grid.shape[:2]
    fig = plt.figure(figsize=(width / dpi, (height + 28) / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + 28)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    for k, title in enumerate(titles):
        fig.text((k + 0.5) / len(titles), 1 - 14 / (height + 28), title, ha="center", va="center", fontsize=7)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
