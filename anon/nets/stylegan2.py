"""StyleGAN2 generator (config-f, "skip" architecture) in pure PyTorch, no compiled ops.

Parameter names follow NVIDIA's PyTorch release (``mapping.fc{i}``, ``synthesis.b{res}.conv{0,1}``,
``synthesis.b{res}.torgb``), so its checkpoints map onto this module by name; the other official
formats (GenForce, rosinality) are translated by :mod:`anon.nets.stylegan2_loaders`.

Shapes (N = batch, L = ``num_ws`` = 2*log2(resolution) - 2, D = ``w_dim``):

* ``mapping(z: N x z_dim) -> ws: N x L x D`` (all L rows identical; optional truncation);
* ``synthesis(ws: N x L x D) -> images: N x 3 x R x R``, roughly in ``[-1, 1]`` (no tanh, no clamp,
  as in the official networks).

W+ row ``i`` drives conv layer ``i`` (the 4x4 conv, then ``conv0``/``conv1`` of each block) and
toRGB of block ``k`` (4x4 is k = 0) reads row ``2k + 1``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anon.nets.frozen import FrozenNetwork

SQRT2 = math.sqrt(2.0)


def _fir_kernel(taps=(1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """Separable FIR low-pass as a normalised 2-D kernel (sums to 1)."""
    f = torch.tensor(taps, dtype=torch.float32)
    k = f[:, None] * f[None, :]
    return k / k.sum()


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int], gain: float = 1.0) -> torch.Tensor:
    """Depthwise 2-D FIR filter with explicit (before, after) padding on both axes."""
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    w = (kernel * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, w, groups=c)


def upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-insertion 2x upsampling followed by the FIR filter (gain 4 keeps the DC level)."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1]).reshape(n, c, 2 * h, 2 * w)
    taps = kernel.shape[0]
    return fir_filter(x, kernel, ((taps - 2 + 1) // 2 + 1, (taps - 2) // 2), gain=4.0)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored at unit scale, rescaled at run time."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class MappingNetwork(nn.Module):
    """z -> w: pixel-norm, then ``num_layers`` leaky-ReLU EqualLinear layers (lr multiplier 0.01).

    ``w_avg`` is the running mean of w (tracked only in training mode) used for truncation.
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        for i in range(num_layers):
            setattr(self, f"fc{i}", EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul, activation=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.training:
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, kernel: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
    """Per-sample modulated convolution as one grouped conv (each sample is its own group).

    x: N x I x H x W, weight: O x I x k x k, styles: N x I. With ``up`` the output is 2H x 2W: a
    stride-2 transposed convolution with the stored kernel as is (so, unlike the plain branch, the
    kernel acts spatially flipped), followed by the FIR low-pass ``kernel`` with gain 4 -- NVIDIA's
    ``conv2d_resample(up=2)`` for NVIDIA-stored kernels (GenForce stores this kernel flipped; see
    :mod:`anon.nets.stylegan2_loaders`).
    """
    if not fused:
        return _modulated_conv2d_unfused(x, weight, styles, demodulate, up, kernel)
    n, i, h, w_ = x.shape
    o, _, kh, kw = weight.shape
    wt = weight[None] * styles[:, None, :, None, None]  # N x O x I x k x k
    if demodulate:
        wt = wt * torch.rsqrt(wt.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
    x = x.reshape(1, n * i, h, w_)
    if up:
        wt = wt.transpose(1, 2).reshape(n * i, o, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=2, groups=n)
        taps = kernel.shape[0]
        p = taps - 2 - (kh - 1)
        x = fir_filter(x, kernel, ((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)
    else:
        x = F.conv2d(x, wt.reshape(n * o, i, kh, kw), padding=kh // 2, groups=n)
    return x.reshape(n, o, *x.shape[2:])


def _modulated_conv2d_unfused(x, weight, styles, demodulate, up, kernel):
    """The same operation as one batched convolution with the shared kernel: modulate the input
    channels, convolve, then demodulate the output channels (per-channel scalings commute with the
    convolution and the FIR filter). Faster than the grouped form for batches on most back-ends."""
    kh = weight.shape[-1]
    x = x * styles[:, :, None, None]
    if up:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        taps = kernel.shape[0]
        p = taps - 2 - (kh - 1)
        x = fir_filter(x, kernel, ((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)
    else:
        x = F.conv2d(x, weight, padding=kh // 2)
    if demodulate:
        dcoefs = torch.rsqrt((weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8)
        x = x * dcoefs[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + fixed or random noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", _fir_kernel(), persistent=False)
        self.fused_modconv = True

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, kernel=self.resample_filter,
                             fused=self.fused_modconv)
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be const, random or none, not {noise_mode!r}")
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation, plus bias."""

    def __init__(self, in_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.fused_modconv = True

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False,
                             fused=self.fused_modconv)
        x = x + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution: (const | 2x-up conv0) -> conv1 -> toRGB, added to the upsampled skip image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
            self.num_conv = 2
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", _fir_kernel(), persistent=False)

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str = "const"):
        """ws: N x (num_conv + 1) x D — the rows this block reads (its last row is shared with the next block)."""
        if self.num_conv == 1:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2x(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ (N x num_ws x w_dim) -> image (N x 3 x R x R)."""

    def __init__(self, w_dim: int, resolution: int, channel_base: int = 32768, channel_max: int = 512,
                 conv_clamp: float | None = None):
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, not {resolution}")
        self.w_dim, self.resolution = w_dim, resolution
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        for r in self.block_resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, conv_clamp=conv_clamp)
            setattr(self, f"b{r}", block)
        self.num_ws = 2 * log2 - 2

    def blocks(self):
        return [getattr(self, f"b{r}") for r in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", resolution: int | None = None) -> torch.Tensor:
        """``resolution`` stops early and returns the skip output at that size (the RGB image the
        lower blocks have built so far); the rows of the skipped blocks are not read."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape N x {self.num_ws} x {self.w_dim}, got {tuple(ws.shape)}")
        if resolution is not None and resolution not in self.block_resolutions:
            raise ValueError(f"resolution must be one of {self.block_resolutions}, not {resolution}")
        x = img = None
        row = 0
        for block in self.blocks():
            x, img = block(x, img, ws[:, row: row + block.num_conv + 1], noise_mode)
            row += block.num_conv
            if block.resolution == resolution:
                break
        return img


class StyleGAN2Generator(FrozenNetwork):
    """Mapping + synthesis (``has_wplus``: FALCO's layer ranges apply). Construct from sizes (Hydra) or from a checkpoint (:func:`from_checkpoint`).

    Defaults are config-f at 1024 px (18 W+ rows, 512-d w). A tiny test config is e.g.
    ``resolution=64, channel_base=256, channel_max=32, w_dim=64, z_dim=64``.
    """

    has_wplus = True
    weights = "stylegan2_ffhq1024"  # FALCO's; the loader opens the others too (conf/generator/)

    def __init__(self, resolution: int = 1024, z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                 channel_base: int = 32768, channel_max: int = 512, mapping_lr_mul: float = 0.01,
                 conv_clamp: float | None = None, noise_mode: str = "const", fused_modconv: bool = False):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, resolution
        self.noise_mode = noise_mode
        self.synthesis = SynthesisNetwork(w_dim, resolution, channel_base, channel_max, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mul)
        self.init_kwargs = dict(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                                channel_base=channel_base, channel_max=channel_max, mapping_lr_mul=mapping_lr_mul,
                                conv_clamp=conv_clamp)
        self.set_fused_modconv(fused_modconv)
        self.freeze()  # nothing trains it: pivotal tuning adds per-image offsets (anon/nets/tuned.py)

    def set_fused_modconv(self, fused: bool) -> None:
        """Grouped-conv (True, one kernel per sample) or batched-conv (False) modulated convolutions:
        the same function, different speed (batched is faster for B > 1 on most back-ends)."""
        self.fused_modconv = bool(fused)
        for layer in self.modules():
            if isinstance(layer, (SynthesisLayer, ToRGBLayer)):
                layer.fused_modconv = self.fused_modconv

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def forward(self, ws: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """W+ codes (N x num_ws x w_dim) to images (N x 3 x R x R, about [-1, 1]); ``resolution``: the
        skip output of a lower block instead (cheaper, for losses that look at 256 px or less)."""
        return self.synthesis(ws, noise_mode=self.noise_mode, resolution=resolution)

    @classmethod
    def from_checkpoint(cls, path, **overrides) -> "StyleGAN2Generator":
        """Open any supported official checkpoint (GenForce .pth, NVIDIA .pkl, rosinality .pt)."""
        from anon.nets.stylegan2_loaders import load_stylegan2

        return load_stylegan2(path, **overrides)
