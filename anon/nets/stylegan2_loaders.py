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
otherwise :class:`StyleGAN2CheckpointError` names the keys. The conversion rules (all verified against
the three official implementations on random weights, max abs image difference ~1e-6):

* weight scaling: all three store unit-scale weights with the run-time equalised-lr gain, so weights,
  biases and the mapping layers copy as they are;
* GenForce stores the affine (``style``) bias *without* the constant 1 that NVIDIA/rosinality fold into
  it (GenForce adds ``additional_bias=1`` at run time): ours = GenForce + 1;
* GenForce's 2x-up conv (``layer{odd}``) kernel is spatially flipped w.r.t. NVIDIA's ``conv0``
  (GenForce keeps TF's orientation and flips at run time): ours = GenForce flipped on (H, W).
  rosinality's ``convs.{even}`` kernel is already in NVIDIA's orientation;
* layout: const ``1 x C x 4 x 4`` -> ``C x 4 x 4``; noise ``1 x 1 x R x R`` -> ``R x R``; rosinality
  conv weights ``1 x O x I x k x k`` -> ``O x I x k x k``, noise strength ``(1,)`` -> ``()``,
  toRGB bias ``1 x 3 x 1 x 1`` -> ``(3,)``.

Every ``torch.load`` uses ``weights_only=True``.
"""
from __future__ import annotations

import argparse
import collections
import io
import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from anon.errors import AnonError, ConfigError, MissingCheckpointError
from anon.nets.stylegan2 import StyleGAN2Generator

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

GENFORCE, NVIDIA, ROSINALITY = "genforce", "nvidia", "rosinality"
STATE_DICT = "state_dict"  # a bare state dict in our (= NVIDIA's) naming, e.g. ``G_ema.state_dict()``

# Values shared by all three official codes for FFHQ config-f that the checkpoints do not store.
DEFAULT_MAPPING_LR_MUL = 0.01


class StyleGAN2CheckpointError(AnonError, ValueError):
    """The file is not a StyleGAN2 generator checkpoint this loader can translate exactly."""


class UnsafePickleError(StyleGAN2CheckpointError, pickle.UnpicklingError):
    """The pickle asks for a global that rebuilding tensors does not need (it could run code)."""


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------

def _fir(gain: float = 1.0) -> torch.Tensor:
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


class _Translator:
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


def _indices(keys, pattern: str) -> set[int]:
    """The integers captured by ``pattern``'s first group over the keys that fully match it."""
    rx = re.compile(pattern)
    return {int(m.group(1)) for m in map(rx.fullmatch, keys) if m}


def _count(keys, pattern: str) -> int:
    """How many distinct indices ``pattern`` captures; they must be exactly 0..n-1 (or 1..n for style)."""
    found = _indices(keys, pattern)
    start = min(found, default=0)
    if found != set(range(start, start + len(found))):
        raise StyleGAN2CheckpointError(f"non-contiguous layer indices {sorted(found)} for {pattern!r}")
    return len(found)


def _load_strict(generator: StyleGAN2Generator, state: dict[str, torch.Tensor], source: str):
    """load_state_dict(strict=True) with an error that names missing / unexpected / mis-shaped keys."""
    target = generator.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
              for k in sorted(set(state) & set(target)) if state[k].shape != target[k].shape]
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


def _arch(resolution, z_dim, w_dim, mapping_layers, widths, mapping_lr_mul=DEFAULT_MAPPING_LR_MUL,
          conv_clamp=None) -> dict:
    if resolution < 8 or 2 ** int(math.log2(resolution)) != resolution:
        raise StyleGAN2CheckpointError(f"unsupported resolution {resolution}")
    channel_base, channel_max = infer_channel_config(widths)
    return dict(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                channel_base=channel_base, channel_max=channel_max, mapping_lr_mul=mapping_lr_mul,
                conv_clamp=conv_clamp)


# ----------------------------------------------------------------------------------------------------
# GenForce (genforce/genforce models/stylegan2_generator.py; FALCO's copy)
# ----------------------------------------------------------------------------------------------------

def translate_genforce(sd: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """GenForce StyleGAN2Generator state dict -> (generator kwargs, our state dict).

    GenForce layout (R = resolution, L = 2*log2(R) - 3 conv layers, block b at resolution 4*2^b):
    ``mapping.dense{0..7}.{weight O x I, bias O}``; ``truncation.w_avg`` (w_dim);
    ``synthesis.early_layer.const`` (1 x C x 4 x 4); ``synthesis.layer{i}`` for i < L with ``weight``
    (O x I x 3 x 3), ``bias`` (O), ``style.weight`` (I x w_dim), ``style.bias`` (I), ``noise``
    (1 x 1 x r x r), ``noise_strength`` (); odd i are the 2x-up convs and carry ``filter.kernel``
    (1 x 1 x 4 x 4); ``synthesis.output{b}`` (toRGB) with ``weight`` (3 x C x 1 x 1), ``bias`` (3),
    ``style.*``; ``synthesis.upsample.kernel`` (1 x 1 x 4 x 4).
    """
    t = _Translator(sd, "GenForce")
    keys = list(sd)
    if "mapping.label_weight" in sd:
        raise StyleGAN2CheckpointError("GenForce checkpoint is class-conditional (mapping.label_weight); unsupported")
    n_map = _count(keys, r"mapping\.dense(\d+)\.weight")
    n_layers = _count(keys, r"synthesis\.layer(\d+)\.weight")
    if n_map == 0 or n_layers < 3 or n_layers % 2 == 0:
        raise StyleGAN2CheckpointError("GenForce state dict without the expected mapping.dense*/synthesis.layer* keys")
    resolution = 2 ** ((n_layers + 3) // 2)
    z_dim = t.get("mapping.dense0.weight").shape[1]
    w_dim = t.get(f"mapping.dense{n_map - 1}.weight").shape[0]
    if t.get("truncation.w_avg").numel() != w_dim:
        raise StyleGAN2CheckpointError("GenForce truncation.w_avg is not w_dim long (repeat_w=False is unsupported)")
    widths = {4 * 2 ** (i // 2): sd[f"synthesis.layer{i}.weight"].shape[0] for i in range(0, n_layers, 2)}

    for i in range(n_map):
        t.put(f"mapping.fc{i}.weight", f"mapping.dense{i}.weight")
        t.put(f"mapping.fc{i}.bias", f"mapping.dense{i}.bias")
    t.put("mapping.w_avg", "truncation.w_avg", lambda x: x.reshape(-1))
    t.put("synthesis.b4.const", "synthesis.early_layer.const", lambda x: x.reshape(x.shape[-3:]))
    t.constant("synthesis.upsample.kernel", _fir(4.0))
    for i in range(n_layers):
        res = 4 * 2 ** ((i + 1) // 2)
        dst = f"synthesis.b{res}.conv{0 if i % 2 else 1}"
        src = f"synthesis.layer{i}"
        if i % 2:  # 2x-up conv: GenForce keeps TF's kernel orientation
            t.put(f"{dst}.weight", f"{src}.weight", lambda x: x.flip([2, 3]))
            t.constant(f"{src}.filter.kernel", _fir(4.0))
        else:
            t.put(f"{dst}.weight", f"{src}.weight")
        t.put(f"{dst}.bias", f"{src}.bias")
        t.put(f"{dst}.affine.weight", f"{src}.style.weight")
        t.put(f"{dst}.affine.bias", f"{src}.style.bias", lambda x: x + 1.0)
        t.put(f"{dst}.noise_const", f"{src}.noise", lambda x: x.reshape(x.shape[-2:]))
        t.put(f"{dst}.noise_strength", f"{src}.noise_strength", lambda x: x.reshape(()))
    for b in range(n_layers // 2 + 1):
        dst, src = f"synthesis.b{4 * 2 ** b}.torgb", f"synthesis.output{b}"
        for name in ("weight", "bias", "style.weight"):
            t.put(f"{dst}.{name.replace('style', 'affine')}", f"{src}.{name}")
        t.put(f"{dst}.affine.bias", f"{src}.style.bias", lambda x: x + 1.0)
    return _arch(resolution, z_dim, w_dim, n_map, widths), t.finish()


# ----------------------------------------------------------------------------------------------------
# rosinality (rosinality/stylegan2-pytorch model.py)
# ----------------------------------------------------------------------------------------------------

def translate_rosinality(sd: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None,
                         ) -> tuple[dict, dict[str, torch.Tensor]]:
    """rosinality ``g_ema`` state dict (+ optional ``latent_avg``) -> (generator kwargs, our state dict).

    rosinality layout (log_size = log2(R), n = log_size - 2 up-blocks): ``style.{1..n_mlp}.{weight w x z,
    bias w}``; ``input.input`` (1 x C x 4 x 4); ``conv1`` and ``convs.{0..2n-1}`` with
    ``conv.weight`` (1 x O x I x 3 x 3), ``conv.modulation.{weight I x w, bias I}``, ``noise.weight``
    (1,), ``activate.bias`` (O); even ``convs`` are 2x-up and carry ``conv.blur.kernel`` (4 x 4);
    ``to_rgb1`` and ``to_rgbs.{0..n-1}`` with ``conv.weight`` (1 x 3 x C x 1 x 1), ``conv.modulation.*``,
    ``bias`` (1 x 3 x 1 x 1); ``to_rgbs.*`` carry ``upsample.kernel`` (4 x 4);
    ``noises.noise_{0..2n}`` (1 x 1 x r x r).

    Without ``latent_avg`` (rosinality's own training snapshots do not store it) ``w_avg`` is
    estimated as the mean of the mapping of 10,000 fixed-seed z (a warning says so).
    """
    t = _Translator(sd, "rosinality")
    keys = list(sd)
    n_mlp = _count(keys, r"style\.(\d+)\.weight")
    n_up = _count(keys, r"to_rgbs\.(\d+)\.conv\.weight")
    if n_mlp == 0 or "input.input" not in sd:
        raise StyleGAN2CheckpointError("rosinality state dict without the expected style.*/input.input keys")
    resolution = 2 ** (n_up + 2)
    z_dim = t.get("style.1.weight").shape[1]
    w_dim = t.get(f"style.{n_mlp}.weight").shape[0]
    widths = {4: sd["conv1.conv.weight"].shape[1]}
    widths.update({8 * 2 ** k: sd[f"convs.{2 * k}.conv.weight"].shape[1] for k in range(n_up)})

    for i in range(n_mlp):
        t.put(f"mapping.fc{i}.weight", f"style.{i + 1}.weight")
        t.put(f"mapping.fc{i}.bias", f"style.{i + 1}.bias")
    t.put("synthesis.b4.const", "input.input", lambda x: x.reshape(x.shape[-3:]))
    layers = [("synthesis.b4.conv1", "conv1")]
    for k in range(n_up):
        res = 8 * 2 ** k
        layers += [(f"synthesis.b{res}.conv0", f"convs.{2 * k}"), (f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}")]
        t.constant(f"convs.{2 * k}.conv.blur.kernel", _fir(4.0))
        t.constant(f"to_rgbs.{k}.upsample.kernel", _fir(4.0))
    for i, (dst, src) in enumerate(layers):
        t.put(f"{dst}.weight", f"{src}.conv.weight", lambda x: x.reshape(x.shape[-4:]))
        t.put(f"{dst}.affine.weight", f"{src}.conv.modulation.weight")
        t.put(f"{dst}.affine.bias", f"{src}.conv.modulation.bias")
        t.put(f"{dst}.noise_strength", f"{src}.noise.weight", lambda x: x.reshape(()))
        t.put(f"{dst}.bias", f"{src}.activate.bias")
        t.put(f"{dst}.noise_const", f"noises.noise_{i}", lambda x: x.reshape(x.shape[-2:]))
    rgbs = [("synthesis.b4.torgb", "to_rgb1")]
    rgbs += [(f"synthesis.b{8 * 2 ** k}.torgb", f"to_rgbs.{k}") for k in range(n_up)]
    for dst, src in rgbs:
        t.put(f"{dst}.weight", f"{src}.conv.weight", lambda x: x.reshape(x.shape[-4:]))
        t.put(f"{dst}.affine.weight", f"{src}.conv.modulation.weight")
        t.put(f"{dst}.affine.bias", f"{src}.conv.modulation.bias")
        t.put(f"{dst}.bias", f"{src}.bias", lambda x: x.reshape(-1))
    out = t.finish()
    arch = _arch(resolution, z_dim, w_dim, n_mlp, widths)
    if latent_avg is None:
        warnings.warn("rosinality checkpoint has no 'latent_avg'; estimating w_avg from 10,000 mapped z (seed 0)",
                      stacklevel=2)
        out["mapping.w_avg"] = _estimate_w_avg(arch, out)
    else:
        out["mapping.w_avg"] = _rosinality_latent_avg(latent_avg, w_dim)
    return arch, out


def _rosinality_latent_avg(latent_avg: torch.Tensor, w_dim: int) -> torch.Tensor:
    avg = latent_avg.detach().to(torch.float32).reshape(-1, latent_avg.shape[-1])
    if avg.shape[1] != w_dim or not torch.equal(avg, avg[:1].expand_as(avg)):
        raise StyleGAN2CheckpointError(f"latent_avg of shape {tuple(latent_avg.shape)} is not one w_dim={w_dim} vector")
    return avg[0].contiguous()


@torch.no_grad()
def _estimate_w_avg(arch: dict, state: dict[str, torch.Tensor], n: int = 10_000) -> torch.Tensor:
    from anon.nets.stylegan2 import MappingNetwork

    mapping = MappingNetwork(arch["z_dim"], arch["w_dim"], 1, arch["mapping_layers"], arch["mapping_lr_mul"]).eval()
    mapping.load_state_dict({k[len("mapping."):]: v for k, v in state.items() if k.startswith("mapping.")}
                            | {"w_avg": torch.zeros(arch["w_dim"])})
    z = torch.randn(n, arch["z_dim"], generator=torch.Generator().manual_seed(0))
    return mapping(z)[:, 0].mean(0)


# ----------------------------------------------------------------------------------------------------
# NVIDIA (stylegan2-ada-pytorch training/networks.py, stylegan3 training/networks_stylegan2.py)
# ----------------------------------------------------------------------------------------------------

def translate_nvidia(sd: dict[str, torch.Tensor], arch: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """NVIDIA-named state dict (``G_ema.state_dict()``) -> (generator kwargs, our state dict).

    Names already match ours; the persistent ``resample_filter`` buffers (4 x 4, sum 1) are checked and
    dropped. ``arch`` (from the pickle's init kwargs) is used when given, else inferred from shapes.
    """
    t = _Translator(sd, "NVIDIA")
    keys = list(sd)
    n_map = _count(keys, r"mapping\.fc(\d+)\.weight")
    blocks = sorted(_indices(keys, r"synthesis\.b(\d+)\..*"))
    if n_map == 0 or not blocks or blocks[0] != 4:
        raise StyleGAN2CheckpointError("NVIDIA state dict without mapping.fc*/synthesis.b4 keys")
    resolution = blocks[-1]
    for k in keys:
        if k.endswith("resample_filter"):
            t.constant(k, _fir(1.0))
        elif k not in t.used:
            t.put(k, k)
    widths = {r: sd[f"synthesis.b{r}.conv1.weight"].shape[0] for r in blocks}
    inferred = _arch(resolution, sd["mapping.fc0.weight"].shape[1], sd[f"mapping.fc{n_map - 1}.weight"].shape[0],
                     n_map, widths)
    if arch is not None:
        for key in ("resolution", "z_dim", "w_dim", "mapping_layers"):
            if arch[key] != inferred[key]:
                raise StyleGAN2CheckpointError(
                    f"NVIDIA pickle says {key}={arch[key]} but its tensors give {inferred[key]}")
        if channel_widths(resolution, arch["channel_base"], arch["channel_max"]) != widths:
            raise StyleGAN2CheckpointError(f"NVIDIA pickle channel_base/channel_max do not match its tensors {widths}")
    return (arch or inferred), t.finish()


class _Record:
    """Inert stand-in for a pickled object of the NVIDIA code: it only keeps what the pickle says.

    ``class_name`` (the persistent class's name), ``state`` (its ``__dict__``: ``_parameters``,
    ``_buffers``, ``_modules``, plain attributes, ``_init_args``, ``_init_kwargs``), ``args`` (for
    non-persistent globals called by the pickle). The pickled module source is dropped, never run.
    """

    def __init__(self, class_name: str, state: dict | None = None, args: tuple = ()):
        self.class_name, self.state, self.args = class_name, dict(state or {}), args

    def __setstate__(self, state):
        self.state = dict(state) if isinstance(state, dict) else {"__state__": state}

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def __repr__(self):
        return f"<inert {self.class_name}>"


class _InertDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): data only."""


def _inert_global(module: str, name: str) -> type:
    """An inert class standing for ``module.name``: calling it or setting its state just records."""

    def __init__(self, *args, **kwargs):
        _Record.__init__(self, f"{module}.{name}", kwargs, args)

    return type(name, (_Record,), {"__init__": __init__, "__module__": __name__})


def _reconstruct_persistent_obj(meta):
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, never execs."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise StyleGAN2CheckpointError("malformed torch_utils.persistence record in the pickle")
    return _Record(str(meta["class_name"]), meta.get("state") or {})


def _load_storage_from_bytes(data: bytes):
    """Stand-in for ``torch.storage._load_from_bytes``: the same bytes, read with ``weights_only=True``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` with any pickled backward hooks dropped."""
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """``torch._utils._rebuild_parameter`` without hooks: a frozen tensor is all the loader needs."""
    return data


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for plain (non-object) dtypes only."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError("refused numpy object scalar in the pickle")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a project dependency
        return {}
    out: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = _numpy_scalar
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for NVIDIA network pickles that resolves only data-rebuilding globals.

    Allowed: torch tensor/parameter/storage rebuild helpers (storages are re-read with
    ``torch.load(weights_only=True)``), ``collections.OrderedDict``, ``builtins.set/frozenset``,
    ``numpy.dtype`` and plain numpy scalars. ``torch_utils.persistence._reconstruct_persistent_obj``
    and any other ``dnnlib.*`` / ``torch_utils.*`` global become inert :class:`_Record` objects (the
    pickled module source code is never imported or executed). Everything else -- e.g. ``os.system``,
    ``builtins.eval``, TensorFlow ``dnnlib.tflib`` networks -- raises :class:`UnsafePickleError` naming it.
    """

    _SAFE: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _InertDict,
        ("dnnlib", "EasyDict"): _InertDict,
    }

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in self._SAFE:
            return self._SAFE[key]
        numpy_globals = _numpy_globals()
        if key in numpy_globals:
            return numpy_globals[key]
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickleError(
                f"refused global {module}.{name}: this is a TensorFlow StyleGAN2 pickle; convert it first "
                "(stylegan2-ada-pytorch legacy.py, or rosinality convert_weight.py)")
        if module.split(".")[0] in ("dnnlib", "torch_utils"):
            return _inert_global(module, name)
        raise UnsafePickleError(
            f"refused global {module}.{name} in the pickle: it is not needed to rebuild tensors and could run code")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused persistent id {pid!r}: NVIDIA network pickles do not use them")


def read_nvidia_pickle(path: str | Path, key: str = "G_ema") -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``G_ema`` from an NVIDIA StyleGAN2 pickle without executing it.

    Returns (generator kwargs, our state dict). Init kwargs read: z_dim, c_dim, w_dim, img_resolution,
    img_channels, mapping_kwargs (num_layers, lr_multiplier), synthesis_kwargs (channel_base,
    channel_max, num_fp16_res, conv_clamp, architecture; flat in the stylegan3 repo's Generator). fp16
    blocks (``num_fp16_res``) are computed in fp32 here, as NVIDIA does on CPU. Refuses conditional,
    non-RGB, non-"skip" and StyleGAN3 (alias-free) generators.
    """
    with open(path, "rb") as f:
        data = RestrictedUnpickler(f).load()
    if not isinstance(data, dict) or key not in data:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise StyleGAN2CheckpointError(f"{path}: pickle has no {key!r} (found {got})")
    g = data[key]
    if not isinstance(g, _Record) or "_modules" not in g.state:
        raise StyleGAN2CheckpointError(f"{path}: {key} is not a torch_utils.persistence network")
    kw = _nvidia_init_kwargs(g)
    synthesis = g.state["_modules"].get("synthesis")
    children = list(synthesis.state.get("_modules", {})) if isinstance(synthesis, _Record) else []
    if not children or not all(re.fullmatch(r"b\d+", c) for c in children):
        raise StyleGAN2CheckpointError(
            f"{path}: {key}.synthesis has layers {children[:6]}, not StyleGAN2 blocks b4, b8, ...; StyleGAN3 "
            "(alias-free, 'input' + 'L0_...') and other generators are not supported")
    if kw.get("c_dim", 0):
        raise StyleGAN2CheckpointError(f"{path}: class-conditional generator (c_dim={kw['c_dim']}) is unsupported")
    if kw.get("img_channels", 3) != 3:
        raise StyleGAN2CheckpointError(f"{path}: img_channels={kw['img_channels']}, only RGB is supported")

    state = _flatten(g)
    blocks = {int(c[1:]): synthesis.state["_modules"][c] for c in children}
    for res, block in blocks.items():
        arch = block.state.get("architecture", "skip")
        if arch != "skip":
            raise StyleGAN2CheckpointError(
                f"{path}: synthesis architecture {arch!r}; only 'skip' (config-f) is supported")
    clamps = {layer.state.get("conv_clamp") for block in blocks.values()
              for name, layer in block.state["_modules"].items()}
    if len(clamps) != 1:
        raise StyleGAN2CheckpointError(f"{path}: layers disagree on conv_clamp {clamps}")
    mapping = g.state["_modules"]["mapping"]
    lr_mul = float(mapping.state["_modules"]["fc0"].state.get("bias_gain", DEFAULT_MAPPING_LR_MUL))
    syn_kw = {**kw, **synthesis.init_kwargs}  # SynthesisNetwork's own kwargs win; absent = its defaults
    arch = dict(resolution=int(g.state.get("img_resolution", kw.get("img_resolution"))),
                z_dim=int(g.state.get("z_dim", kw.get("z_dim"))), w_dim=int(g.state.get("w_dim", kw.get("w_dim"))),
                mapping_layers=int(mapping.state.get("num_layers", 8)),
                channel_base=int(syn_kw.get("channel_base", 32768)), channel_max=int(syn_kw.get("channel_max", 512)),
                mapping_lr_mul=lr_mul, conv_clamp=clamps.pop())
    if arch["conv_clamp"] is not None:
        arch["conv_clamp"] = float(arch["conv_clamp"])
    return translate_nvidia(state, arch)


def _nvidia_init_kwargs(g: _Record) -> dict:
    """G's init kwargs with the nested (ada) or flat (stylegan3 repo) synthesis kwargs merged in."""
    kw = g.init_kwargs
    names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
    kw.update({n: v for n, v in zip(names, g.state.get("_init_args") or ())})
    kw.update(dict(kw.pop("synthesis_kwargs", None) or {}))
    return kw


def _flatten(record: _Record, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a record tree, named like ``nn.Module.state_dict()``."""
    out: dict[str, torch.Tensor] = {}
    non_persistent = set(record.state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, value in (record.state.get(kind) or {}).items():
            if value is not None and name not in non_persistent:
                out[prefix + name] = value
    for name, child in (record.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Record):
            raise StyleGAN2CheckpointError(f"unexpected module {prefix}{name} of type {type(child).__name__}")
        out.update(_flatten(child, f"{prefix}{name}."))
    return out
