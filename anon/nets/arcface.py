"""ArcFace IR-SE-50 identity encoder (the identity model of FALCO's ID loss and of pSp/e4e).

Preprocessing follows FALCO ``lib/id_loss.py`` (pSp's ID loss plus a resize):

1. resize the shorter side to ``resize`` (256; bilinear, antialiased), centre-crop ``resize``;
2. crop rows 35:223, cols 32:220 (the face region of an FFHQ-aligned 256x256 image);
3. adaptive average pooling to ``input_size`` x ``input_size`` (112);
4. IR-SE-50 -> 512-d embedding, L2-normalised.

No mean/std normalisation is applied: inputs are expected in [-1, 1] (the generator's range).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from anon.nets.checkpoint import load_checked, read_state_dict
from anon.nets.frozen import FrozenNetwork
from anon.nets.resize import resize_center_crop
from anon.nets.irse import Backbone

#: Name of the official weights for ``anon download``.
WEIGHTS_NAME = "arcface_ir_se50"
#: pSp's face crop (top, bottom, left, right) on a 256x256 image.
PSP_CROP_256 = (35, 223, 32, 220)


class ArcFaceIdentity(FrozenNetwork):
    """Identity encoder: B x 3 x H x W images in [-1, 1] (any H, W) -> B x ``embedding_dim`` unit vectors.

    With ``frozen`` (default) it is a fixed feature extractor: parameters need no gradient and
    the module stays in eval mode under ``.train()``, so BatchNorm uses its running statistics
    inside a fit loop. Gradients still flow to the input images.

    Args:
        checkpoint: path of ``model_ir_se50.pth`` (a plain state dict), or ``None`` for random weights.
        input_size: backbone input side (112 for the official model).
        num_layers / mode / stage_units / stage_widths / embedding_dim: backbone architecture
            (see :class:`anon.nets.irse.Backbone`); defaults are IR-SE-50.
        resize: side of the resize + centre crop before the face crop (256 officially).
        crop_box: ``[top, bottom, left, right]`` of the face crop on the ``resize`` image;
            ``None`` = pSp's (35, 223, 32, 220) scaled by ``resize / 256``.
        drop_ratio: dropout of the output layer (inactive in eval mode).
        frozen: no parameter gradients, always eval mode.
        download_name: the ``anon download`` name given in the missing-file error.
    """

    weights = WEIGHTS_NAME

    def __init__(
        self,
        checkpoint: str | None = None,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        stage_units: Sequence[int] | None = None,
        stage_widths: Sequence[int] | None = None,
        embedding_dim: int = 512,
        resize: int = 256,
        crop_box: Sequence[int] | None = None,
        drop_ratio: float = 0.6,
        frozen: bool = True,
        download_name: str | None = WEIGHTS_NAME,
    ):
        super().__init__()
        self.resize = int(resize)
        if crop_box is None:
            crop_box = [int(round(v * self.resize / 256)) for v in PSP_CROP_256]
        self.crop_box = tuple(int(v) for v in crop_box)
        top, bottom, left, right = self.crop_box
        if not (0 <= top < bottom <= self.resize and 0 <= left < right <= self.resize):
            raise ValueError(f"crop_box {self.crop_box} must lie inside a {self.resize}x{self.resize} image")
        state = None if checkpoint is None else read_state_dict(checkpoint, download_name)
        # with a checkpoint, build on the meta device: the loaded tensors become the parameters
        with torch.device("meta") if state is not None else contextlib.nullcontext():
            self.backbone = Backbone(input_size=input_size, num_layers=num_layers, mode=mode, drop_ratio=drop_ratio,
                                     stage_units=stage_units, stage_widths=stage_widths, embedding_dim=embedding_dim)
        if state is not None:
            load_checked(self.backbone, state, checkpoint, f"the IR-SE{num_layers} identity backbone", assign=True)
            self.backbone.float()
        self.input_size = self.backbone.input_size
        self.embedding_dim = self.backbone.embedding_dim
        self.freeze(frozen)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [-1, 1] -> B x 3 x input_size x input_size face crop (same range)."""
        x = resize_center_crop(images, self.resize)
        top, bottom, left, right = self.crop_box
        x = x[:, :, top:bottom, left:right]
        return F.adaptive_avg_pool2d(x, (self.input_size, self.input_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [-1, 1] -> B x embedding_dim, L2-normalised."""
        return self.backbone(self.preprocess(images))
