"""rosinality StyleGAN2 (rosinality/stylegan2-pytorch ``model.py``) ``g_ema`` -> our naming.

rosinality's 2x-up conv kernels are already in NVIDIA's orientation; layouts differ: conv weights
``1 x O x I x k x k`` -> ``O x I x k x k``, noise strength ``(1,)`` -> ``()``, toRGB bias
``1 x 3 x 1 x 1`` -> ``(3,)``, const ``1 x C x 4 x 4`` -> ``C x 4 x 4``, noise ``1 x 1 x R x R`` -> ``R x R``.
"""
from __future__ import annotations

import warnings

import torch

from anon.nets.stylegan2_formats.common import (StyleGAN2CheckpointError, Translator, count_layers,
                                                fir_filter, generator_arch)


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
    t = Translator(sd, "rosinality")
    keys = list(sd)
    n_mlp = count_layers(keys, r"style\.(\d+)\.weight")
    n_up = count_layers(keys, r"to_rgbs\.(\d+)\.conv\.weight")
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
        t.constant(f"convs.{2 * k}.conv.blur.kernel", fir_filter(4.0))
        t.constant(f"to_rgbs.{k}.upsample.kernel", fir_filter(4.0))
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
    arch = generator_arch(resolution, z_dim, w_dim, n_mlp, widths)
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
