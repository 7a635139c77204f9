"""FID between originals and anonymised images: torchmetrics' ``FrechetInceptionDistance`` on the FID Inception-v3.

The feature extractor is the Inception-v3 that TensorFlow's FID used (``inception-2015-12-05``) as
ported to PyTorch by pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``). Its parameters carry
torchvision ``Inception3`` names (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``,
... ``fc.weight`` over 1008 classes), so the file loads strictly. It differs from torchvision's
ImageNet Inception in three pooling details (TensorFlow's graph):

* the average-pool branches of the A, C and first E blocks (``Mixed_5b-d``, ``Mixed_6b-e``,
  ``Mixed_7b``) do not count the zero padding (``count_include_pad=False``);
* the last E block (``Mixed_7c``) pools its pool branch with a 3x3 stride-1 *max* pool.

Pipeline (as pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``, block 3):
``B x 3 x H x W`` -> bilinear resize to 299 x 299 (``align_corners=False``, no antialias) ->
``2x - 1`` -> stem -> Mixed_5b .. Mixed_7c (``B x 2048 x 8 x 8``) -> global average pool -> ``B x 2048``.

Every conv is ``Conv2d(bias=False) -> BatchNorm2d(eps=1e-3) -> ReLU`` (parameters ``conv.weight``,
``bn.{weight,bias,running_mean,running_var}``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anon.nets.checkpoint import read_checkpoint
from anon.nets.frozen import FrozenNetwork

DOWNLOAD_NAME = "fid_inception"
FILENAME = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FILENAME
INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008  # the TensorFlow graph's 1008-way softmax (only in the file; not used for FID)


class _Conv(nn.Sequential):
    """conv (no bias) -> BN(eps 1e-3) -> ReLU; children named ``conv`` and ``bn`` as in the checkpoint."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool over the valid (unpadded) pixels only, TensorFlow's SAME pooling."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max3(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


class _Mixed(nn.Module):
    """Runs named branches (each a chain of convs) and concatenates them in ``order``.

    ``branches``: ``{output name: [conv module names, in order]}``; a name starting with ``pool`` means
    "``pool_fn`` on the input, then these convs". Split branches (E blocks) list two heads after
    a shared trunk as ``(trunk, (head_a, head_b))``.
    """

    order: list[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for kind, names in self.order:
            y = self.pool_fn(x) if kind == "pool" else x
            if kind == "split":
                trunk, (head_a, head_b) = names
                for name in trunk:
                    y = getattr(self, name)(y)
                outputs += [getattr(self, head_a)(y), getattr(self, head_b)(y)]
                continue
            for name in names:
                y = getattr(self, name)(y)
            outputs.append(y)
        return torch.cat(outputs, dim=1)

    @staticmethod
    def pool_fn(x: torch.Tensor) -> torch.Tensor:
        return _avg3(x)


class _BlockA(_Mixed):
    """35 x 35 block: 64 + 64 + 96 + ``pool_features`` channels."""

    order = [("conv", ["branch1x1"]), ("conv", ["branch5x5_1", "branch5x5_2"]),
             ("conv", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]), ("pool", ["branch_pool"])]

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)


class _ReductionB(_Mixed):
    """35 -> 17 reduction (``Mixed_6a``): 384 + 96 + ``cin`` channels."""

    order = [("conv", ["branch3x3"]), ("conv", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]),
             ("pool", [])]

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 64, 1), _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    @staticmethod
    def pool_fn(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=2)


class _BlockC(_Mixed):
    """17 x 17 block with factorised 1x7 / 7x1 convs: 4 x 192 channels."""

    order = [("conv", ["branch1x1"]), ("conv", ["branch7x7_1", "branch7x7_2", "branch7x7_3"]),
             ("conv", [f"branch7x7dbl_{i}" for i in range(1, 6)]), ("pool", ["branch_pool"])]

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding)
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = _Conv(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = _Conv(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = _Conv(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = _Conv(c7, 192, row[0], padding=row[1])
        self.branch_pool = _Conv(cin, 192, 1)


class _ReductionD(_Mixed):
    """17 -> 8 reduction (``Mixed_7a``): 320 + 192 + ``cin`` channels."""

    order = [("conv", ["branch3x3_1", "branch3x3_2"]), ("conv", [f"branch7x7x3_{i}" for i in range(1, 5)]),
             ("pool", [])]

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    @staticmethod
    def pool_fn(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=2)


class _BlockE(_Mixed):
    """8 x 8 block with split 1x3 / 3x1 heads: 320 + 768 + 768 + 192 = 2048 channels.

    ``max_pool``: the pool branch uses a 3x3 max pool (``Mixed_7c`` of the FID network) instead of the
    padding-excluding average pool.
    """

    order = [("conv", ["branch1x1"]), ("split", (["branch3x3_1"], ("branch3x3_2a", "branch3x3_2b"))),
             ("split", (["branch3x3dbl_1", "branch3x3dbl_2"], ("branch3x3dbl_3a", "branch3x3dbl_3b"))),
             ("pool", ["branch_pool"])]

    def __init__(self, cin: int, max_pool: bool = False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 448, 1), _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def pool_fn(self, x: torch.Tensor) -> torch.Tensor:
        return _max3(x) if self.max_pool else _avg3(x)


class FIDInceptionV3(FrozenNetwork):
    """The FID Inception-v3 as a feature extractor: images -> ``B x 2048`` pool features.

    Input: ``B x 3 x H x W`` RGB, ``uint8`` in ``[0, 255]`` or float in ``[0, 1]`` (what torchmetrics'
    FID passes a custom extractor, given uint8 images or ``normalize=True`` floats). Any ``H, W``:
    the image is resized to 299 x 299 first. ``logits`` gives the unused 1008-way classifier.

    Args:
        checkpoint: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``; ``None`` keeps random
            weights (tests). A missing file raises :class:`MissingCheckpointError` naming
            ``anon download fid_inception``.
        resize_input: resize to 299 x 299 first (FID is defined at 299; ``False`` only for tests on
            small inputs, at least 75 x 75).
    """

    num_features = NUM_FEATURES
    weights = DOWNLOAD_NAME

    def __init__(self, checkpoint: str | Path | None = None, download_name: str | None = DOWNLOAD_NAME,
                 resize_input: bool = True):
        super().__init__()
        self.resize_input = bool(resize_input)
        state = None if checkpoint is None else _read_state_dict(checkpoint, download_name)
        with torch.device("meta") if state is not None else contextlib.nullcontext():
            self._build()
        if state is not None:
            self.load_state_dict(state, strict=True, assign=True)
            self.float()
        self.freeze()

    def _build(self) -> None:
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        self.Mixed_6a = _ReductionB(288)
        self.Mixed_6b, self.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        self.Mixed_7a = _ReductionD(768)
        self.Mixed_7b, self.Mixed_7c = _BlockE(1280), _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[0, 255]`` / float ``[0, 1]`` -> float ``B x 3 x 299 x 299`` in ``[-1, 1]``."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.resize_input and x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` -> ``B x 2048 x 8 x 8`` (``Mixed_7c`` output at 299 px input)."""
        x = self.prepare(images.to(self.fc.weight.device))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` -> ``B x 2048`` average-pooled features (float32)."""
        return self.features(images).mean(dim=(2, 3))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 1008`` class logits of the TensorFlow graph (not used by FID)."""
        return self.fc(self.forward(images))


def _read_state_dict(path: str | Path, name: str | None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors; BatchNorm ``num_batches_tracked`` counters are added when absent."""
    state = read_checkpoint(path, name)
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise ValueError(f"{path}: not the pytorch-fid Inception-v3 state dict ({FILENAME})")
    for key in [k for k in state if k.endswith(".bn.running_var")]:
        state.setdefault(key.replace("running_var", "num_batches_tracked"), torch.tensor(0, dtype=torch.long))
    return state


def build_fid(checkpoint: str | Path | None = None, feature: nn.Module | None = None, **kwargs):
    """torchmetrics ``FrechetInceptionDistance`` on the FID Inception-v3 at ``checkpoint``, or on ``feature``
    (any module ``B x 3 x H x W -> B x F`` with a ``num_features`` attribute; tests use small ones).

    ``update(images, real=True/False)`` takes ``B x 3 x H x W`` uint8 images (originals as ``real``,
    anonymised as fake); ``compute()`` is the FID. Extra ``kwargs`` go to the metric
    (e.g. ``reset_real_features``).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is None:
        if checkpoint is None:
            raise ValueError("build_fid needs the FID Inception checkpoint path or a feature module")
        feature = FIDInceptionV3.from_checkpoint(checkpoint)
    return FrechetInceptionDistance(feature=feature, **kwargs)


def fid_features(feature: Callable[[torch.Tensor], torch.Tensor], images: Sequence[np.ndarray],
                 batch_size: int = 16) -> list[torch.Tensor]:
    """``H x W x 3`` uint8 images -> one CPU feature vector each (what the FID metric's ``update`` extracts).

    Equal-size images go through ``feature`` (e.g. :class:`FIDInceptionV3`, on its own device) together,
    ``batch_size`` at a time; each image's vector does not depend on the others in its batch.
    """
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    parameter = next(iter(feature.parameters()), None) if isinstance(feature, nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            part = indices[start:start + batch_size]
            x = torch.from_numpy(np.stack([np.asarray(images[i], dtype=np.uint8) for i in part]))
            with torch.no_grad():
                f = feature(x.permute(0, 3, 1, 2).contiguous().to(device))
            for i, row in zip(part, f.reshape(len(part), -1).cpu()):
                out[i] = row
    return out


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID of two ``N x F`` feature sets, as torchmetrics' ``FrechetInceptionDistance`` computes it from the
    same features (float64 sums and outer products, its ``_compute_fid``, the result in the features' dtype)."""
    from torchmetrics.image.fid import _compute_fid

    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError("FID needs at least two real and two fake images")
    stats = []
    for f in (real.double(), fake.double()):
        n = f.shape[0]
        mean = (f.sum(dim=0) / n).unsqueeze(0)
        cov = (f.t().mm(f) - n * mean.t().mm(mean)) / (n - 1)
        stats += [mean.squeeze(0), cov]
    return float(_compute_fid(*stats).to(real.dtype))


__all__ = ["FIDInceptionV3", "build_fid", "fid_features", "frechet_distance", "DOWNLOAD_NAME", "FILENAME", "URL"]
