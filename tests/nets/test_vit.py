"""CLIP ViT (anon/nets/vit.py) on its defaults, its random initialisation and reduced precision.

The golden test checks the forward on an official-layout checkpoint; these hold what it does not
reach: the default shape is ViT-B/16 with CLIP's layout (from the golden file, written by the
official code), the random initialisation has CLIP's scale, and half-precision inputs stay in
their dtype through the stem and the layer norms (as CLIP's fp16 path does).
"""
from __future__ import annotations

import json

import pytest
import torch

from anon.nets.vit import LayerNorm, SelfAttention, VisionTransformer
from tests.golden_data import GOLDEN_DIR
from tests.nets.test_farl import TINY


def test_defaults_are_clip_vit_b16_with_the_official_layout():
    layout = json.loads((GOLDEN_DIR / "farl_vit_b16.json").read_text())["layout"]
    with torch.device("meta"):
        vit = VisionTransformer()
    shapes = {"visual." + k: list(v.shape) for k, v in vit.state_dict().items()}
    assert shapes == dict(layout)
    assert (vit.input_resolution, vit.patch_size, vit.width, vit.output_dim, vit.num_tokens) == (224, 16, 768, 512, 197)
    assert (vit.transformer.width, vit.transformer.layers) == (768, 12)
    assert vit.transformer.resblocks[0].attn.heads == 12
    assert vit.conv1.stride == (16, 16) and vit.conv1.bias is None


def test_random_initialisation_has_clip_scale():
    """CLIP draws the class/positional embeddings and the projection as width**-0.5 * normal."""
    torch.manual_seed(0)
    vit = VisionTransformer(input_resolution=64, patch_size=8, width=64, layers=1, heads=2, output_dim=128)
    for name in ("class_embedding", "positional_embedding", "proj"):
        std = getattr(vit, name).std().item()
        assert 0.8 * 64 ** -0.5 < std < 1.2 * 64 ** -0.5, (name, std)
    assert vit.positional_embedding.shape == (65, 64) and vit.proj.shape == (64, 128)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_of_half_inputs_is_computed_in_float32(dtype):
    torch.manual_seed(0)
    norm = LayerNorm(8)
    x = (torch.randn(2, 8) * 3 + 5).to(dtype)
    out = norm(x)
    assert out.dtype == dtype
    expected = torch.nn.functional.layer_norm(x.float(), (8,), norm.weight, norm.bias, 1e-5).to(dtype)
    assert torch.equal(out, expected)


def test_bf16_network_takes_float32_images_and_keeps_bf16_under_autocast():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    seen = []
    vit.ln_pre.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        vit.tokens(x)
    assert seen == [torch.bfloat16]  # class and positional embeddings follow the autocast stem
    # a bf16 stem (conv1 and the embeddings) takes float32 images: they are cast to its dtype
    half = VisionTransformer(**TINY).eval()
    for name in ("class_embedding", "positional_embedding"):
        getattr(half, name).data = getattr(half, name).data.to(torch.bfloat16)
    half.conv1.to(torch.bfloat16)

    def stop(_module, args):
        seen.append(args[0].dtype)
        raise StopIteration  # only the stem is under test

    seen.clear()
    half.ln_pre.register_forward_pre_hook(stop)
    with torch.no_grad(), pytest.raises(StopIteration):
        half.tokens(x)
    assert seen == [torch.bfloat16]


def test_forward_is_the_embedding_and_bad_shapes_say_what_is_expected():
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(vit(x), vit.embed(x))
    with pytest.raises(ValueError, match=r"expected B x 3 x 32 x 32 input, got \(1, 3, 32, 24\)"):
        vit.tokens(torch.zeros(1, 3, 32, 24))
    with pytest.raises(ValueError, match="width 30 is not divisible by heads 4"):
        SelfAttention(30, 4)
    with pytest.raises(ValueError, match="input_resolution 30 is not a multiple of patch_size 8"):
        VisionTransformer(input_resolution=30, patch_size=8, width=32, layers=1, heads=2, output_dim=16)
