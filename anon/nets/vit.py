"""CLIP's visual transformer (ViT), parameter-for-parameter compatible with OpenAI CLIP checkpoints.

Parameter names and shapes are those of CLIP's image tower (found under ``visual.`` in a full CLIP
state dict), so a CLIP or FaRL checkpoint loads into :class:`VisionTransformer` by name:

* ``conv1.weight``: ``width x 3 x patch x patch`` (patch embedding, no bias);
* ``class_embedding``: ``width``; ``positional_embedding``: ``(grid**2 + 1) x width`` with
  ``grid = input_resolution // patch_size``;
* ``ln_pre``, ``ln_post``: LayerNorm(width), eps 1e-5;
* ``transformer.resblocks.{i}.attn.in_proj_weight`` ``3*width x width``, ``.in_proj_bias`` ``3*width``,
  ``.attn.out_proj.{weight,bias}``, ``.ln_1``, ``.mlp.c_fc`` (width -> 4*width), ``.mlp.c_proj``
  (4*width -> width), ``.ln_2``;
* ``proj``: ``width x output_dim`` (applied as ``x @ proj``).

Blocks are pre-norm: ``x += attn(ln_1(x)); x += mlp(ln_2(x))`` with QuickGELU in the MLP.
Inputs are images already resized and normalised for the network (``B x 3 x R x R``, R =
``input_resolution``); see :mod:`anon.nets.farl` for the image-level wrapper.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 for half-precision inputs (as CLIP does for fp16 weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout.

    ``in_proj_weight`` stacks the query, key and value projections (``3*width x width``), which is
    how CLIP checkpoints store them.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B x T x width`` -> ``B x T x width``."""
        b, t, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x B x H x T x c/H
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: attention then a 4x MLP, each with a residual connection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``layers`` residual attention blocks (``resblocks.{i}``), batch-first."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """CLIP image encoder. Default: ViT-B/16 (224 input, width 768, 12 layers, 12 heads, 512-d output).

    Args:
        input_resolution: side R of the square input the positional embedding is sized for.
        patch_size: side of the square patches (conv1 kernel and stride).
        width: token width C.
        layers: number of transformer blocks.
        heads: attention heads per block.
        output_dim: size of the projected embedding returned by :meth:`embed`.
    """

    def __init__(self, input_resolution: int = 224, patch_size: int = 16, width: int = 768, layers: int = 12,
                 heads: int = 12, output_dim: int = 512):
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"input_resolution {input_resolution} is not a multiple of patch_size {patch_size}")
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.width = width
        self.output_dim = output_dim
        self.num_tokens = (input_resolution // patch_size) ** 2 + 1

        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.num_tokens, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of the last transformer block, before ``ln_post``, for every token.

        Args:
            x: ``B x 3 x R x R`` network-ready images (R = ``input_resolution``).
        Returns:
            ``B x T x C`` with T = ``num_tokens`` (CLS first, then the patches row by row) and
            C = ``width``; for ViT-B/16, ``B x 197 x 768``.
        """
        if x.shape[-2:] != (self.input_resolution, self.input_resolution):
            raise ValueError(f"expected B x 3 x {self.input_resolution} x {self.input_resolution} input, "
                             f"got {tuple(x.shape)}")
        x = self.conv1(x.to(self.conv1.weight.dtype))  # B x C x g x g
        x = x.flatten(2).transpose(1, 2)  # B x g*g x C
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's ``encode_image``: ``ln_post`` of the CLS token times ``proj``.

        Args:
            x: ``B x 3 x R x R`` network-ready images.
        Returns:
            ``B x output_dim`` (not L2-normalised).
        """
        return self.ln_post(self.tokens(x)[:, 0]) @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed` (CLIP's ``VisionTransformer.forward``)."""
        return self.embed(x)
