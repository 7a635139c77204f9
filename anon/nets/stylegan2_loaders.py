"""Open the three official StyleGAN2 checkpoint formats as one :class:`StyleGAN2Generator`.

Formats (detected from the file's content, not its extension):

* **GenForce** ``.pth`` (the file FALCO uses, e.g. ``stylegan2_ffhq1024.pth``): ``torch.save`` of a dict
  with ``generator_smooth`` (preferred) and/or ``generator`` state dicts in GenForce naming
  (``mapping.dense{i}``, ``synthesis.early_layer.const``, ``synthesis.layer{i}``,
  ``synthesis.output{k}``, ``truncation.w_avg``).
* **NVIDIA** ``.pkl`` (stylegan2-ada-pytorch, or the StyleGAN2 networks of the stylegan3 repo): a plain
  pickle whose ``G_ema`` is a ``torch_utils.persistence`` object. It is read by a restricted unpickler
  (:class:`RestrictedUnpickler`) that never imports or executes the pickled source code.
* **rosinality** ``.pt`` (stylegan2-pytorch): ``torch.save`` of a dict with ``g_ema`` (rosinality
  naming: ``style.{1..n}``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs.{i}``, ``to_rgbs.{i}``,
  ``noises.noise_{i}``) and, in converted checkpoints, ``latent_avg``.

A bare state dict in any of the three namings (or in ours, which is NVIDIA's) is accepted too.

Translation is strict: every tensor of the source generator is used or is a listed derived constant
(FIR filter buffers, whose values are checked), and every parameter/buffer of the target is filled;
otherwise :class:`StyleGAN2CheckpointError` names the keys. All three store unit-scale weights with the
run-time equalised-lr gain, so weights, biases and the mapping layers copy as they are; what differs is
in each format's module under :mod:`anon.nets.stylegan2_formats` (``genforce``, ``rosinality``,
``nvidia`` with its ``unpickler``), all verified against the three official implementations on random
weights (max abs image difference ~1e-6).

Every ``torch.load`` uses ``weights_only=True``.
"""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import torch

from anon.errors import ConfigError, MissingCheckpointError
from anon.nets.checkpoint import key_mismatch
from anon.nets.stylegan2 import StyleGAN2Generator
from anon.nets.stylegan2_formats.common import (GENFORCE, NVIDIA, ROSINALITY, STATE_DICT, StyleGAN2CheckpointError,
                                                UnsafePickleError, channel_widths)
from anon.nets.stylegan2_formats.genforce import translate_genforce
from anon.nets.stylegan2_formats.nvidia import read_nvidia_pickle, translate_nvidia
from anon.nets.stylegan2_formats.rosinality import translate_rosinality
from anon.nets.stylegan2_formats.unpickler import RestrictedUnpickler

__all__ = [
    "load_stylegan2",
    "detect_format",
    "read_nvidia_pickle",
    "translate_genforce",
    "translate_rosinality",
    "translate_nvidia",
    "RestrictedUnpickler",
    "StyleGAN2CheckpointError",
    "UnsafePickleError",
]


def load_stylegan2(path: str | Path, name: str | None = None, **overrides: Any) -> StyleGAN2Generator:
    """Load a GenForce ``.pth``, NVIDIA ``.pkl`` or rosinality ``.pt`` StyleGAN2 generator.

    Args:
        path: local checkpoint file.
        name: weights-registry name, used only in the missing-file message (``anon download <name>``).
        **overrides: :class:`StyleGAN2Generator` keyword arguments. Those the checkpoint determines
            (``resolution``, ``z_dim``, ``w_dim``, ``mapping_layers``, the channel widths, and for NVIDIA
            pickles ``mapping_lr_mul``/``conv_clamp``) must agree with it (they act as assertions,
            :class:`~anon.errors.ConfigError` otherwise); the others (``noise_mode``, and for GenForce /
            rosinality ``mapping_lr_mul``/``conv_clamp``, which those files do not store) are applied.

    Returns:
        a frozen (``requires_grad=False``), eval-mode generator: ``synthesis(ws: N x num_ws x w_dim)``
        gives ``N x 3 x R x R`` images, roughly in ``[-1, 1]``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(path, name)
    fmt, arch, state = read_stylegan2_checkpoint(path)
    kwargs = _merge_overrides(arch, overrides, fmt, path)
    generator = StyleGAN2Generator(**kwargs)
    _load_strict(generator, state, f"{path} ({fmt})")
    return generator.eval().requires_grad_(False)


def read_stylegan2_checkpoint(path: str | Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(format, generator kwargs determined by the file, state dict in our naming) for ``path``."""
    path = Path(path)
    if detect_format(path) == NVIDIA:
        arch, state = read_nvidia_pickle(path)
        return NVIDIA, arch, state
    # rosinality's training snapshots also hold their argparse options: a plain attribute bag.
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return translate_state(ckpt, source=str(path))


def translate_state(ckpt: Any, source: str = "checkpoint") -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Translate a ``torch.load``-ed GenForce / rosinality dict (or a bare state dict of any naming)."""
    if not isinstance(ckpt, dict):
        raise StyleGAN2CheckpointError(f"{source}: expected a dict, got {type(ckpt).__name__}")
    if "generator_smooth" in ckpt or "generator" in ckpt:
        sd = ckpt.get("generator_smooth", ckpt.get("generator"))
        return (GENFORCE, *translate_genforce(sd))
    if "g_ema" in ckpt:
        return (ROSINALITY, *translate_rosinality(ckpt["g_ema"], ckpt.get("latent_avg")))
    keys = set(ckpt)
    if "synthesis.early_layer.const" in keys:
        return (GENFORCE, *translate_genforce(ckpt))
    if "input.input" in keys:
        return (ROSINALITY, *translate_rosinality(ckpt, None))
    if "synthesis.b4.const" in keys:
        return (STATE_DICT, *translate_nvidia(ckpt))
    raise StyleGAN2CheckpointError(
        f"{source}: not a StyleGAN2 checkpoint this loader knows (top-level keys: {sorted(keys)[:12]}); "
        "expected GenForce 'generator_smooth'/'generator', rosinality 'g_ema', or an NVIDIA .pkl with 'G_ema'")


def detect_format(path: str | Path) -> str:
    """``"nvidia"`` for a raw pickle, ``"torch"`` for a ``torch.save`` file (zip or legacy format)."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        return "torch"
    # Legacy torch.save files start with the pickled magic number 0x1950a86a20f9469cfc6c (LONG1).
    if head[:4] == b"\x80\x02\x8a\x0a" and head[4:14] == (0x1950A86A20F9469CFC6C).to_bytes(10, "little"):
        return "torch"
    if head[:1] == b"\x80":
        return NVIDIA
    raise StyleGAN2CheckpointError(f"{path}: neither a torch.save file nor a pickle")


def _load_strict(generator: StyleGAN2Generator, state: dict[str, torch.Tensor], source: str):
    """load_state_dict(strict=True) with an error that names missing / unexpected / mis-shaped keys."""
    target = generator.state_dict()
    missing, unexpected, reshaped = key_mismatch(target, state)
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in reshaped]
    if missing or unexpected or shapes:
        raise StyleGAN2CheckpointError(
            f"{source}: translated weights do not fit the generator; missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, shape mismatches {shapes[:8]}")
    generator.load_state_dict(state, strict=True)


_DETERMINED = ("resolution", "z_dim", "w_dim", "mapping_layers")
_ALLOWED = ("resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "mapping_lr_mul",
            "conv_clamp", "noise_mode", "fused_modconv")


def _merge_overrides(arch: dict, overrides: dict, fmt: str, path: Path) -> dict:
    unknown = sorted(set(overrides) - set(_ALLOWED))
    if unknown:
        raise ConfigError(f"unknown StyleGAN2 generator options {unknown} (allowed: {list(_ALLOWED)})")
    kwargs = dict(arch)
    determined = list(_DETERMINED) + (["mapping_lr_mul", "conv_clamp"] if fmt == NVIDIA else [])
    for key, value in overrides.items():
        if key in determined and value != arch[key]:
            raise ConfigError(f"generator option {key}={value!r} contradicts {path} ({fmt}), which has {arch[key]!r}")
        kwargs[key] = value
    if "channel_base" in overrides or "channel_max" in overrides:
        want = channel_widths(arch["resolution"], arch["channel_base"], arch["channel_max"])
        got = channel_widths(arch["resolution"], kwargs["channel_base"], kwargs["channel_max"])
        if got != want:
            raise ConfigError(f"channel_base/channel_max give widths {got}, but {path} has {want}")
    return kwargs
