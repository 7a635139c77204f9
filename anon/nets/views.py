"""An identity network looked at through a few fixed views of the face (flip, shifts, a blurred copy).

Optimising a 64 px face against one recogniser finds changes that fool *that* network (its similarity
drops to ~0) while another recogniser still sees the person. Averaging the embedding over fixed,
deterministic views (expectation over transformations, Athalye et al. 2018) asks for a change that
survives those views: closer to a change of the face than of one network's blind spots. The views are
the same for every image and every step, so a batch still gives each image its own result.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from anon.nets.frozen import FrozenNetwork


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Images translated by ``(dx, dy)`` pixels, edges replicated (same size)."""
    pad = max(abs(dx), abs(dy))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    h, w = images.shape[-2:]
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


class ViewAveragedIdentity(FrozenNetwork):
    """``images -> L2-normalised mean of net(view)`` over: the image, its mirror (``flip``), shifts by
    ``(+-s, +-s)`` for each ``s`` in ``shifts``, and a 2x-downsampled-and-upsampled copy (``blur``).

    Args:
        net: the identity network (images in [-1, 1] -> N x D embeddings); frozen here.
        flip, shifts, blur: which views (the image itself is always one).
    """

    def __init__(self, net: nn.Module, flip: bool = True, shifts=(2,), blur: bool = True):
        super().__init__()
        self.net = net
        self.flip, self.shifts, self.blur = bool(flip), [int(s) for s in shifts], bool(blur)
        self.freeze()

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        out = [images]
        if self.flip:
            out.append(images.flip(-1))
        for s in self.shifts:
            out += [shifted(images, s, s), shifted(images, -s, -s)]
        if self.blur:
            small = F.avg_pool2d(images, 2)
            out.append(F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = self.views(images)
        embeddings = self.net(torch.cat(views)).float().reshape(len(views), images.shape[0], -1)
        return F.normalize(embeddings.mean(0), dim=1)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # tokens, input size, ... of the wrapped network
            return getattr(super().__getattr__("net"), name)
