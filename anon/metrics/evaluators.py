"""Identity evaluators: "embed a list of uint8 face images -> one embedding per image, or None (no face)".

The evaluate stage sees every recogniser through this one shape::

    evaluator.embed(images: list[np.ndarray H x W x 3 uint8]) -> list[np.ndarray (D,) | None]
    evaluator.higher_is_same   # True: cosine similarity, same person if >= threshold
                               # False: Euclidean distance, same person if <= threshold
    evaluator.threshold, evaluator.threshold_source   # a default decision threshold and where it comes
                                                     # from, or None (then it is calibrated / configured)

Adapters:

* :class:`TorchIdentityEvaluator` wraps a torch identity network (``B x 3 x H x W`` in ``[-1, 1]`` ->
  ``B x D`` L2-normalised, e.g. :class:`anon.nets.facenet.FaceNetIdentity`), optionally after a face
  crop (:class:`FaceCropper`, MTCNN boxes as facenet-pytorch's evaluation protocol does);
* :class:`DlibEvaluator` wraps a describer with ``describe(image) -> 128-d array or None``
  (:class:`anon.metrics.dlib_identity.DlibIdentity`), Euclidean distance, threshold 0.6.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from anon.metrics.detection import detect_fn

R = TypeVar("R")


class Evaluator(Protocol):
    higher_is_same: bool
    threshold: float | None
    threshold_source: str | None

    def embed(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]: ...


class FaceCropper:
    """One face of an image as a square ``size x size`` uint8 crop, or None when there is none.

    The detector's box ``x1, y1, x2, y2`` is widened by ``margin`` pixels *of the output crop* (so the
    border is ``margin * box_side / (size - margin)`` source pixels, split over both sides), clipped to
    the image, cropped and resized bilinearly to ``size`` -- the geometry of facenet-pytorch's
    ``MTCNN(image_size=size, margin=margin)`` face extraction on a PIL image. The box is not made
    square: as there, the aspect ratio of the box is not kept.

    Args:
        detector: ``image -> [(box, prob, landmarks), ...]`` best first (``MTCNNDetector`` or a callable).
        size: output side (160 for FaceNet).
        margin: extra border, in output pixels.
        select: ``largest`` (box area; facenet-pytorch's default) or ``probability`` (the first detection).
    """

    def __init__(self, detector, size: int = 160, margin: float = 0.0, select: str = "largest"):
        if select not in ("largest", "probability"):
            raise ValueError(f"select={select!r}: use 'largest' or 'probability'")
        self.detect = detect_fn(detector)
        self.size, self.margin, self.select = int(size), float(margin), select

    def box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The crop box ``(left, top, right, bottom)`` in pixels, or None when no face is found."""
        boxes = [np.asarray(d[0], dtype=np.float64).reshape(-1)[:4] for d in self.detect(image)]
        if not boxes:
            return None
        if self.select == "largest":
            boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))  # stable: ties keep detector order
        x1, y1, x2, y2 = (float(v) for v in boxes[0])
        mx = self.margin * (x2 - x1) / (self.size - self.margin)
        my = self.margin * (y2 - y1) / (self.size - self.margin)
        h, w = image.shape[:2]
        box = (int(max(x1 - mx / 2, 0)), int(max(y1 - my / 2, 0)), int(min(x2 + mx / 2, w)), int(min(y2 + my / 2, h)))
        return box if box[2] > box[0] and box[3] > box[1] else None

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        box = self.box(image)
        if box is None:
            return None
        crop = Image.fromarray(np.ascontiguousarray(image)).crop(box)
        return np.asarray(crop.resize((self.size, self.size), Image.Resampling.BILINEAR))


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-size ``H x W x 3`` uint8 images -> ``N x 3 x H x W`` float in ``[-1, 1]``."""
    array = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def forward_by_size(net: torch.nn.Module, faces: Sequence[np.ndarray | None], batch_size: int,
                    device: torch.device, finish: Callable[[torch.Tensor], Sequence[R]]) -> list[R | None]:
    """``net`` over uint8 faces (:func:`to_tensor`): one forward per equal-size group, ``batch_size`` at a time.

    Returns row ``i`` of ``finish(net output)`` for face ``i``; None where the face is None (no face found).
    """
    out: list[R | None] = [None] * len(faces)
    by_shape: dict[tuple, list[int]] = {}
    for i, face in enumerate(faces):
        if face is not None:
            by_shape.setdefault(face.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            part = indices[start:start + batch_size]
            rows = finish(net(to_tensor([faces[i] for i in part]).to(device)))
            for i, row in zip(part, rows):
                out[i] = row
    return out


class TorchIdentityEvaluator:
    """A torch identity network as an evaluator (cosine similarity).

    Args:
        net: ``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x D`` embeddings (normalised here again).
        crop: ``image -> face crop or None`` (e.g. :class:`FaceCropper`); None feeds the whole image,
            which suits images already aligned the way the network expects.
        batch_size: images per forward pass.
        device: where the network runs.
        threshold, threshold_source: a default decision threshold and its provenance (None: the
            evaluate stage calibrates it or reads it from the config).
    """

    higher_is_same = True

    def __init__(self, net: torch.nn.Module, crop: Callable[[np.ndarray], np.ndarray | None] | None = None,
                 batch_size: int = 32, device: str | torch.device = "cpu", threshold: float | None = None,
                 threshold_source: str | None = None):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.crop, self.batch_size = crop, int(batch_size)
        self.threshold, self.threshold_source = threshold, threshold_source

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        faces = [self.crop(im) if self.crop is not None else np.asarray(im) for im in images]
        return forward_by_size(self.net, faces, self.batch_size, self.device,
                               lambda emb: torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy())


class DlibEvaluator:
    """dlib's face-recognition ResNet (128-d, Euclidean distance; same person if distance <= 0.6).

    Args:
        describer: an object with ``describe(image uint8 H x W x 3) -> (128,) array or None``; default
            :class:`anon.metrics.dlib_identity.DlibIdentity` built with ``describer_kwargs``.
        threshold: decision threshold; default the describer's ``threshold`` attribute, else 0.6
            (dlib's documented same-person distance).
    """

    higher_is_same = False

    def __init__(self, describer=None, threshold: float | None = None, **describer_kwargs):
        if describer is None:
            from anon.metrics.dlib_identity import DlibIdentity

            describer = DlibIdentity(**describer_kwargs)
        self.describer = describer
        if threshold is None:
            threshold = float(getattr(describer, "threshold", 0.6))
            self.threshold_source = "dlib's documented same-person distance (dlib face_recognition_resnet_model_v1)"
        else:
            self.threshold_source = "configured"
        self.threshold = float(threshold)

    def embed(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        out = []
        for image in images:
            d = self.describer.describe(np.ascontiguousarray(image))
            out.append(None if d is None else np.asarray(d, dtype=np.float64).reshape(-1))
        return out


def as_evaluator(obj, crop: Callable | None = None, batch_size: int = 32, device: str | torch.device = "cpu"):
    """An evaluator from what a config instantiates: evaluators pass through, describers (``describe``,
    e.g. ``DlibIdentity``) become :class:`DlibEvaluator`, torch networks :class:`TorchIdentityEvaluator`."""
    if hasattr(obj, "embed") and hasattr(obj, "higher_is_same"):
        return obj
    if callable(getattr(obj, "describe", None)):
        return DlibEvaluator(describer=obj)
    if isinstance(obj, torch.nn.Module):
        return TorchIdentityEvaluator(obj, crop=crop, batch_size=batch_size, device=device)
    raise TypeError(f"{type(obj).__name__} is neither an evaluator (embed, higher_is_same), a describer "
                    "(describe) nor a torch identity network")


__all__ = ["Evaluator", "FaceCropper", "TorchIdentityEvaluator", "DlibEvaluator", "as_evaluator", "to_tensor",
           "forward_by_size"]
