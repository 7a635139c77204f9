"""FaceNet Inception-ResNet-v1 (facenet-pytorch layout) and an identity-embedding wrapper.

The network's parameter names and shapes are those of facenet-pytorch's ``InceptionResnetV1``, so
its released files load by name: ``20180402-114759-vggface2.pt`` (``logits`` over 8631 VGGFace2
identities) and ``20180408-102900-casia-webface.pt`` (10575 CASIA-WebFace identities). Both are
plain state dicts converted from David Sandberg's TensorFlow FaceNet models.

Layout (input ``B x 3 x 160 x 160``; every ``BasicConv2d`` is conv without bias + BatchNorm(eps 1e-3)
+ ReLU; residual blocks add ``scale * conv2d(concat(branches))`` to their input):

======================  ==========================================  =================
name                    what                                        output
======================  ==========================================  =================
conv2d_1a .. conv2d_4b  stem: 3x3/2, 3x3, 3x3 pad 1, maxpool 3/2,   256 x 17 x 17
                        1x1, 3x3, 3x3/2
repeat_1.{0..4}         Block35, scale 0.17                         256 x 17 x 17
mixed_6a                reduction                                   896 x 8 x 8
repeat_2.{0..9}         Block17, scale 0.10                         896 x 8 x 8
mixed_7a                reduction                                   1792 x 3 x 3
repeat_3.{0..4}         Block8, scale 0.20                          1792 x 3 x 3
block8                  Block8, scale 1.0, no final ReLU            1792 x 3 x 3
last_linear, last_bn    global average pool, dropout, 1792 -> 512   512
logits                  512 -> num_classes (classification only)    num_classes
======================  ==========================================  =================
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anon.nets.checkpoint import key_mismatch, read_checkpoint
from anon.nets.frozen import FrozenNetwork

BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, kept by the PyTorch conversion
NUM_CLASSES = {"vggface2": 8631, "casia-webface": 10575}


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU; parameters ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel_size, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _branch(*convs: tuple) -> nn.Module:
    """One branch: a single ``BasicConv2d`` for one spec, else an ``nn.Sequential`` of them.

    Each spec is ``(cin, cout, kernel, stride, padding)``.
    """
    layers = [BasicConv2d(*spec) for spec in convs]
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class _Residual(nn.Module):
    """``relu?(x + scale * conv2d(concat(branch0(x), branch1(x), ...)))``."""

    def __init__(self, channels: int, branches: list[tuple], scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        self.relu = relu
        for i, convs in enumerate(branches):
            self.add_module(f"branch{i}", _branch(*convs))
        self.num_branches = len(branches)
        mixed = sum(convs[-1][1] for convs in branches)
        self.conv2d = nn.Conv2d(mixed, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], dim=1)
        out = x + self.scale * self.conv2d(mixed)
        return F.relu(out) if self.relu else out


class Block35(_Residual):
    """Inception-ResNet-A on 256 channels (35x35 grid in the original 299 network)."""

    def __init__(self, scale: float = 1.0):
        super().__init__(256, [
            [(256, 32, 1, 1, 0)],
            [(256, 32, 1, 1, 0), (32, 32, 3, 1, 1)],
            [(256, 32, 1, 1, 0), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)],
        ], scale)


class Block17(_Residual):
    """Inception-ResNet-B on 896 channels, factorised 1x7 / 7x1 convolutions."""

    def __init__(self, scale: float = 1.0):
        super().__init__(896, [
            [(896, 128, 1, 1, 0)],
            [(896, 128, 1, 1, 0), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0))],
        ], scale)


class Block8(_Residual):
    """Inception-ResNet-C on 1792 channels, factorised 1x3 / 3x1 convolutions."""

    def __init__(self, scale: float = 1.0, relu: bool = True):
        super().__init__(1792, [
            [(1792, 192, 1, 1, 0)],
            [(1792, 192, 1, 1, 0), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0))],
        ], scale, relu)


class _Reduction(nn.Module):
    """Concatenate strided conv branches with a 3x3/2 max-pool of the input (last branch)."""

    def __init__(self, branches: list[list[tuple]]):
        super().__init__()
        for i, convs in enumerate(branches):
            self.add_module(f"branch{i}", _branch(*convs))
        self.num_branches = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [getattr(self, f"branch{i}")(x) for i in range(self.num_branches)]
        return torch.cat(outs + [F.max_pool2d(x, 3, stride=2)], dim=1)


class Mixed6a(_Reduction):
    """256 x 17 x 17 -> 896 x 8 x 8 (384 + 256 conv channels + 256 pooled)."""

    def __init__(self):
        super().__init__([
            [(256, 384, 3, 2, 0)],
            [(256, 192, 1, 1, 0), (192, 192, 3, 1, 1), (192, 256, 3, 2, 0)],
        ])


class Mixed7a(_Reduction):
    """896 x 8 x 8 -> 1792 x 3 x 3 (384 + 256 + 256 conv channels + 896 pooled)."""

    def __init__(self):
        super().__init__([
            [(896, 256, 1, 1, 0), (256, 384, 3, 2, 0)],
            [(896, 256, 1, 1, 0), (256, 256, 3, 2, 0)],
            [(896, 256, 1, 1, 0), (256, 256, 3, 1, 1), (256, 256, 3, 2, 0)],
        ])


class InceptionResnetV1(nn.Module):
    """FaceNet Inception-ResNet-v1 with facenet-pytorch's parameter names.

    Args:
        num_classes: size of the ``logits`` layer stored in the checkpoint (8631 for VGGFace2, 10575
            for CASIA-WebFace); ``None`` builds no ``logits`` layer.
        dropout_prob: dropout before ``last_linear`` (active in train mode only).
    """

    def __init__(self, num_classes: int | None = None, dropout_prob: float = 0.6):
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
        self.block8 = Block8(relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=BN_EPS)
        self.num_classes = num_classes
        if num_classes:
            self.logits = nn.Linear(512, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` standardised images (H = W = 160 for the released weights) ->
        ``B x 512`` un-normalised embeddings (after ``last_bn``)."""
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                     "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a"):
            x = getattr(self, name)(x)
        return self.last_bn(self.last_linear(self.dropout(x.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` standardised images -> ``B x 512`` L2-normalised embeddings."""
        return F.normalize(self.features(x), p=2, dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` standardised images -> ``B x num_classes`` logits."""
        if not self.num_classes:
            raise RuntimeError("this InceptionResnetV1 was built without a logits layer")
        return self.logits(self.features(x))


def facenet_standardize(x: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's ``fixed_image_standardization`` for images given in ``[-1, 1]``.

    Pixels ``p = (x + 1) * 127.5`` in ``[0, 255]`` become ``(p - 127.5) / 128``, i.e. ``x * 127.5 / 128``.
    """
    pixels = (x + 1.0) * 127.5
    return (pixels - 127.5) / 128.0


#: Name of the official weights (``anon download facenet_vggface2``).
WEIGHTS_NAME = "facenet_vggface2"


class FaceNetIdentity(FrozenNetwork):
    """Identity encoder: images in ``[-1, 1]`` -> ``B x 512`` L2-normalised FaceNet embeddings.

    Pipeline: resize to ``input_size`` x ``input_size`` (bilinear, antialiased, aspect ratio not kept;
    feed face crops, e.g. from MTCNN), :func:`facenet_standardize`, :class:`InceptionResnetV1`.

    Args:
        checkpoint: facenet-pytorch state-dict file (``20180402-114759-vggface2.pt`` or
            ``20180408-102900-casia-webface.pt``); ``None`` keeps the random initialisation.
        num_classes: ``logits`` size expected in the file (8631 VGGFace2, 10575 CASIA-WebFace);
            ``None`` takes it from the file (or builds no logits layer when there is no file).
        input_size: side the images are resized to (the released models were trained at 160).
        frozen: disable parameter gradients and keep eval mode (BatchNorm statistics, no dropout)
            even under ``.train()``; gradients still reach the input.
        download_name: the ``anon download`` name given in the missing-file error.
    """

    embedding_dim = 512
    weights = WEIGHTS_NAME

    def __init__(self, checkpoint: str | Path | None = None, num_classes: int | None = None, input_size: int = 160,
                 frozen: bool = True, download_name: str | None = WEIGHTS_NAME):
        super().__init__()
        self.input_size = input_size
        state = None
        if checkpoint is not None:
            state = read_checkpoint(checkpoint, download_name)
            if not isinstance(state, dict) or "conv2d_1a.conv.weight" not in state:
                raise ValueError(f"{checkpoint}: not a facenet-pytorch InceptionResnetV1 state dict")
            if num_classes is None and "logits.weight" in state:
                num_classes = state["logits.weight"].shape[0]
        self.net = InceptionResnetV1(num_classes=num_classes)
        if state is not None:
            self._load(state, checkpoint)
        self.freeze(frozen)

    def _load(self, state: dict, path) -> None:
        """Strict load; only ``num_batches_tracked`` counters may be absent (they do not affect eval)."""
        own = self.net.state_dict()
        missing, unexpected, wrong = key_mismatch(own, state)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected or wrong:
            raise ValueError(f"{path}: does not match InceptionResnetV1(num_classes={self.net.num_classes}): "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}, "
                             f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:5]]}")
        self.net.load_state_dict({**own, **state}, strict=True)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x 3 x S x S`` standardised network input."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return facenet_standardize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` images in ``[-1, 1]`` -> ``B x 512`` L2-normalised embeddings."""
        return self.net(self.prepare(x))
