"""NVIDIA StyleGAN2 (stylegan2-ada-pytorch ``training/networks.py``, stylegan3
``training/networks_stylegan2.py``): ``G_ema`` of a network pickle, or its state dict -> ours.

Names already match ours; the architecture comes from the pickle's init kwargs (checked against the
tensors) or, for a bare state dict, from the tensor shapes.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from anon.nets.stylegan2_formats.common import (DEFAULT_MAPPING_LR_MUL, StyleGAN2CheckpointError, Translator,
                                                channel_widths, count_layers, fir_filter, generator_arch,
                                                layer_indices)
from anon.nets.stylegan2_formats.unpickler import PickledRecord, RestrictedUnpickler


def translate_nvidia(sd: dict[str, torch.Tensor], arch: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """NVIDIA-named state dict (``G_ema.state_dict()``) -> (generator kwargs, our state dict).

    Names already match ours; the persistent ``resample_filter`` buffers (4 x 4, sum 1) are checked and
    dropped. ``arch`` (from the pickle's init kwargs) is used when given, else inferred from shapes.
    """
    t = Translator(sd, "NVIDIA")
    keys = list(sd)
    n_map = count_layers(keys, r"mapping\.fc(\d+)\.weight")
    blocks = sorted(layer_indices(keys, r"synthesis\.b(\d+)\..*"))
    if n_map == 0 or not blocks or blocks[0] != 4:
        raise StyleGAN2CheckpointError("NVIDIA state dict without mapping.fc*/synthesis.b4 keys")
    resolution = blocks[-1]
    for k in keys:
        if k.endswith("resample_filter"):
            t.constant(k, fir_filter(1.0))
        elif k not in t.used:
            t.put(k, k)
    widths = {r: sd[f"synthesis.b{r}.conv1.weight"].shape[0] for r in blocks}
    inferred = generator_arch(resolution, sd["mapping.fc0.weight"].shape[1], sd[f"mapping.fc{n_map - 1}.weight"].shape[0],
                     n_map, widths)
    if arch is not None:
        for key in ("resolution", "z_dim", "w_dim", "mapping_layers"):
            if arch[key] != inferred[key]:
                raise StyleGAN2CheckpointError(
                    f"NVIDIA pickle says {key}={arch[key]} but its tensors give {inferred[key]}")
        if channel_widths(resolution, arch["channel_base"], arch["channel_max"]) != widths:
            raise StyleGAN2CheckpointError(f"NVIDIA pickle channel_base/channel_max do not match its tensors {widths}")
    return (arch or inferred), t.finish()


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
    if not isinstance(g, PickledRecord) or "_modules" not in g.state:
        raise StyleGAN2CheckpointError(f"{path}: {key} is not a torch_utils.persistence network")
    kw = _nvidia_init_kwargs(g)
    synthesis = g.state["_modules"].get("synthesis")
    children = list(synthesis.state.get("_modules", {})) if isinstance(synthesis, PickledRecord) else []
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
    for block in blocks.values():
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


def _nvidia_init_kwargs(g: PickledRecord) -> dict:
    """G's init kwargs with the nested (ada) or flat (stylegan3 repo) synthesis kwargs merged in."""
    kw = g.init_kwargs
    names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
    kw.update({n: v for n, v in zip(names, g.state.get("_init_args") or ())})
    kw.update(dict(kw.pop("synthesis_kwargs", None) or {}))
    return kw


def _flatten(record: PickledRecord, prefix: str = "") -> dict[str, torch.Tensor]:
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
        if not isinstance(child, PickledRecord):
            raise StyleGAN2CheckpointError(f"unexpected module {prefix}{name} of type {type(child).__name__}")
        out.update(_flatten(child, f"{prefix}{name}."))
    return out
