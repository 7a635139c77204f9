"""StyleGAN2 generator and its loaders for the three official checkpoint formats.

The checkpoints here are synthesised from *written-down facts* about each official format (key
names, shapes, layout and conversion rules, with the source file each comes from), never from our
module's ``state_dict``. The facts were checked once against the official code (NVlabs/
stylegan2-ada-pytorch ``training/networks.py``, genforce/genforce ``models/stylegan2_generator.py``
as copied in chi0tzp/FALCO, rosinality/stylegan2-pytorch ``model.py``): each official module's
``state_dict()`` has exactly these keys and shapes, and the three official forward passes on weights
converted by these rules agree to ~1e-5.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from anon.errors import ConfigError, MissingCheckpointError
from anon.nets.stylegan2 import StyleGAN2Generator, SynthesisLayer, ToRGBLayer
from anon.nets.stylegan2_loaders import (StyleGAN2CheckpointError, UnsafePickleError, load_stylegan2,
                                         read_stylegan2_checkpoint)
from tests.helpers import caused_by

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "generator"

# Config-f, 1024 px, z = w = 512, 8 mapping layers: sum(p.numel() for p in G.parameters()) is 30,370,060
# for NVIDIA stylegan2-ada-pytorch Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024,
# img_channels=3, channel_base=32768, channel_max=512), GenForce StyleGAN2Generator(1024) and rosinality
# Generator(1024, 512, 8, channel_multiplier=2) alike (buffers -- w_avg, noise, FIR filters -- excluded).
# The StyleGAN2 paper rounds it to 30.0M.
CONFIG_F_1024_PARAMS = 30_370_060
# Channels per block, config-f (NVIDIA channels_dict = min(32768 // res, 512); rosinality's table with
# channel_multiplier=2; GenForce get_nf with fmaps_base=32 << 10, fmaps_max=512).
CONFIG_F_WIDTHS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
# len(state_dict()) of the three official 1024 config-f generators.
OFFICIAL_STATE_LEN_1024 = {"nvidia": 182, "genforce": 165, "rosinality": 171}
TINY = dict(resolution=64, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])
FIR2D = FIR[:, None] * FIR[None, :] / 64.0  # NVIDIA upfirdn2d.setup_filter([1,3,3,1]): sums to 1


def widths_of(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


# --------------------------------------------------------------------------------------------------
# Facts: official key names and shapes
# --------------------------------------------------------------------------------------------------

def nvidia_shapes(resolution, z_dim, w_dim, mapping_layers, widths) -> dict[str, tuple]:
    """stylegan2-ada-pytorch ``Generator(c_dim=0, img_channels=3, architecture='skip').state_dict()``."""
    s = {}
    for i in range(mapping_layers):
        s[f"mapping.fc{i}.weight"], s[f"mapping.fc{i}.bias"] = (w_dim, z_dim if i == 0 else w_dim), (w_dim,)
    s["mapping.w_avg"] = (w_dim,)

    def layer(name, cin, cout, res):
        s.update({f"{name}.weight": (cout, cin, 3, 3), f"{name}.noise_strength": (), f"{name}.bias": (cout,),
                  f"{name}.resample_filter": (4, 4), f"{name}.noise_const": (res, res),
                  f"{name}.affine.weight": (cin, w_dim), f"{name}.affine.bias": (cin,)})

    for res, c in widths.items():
        b = f"synthesis.b{res}"
        s[f"{b}.resample_filter"] = (4, 4)
        if res == 4:
            s[f"{b}.const"] = (c, 4, 4)
        else:
            layer(f"{b}.conv0", widths[res // 2], c, res)
        layer(f"{b}.conv1", c, c, res)
        s.update({f"{b}.torgb.weight": (3, c, 1, 1), f"{b}.torgb.bias": (3,),
                  f"{b}.torgb.affine.weight": (c, w_dim), f"{b}.torgb.affine.bias": (c,)})
    return s


def genforce_shapes(resolution, z_dim, w_dim, mapping_layers, widths) -> dict[str, tuple]:
    """GenForce ``StyleGAN2Generator(resolution, z_space_dim, w_space_dim, mapping_fmaps=w_dim, ...)``."""
    s = {}
    for i in range(mapping_layers):
        s[f"mapping.dense{i}.weight"], s[f"mapping.dense{i}.bias"] = (w_dim, z_dim if i == 0 else w_dim), (w_dim,)
    s["truncation.w_avg"] = (w_dim,)
    s["synthesis.early_layer.const"] = (1, widths[4], 4, 4)
    res_list = sorted(widths)
    for b, res in enumerate(res_list):
        convs = [(0, widths[4], widths[4])] if b == 0 else [(2 * b - 1, widths[res // 2], widths[res]),
                                                            (2 * b, widths[res], widths[res])]
        for i, cin, cout in convs:
            n = f"synthesis.layer{i}"
            s.update({f"{n}.weight": (cout, cin, 3, 3), f"{n}.bias": (cout,), f"{n}.style.weight": (cin, w_dim),
                      f"{n}.style.bias": (cin,), f"{n}.noise": (1, 1, res, res), f"{n}.noise_strength": ()})
            if i % 2:
                s[f"{n}.filter.kernel"] = (1, 1, 4, 4)
        n = f"synthesis.output{b}"
        s.update({f"{n}.weight": (3, widths[res], 1, 1), f"{n}.bias": (3,), f"{n}.style.weight": (widths[res], w_dim),
                  f"{n}.style.bias": (widths[res],)})
    s["synthesis.upsample.kernel"] = (1, 1, 4, 4)
    return s


def rosinality_shapes(resolution, z_dim, w_dim, mapping_layers, widths) -> dict[str, tuple]:
    """rosinality ``Generator(size, style_dim, n_mlp).state_dict()`` (its z and w share ``style_dim``)."""
    assert z_dim == w_dim
    s = {}
    for i in range(1, mapping_layers + 1):
        s[f"style.{i}.weight"], s[f"style.{i}.bias"] = (w_dim, w_dim), (w_dim,)
    s["input.input"] = (1, widths[4], 4, 4)

    def styled(n, cin, cout, up):
        s.update({f"{n}.conv.weight": (1, cout, cin, 3, 3), f"{n}.conv.modulation.weight": (cin, w_dim),
                  f"{n}.conv.modulation.bias": (cin,), f"{n}.noise.weight": (1,), f"{n}.activate.bias": (cout,)})
        if up:
            s[f"{n}.conv.blur.kernel"] = (4, 4)

    def rgb(n, c, up):
        s.update({f"{n}.conv.weight": (1, 3, c, 1, 1), f"{n}.conv.modulation.weight": (c, w_dim),
                  f"{n}.conv.modulation.bias": (c,), f"{n}.bias": (1, 3, 1, 1)})
        if up:
            s[f"{n}.upsample.kernel"] = (4, 4)

    styled("conv1", widths[4], widths[4], False)
    rgb("to_rgb1", widths[4], False)
    for k, res in enumerate(sorted(widths)[1:]):
        styled(f"convs.{2 * k}", widths[res // 2], widths[res], True)
        styled(f"convs.{2 * k + 1}", widths[res], widths[res], False)
        rgb(f"to_rgbs.{k}", widths[res], True)
    for i in range(2 * len(widths) - 1):
        r = 4 * 2 ** ((i + 1) // 2)
        s[f"noises.noise_{i}"] = (1, 1, r, r)
    return s


# --------------------------------------------------------------------------------------------------
# Facts: how the same weights look in each format (conversion rules)
# --------------------------------------------------------------------------------------------------

def nvidia_weights(shapes: dict[str, tuple], fill=None, gen: torch.Generator | None = None) -> dict:
    """Values for an NVIDIA-named dict: FIR filter buffers are the fixed [1,3,3,1] filter; affine biases sit
    around 1 (NVIDIA's ``bias_init=1``); the rest random (or ``fill``)."""
    out = {}
    for k, shape in shapes.items():
        if k.endswith("resample_filter"):
            out[k] = FIR2D.clone()
        elif fill is not None:
            out[k] = torch.full(shape, float(fill))
        elif k.endswith("affine.bias"):
            out[k] = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        else:
            out[k] = (0.5 if k.endswith("noise_strength") else 1.0) * torch.randn(shape, generator=gen)
    return out


def nvidia_layout(nv: dict) -> tuple[list[int], int]:
    """An NVIDIA-named dict's block resolutions (4, 8, ...) and number of mapping layers."""
    res_list = sorted({int(k.split(".")[1][1:]) for k in nv if k.startswith("synthesis.b")})
    return res_list, sum(1 for k in nv if k.startswith("mapping.fc") and k.endswith("weight"))


def to_genforce(nv: dict) -> dict:
    """NVIDIA -> GenForce, the rules of genforce ``converters/stylegan2ada_pth_converter.py``: Conv0_up
    kernels flipped on (H, W); ``mod_bias`` stored without the +1 (GenForce adds ``additional_bias=1``);
    const and noise get leading singleton dims; filters are 4 x 4 [1,3,3,1] kernels with gain 4."""
    res_list, n_map = nvidia_layout(nv)
    out = {}
    for i in range(n_map):
        out[f"mapping.dense{i}.weight"] = nv[f"mapping.fc{i}.weight"]
        out[f"mapping.dense{i}.bias"] = nv[f"mapping.fc{i}.bias"]
    out["truncation.w_avg"] = nv["mapping.w_avg"]
    out["synthesis.early_layer.const"] = nv["synthesis.b4.const"][None]
    for b, res in enumerate(res_list):
        pairs = [(0, "synthesis.b4.conv1")] if b == 0 else [(2 * b - 1, f"synthesis.b{res}.conv0"),
                                                           (2 * b, f"synthesis.b{res}.conv1")]
        for i, src in pairs:
            n = f"synthesis.layer{i}"
            out[f"{n}.weight"] = nv[f"{src}.weight"].flip(2, 3) if i % 2 else nv[f"{src}.weight"]
            out[f"{n}.bias"] = nv[f"{src}.bias"]
            out[f"{n}.style.weight"] = nv[f"{src}.affine.weight"]
            out[f"{n}.style.bias"] = nv[f"{src}.affine.bias"] - 1
            out[f"{n}.noise"] = nv[f"{src}.noise_const"][None, None]
            out[f"{n}.noise_strength"] = nv[f"{src}.noise_strength"]
            if i % 2:
                out[f"{n}.filter.kernel"] = 4 * FIR2D[None, None]
        src, n = f"synthesis.b{res}.torgb", f"synthesis.output{b}"
        out[f"{n}.weight"], out[f"{n}.bias"] = nv[f"{src}.weight"], nv[f"{src}.bias"]
        out[f"{n}.style.weight"], out[f"{n}.style.bias"] = nv[f"{src}.affine.weight"], nv[f"{src}.affine.bias"] - 1
    out["synthesis.upsample.kernel"] = 4 * FIR2D[None, None]
    return out


def to_rosinality(nv: dict) -> tuple[dict, torch.Tensor]:
    """NVIDIA -> rosinality (g_ema, latent_avg): both hold TF's Conv0_up kernel flipped (rosinality's
    ``convert_weight.py`` flips it; NVIDIA's ``legacy.py`` too), so kernels copy as they are; modulation
    biases include the +1 in both; weights get a leading 1; noise strength is (1,), toRGB bias 1x3x1x1."""
    res_list, n_map = nvidia_layout(nv)
    out = {}
    for i in range(n_map):
        out[f"style.{i + 1}.weight"] = nv[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = nv[f"mapping.fc{i}.bias"]
    out["input.input"] = nv["synthesis.b4.const"][None]
    convs = [("conv1", "synthesis.b4.conv1")]
    rgbs = [("to_rgb1", "synthesis.b4.torgb")]
    for k, res in enumerate(res_list[1:]):
        convs += [(f"convs.{2 * k}", f"synthesis.b{res}.conv0"), (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")]
        rgbs.append((f"to_rgbs.{k}", f"synthesis.b{res}.torgb"))
        out[f"convs.{2 * k}.conv.blur.kernel"] = 4 * FIR2D
        out[f"to_rgbs.{k}.upsample.kernel"] = 4 * FIR2D
    for i, (n, src) in enumerate(convs):
        out[f"{n}.conv.weight"] = nv[f"{src}.weight"][None]
        out[f"{n}.conv.modulation.weight"] = nv[f"{src}.affine.weight"]
        out[f"{n}.conv.modulation.bias"] = nv[f"{src}.affine.bias"]
        out[f"{n}.noise.weight"] = nv[f"{src}.noise_strength"].reshape(1)
        out[f"{n}.activate.bias"] = nv[f"{src}.bias"]
        out[f"noises.noise_{i}"] = nv[f"{src}.noise_const"][None, None]
    for n, src in rgbs:
        out[f"{n}.conv.weight"] = nv[f"{src}.weight"][None]
        out[f"{n}.conv.modulation.weight"] = nv[f"{src}.affine.weight"]
        out[f"{n}.conv.modulation.bias"] = nv[f"{src}.affine.bias"]
        out[f"{n}.bias"] = nv[f"{src}.bias"].reshape(1, 3, 1, 1)
    return out, nv["mapping.w_avg"].clone()


# --------------------------------------------------------------------------------------------------
# Facts: the NVIDIA network pickle layout (torch_utils/persistence.py)
# --------------------------------------------------------------------------------------------------

def _fake_reconstruct(meta):  # stands for the real function; only its pickled *name* matters
    raise AssertionError("never called: the loader must use its own inert stand-in")


_fake_reconstruct.__module__ = "torch_utils.persistence"
_fake_reconstruct.__qualname__ = _fake_reconstruct.__name__ = "_reconstruct_persistent_obj"


class _Persistent:
    """Pickles as ``torch_utils.persistence`` does: REDUCE(_reconstruct_persistent_obj, (meta,)) where
    meta = dict(type='class', version=6, module_src=<module source>, class_name, state=obj.__dict__)."""

    def __init__(self, class_name, module_src="# networks.py source\n", **state):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return _fake_reconstruct, (self.meta,)


def _module_state(params=None, buffers=None, modules=None, init_kwargs=None, **attrs):
    """The parts of an ``nn.Module.__dict__`` a persistent pickle carries."""
    return dict(training=False, _parameters=dict(params or {}), _buffers=dict(buffers or {}),
                _non_persistent_buffers_set=set(), _modules=dict(modules or {}), _init_args=(),
                _init_kwargs=dict(init_kwargs or {}), **attrs)


def nvidia_pickle_bytes(nv: dict, arch: dict, module_src="# networks.py source\n", synthesis_children=None) -> bytes:
    """dict(G=..., D=None, G_ema=...) with G_ema built from an NVIDIA-named dict, as ``training_loop.py``
    writes network snapshots (buffers: w_avg, noise_const, resample_filter; the rest parameters)."""
    buffers_suffix = ("w_avg", "noise_const", "resample_filter")
    tree: dict = {}
    for key, value in nv.items():
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = torch.nn.Parameter(value) if not leaf.endswith(buffers_suffix) else value

    class_of = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "affine": "FullyConnectedLayer",
                "torgb": "ToRGBLayer", "conv0": "SynthesisLayer", "conv1": "SynthesisLayer"}

    def build(name, node):
        cls = class_of.get(name, "SynthesisBlock" if name.startswith("b") else "FullyConnectedLayer")
        leaves = {k: v for k, v in node.items() if not isinstance(v, dict)}
        attrs = {}
        if cls == "FullyConnectedLayer":
            lr = arch["mapping_lr_mul"] if name.startswith("fc") else 1.0
            attrs = dict(activation="lrelu" if name.startswith("fc") else "linear", bias_gain=lr,
                         weight_gain=lr / math.sqrt(leaves["weight"].shape[1]))
        elif cls in ("SynthesisLayer", "ToRGBLayer"):
            attrs = dict(conv_clamp=arch["conv_clamp"])
        elif cls == "SynthesisBlock":
            attrs = dict(architecture="skip", resolution=int(name[1:]))
        elif cls == "MappingNetwork":
            attrs = dict(num_layers=arch["mapping_layers"], w_avg_beta=0.995)
        children = {k: build(k, v) for k, v in node.items() if isinstance(v, dict)}
        if name == "synthesis":
            children = children if synthesis_children is None else synthesis_children
            init_kwargs = dict(w_dim=arch["w_dim"], img_resolution=arch["resolution"], img_channels=3,
                               channel_base=arch["channel_base"], channel_max=arch["channel_max"], num_fp16_res=0,
                               conv_clamp=arch["conv_clamp"], architecture="skip")
            attrs = dict(init_kwargs=init_kwargs, img_resolution=arch["resolution"])
        state = _module_state(params={k: v for k, v in leaves.items() if isinstance(v, torch.nn.Parameter)},
                              buffers={k: v for k, v in leaves.items() if not isinstance(v, torch.nn.Parameter)},
                              modules=children, **attrs)
        return _Persistent(cls, module_src, **state)

    kwargs = dict(z_dim=arch["z_dim"], c_dim=0, w_dim=arch["w_dim"], img_resolution=arch["resolution"], img_channels=3,
                  mapping_kwargs=dict(num_layers=arch["mapping_layers"]),
                  synthesis_kwargs=dict(channel_base=arch["channel_base"], channel_max=arch["channel_max"],
                                        num_fp16_res=0, conv_clamp=arch["conv_clamp"], architecture="skip"))
    g = _Persistent("Generator", module_src, **_module_state(
        modules={"synthesis": build("synthesis", tree["synthesis"]), "mapping": build("mapping", tree["mapping"])},
        init_kwargs=kwargs, z_dim=arch["z_dim"], c_dim=0, w_dim=arch["w_dim"], img_resolution=arch["resolution"],
        img_channels=3))
    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = _fake_reconstruct
    saved = {m: sys.modules.get(m) for m in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": fake})
    try:
        return pickle.dumps(dict(G=g, D=None, G_ema=g, augment_pipe=None))
    finally:
        for m, v in saved.items():
            if v is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v


def tiny_arch(**kw):
    a = dict(TINY, mapping_lr_mul=0.01, conv_clamp=None)
    a.update(kw)
    return a


def write_all_formats(tmp_path: Path, nv: dict, arch: dict) -> dict[str, Path]:
    """The same weights as a GenForce .pth, an NVIDIA .pkl and a rosinality .pt."""
    paths = {"genforce": tmp_path / "g.pth", "nvidia": tmp_path / "g.pkl", "rosinality": tmp_path / "g.pt"}
    gf = to_genforce(nv)
    torch.save({"generator_smooth": gf, "generator": {k: torch.zeros_like(v) for k, v in gf.items()},
                "discriminator": {}}, paths["genforce"])
    paths["nvidia"].write_bytes(nvidia_pickle_bytes(nv, arch))
    g_ema, latent_avg = to_rosinality(nv)
    torch.save({"g_ema": g_ema, "latent_avg": latent_avg}, paths["rosinality"])
    return paths


# --------------------------------------------------------------------------------------------------
# (a) architecture facts
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("res", [8, 16, 64, 256, 512, 1024])
def test_num_ws(res):
    g = StyleGAN2Generator(resolution=res, z_dim=8, w_dim=8, mapping_layers=1, channel_base=4 * res, channel_max=4)
    assert g.num_ws == 2 * int(math.log2(res)) - 2
    assert g.mapping(torch.randn(2, 8)).shape == (2, g.num_ws, 8)


def test_config_f_1024_widths_and_parameter_count():
    g = StyleGAN2Generator()  # defaults are config-f 1024
    assert g.num_ws == 18
    assert {r: getattr(g.synthesis, f"b{r}").conv1.weight.shape[0] for r in CONFIG_F_WIDTHS} == CONFIG_F_WIDTHS
    assert sum(p.numel() for p in g.parameters()) == CONFIG_F_1024_PARAMS
    shapes = nvidia_shapes(1024, 512, 512, 8, CONFIG_F_WIDTHS)
    assert len(shapes) == OFFICIAL_STATE_LEN_1024["nvidia"]
    assert len(genforce_shapes(1024, 512, 512, 8, CONFIG_F_WIDTHS)) == OFFICIAL_STATE_LEN_1024["genforce"]
    assert len(rosinality_shapes(1024, 512, 512, 8, CONFIG_F_WIDTHS)) == OFFICIAL_STATE_LEN_1024["rosinality"]
    # our parameter names and shapes are NVIDIA's (its FIR filters are buffers we do not store)
    ours = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    assert ours == {k: v for k, v in shapes.items() if not k.endswith("resample_filter")}


def _layer_order(g):
    """Conv layers in W+ order (4x4 conv, then conv0/conv1 per block) and toRGB layers by block."""
    convs, rgbs = [], []
    for block in g.synthesis.blocks():
        r = block.resolution
        convs += ([] if r == 4 else [f"b{r}.conv0"]) + [f"b{r}.conv1"]
        rgbs.append(f"b{r}.torgb")
    return convs, rgbs


def _w_inputs(g, ws):
    """The w vector each modulated layer received, by layer name, for W+ codes ``ws``."""
    seen, hooks = {}, []
    for name, m in g.synthesis.named_modules():
        if isinstance(m, (SynthesisLayer, ToRGBLayer)):
            hooks.append(m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[1])))
    try:
        img = g.synthesis(ws)
    finally:
        for h in hooks:
            h.remove()
    return seen, img


@torch.no_grad()
def test_wplus_rows_drive_the_layers_of_falco_table():
    """FALCO.md §2 (GenForce 'skip'): row i drives conv layer i, and toRGB k reads row 2k+1; rows 3-7 are
    16x16 conv0_up + 8x8 toRGB, 16x16 conv1, 32x32 conv0_up + 16x16 toRGB, 32x32 conv1, 64x64 conv0_up +
    32x32 toRGB."""
    torch.manual_seed(0)
    g = StyleGAN2Generator(**TINY).eval()
    convs, rgbs = _layer_order(g)
    ws = torch.randn(1, g.num_ws, g.w_dim)
    base, img0 = _w_inputs(g, ws)
    table = {3: {"b16.conv0", "b8.torgb"}, 4: {"b16.conv1"}, 5: {"b32.conv0", "b16.torgb"}, 6: {"b32.conv1"},
             7: {"b64.conv0", "b32.torgb"}}
    for row in range(g.num_ws):
        ws2 = ws.clone()
        ws2[0, row] += 1.0
        got, img = _w_inputs(g, ws2)
        changed = {k for k in base if not torch.equal(base[k], got[k])}
        expected = {convs[row]} if row < len(convs) else set()
        expected |= {rgbs[(row - 1) // 2]} if row % 2 == 1 else set()
        assert changed == expected, row
        if row in table:
            assert changed == table[row]
        assert (img - img0).abs().max() > 1e-3, f"row {row} has no effect on the image"


@torch.no_grad()
def test_rows_read_only_by_the_last_block_change_only_its_output():
    """Rows read only by the highest-resolution block (16, 17 at 1024 px; 8, 9 here) leave every lower-resolution
    feature map and partial image bit-identical: they can only change the finest scale."""
    torch.manual_seed(1)
    g = StyleGAN2Generator(**TINY).eval()
    outs, hooks = {}, []
    for block in g.synthesis.blocks():
        hooks.append(block.register_forward_hook(
            lambda mod, args, out, r=block.resolution: outs.__setitem__(r, tuple(t.clone() for t in out))))
    ws = torch.randn(2, g.num_ws, g.w_dim)
    g.synthesis(ws)
    base = dict(outs)
    last = g.resolution
    for row in (g.num_ws - 2, g.num_ws - 1, 3):
        ws2 = ws.clone()
        ws2[:, row] = torch.randn(2, g.w_dim)
        img = g.synthesis(ws2)
        unchanged = [r for r in base if all(torch.equal(a, b) for a, b in zip(base[r], outs[r]))]
        if row >= g.num_ws - 2:
            assert unchanged == [r for r in base if r < last]
        else:  # row 3 reaches the 8 px toRGB and 16 px conv0: everything from 8 px up changes
            assert unchanged == [4]
        assert not torch.allclose(img, base[last][1])


# --------------------------------------------------------------------------------------------------
# (b) per format, a synthesised checkpoint with the official keys loads strictly
# --------------------------------------------------------------------------------------------------

def test_genforce_full_size_checkpoint_loads(tmp_path):
    """FALCO's file: GenForce 1024 config-f (zeros; 'generator_smooth' plus 'generator')."""
    shapes = genforce_shapes(1024, 512, 512, 8, CONFIG_F_WIDTHS)
    sd = {k: torch.zeros(s) for k, s in shapes.items()}
    for k in sd:
        if k.endswith("kernel"):
            sd[k] = 4 * FIR2D.reshape(shapes[k])
    torch.save({"generator_smooth": sd, "generator": sd}, tmp_path / "stylegan2_ffhq1024.pth")
    g = load_stylegan2(tmp_path / "stylegan2_ffhq1024.pth", resolution=1024)
    assert g.num_ws == 18 and g.resolution == 1024 and g.z_dim == g.w_dim == 512
    assert sum(p.numel() for p in g.parameters()) == CONFIG_F_1024_PARAMS
    # GenForce stores affine biases without the +1: zeros there are ones in ours
    assert torch.equal(g.synthesis.b1024.torgb.affine.bias, torch.ones(32))
    assert not any(p.requires_grad for p in g.parameters()) and not g.training


@pytest.mark.parametrize("fmt", ["genforce", "nvidia", "rosinality"])
@pytest.mark.parametrize("res,base,cmax,w", [(64, 256, 16, 16), (256, 32768, 512, 32)])
def test_official_layout_loads_strictly(tmp_path, fmt, res, base, cmax, w):
    arch = tiny_arch(resolution=res, z_dim=w, w_dim=w, channel_base=base, channel_max=cmax, mapping_layers=3)
    widths = widths_of(res, base, cmax)
    nv = nvidia_weights(nvidia_shapes(res, w, w, 3, widths), gen=torch.Generator().manual_seed(0))
    paths = write_all_formats(tmp_path, nv, arch)
    g = load_stylegan2(paths[fmt])
    assert (g.resolution, g.z_dim, g.w_dim, g.num_ws) == (res, w, w, 2 * int(math.log2(res)) - 2)
    assert {r: getattr(g.synthesis, f"b{r}").conv1.weight.shape[0] for r in widths} == widths
    shapes = {"genforce": genforce_shapes, "rosinality": rosinality_shapes, "nvidia": nvidia_shapes}[fmt](
        res, w, w, 3, widths)
    if fmt != "nvidia":
        saved = torch.load(paths[fmt], weights_only=True)
        saved = saved.get("generator_smooth", saved.get("g_ema"))
        assert {k: tuple(v.shape) for k, v in saved.items()} == shapes


def test_genforce_prefers_generator_smooth_and_falls_back(tmp_path):
    arch = tiny_arch()
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), gen=torch.Generator().manual_seed(3))
    gf = to_genforce(nv)
    other = {k: v + 1 for k, v in gf.items()}
    other.update({k: v for k, v in gf.items() if k.endswith("kernel")})
    torch.save({"generator": other, "generator_smooth": gf}, tmp_path / "both.pth")
    torch.save({"generator": gf}, tmp_path / "only.pth")
    a, b = load_stylegan2(tmp_path / "both.pth"), load_stylegan2(tmp_path / "only.pth")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert arch["resolution"] == a.resolution


def test_strict_translation_names_unused_and_missing_keys(tmp_path):
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), fill=0.5)
    gf = to_genforce(nv)
    torch.save({"generator_smooth": {**gf, "synthesis.layer3.extra": torch.zeros(2)}}, tmp_path / "extra.pth")
    with pytest.raises(StyleGAN2CheckpointError, match=r"synthesis\.layer3\.extra"):
        load_stylegan2(tmp_path / "extra.pth")
    gone = dict(gf)
    del gone["synthesis.layer2.noise_strength"]
    torch.save({"generator_smooth": gone}, tmp_path / "missing.pth")
    with pytest.raises(StyleGAN2CheckpointError, match=r"synthesis\.layer2\.noise_strength"):
        load_stylegan2(tmp_path / "missing.pth")
    ros, _ = to_rosinality(nv)
    ros["convs.0.conv.blur.kernel"] = torch.ones(4, 4)  # a non-standard filter cannot be honoured
    torch.save({"g_ema": ros, "latent_avg": torch.zeros(16)}, tmp_path / "blur.pt")
    with pytest.raises(StyleGAN2CheckpointError, match="blur.kernel"):
        load_stylegan2(tmp_path / "blur.pt")


def test_translated_weights_that_do_not_fit_name_each_kind_of_key():
    """The last check after any format's translation: a key missing, one left over, one of another shape."""
    from anon.nets.stylegan2_loaders import _load_strict

    g = StyleGAN2Generator(**TINY)
    state = dict(g.state_dict())
    gone = sorted(state)[0]
    del state[gone]
    wide = next(k for k in sorted(state) if state[k].ndim == 2)
    rows, cols = state[wide].shape
    state[wide], state["extra.weight"] = torch.zeros(rows, cols + 1), torch.zeros(1)
    with pytest.raises(StyleGAN2CheckpointError) as err:
        _load_strict(g, state, "g.pth (genforce)")
    assert str(err.value) == (f"g.pth (genforce): translated weights do not fit the generator; missing ['{gone}'], "
                              f"unexpected ['extra.weight'], shape mismatches ['{wide}: ({rows}, {cols + 1}) vs "
                              f"({rows}, {cols})']")


def test_overrides_must_agree_with_the_checkpoint(tmp_path):
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), fill=0.1)
    paths = write_all_formats(tmp_path, nv, tiny_arch())
    with pytest.raises(ConfigError, match="resolution=1024"):
        load_stylegan2(paths["genforce"], resolution=1024)
    with pytest.raises(ConfigError, match="conv_clamp"):
        load_stylegan2(paths["nvidia"], conv_clamp=256)
    g = load_stylegan2(paths["genforce"], resolution=64, noise_mode="none", conv_clamp=256.0)
    assert g.noise_mode == "none" and g.synthesis.b64.conv1.conv_clamp == 256.0


def test_rosinality_without_latent_avg_estimates_it(tmp_path):
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), gen=torch.Generator().manual_seed(4))
    g_ema, _ = to_rosinality(nv)
    # rosinality train.py snapshots: g, d, g_ema, optimiser states, argparse args -- and no latent_avg
    torch.save({"g_ema": g_ema, "args": argparse.Namespace(size=64, latent=16)}, tmp_path / "snapshot.pt")
    with pytest.warns(UserWarning, match="latent_avg"):
        g = load_stylegan2(tmp_path / "snapshot.pt")
    z = torch.randn(4000, 16, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(g.w_avg, g.mapping(z)[:, 0].mean(0), atol=0.1 * g.w_avg.abs().max().item())


# --------------------------------------------------------------------------------------------------
# (c) the restricted unpickler
# --------------------------------------------------------------------------------------------------

class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        evil = _Exploit(marker)
    else:
        class evil:  # noqa: N801
            def __reduce__(self):
                return eval, (f"open({str(marker)!r}, 'w')",)
        evil = evil()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": evil}))
    with pytest.raises(UnsafePickleError, match=r"refused global (posix|os|nt)\.system|refused global builtins\.eval"):
        load_stylegan2(path)
    assert not marker.exists()


def test_pickled_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), fill=0.2)
    src = f"open({str(marker)!r}, 'w').write('the pickled source ran')\n"
    path = tmp_path / "g.pkl"
    path.write_bytes(nvidia_pickle_bytes(nv, tiny_arch(), module_src=src))
    g = load_stylegan2(path)
    assert g.num_ws == 10 and not marker.exists()


def test_stylegan3_pickle_is_rejected(tmp_path):
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), fill=0.2)
    sg3 = {"input": _Persistent("SynthesisInput", **_module_state()),
           "L0_36_512": _Persistent("SynthesisLayer", **_module_state())}
    path = tmp_path / "sg3.pkl"
    path.write_bytes(nvidia_pickle_bytes(nv, tiny_arch(), synthesis_children=sg3))
    with pytest.raises(StyleGAN2CheckpointError, match="StyleGAN3"):
        load_stylegan2(path)


# --------------------------------------------------------------------------------------------------
# (d) the three formats of the same weights give the same images
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("conv_clamp", [None, 0.5])
def test_three_formats_same_images(tmp_path, conv_clamp):
    arch = tiny_arch(conv_clamp=conv_clamp)
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), gen=torch.Generator().manual_seed(5))
    paths = write_all_formats(tmp_path, nv, arch)
    override = {} if conv_clamp is None else {"conv_clamp": conv_clamp}
    gens = {fmt: load_stylegan2(p, **({} if fmt == "nvidia" else override)) for fmt, p in paths.items()}
    ws = torch.randn(3, 10, 16, generator=torch.Generator().manual_seed(6))
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(7))
    imgs = {fmt: g.synthesis(ws) for fmt, g in gens.items()}
    assert imgs["nvidia"].shape == (3, 3, 64, 64) and imgs["nvidia"].abs().max() > 0.1
    for fmt in ("genforce", "rosinality"):
        assert torch.allclose(imgs[fmt], imgs["nvidia"], atol=1e-5, rtol=0)
        assert torch.allclose(gens[fmt].mapping(z, 0.7), gens["nvidia"].mapping(z, 0.7), atol=1e-6, rtol=0)
    assert read_stylegan2_checkpoint(paths["nvidia"])[1]["conv_clamp"] == conv_clamp


@torch.no_grad()
def test_bare_nvidia_state_dict_loads(tmp_path):
    """``torch.save(G_ema.state_dict())`` (NVIDIA naming, FIR buffers included) is read like the pickle."""
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), gen=torch.Generator().manual_seed(8))
    paths = write_all_formats(tmp_path, nv, tiny_arch())
    torch.save(nv, tmp_path / "sd.pt")
    a, b = load_stylegan2(tmp_path / "sd.pt", conv_clamp=None), load_stylegan2(paths["nvidia"])
    ws = torch.randn(2, 10, 16)
    assert torch.equal(a.synthesis(ws), b.synthesis(ws))


def _closed_form(shape, seed):
    """Deterministic, platform-independent weights: sin of a ramp (float64, then float32)."""
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.7071 + seed * 1.618).reshape(shape).float()


# Official NVIDIA stylegan2-ada-pytorch output for the closed-form weights below (16 px, w = z = 8,
# 2 mapping layers, channel_base 64, channel_max 4; ws = _closed_form((2, 6, 8), 99)), taken as
# G.synthesis(ws, noise_mode='const', force_fp32=True), then 4x4 average-pooled. GenForce and rosinality
# official code, on the same weights converted by the rules above, gave the same numbers (to 1e-5).
OFFICIAL_POOLED = [
    [
        [[-1.570767, -1.579524, 4.142421, 2.053490], [2.115672, 2.799645, -2.466739, -2.595236],
         [-1.187633, -3.025178, -0.317774, 1.749305], [1.310508, 2.707684, 0.891625, -2.251058]],
        [[-0.857294, -0.573122, -5.617366, -4.024138], [-3.851140, -6.008158, -1.635947, -0.308889],
         [-2.264229, 0.316908, -1.343008, -3.517664], [-2.982513, -4.525109, -3.983252, -1.163574]],
        [[1.839693, 1.676242, 5.552029, 4.241020], [4.218163, 8.080111, 5.027449, 2.189196],
         [4.502039, 1.870168, 2.321103, 3.950023], [3.002092, 4.908518, 5.693582, 3.102744]],
    ],
    [
        [[6.106963, 13.299395, 12.810246, 5.686343], [1.830846, -1.210955, -3.184890, -2.478645],
         [-3.421597, 1.714267, 10.819701, 8.840622], [10.657650, 9.869720, 3.299681, -0.395858]],
        [[-8.177160, -15.409612, -14.934103, -8.205825], [-4.998371, -1.511124, 1.016664, 1.313863],
         [1.900044, -1.429922, -11.424542, -11.976273], [-13.377936, -14.039956, -6.913040, -2.380683]],
        [[8.089542, 15.026856, 14.611246, 8.564703], [6.685837, 3.534161, 0.698449, -1.015021],
         [-1.187402, 0.454434, 10.365861, 12.952980], [13.434422, 15.850471, 8.860060, 3.563349]],
    ],
]


def fingerprint_weights():
    widths = widths_of(16, 64, 4)
    shapes = nvidia_shapes(16, 8, 8, 2, widths)
    nv = {}
    for i, (k, s) in enumerate(sorted(shapes.items())):
        if k.endswith("resample_filter"):
            nv[k] = FIR2D.clone()
        elif k.endswith("affine.bias"):
            nv[k] = 1.0 + 0.25 * _closed_form(s, i)
        elif k.endswith("noise_strength"):
            nv[k] = 0.3 * _closed_form(s, i)
        else:
            nv[k] = _closed_form(s, i)
    return nv, dict(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=4,
                    mapping_lr_mul=0.01, conv_clamp=None)


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["genforce", "nvidia", "rosinality"])
def test_matches_official_nvidia_output(tmp_path, fmt):
    nv, arch = fingerprint_weights()
    paths = write_all_formats(tmp_path, nv, arch)
    g = load_stylegan2(paths[fmt])
    img = g.synthesis(_closed_form((2, 6, 8), 99))
    pooled = F.avg_pool2d(img, 4)
    assert torch.allclose(pooled, torch.tensor(OFFICIAL_POOLED), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# (e) missing file, format errors, Hydra configs
# --------------------------------------------------------------------------------------------------

def test_missing_file_names_the_download_command(tmp_path):
    with pytest.raises(MissingCheckpointError, match="anon download stylegan2_ffhq1024") as err:
        load_stylegan2(tmp_path / "nope.pth", name="stylegan2_ffhq1024")
    assert isinstance(err.value, FileNotFoundError) and "nope.pth" in str(err.value)


def test_unknown_checkpoint_is_refused(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "x.pt")
    with pytest.raises(StyleGAN2CheckpointError, match="top-level keys"):
        load_stylegan2(tmp_path / "x.pt")
    (tmp_path / "y.pkl").write_bytes(pickle.dumps({"G": 1}))
    with pytest.raises(StyleGAN2CheckpointError, match="G_ema"):
        load_stylegan2(tmp_path / "y.pkl")


@pytest.mark.parametrize("name,fmt_file,res", [("stylegan2_ffhq1024", "genforce/stylegan2_ffhq1024.pth", 1024),
                                               ("stylegan2_ffhq512", "genforce/stylegan2_ffhq512.pth", 512),
                                               ("stylegan2_nvidia_pkl", "nvidia/stylegan2-ada-pytorch/ffhq.pkl", 1024),
                                               ("stylegan2_rosinality", "rosinality/stylegan2-ffhq-config-f.pt", 1024)])
def test_hydra_configs(tmp_path, name, fmt_file, res):
    from hydra.utils import get_method, instantiate

    cfg = OmegaConf.merge({"weights_dir": str(tmp_path)}, {"generator": OmegaConf.load(CONF_DIR / f"{name}.yaml")})
    assert get_method(cfg.generator._target_) is load_stylegan2
    assert cfg.generator.path == str(tmp_path / fmt_file) and cfg.generator.resolution == res
    with pytest.raises(Exception) as err:  # Hydra wraps the loader's error
        instantiate(cfg.generator)
    cause = caused_by(err.value, MissingCheckpointError)
    assert fmt_file in str(cause)
    assert (f"anon download {cfg.generator.name}" in str(cause)) == (cfg.generator.name is not None)
