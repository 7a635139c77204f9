"""e4e (encoder4editing) GAN-inversion encoder on the IR-SE-50 backbone, and its checkpoint loader.

Architecture (parameter names as in ``e4e_ffhq_encode.pt`` without the ``encoder.`` prefix):

* ``input_layer`` + ``body``: the IR-SE-50 trunk of :mod:`anon.nets.irse` (no output layer);
  c1/c2/c3 are the outputs of stages 2/3/4 (1/4, 1/8, 1/16 of the input side);
* a feature pyramid: p2 = up(c3) + ``latlayer1``(c2), p1 = up(p2) + ``latlayer2``(c1)
  (1x1 convs; bilinear upsampling with ``align_corners=True``);
* ``styles.i``: one ``GradualStyleBlock`` per W+ layer: stride-2 3x3 convs + LeakyReLU(0.01)
  down to 1x1, then an equalised linear layer. Blocks 0..2 read c3 ("coarse"), 3..6 read p2
  ("middle"), 7.. read p1 ("fine");
* output: w_i = w_0 + delta_i, with w_0 = styles.0(c3) and delta_i = styles.i(features)
  for i = 1 .. progressive_stage (all layers for a trained model).

:class:`E4EInverter` adds the input resize and ``latent_avg``, as FALCO's ``invert.py`` does.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anon.errors import AnonError, ConfigError
from anon.nets.checkpoint import load_checked, read_checkpoint
from anon.nets.frozen import FrozenNetwork
from anon.nets.irse import make_body, make_input_layer, resolve_stages, stage_end_indices

#: Name of the official weights for ``anon download``.
WEIGHTS_NAME = "e4e_ffhq_encode"


class EqualizedLinear(nn.Module):
    """Linear layer with run-time weight scaling ``lr_mul / sqrt(in_dim)``: B x in_dim -> B x out_dim."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    """B x in_ch x S x S feature map -> B x out_ch style vector (log2(S) stride-2 convs, then a linear)."""

    def __init__(self, in_ch: int, out_ch: int, spatial: int):
        super().__init__()
        num_down = int(round(math.log2(spatial))) if spatial >= 2 else 0
        if num_down < 1 or 2**num_down != spatial:
            raise ValueError(f"style block input side must be a power of two >= 2, got {spatial}")
        layers: list[nn.Module] = []
        for i in range(num_down):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel_size=3, stride=2, padding=1),
                       nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualizedLinear(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=True) upsampling of ``top`` to ``lateral``'s H x W, plus ``lateral``."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(nn.Module):
    """e4e encoder: B x 3 x input_size x input_size in [-1, 1] -> B x n_styles x w_dim W+ offsets.

    The output does not include ``latent_avg`` (see :class:`E4EInverter`). ``progressive_stage``
    is the number of deltas added to w_0 (training curriculum of e4e); the default ``None``
    uses all of them, as for inference with a trained model.
    """

    def __init__(
        self,
        n_styles: int = 18,
        w_dim: int = 512,
        input_size: int = 256,
        num_layers: int = 50,
        mode: str = "ir_se",
        stage_units: Sequence[int] | None = None,
        stage_widths: Sequence[int] | None = None,
        coarse_ind: int = 3,
        middle_ind: int = 7,
        progressive_stage: int | None = None,
    ):
        super().__init__()
        units, widths = resolve_stages(num_layers, stage_units, stage_widths)
        if len(units) != 4:
            raise ValueError(f"e4e needs a 4-stage backbone, got {len(units)} stages")
        if input_size % 16:
            raise ValueError(f"input_size must be divisible by 16, got {input_size}")
        self.n_styles, self.w_dim, self.input_size = int(n_styles), int(w_dim), int(input_size)
        self.coarse_ind, self.middle_ind = int(coarse_ind), int(middle_ind)
        self.progressive_stage = self.n_styles if progressive_stage is None else int(progressive_stage)
        # body indices whose outputs feed the pyramid: ends of stages 2, 3, 4
        self._c1, self._c2, self._c3 = stage_end_indices(units)[1:]

        self.input_layer = make_input_layer(widths[0])
        self.body = make_body(units, widths, mode)
        top = widths[3]
        self.styles = nn.ModuleList()
        for i in range(self.n_styles):
            side = input_size // (16 if i < self.coarse_ind else 8 if i < self.middle_ind else 4)
            self.styles.append(GradualStyleBlock(top, self.w_dim, side))
        self.latlayer1 = nn.Conv2d(widths[2], top, kernel_size=1)
        self.latlayer2 = nn.Conv2d(widths[1], top, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x input_size x input_size -> B x n_styles x w_dim."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected B x 3 x {self.input_size} x {self.input_size}, got {tuple(x.shape)}")
        x = self.input_layer(x)
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self._c1:
                c1 = x
            elif i == self._c2:
                c2 = x
        c3 = x

        w0 = self.styles[0](c3)
        ws = [w0]
        features = p2 = c3
        for i in range(1, self.n_styles):
            if i > self.progressive_stage:
                ws.append(w0)
                continue
            if i == self.coarse_ind:
                features = p2 = _upsample_add(c3, self.latlayer1(c2))
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))
            ws.append(w0 + self.styles[i](features))
        return torch.stack(ws, dim=1)


def _read_checkpoint(path: str | Path, name: str | None = WEIGHTS_NAME) -> dict:
    """``torch.load`` an e4e training checkpoint with ``weights_only=True``; one-line errors."""
    # The official file stores opts as vars(argparse.Namespace): primitives only. A checkpoint
    # that pickled the Namespace itself (or other objects) is refused rather than unpickled.
    ckpt = read_checkpoint(path, name, refused_hint=(
        " (its 'opts' or another entry is a pickled Python object, not a dict of primitives; "
        "re-save it with opts=vars(opts))"))
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise AnonError(f"{path}: not an e4e checkpoint (expected a dict with 'state_dict', 'opts', 'latent_avg')")
    opts = ckpt.get("opts", {})
    if not isinstance(opts, dict):
        raise AnonError(f"{path}: 'opts' must be a dict of primitives, found {type(opts).__name__}")
    return ckpt


def _n_styles_from_opts(opts: dict, default: int) -> int:
    """W+ layers of the generator e4e was trained for: 2 * log2(stylegan_size) - 2 (18 for 1024)."""
    size = opts.get("stylegan_size")
    return default if size is None else 2 * int(math.log2(int(size))) - 2


class E4EInverter(FrozenNetwork):
    """GAN inversion: B x 3 x H x W images in [-1, 1] (any size) -> B x n_styles x w_dim W+ codes.

    Images are resized to ``input_size`` x ``input_size`` (bilinear, antialiased, aspect not
    kept: FALCO's ``Resize((256, 256))``), encoded, and ``latent_avg`` is added when
    ``start_from_latent_avg``. With ``frozen`` (default) parameters need no gradient and the
    module stays in eval mode under ``.train()``; gradients still reach the input images.

    Args:
        checkpoint: path of ``e4e_ffhq_encode.pt`` or ``None`` for random weights. Its ``opts``
            must agree with ``n_styles``; its ``start_from_latent_avg`` is used unless given here.
        n_styles / w_dim: W+ layers and width of the target generator (18 / 512 for FFHQ-1024).
        input_size: encoder input side (256).
        num_layers / mode / stage_units / stage_widths: IR backbone (default IR-SE-50).
        start_from_latent_avg: add ``latent_avg`` to the output; ``None`` = from the checkpoint
            (``True`` without one).
        frozen: no parameter gradients, always eval mode.
        download_name: the ``anon download`` name given in the missing-file error.
    """

    weights = WEIGHTS_NAME

    def __init__(
        self,
        checkpoint: str | None = None,
        n_styles: int = 18,
        w_dim: int = 512,
        input_size: int = 256,
        num_layers: int = 50,
        mode: str = "ir_se",
        stage_units: Sequence[int] | None = None,
        stage_widths: Sequence[int] | None = None,
        start_from_latent_avg: bool | None = None,
        frozen: bool = True,
        download_name: str | None = WEIGHTS_NAME,
    ):
        super().__init__()
        ckpt = None
        if checkpoint is not None:
            ckpt = _read_checkpoint(checkpoint, download_name)
            expected = _n_styles_from_opts(ckpt.get("opts", {}), n_styles)
            if expected != n_styles:
                raise ConfigError(f"{checkpoint} encodes {expected} W+ layers but n_styles={n_styles}")
        # with a checkpoint, build on the meta device: the loaded tensors become the parameters
        with torch.device("meta") if ckpt is not None else contextlib.nullcontext():
            self.encoder = Encoder4Editing(n_styles, w_dim, input_size, num_layers, mode, stage_units, stage_widths)
            self.register_buffer("latent_avg", torch.zeros(self.encoder.n_styles, self.encoder.w_dim))
        self.start_from_latent_avg = True if start_from_latent_avg is None else bool(start_from_latent_avg)
        if ckpt is not None:
            self._load(ckpt, checkpoint, start_from_latent_avg)
        self.freeze(frozen)

    @property
    def n_styles(self) -> int:
        """Number of W+ layers of the output codes."""
        return self.encoder.n_styles

    @property
    def w_dim(self) -> int:
        """Width of each W+ code."""
        return self.encoder.w_dim

    @property
    def input_size(self) -> int:
        """Side of the square encoder input."""
        return self.encoder.input_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "E4EInverter":
        """Build from ``e4e_ffhq_encode.pt`` (IR-SE-50, n_styles from its opts) and load it strictly."""
        ckpt = _read_checkpoint(path, kwargs.get("download_name", WEIGHTS_NAME))
        kwargs.setdefault("n_styles", _n_styles_from_opts(ckpt.get("opts", {}), 18))
        sfla = kwargs.pop("start_from_latent_avg", None)
        with torch.device("meta"):
            model = cls(checkpoint=None, **kwargs)
        model._load(ckpt, path, sfla)
        return model

    def _load(self, ckpt: dict, path: str | Path, start_from_latent_avg: bool | None) -> None:
        """Load ``encoder.*`` strictly (``decoder.*`` is ignored) and ``latent_avg`` into this model."""
        opts = ckpt.get("opts", {})
        if opts.get("encoder_type", "Encoder4Editing") != "Encoder4Editing":
            raise AnonError(f"{path}: encoder_type is {opts['encoder_type']!r}, only 'Encoder4Editing' is supported")
        prefix = "encoder."
        enc = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        if not enc:
            raise AnonError(f"{path}: no 'encoder.*' weights in its state_dict")
        load_checked(self.encoder, enc, path, "the e4e encoder", assign=True)
        self.encoder.float()
        if start_from_latent_avg is None:
            start_from_latent_avg = bool(opts.get("start_from_latent_avg", "latent_avg" in ckpt))
        self.start_from_latent_avg = bool(start_from_latent_avg)
        avg = ckpt.get("latent_avg")
        if avg is None:
            if self.start_from_latent_avg:
                raise AnonError(f"{path}: start_from_latent_avg is set but the checkpoint has no 'latent_avg'")
            avg = torch.zeros(self.n_styles, self.w_dim)
        avg = avg.float().reshape(-1, avg.shape[-1])
        if avg.shape[-1] != self.w_dim or avg.shape[0] not in (1, self.n_styles):
            raise AnonError(f"{path}: latent_avg has shape {tuple(avg.shape)}, expected {self.n_styles} x {self.w_dim}")
        self.latent_avg = avg.expand(self.n_styles, self.w_dim).clone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [-1, 1] -> B x n_styles x w_dim W+ codes."""
        size = self.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        codes = self.encoder(images)
        if self.start_from_latent_avg:
            codes = codes + self.latent_avg
        return codes
