"""GenForce StyleGAN2 (genforce/genforce ``models/stylegan2_generator.py``; FALCO's copy) -> our naming.

Differences from ours (NVIDIA's), besides the names: GenForce stores the affine (``style``) bias
*without* the constant 1 that NVIDIA and rosinality fold into it (GenForce adds ``additional_bias=1``
at run time), so ours = GenForce + 1; its 2x-up conv (``layer{odd}``) kernel keeps TF's orientation and
is flipped at run time, so ours = GenForce flipped on (H, W); const ``1 x C x 4 x 4`` -> ``C x 4 x 4``,
noise ``1 x 1 x R x R`` -> ``R x R``.
"""
from __future__ import annotations

import torch

from anon.nets.stylegan2_formats.common import (StyleGAN2CheckpointError, Translator, count_layers,
                                                fir_filter, generator_arch)


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
    t = Translator(sd, "GenForce")
    keys = list(sd)
    if "mapping.label_weight" in sd:
        raise StyleGAN2CheckpointError("GenForce checkpoint is class-conditional (mapping.label_weight); unsupported")
    n_map = count_layers(keys, r"mapping\.dense(\d+)\.weight")
    n_layers = count_layers(keys, r"synthesis\.layer(\d+)\.weight")
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
    t.constant("synthesis.upsample.kernel", fir_filter(4.0))
    for i in range(n_layers):
        res = 4 * 2 ** ((i + 1) // 2)
        dst = f"synthesis.b{res}.conv{0 if i % 2 else 1}"
        src = f"synthesis.layer{i}"
        if i % 2:  # 2x-up conv: GenForce keeps TF's kernel orientation
            t.put(f"{dst}.weight", f"{src}.weight", lambda x: x.flip([2, 3]))
            t.constant(f"{src}.filter.kernel", fir_filter(4.0))
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
    return generator_arch(resolution, z_dim, w_dim, n_map, widths), t.finish()
