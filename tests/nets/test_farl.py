"""FaRL / CLIP ViT: official key layout, strict loading, preprocessing, gradients.

The expected checkpoint layout is written out here from OpenAI CLIP's ``model.py`` (``build_model``
reads a ViT checkpoint exactly this way), not generated from the module under test.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anon.errors import MissingCheckpointError
from anon.nets.farl import FarlAttributes, resize_center_crop
from anon.nets.vit import VisionTransformer
from anon.runtime.weights import REGISTRY

TINY = dict(input_resolution=32, patch_size=8, width=32, layers=2, heads=2, output_dim=16)
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def clip_vit_shapes(resolution: int, patch: int, width: int, layers: int, output_dim: int) -> dict[str, tuple]:
    """Keys and shapes of CLIP's image tower (prefix ``visual.``), from CLIP's ``VisionTransformer``."""
    shapes = {
        "visual.class_embedding": (width,),
        "visual.positional_embedding": ((resolution // patch) ** 2 + 1, width),
        "visual.proj": (width, output_dim),
        "visual.conv1.weight": (width, 3, patch, patch),
        "visual.ln_pre.weight": (width,), "visual.ln_pre.bias": (width,),
        "visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,),
    }
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        shapes.update({
            p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
            p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
            p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
            p + "mlp.c_fc.weight": (4 * width, width), p + "mlp.c_fc.bias": (4 * width,),
            p + "mlp.c_proj.weight": (width, 4 * width), p + "mlp.c_proj.bias": (width,),
            p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
        })
    return shapes


def clip_text_shapes(width: int = 512, layers: int = 12, context: int = 77, vocab: int = 49408,
                     embed_dim: int = 512) -> dict[str, tuple]:
    """Text-tower keys of a full CLIP ViT-B/16 state dict (must be ignored by the loader)."""
    shapes = {"positional_embedding": (context, width), "text_projection": (width, embed_dim), "logit_scale": (),
              "token_embedding.weight": (vocab, width), "ln_final.weight": (width,), "ln_final.bias": (width,)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        shapes.update({p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                       p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                       p + "ln_1.weight": (width,), p + "ln_1.bias": (width,), p + "ln_2.weight": (width,),
                       p + "ln_2.bias": (width,), p + "mlp.c_fc.weight": (4 * width, width),
                       p + "mlp.c_fc.bias": (4 * width,), p + "mlp.c_proj.weight": (width, 4 * width),
                       p + "mlp.c_proj.bias": (width,)})
    return shapes


def synth(shapes: dict[str, tuple], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Small-storage random tensors of the given shapes: a random last-axis row broadcast over the rest.

    ``torch.save`` stores only the row, so a full-size ViT-B/16 file stays a few hundred KB.
    """
    out = {}
    for k, shape in shapes.items():
        row = 0.02 * torch.randn(shape[-1] if shape else 1, generator=gen)
        out[k] = row.expand(shape) if shape else row[0].clone()
    for k in out:
        if k.endswith(("ln_pre.weight", "ln_post.weight", "ln_1.weight", "ln_2.weight", "ln_final.weight")):
            out[k] = out[k] + 1.0
    return out


def test_full_size_official_checkpoint_loads(tmp_path):
    gen = torch.Generator().manual_seed(0)
    visual = synth(clip_vit_shapes(224, 16, 768, 12, 512), gen)
    sd = {**visual, **synth(clip_text_shapes(), gen), "input_resolution": torch.tensor(224)}
    path = tmp_path / "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"
    torch.save({"state_dict": sd}, path)

    enc = FarlAttributes.from_checkpoint(path)
    assert set(enc.state_dict()) == set(visual)  # exactly CLIP's visual keys, nothing else persistent
    for k in ("visual.conv1.weight", "visual.transformer.resblocks.11.mlp.c_proj.bias", "visual.proj"):
        assert torch.equal(enc.state_dict()[k], visual[k])
    assert (enc.num_tokens, enc.token_dim, enc.embedding_dim) == (197, 768, 512)
    with torch.no_grad():
        x = torch.rand(1, 3, 240, 200) * 2 - 1
        tok = enc(x)
        emb = enc.visual.embed(enc.prepare(x, "clip"))
    assert tok.shape == (1, 197, 768) and torch.isfinite(tok).all()
    assert emb.shape == (1, 512)
    # embed = ln_post(CLS token) @ proj, computed here with F.layer_norm
    ref = F.layer_norm(tok[:, 0], (768,), visual["visual.ln_post.weight"],  # tok: preprocess="clip" too
                       visual["visual.ln_post.bias"], 1e-5) @ visual["visual.proj"]
    assert torch.allclose(emb, ref, atol=1e-5)


def tiny_ckpt(extra: dict | None = None, drop: str | None = None) -> dict:
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=gen) * 0.1 for k, s in clip_vit_shapes(32, 8, 32, 2, 16).items()}
    sd.update({k: torch.randn(s, generator=gen) if s else torch.tensor(4.6) for k, s in
               clip_text_shapes(width=16, layers=1, context=5, vocab=11, embed_dim=16).items()})
    if drop:
        del sd[drop]
    sd.update(extra or {})
    return {"state_dict": sd}


def test_tiny_load_is_strict_on_visual_and_ignores_text(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_ckpt(), path)
    enc = FarlAttributes(checkpoint=str(path), **TINY)
    assert torch.equal(enc.visual.proj, tiny_ckpt()["state_dict"]["visual.proj"])

    for bad, match in [(tiny_ckpt(drop="visual.ln_post.bias"), "missing"),
                       (tiny_ckpt(extra={"visual.extra.weight": torch.zeros(3)}), "unexpected"),
                       (tiny_ckpt(extra={"visual.proj": torch.zeros(32, 8)}), "shape"),
                       ({"state_dict": {"token_embedding.weight": torch.zeros(3, 2)}}, "visual")]:
        torch.save(bad, path)
        with pytest.raises(ValueError, match=match):
            FarlAttributes(checkpoint=path, **TINY)

    # FaRL's masked-image-modelling head (absent from CLIP's tower) is skipped
    torch.save(tiny_ckpt(extra={"visual.mask_token": torch.zeros(32), "visual.lm_head.weight": torch.zeros(5, 32)}),
               path)
    FarlAttributes(checkpoint=path, **TINY)


def test_missing_file_names_file_and_download_command(tmp_path):
    path = tmp_path / "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"
    with pytest.raises(MissingCheckpointError) as err:
        FarlAttributes.from_checkpoint(path)
    msg = str(err.value)
    assert "FaRL-Base-Patch16-LAIONFace20M-ep64.pth" in msg and "anon download farl_ep64" in msg


def test_tiny_forward_backward_reaches_input():
    torch.manual_seed(0)
    enc = FarlAttributes(**TINY)
    enc.train()
    assert not enc.training  # frozen encoders stay in eval mode
    assert not any(p.requires_grad for p in enc.parameters())
    x = (torch.rand(2, 3, 48, 40) * 2 - 1).requires_grad_(True)
    tok = enc(x)
    assert tok.shape == (2, 17, 32)
    tok.abs().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    emb = enc.embed(x.detach())
    assert emb.shape == (2, 16) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_clip_and_raw_preprocessing():
    torch.manual_seed(0)
    clip_enc = FarlAttributes(preprocess="clip", **TINY)
    raw_enc = FarlAttributes(preprocess="raw", **TINY)
    raw_enc.load_state_dict(clip_enc.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1  # already R x R: resize and crop are the identity
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected_clip = ((x + 1) / 2 - mean) / std
    assert torch.allclose(clip_enc.prepare(x), expected_clip, atol=1e-6)
    assert torch.equal(raw_enc.prepare(x), x)
    with torch.no_grad():
        assert torch.allclose(clip_enc(x), clip_enc.visual.tokens(expected_clip), atol=1e-6)
        assert torch.allclose(raw_enc(x), raw_enc.visual.tokens(x), atol=1e-6)
        assert not torch.allclose(raw_enc(x), clip_enc(x), atol=1e-3)
        # pairing embeddings always use CLIP normalisation
        assert torch.allclose(raw_enc.embed(x), clip_enc.embed(x), atol=1e-6)
        assert torch.allclose(clip_enc.embed(x), F.normalize(clip_enc.visual.embed(expected_clip), dim=1), atol=1e-6)
    with pytest.raises(ValueError):
        FarlAttributes(preprocess="imagenet", **TINY)


def test_resize_center_crop_matches_torchvision_rule():
    x = torch.rand(1, 3, 64, 96)  # landscape: height is the short side
    out = resize_center_crop(x, 32)
    resized = F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(out, resized[..., :, 8:40])
    tall = torch.rand(1, 3, 101, 50)  # portrait, odd long side: long = int(32 * 101 / 50) = 64
    resized = F.interpolate(tall, size=(64, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(resize_center_crop(tall, 32), resized[..., 16:48, :])


def test_attention_matches_torch_multihead_attention():
    """Our attention keeps nn.MultiheadAttention's parameters and must compute the same thing."""
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY)
    attn = vit.transformer.resblocks[0].attn
    mha = nn.MultiheadAttention(32, 2, batch_first=True)
    mha.load_state_dict(attn.state_dict())
    x = torch.randn(3, 17, 32)
    with torch.no_grad():
        assert torch.allclose(attn(x), mha(x, x, x, need_weights=False)[0], atol=1e-5)
    with pytest.raises(ValueError):
        vit.tokens(torch.zeros(1, 3, 48, 48))


def test_hydra_configs(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf" / "attribute"
    tiny = instantiate(OmegaConf.load(conf / "tiny_vit.yaml"))
    assert isinstance(tiny, FarlAttributes) and tiny(torch.zeros(1, 3, 40, 40)).shape == (1, 17, 32)
    full = OmegaConf.merge({"weights_dir": str(tmp_path)}, {"attr": OmegaConf.load(conf / "farl_vitb16.yaml")}).attr
    assert full._target_ == "anon.nets.farl.FarlAttributes" and full.preprocess == "clip"
    assert full.checkpoint == str(tmp_path / REGISTRY[full.download_name].filename)  # `anon download` layout
    assert full.checkpoint.endswith("/FaRL-Base-Patch16-LAIONFace20M-ep64.pth")
    with pytest.raises(MissingCheckpointError):
        FarlAttributes(**{k: v for k, v in full.items() if k != "_target_"})
