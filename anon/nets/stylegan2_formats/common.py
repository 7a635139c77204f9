"""What the three StyleGAN2 checkpoint translations share: errors, the config-f channel rule, the FIR
filter they check, and :class:`Translator`, which copies source tensors to our (NVIDIA's) names and
refuses a checkpoint with a tensor left over or missing."""
from __future__ import annotations

import math
import pickle
import re
from typing import Callable

import torch

from anon.errors import AnonError

GENFORCE, NVIDIA, ROSINALITY = "genforce", "nvidia", "rosinality"
STATE_DICT = "state_dict"  # a bare state dict in our (= NVIDIA's) naming, e.g. ``G_ema.state_dict()``

# Values shared by all three official codes for FFHQ config-f that the checkpoints do not store.
DEFAULT_MAPPING_LR_MUL = 0.01


class StyleGAN2CheckpointError(AnonError, ValueError):
    """The file is not a StyleGAN2 generator checkpoint this loader can translate exactly."""


class UnsafePickleError(StyleGAN2CheckpointError, pickle.UnpicklingError):
    """The pickle asks for a global that rebuilding tensors does not need (it could run code)."""


def fir_filter(gain: float = 1.0) -> torch.Tensor:
    """The [1, 3, 3, 1] outer-product low-pass, normalised to sum ``gain`` (4 x 4)."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = f[:, None] * f[None, :]
    return k / k.sum() * gain


def channel_widths(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """Feature maps per block resolution: ``min(channel_base // res, channel_max)`` (config-f rule)."""
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


def infer_channel_config(widths: dict[int, int]) -> tuple[int, int]:
    """(channel_base, channel_max) reproducing the observed ``{resolution: channels}``.

    Raises StyleGAN2CheckpointError if no pair fits (a non-config-f channel layout).
    """
    res = max(widths)
    channel_max = max(widths.values())
    below = [r for r in sorted(widths) if widths[r] < channel_max]
    channel_base = widths[below[0]] * below[0] if below else channel_max * res
    if channel_widths(res, channel_base, channel_max) != widths:
        raise StyleGAN2CheckpointError(f"channel widths {widths} do not follow min(base // res, max)")
    return channel_base, channel_max


class Translator:
    """Copies source tensors to target keys, remembering which source keys were used."""

    def __init__(self, src: dict[str, torch.Tensor], fmt: str):
        bad = [k for k, v in src.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise StyleGAN2CheckpointError(f"{fmt} state dict has non-tensor entries: {bad[:8]}")
        self.src, self.fmt = src, fmt
        self.used: set[str] = set()
        self.out: dict[str, torch.Tensor] = {}

    def get(self, key: str) -> torch.Tensor:
        if key not in self.src:
            raise StyleGAN2CheckpointError(f"{self.fmt} checkpoint lacks {key!r}")
        self.used.add(key)
        return self.src[key]

    def put(self, dst: str, src_key: str, fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        t = self.get(src_key).detach().to(torch.float32)
        self.out[dst] = (fn(t) if fn else t).contiguous()

    def constant(self, key: str, expected: torch.Tensor):
        """A derived buffer (FIR filter): used, not copied, but it must hold the standard value."""
        t = self.get(key).detach().to(torch.float32).reshape(expected.shape)
        if not torch.allclose(t, expected, atol=1e-6):
            raise StyleGAN2CheckpointError(
                f"{self.fmt} buffer {key!r} is not the standard [1,3,3,1] filter; other filters are unsupported")

    def finish(self) -> dict[str, torch.Tensor]:
        unused = sorted(set(self.src) - self.used)
        if unused:
            raise StyleGAN2CheckpointError(
                f"{self.fmt} checkpoint has {len(unused)} keys this StyleGAN2 (config-f, skip, unconditional) "
                f"translation does not use: {unused[:12]}")
        return self.out


def layer_indices(keys, pattern: str) -> set[int]:
    """The integers captured by ``pattern``'s first group over the keys that fully match it."""
    rx = re.compile(pattern)
    return {int(m.group(1)) for m in map(rx.fullmatch, keys) if m}


def count_layers(keys, pattern: str) -> int:
    """How many distinct indices ``pattern`` captures; they must be exactly 0..n-1 (or 1..n for style)."""
    found = layer_indices(keys, pattern)
    start = min(found, default=0)
    if found != set(range(start, start + len(found))):
        raise StyleGAN2CheckpointError(f"non-contiguous layer indices {sorted(found)} for {pattern!r}")
    return len(found)


def generator_arch(resolution, z_dim, w_dim, mapping_layers, widths, mapping_lr_mul=DEFAULT_MAPPING_LR_MUL,
          conv_clamp=None) -> dict:
    if resolution < 8 or 2 ** int(math.log2(resolution)) != resolution:
        raise StyleGAN2CheckpointError(f"unsupported resolution {resolution}")
    channel_base, channel_max = infer_channel_config(widths)
    return dict(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                channel_base=channel_base, channel_max=channel_max, mapping_lr_mul=mapping_lr_mul,
                conv_clamp=conv_clamp)
