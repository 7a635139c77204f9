"""Full photographs in, full photographs out: detect every face, anonymise it, paste it back.

    from anon.photos.anonymizer import Anonymizer
    anonymizer = Anonymizer.from_config(["fakes.num_samples=500"])   # conf/photos.yaml (+ experiment=lite)
    out = anonymizer(Image.open("group.jpg"))                        # PIL image or H x W x C uint8 array

Per photo (``H x W x 3`` uint8 RGB, upright -- EXIF orientation is applied to PIL inputs):

1. **detect** -- the detector (MTCNN) on a copy whose long side is at most ``detect_max_side``
   (boxes and landmarks are mapped back to the photo's pixel-centre coordinates); detections with
   probability below ``min_prob`` are dropped.
2. **align** -- each face's FFHQ quad from its 5 landmarks (:class:`anon.data.align.AlignTransform`,
   ``zoom`` as the generator's crops), resampled to an ``S x S`` crop in [-1, 1]. Only the *window*
   of the photo that the quad covers goes to torch, never the whole photo. A face whose quad side is
   below ``min_face_size`` pixels (``too_small``) or whose landmarks are unusable
   (``bad_landmarks``) is not anonymised but follows ``small_face_policy``: ``leave`` (untouched),
   ``blur`` (Gaussian, sigma ``blur_sigma`` x the box side) or ``fill`` (the region's mean colour),
   inside a feathered ellipse ``region_scale`` times the detection box.
3. **anonymise** -- the crops of all faces (of all photos given together) go through a
   :class:`FaceAnonymizer` in batches of ``batch_size``: ``N x 3 x S x S`` in [-1, 1] -> the same.
4. **paste back** -- each result is resampled onto its window by the inverse of its alignment
   transform (:meth:`AlignTransform.unwarp`) and alpha-blended with a feathered mask defined in crop
   coordinates ``(a, b)`` in [-1, 1]: ``alpha = smoothstep(clip(d / feather, 0, 1))`` with
   ``d = 1 - max(|a|, |b|)`` (``mask_shape=square``) or ``d = 1 - sqrt(a^2 + b^2)`` (``ellipse``).
   ``alpha`` is 0 on and outside the crop's border and rises smoothly inside it, so no box edge or
   seam shows; every pixel outside all masks is returned bit for bit. ``mask_shape=hull`` (the
   default) follows the face's outline instead: the square mask times the feathered convex hull of
   the face's outline (:mod:`anon.photos.face_outline`: dlib's 68 points, else an ellipse in the detection
   box; ``outline``, ``hull_feather``), so hair, ears and background keep the photo's pixels.
   The generated face has the generator's resolution (``generated_px``, 64 for the lite set),
   upsampled to the face's size in the photo: each face's record says both.

Faces are pasted largest first, so a small face inside a larger face's crop ends on top.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps

from anon.data.align import FFHQ_BORDER_BLUR, AlignTransform, face_size
from anon.data.images import degenerate, merge_image, split_image
from anon.errors import ConfigError
from anon.photos.face_outline import OUTLINES, face_outline, hull_mask
from anon.photos.falco_faces import FalcoFaceAnonymizer
from anon.photos.paste import blend, cover_face, feather_mask, shifted_transform, window_bounds
from anon.photos.records import Face, PhotoResult
from anon.seeding import content_key, takes_ids

POLICIES = ("leave", "blur", "fill")
NO_FACE_POLICIES = ("pass", "fail")
MASK_SHAPES = ("hull", "ellipse", "square")
#: What each small-face policy records as the face's ``policy`` in the manifest.
POLICY_RECORD = {"leave": "left", "blur": "blurred", "fill": "filled"}


# ---------------------------------------------------------------------------------------------- face anonymisers
@runtime_checkable
class FaceAnonymizer(Protocol):
    """Anonymises aligned face crops: ``N x 3 x S x S`` float in [-1, 1] -> ``N x 3 x S x S`` in [-1, 1].

    Each output crop replaces the face of the matching input crop; it may be on any device. An
    anonymiser whose ``__call__`` takes ``ids`` gets one key per crop (``<photo>#face<k>``), to key its
    random draws by (:mod:`anon.seeding`), so a face's result does not depend on the batch it is in.
    """

    def __call__(self, crops: torch.Tensor) -> torch.Tensor: ...


class IdentityFaceAnonymizer:
    """Returns the crops unchanged: the paste-back path alone (tests, checking a detector setting)."""

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        return crops.clone()


@dataclass
class _Pending:
    key: Any
    image: np.ndarray
    faces: list[Face]
    started: float

    @property
    def ready(self) -> bool:
        return all(f.crop is None for f in self.faces)


@contextmanager
def _torch_threads(n: int | None):
    """Temporarily run torch ops on ``n`` intra-op threads (None: unchanged)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------- the anonymiser
class Anonymizer:
    """Photos in, photos out (module docstring). Build it with :meth:`from_config` or directly.

    Args:
        detector: ``detect(H x W x 3 uint8) -> [(box (4,), prob, landmarks 5 x 2), ...]`` with a
            ``min_face_size`` attribute (:class:`anon.nets.mtcnn.MTCNNDetector`).
        face_anonymizer: a :class:`FaceAnonymizer`.
        crop_size: side ``S`` of the aligned crops the face anonymiser takes.
        zoom: crop tightness relative to FFHQ's (``align.zoom``; the lite DCGAN uses 0.6).
        min_face_size: smallest FFHQ quad side (photo px) that is anonymised; smaller faces follow
            ``small_face_policy``.
        small_face_policy: ``leave`` | ``blur`` | ``fill`` for faces too small or not alignable.
        no_face_policy: a photo where no face is found: ``pass`` (``no_face``, returned unchanged) or
            ``fail`` (``failed``: nothing may pass unsearched). Either way a degenerate photo (a blank
            frame, :func:`anon.data.images.degenerate`), where no face could be searched, is ``failed``.
        detect_min_face_size: smallest face the detector searches (photo px, MTCNN box side); when the
            photo is downscaled for detection the floor is ``12 x`` the downscale factor.
        detect_max_side: detect on a copy with this long side at most (None: full size).
        detect_threads: torch threads during detection (its many small ops run faster on one; None:
            leave torch's setting).
        min_prob: drop detections below this probability.
        batch_size: faces per face-anonymiser call (across photos in :meth:`process_many`).
        max_pending: photos held in memory while their faces wait for a full batch.
        mask_shape, feather: the paste-back mask (module docstring).
        outline, hull_feather: ``mask_shape=hull``: the outline's source (``auto`` | ``dlib68`` |
            ``box_ellipse``, :mod:`anon.photos.face_outline`) and its ramp width (fraction of sqrt(hull area)).
        blur_sigma, region_scale, region_feather: the ``blur`` / ``fill`` region (fractions of the box).
        border_blur: FFHQ's padded-border blur for crops that reach past the photo's edge.
    """

    def __init__(self, detector, face_anonymizer: FaceAnonymizer, crop_size: int = 64, zoom: float = 1.0,
                 min_face_size: float = 32.0, small_face_policy: str = "blur", detect_min_face_size: float = 20.0,
                 detect_max_side: int | None = 2048, detect_threads: int | None = 1, min_prob: float = 0.0,
                 batch_size: int = 16, max_pending: int = 8, mask_shape: str = "hull", feather: float = 0.25,
                 outline: str = "auto", hull_feather: float = 0.1,
                 blur_sigma: float = 0.2, region_scale: float = 1.3, region_feather: float = 0.3,
                 border_blur: float = FFHQ_BORDER_BLUR, no_face_policy: str = "pass"):
        if no_face_policy not in NO_FACE_POLICIES:
            raise ConfigError(f"photos.no_face_policy must be one of {NO_FACE_POLICIES}, not {no_face_policy!r}")
        if small_face_policy not in POLICIES:
            raise ConfigError(f"photos.small_face_policy must be one of {POLICIES}, not {small_face_policy!r}")
        if mask_shape not in MASK_SHAPES:
            raise ConfigError(f"photos.mask_shape must be one of {MASK_SHAPES}, not {mask_shape!r}")
        if outline not in OUTLINES:
            raise ConfigError(f"photos.outline must be one of {OUTLINES}, not {outline!r}")
        if int(batch_size) < 1 or int(max_pending) < 1:
            raise ConfigError("photos.batch_size and photos.max_pending must be positive")
        self.detector, self.face_anonymizer = detector, face_anonymizer
        self.crop_size, self.zoom, self.min_face_size = int(crop_size), float(zoom), float(min_face_size)
        self.small_face_policy, self.no_face_policy = small_face_policy, no_face_policy
        self.detect_min_face_size = float(detect_min_face_size)
        self.detect_max_side = None if not detect_max_side else int(detect_max_side)
        self.detect_threads = None if not detect_threads else int(detect_threads)
        self.min_prob, self.batch_size, self.max_pending = float(min_prob), int(batch_size), int(max_pending)
        self.mask_shape, self.feather = mask_shape, float(feather)
        self.outline, self.hull_feather = outline, float(hull_feather)
        self.blur_sigma, self.region_scale, self.region_feather = float(blur_sigma), float(region_scale), float(region_feather)
        self.border_blur = float(border_blur)

    # -- construction -----------------------------------------------------------------------------
    @staticmethod
    def compose(overrides: Sequence[str] = ()) -> DictConfig:
        """``conf/photos.yaml`` with Hydra overrides (no Hydra runtime)."""
        from hydra import compose, initialize_config_dir

        from anon.runtime.run import CONFIG_DIR

        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("photos", overrides=list(overrides))

    @classmethod
    def from_config(cls, cfg: DictConfig | Sequence[str] | None = None,
                    face_anonymizer: FaceAnonymizer | None = None) -> "Anonymizer":
        """From a composed ``photos`` config, or from overrides of it (a list of ``key=value`` strings).

        ``photos.face_anonymizer``: ``falco`` (:class:`FalcoFaceAnonymizer` of the composed model set)
        or ``identity``; an explicit ``face_anonymizer`` argument wins.
        """
        from hydra.utils import instantiate

        if cfg is None or not isinstance(cfg, DictConfig):
            cfg = cls.compose(list(cfg or ()))
        p = cfg.photos
        if face_anonymizer is None:
            if p.face_anonymizer == "falco":
                face_anonymizer = FalcoFaceAnonymizer.from_config(cfg)  # networks seeded by (seed, name)
            elif p.face_anonymizer == "identity":
                face_anonymizer = IdentityFaceAnonymizer()
            else:
                raise ConfigError(f"photos.face_anonymizer must be falco or identity, not {p.face_anonymizer!r}")
        settings = OmegaConf.to_container(p, resolve=True)
        settings.pop("face_anonymizer")
        detect = settings.pop("detect")
        settings.update(detect_min_face_size=detect["min_face_size"], detect_max_side=detect["max_side"],
                        detect_threads=detect["threads"], min_prob=detect["min_prob"])
        detector = instantiate(cfg.detector)
        return cls(detector, face_anonymizer, **settings)

    # -- one photo, step by step ------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Face]:
        """Detected faces of ``image`` (H x W x 3 uint8), alignment checked, no crops yet."""
        height, width = image.shape[:2]
        scale = 1.0
        small = image
        if self.detect_max_side and max(height, width) > self.detect_max_side:
            scale = max(height, width) / self.detect_max_side
            size = (max(int(round(width / scale)), 1), max(int(round(height / scale)), 1))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        sx, sy = width / small.shape[1], height / small.shape[0]
        self.detector.min_face_size = max(self.detect_min_face_size / max(sx, sy), 12.0) if scale > 1 \
            else self.detect_min_face_size
        with _torch_threads(self.detect_threads):
            detections = self.detector.detect(small)
        faces = []
        for box, prob, landmarks in detections:
            if float(prob) < self.min_prob:
                continue
            box = np.asarray(box, dtype=np.float64) * np.array([sx, sy, sx, sy])
            landmarks = (np.asarray(landmarks, dtype=np.float64) + 0.5) * np.array([sx, sy]) - 0.5
            faces.append(self._check(Face(box, float(prob), landmarks), height, width))
        return faces

    def _check(self, face: Face, height: int, width: int) -> Face:
        """Alignment status, transform and window of a detection (the policy for those that fail)."""
        try:
            if face.landmarks.shape != (5, 2) or not np.all(np.isfinite(face.landmarks)):
                raise ValueError("bad landmarks")
            face.face_size = face_size(face.landmarks)
            if not face.face_size > 0:
                raise ValueError("degenerate landmarks")
            transform = AlignTransform.from_landmarks(face.landmarks, self.crop_size, self.zoom)
            window = window_bounds(transform.quad[:, 0], transform.quad[:, 1], height, width, margin=2)
            if window is None:
                raise ValueError("the crop lies outside the photo")
        except ValueError:
            face.status = "bad_landmarks"
        else:
            if face.face_size < self.min_face_size:
                face.status = "too_small"
            else:
                face.transform, face.window = transform, window
        if face.status != "aligned":
            face.policy = POLICY_RECORD[self.small_face_policy]
        return face

    def plan(self, image: np.ndarray) -> list[Face]:
        """:meth:`detect`, then the aligned crop of every aligned face (from its window only)."""
        faces = self.detect(image)
        for face in faces:
            if face.status == "aligned":
                face.crop = self.crop(image, face)
                face.info["generated_px"] = self.generated_px
                face.info["pasted_px"] = round(float(face.transform.qsize), 1)
                if self.mask_shape == "hull":
                    face.outline, face.info["mask"] = face_outline(image, face.box, face.landmarks, self.outline)
        return faces

    @property
    def generated_px(self) -> int:
        """Side of the faces the anonymiser generates (its generator's resolution), else the crop side."""
        return int(getattr(self.face_anonymizer, "image_size", None) or self.crop_size)

    def crop(self, image: np.ndarray, face: Face) -> torch.Tensor:
        """``3 x S x S`` float crop in [-1, 1] of an aligned face, warped from its window only."""
        x0, y0, x1, y1 = face.window
        window = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1)[None]
        window = window.float().div(127.5).sub(1.0)
        return shifted_transform(face.transform, x0, y0).warp(window, border_blur=self.border_blur)[0]

    def anonymise_crops(self, crops: torch.Tensor, keys: Sequence[str] | None = None) -> tuple[torch.Tensor, list[dict]]:
        """All crops (N x 3 x S x S) through the face anonymiser, ``batch_size`` at a time.

        ``keys``: one per crop, passed as ``ids`` to an anonymiser that takes them (None: the crops'
        content is their key). Returns the anonymised crops (N x 3 x S x S, CPU) and per-crop facts
        (the anonymiser's ``last`` list where it keeps one, else empty dicts)."""
        outs, facts = [], []
        keyed = takes_ids(self.face_anonymizer)
        for start in range(0, crops.shape[0], self.batch_size):
            part = crops[start:start + self.batch_size]
            if keyed:
                ids = list(keys[start:start + len(part)]) if keys is not None else [content_key(c) for c in part]
                out = self.face_anonymizer(part, ids=ids)
            else:
                out = self.face_anonymizer(part)
            if tuple(out.shape) != tuple(part.shape):
                raise ValueError(f"the face anonymiser returned {tuple(out.shape)} for crops {tuple(part.shape)}")
            outs.append(out.detach().float().cpu())
            last = list(getattr(self.face_anonymizer, "last", None) or [])
            facts += (last + [{}] * len(part))[:len(part)]
        return (torch.cat(outs) if outs else crops.new_zeros(crops.shape)), facts

    def paste(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """A copy of ``image`` with every face's result pasted back and the policy applied to the rest."""
        out = image.copy()
        for face in sorted(faces, key=lambda f: -(f.face_size or 0.0)):
            if face.status == "aligned":
                if face.result is None:
                    raise RuntimeError("paste before the face was anonymised")
                self._paste_face(out, face)
            elif face.policy in ("blurred", "filled"):
                cover_face(out, face, self.region_scale, self.region_feather, self.blur_sigma)
        return out

    def _paste_face(self, out: np.ndarray, face: Face) -> None:
        x0, y0, x1, y1 = face.window
        local = shifted_transform(face.transform, x0, y0)
        canvas, _ = local.unwarp(face.result[None].float(), (y1 - y0, x1 - x0))
        layer = (canvas[0].permute(1, 2, 0).numpy() + 1.0) * 127.5
        if self.mask_shape == "hull":
            alpha = np.minimum(feather_mask(local, y1 - y0, x1 - x0, "square", self.feather),
                               hull_mask(face.outline, face.window, self.hull_feather))
        else:
            alpha = feather_mask(local, y1 - y0, x1 - x0, self.mask_shape, self.feather)
        blend(out, face.window, layer, alpha)

    # -- whole photos -----------------------------------------------------------------------------
    def process(self, image: np.ndarray) -> PhotoResult:
        """One upright ``H x W x 3`` uint8 RGB photo -> :class:`PhotoResult`."""
        return next(iter(self.process_many([(None, image)])))[1]

    def process_many(self, photos: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, PhotoResult]]:
        """``(key, H x W x 3 uint8)`` pairs -> ``(key, PhotoResult)`` as each photo is finished.

        Faces of consecutive photos share batches of ``batch_size``; at most ``max_pending`` photos wait
        in memory for a batch to fill (then a partial batch runs). Results may come out of input order.
        """
        pending: list[_Pending] = []
        queue: list[Face] = []
        for key, image in photos:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an H x W x 3 uint8 RGB photo, got {image.dtype} {image.shape}")
            started = time.perf_counter()
            faces = self.plan(image)
            for index, face in enumerate(faces):  # the face's own key: photo and detection order
                face.key = f"{key}#face{index}" if key is not None else None
            pending.append(_Pending(key, image, faces, started))
            queue += [f for f in faces if f.crop is not None]
            while len(queue) >= self.batch_size:
                self._run(queue[:self.batch_size])
                del queue[:self.batch_size]
            if len(pending) >= self.max_pending and queue:
                self._run(queue)
                queue = []
            yield from self._finish(pending)
        if queue:
            self._run(queue)
        yield from self._finish(pending)

    def _run(self, faces: list[Face]) -> None:
        crops = torch.stack([f.crop for f in faces])
        keys = [f.key if f.key is not None else content_key(f.crop) for f in faces]
        out, facts = self.anonymise_crops(crops, keys)
        for face, result, extra in zip(faces, out, facts):
            face.result, face.crop = result, None
            face.info.update(extra)

    def _finish(self, pending: list[_Pending]) -> Iterator[tuple[Any, PhotoResult]]:
        for item in [p for p in pending if p.ready]:
            pending.remove(item)
            output = self.paste(item.image, item.faces)
            for face in item.faces:
                face.result = None
            error = None if item.faces else (degenerate(item.image) or (
                "no face found (photos.no_face_policy=fail)" if self.no_face_policy == "fail" else None))
            yield item.key, PhotoResult(output, item.faces, time.perf_counter() - item.started, error)

    def __call__(self, image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        """Anonymise one photo: a PIL image (EXIF orientation applied; returned upright, same mode where
        it is RGB/RGBA/L/LA, else RGB(A), without metadata) or a ``H x W``, ``H x W x 3`` or
        ``H x W x 4`` uint8 array (returned in the same layout; alpha untouched)."""
        if isinstance(image, Image.Image):
            rgb, alpha, mode = split_image(ImageOps.exif_transpose(image))
            return merge_image(self.process(rgb).image, alpha, mode)
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise TypeError(f"expected a PIL image or an H x W [x 3|4] uint8 array, got {array.dtype} {array.shape}")
        if array.ndim == 3 and array.shape[2] == 3:
            return self.process(array).image
        rgb, alpha, mode = split_image(Image.fromarray(array))
        return np.asarray(merge_image(self.process(rgb).image, alpha, mode))
