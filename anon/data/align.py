"""FFHQ-style face alignment from 5 landmarks, as an exact, invertible similarity transform.

Coordinates
    Landmarks and every point below are *pixel-centre* image coordinates, ``x`` (column) then
    ``y`` (row): the centre of pixel ``image[i, j]`` is ``(x=j, y=i)`` (the dlib / FAN / MTCNN
    convention). An ``H x W`` image covers the area ``[-0.5, W-0.5] x [-0.5, H-0.5]``.
    The 5 landmarks are, in order: left eye, right eye, nose, mouth left, mouth right ("left" =
    image left). The nose is not used.

The crop quad (constants taken as facts from NVlabs/ffhq-dataset ``download_ffhq.py``,
``recreate_aligned_images``; FALCO's ``lib/aligner.py`` and e4e/pSp ``utils/alignment.py`` use the
same ones). With ``eye_to_eye = eye_right - eye_left``, ``eye_to_mouth = mouth_avg - eye_avg``::

    x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1];  x /= |x|
    x *= max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)
    y = flipud(x) * [-1, 1]              (x rotated by +90 degrees: a square, never mirrored)
    c = eye_avg + 0.1 * eye_to_mouth
    quad = [c - x - y, c - x + y, c + x + y, c + x - y]   (top-left, bottom-left, bottom-right, top-right)

FFHQ hands ``quad + 0.5`` to PIL's ``Image.transform(QUAD, BILINEAR)``, whose pixels are areas:
the quad's corners are the *outer corners* of the output's corner pixels. So the aligned pixel
``(u, v)`` of an ``S x S`` crop (pixel-centre coordinates) sits at the image point::

    p(u, v) = c + a * x + b * y,   a = 2 (u + 0.5) / S - 1,   b = 2 (v + 0.5) / S - 1

(``a, b`` in ``[-1, 1]`` span the quad; they are also exactly ``grid_sample``'s normalised
coordinates with ``align_corners=False``). :class:`AlignTransform` holds this map and its inverse.

Resampling (:meth:`AlignTransform.warp`)
    * bilinear (``torch.nn.functional.grid_sample``);
    * anti-aliasing: when the quad is larger than the crop (``qsize > S``), the crop is rendered at
      ``k = ceil(qsize / S)`` times the size (``k <= max_supersample``) and box-averaged back,
      standing in for FFHQ's 4096 px render + downscale. FALCO renders straight to 256 px without
      it; pass ``antialias=False`` for that;
    * outside the image: **reflection** about the image border (PyTorch's ``reflection`` padding,
      i.e. numpy's ``'symmetric'`` mode -- the edge pixel is repeated; FFHQ pads with numpy's
      ``'reflect'``, which is not; the two differ by one pixel of offset in the padded area);
    * FFHQ's padded-border treatment, *simple variant*, applied when any output pixel samples
      outside the image: with ``s`` the signed distance (source pixels) of the sampled point
      outside the image border (largest over the four sides, negative inside) and
      ``m = s / (0.3 qsize)`` (0.3 qsize is FFHQ's smallest padding), the crop is blended towards
      its Gaussian blur (sigma ``blur * qsize`` source pixels, i.e. ``blur * S`` crop pixels) with
      weight ``clip(3 m + 1, 0, 1)``, then towards the per-channel median of the image with
      weight ``clip(m, 0, 1)``. FFHQ does the same on the padded *source* image, measured from
      the edges of its intermediate crop (quad bbox + 10 % border) and with padding that may be
      wider than 0.3 qsize; here the distances are to the true image borders and the blur is
      done on the output grid (equivalent for a similarity transform, up to resampling).
      ``blur`` is 0.02 in FFHQ and 0.01 in FALCO's ``lib/aligner.py``.

Pasting back (:meth:`AlignTransform.unwarp`) samples the crop with the inverse map (bilinear,
border clamped; a crop with more pixels than the quad is first downsized with anti-aliasing)
and returns the canvas together with the mask of canvas pixels the crop covers.

The failure policy (no landmarks, a face too small) is in :mod:`anon.data.align_policy`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

ImageLike = Union[np.ndarray, torch.Tensor]

#: Gaussian blur of the padded border, as a fraction of the quad side (FFHQ; FALCO uses 0.01).
FFHQ_BORDER_BLUR = 0.02
#: FFHQ pads by at least this fraction of the quad side; the border blend ramps over it.
FFHQ_PAD_FRACTION = 0.3


def ffhq_quad(landmarks5: np.ndarray) -> np.ndarray:
    """The FFHQ oriented crop quad of a face.

    ``landmarks5``: 5 x 2 (x, y) pixel-centre coordinates (left eye, right eye, nose, mouth left,
    mouth right). Returns 4 x 2 float64 corners: top-left, bottom-left, bottom-right, top-right
    (the order PIL's QUAD transform takes). Constants: NVlabs/ffhq-dataset ``download_ffhq.py``,
    ``recreate_aligned_images`` (eye centres and mouth corners here come from 5 points instead of
    the 68 dlib points).
    """
    lm = np.asarray(landmarks5, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"expected 5 x 2 landmarks, got shape {lm.shape}")
    eye_left, eye_right, _nose, mouth_left, mouth_right = lm
    eye_avg = 0.5 * (eye_left + eye_right)
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = 0.5 * (mouth_left + mouth_right) - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError("degenerate landmarks: the crop direction is undefined")
    x = x / norm * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + 0.1 * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def face_size(landmarks5: np.ndarray) -> float:
    """Side of the FFHQ quad in pixels (``2 * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``)."""
    quad = ffhq_quad(landmarks5)
    return float(np.hypot(*(quad[3] - quad[0])))


# ----------------------------------------------------------------------------------------------
# Image layout helpers: numpy H x W x C (uint8 or float) or torch [B x] C x H x W float.


def _to_batch(image: ImageLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """Any supported image -> (1|B x C x H x W float tensor, how to convert back)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"numpy images are H x W x C, got shape {image.shape}")
        t = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None]
        t = t.to(torch.float32) if not torch.is_floating_point(t) else t
        return t, {"kind": "numpy", "dtype": image.dtype}
    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4):
            raise ValueError(f"tensor images are [B x] C x H x W, got shape {tuple(image.shape)}")
        if not torch.is_floating_point(image):
            raise TypeError("tensor images must be floating point")
        return (image[None] if image.ndim == 3 else image), {"kind": "torch", "ndim": image.ndim}
    raise TypeError(f"unsupported image type {type(image).__name__}")


def _from_batch(t: torch.Tensor, how: dict[str, Any]) -> ImageLike:
    if how["kind"] == "torch":
        return t[0] if how["ndim"] == 3 else t
    array = t[0].permute(1, 2, 0).detach().cpu().numpy()
    if np.issubdtype(how["dtype"], np.integer):
        info = np.iinfo(how["dtype"])
        return np.clip(np.rint(array), info.min, info.max).astype(how["dtype"])
    return array.astype(how["dtype"])


def image_height_width(image: ImageLike) -> tuple[int, int]:
    """``(H, W)`` of an H x W x C numpy image or a [B x] C x H x W tensor."""
    return tuple(image.shape[:2]) if isinstance(image, np.ndarray) else tuple(image.shape[-2:])


def _gaussian_blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B x C x H x W, truncated at 4 sigma, reflect-padded."""
    radius = min(int(math.ceil(4.0 * sigma)), t.shape[-1] - 1, t.shape[-2] - 1)
    if sigma <= 0 or radius < 1:
        return t
    offsets = torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    b, c, h, w = t.shape
    flat = t.reshape(b * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return flat.reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AlignTransform:
    """Similarity map between image coordinates and the ``size x size`` aligned crop.

    ``quad``: 4 x 2 float64 image points (top-left, bottom-left, bottom-right, top-right outer
    corners of the crop; a rotated, non-mirrored square). ``size``: side of the crop in pixels.
    """

    quad: np.ndarray
    size: int

    def __post_init__(self) -> None:
        quad = np.array(self.quad, dtype=np.float64)
        if quad.shape != (4, 2) or not np.all(np.isfinite(quad)):
            raise ValueError("quad must be a finite 4 x 2 array")
        if int(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        object.__setattr__(self, "quad", quad)
        object.__setattr__(self, "size", int(self.size))
        x, y = self.axes
        side = np.hypot(*x)
        tol = 1e-6 * max(side, 1.0)
        if side <= 0 or np.abs(y - np.array([-x[1], x[0]])).max() > tol \
                or np.abs(quad[2] - (quad[1] + quad[3] - quad[0])).max() > tol:
            raise ValueError("quad is not a rotated square in [top-left, bottom-left, bottom-right, top-right] order")

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_landmarks(cls, landmarks5: np.ndarray, size: int, zoom: float = 1.0) -> "AlignTransform":
        """The FFHQ crop of a face (see :func:`ffhq_quad`); ``zoom`` < 1 crops tighter about the same
        centre (generators trained on tighter crops than FFHQ's, e.g. the lite DCGAN)."""
        quad = ffhq_quad(landmarks5)
        centre = quad.mean(axis=0)
        return cls(centre + float(zoom) * (quad - centre), size)

    @classmethod
    def centre_crop(cls, height: int, width: int, size: int) -> "AlignTransform":
        """The largest centred square of an ``height x width`` image, resized to ``size``."""
        half = 0.5 * min(height, width)
        c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        x, y = np.array([half, 0.0]), np.array([0.0, half])
        return cls(np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), size)

    # -- geometry -------------------------------------------------------------------------------
    @property
    def centre(self) -> np.ndarray:
        """Image point of the crop centre, (2,)."""
        return self.quad.mean(axis=0)

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Half-side vectors ``(x, y)`` of the quad: crop right and crop down, in image pixels."""
        return 0.5 * (self.quad[3] - self.quad[0]), 0.5 * (self.quad[1] - self.quad[0])

    @property
    def qsize(self) -> float:
        """Side of the quad in image pixels."""
        return float(2.0 * np.hypot(*self.axes[0]))

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return self.size / self.qsize

    @property
    def angle(self) -> float:
        """Rotation of the crop's x axis in the image, degrees (atan2 of y over x, image y down)."""
        x, _ = self.axes
        return float(np.degrees(np.arctan2(x[1], x[0])))

    @property
    def matrix(self) -> np.ndarray:
        """2 x 3 affine ``[A | t]`` taking image points to crop points: ``uv = A @ p + t``."""
        x, y = self.axes
        k = self.size / 2.0
        a = k * np.stack([x / x.dot(x), y / y.dot(y)])
        return np.concatenate([a, (k - 0.5 - a @ self.centre)[:, None]], axis=1)

    def _normalised(self, points: np.ndarray) -> np.ndarray:
        """Image points N x 2 -> quad coordinates ``(a, b)`` in [-1, 1] over the crop."""
        x, y = self.axes
        d = np.asarray(points, dtype=np.float64) - self.centre
        return np.stack([d @ x / x.dot(x), d @ y / y.dot(y)], axis=-1)

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Image points ``... x 2`` (x, y) -> aligned-crop pixel-centre coordinates (u, v)."""
        return (self._normalised(points) + 1.0) * (self.size / 2.0) - 0.5

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Aligned-crop points ``... x 2`` (u, v) -> image pixel-centre coordinates (x, y)."""
        x, y = self.axes
        ab = (np.asarray(points, dtype=np.float64) + 0.5) * (2.0 / self.size) - 1.0
        return self.centre + ab[..., :1] * x + ab[..., 1:] * y

    def _image_points(self, resolution: int) -> np.ndarray:
        """Image points sampled by the pixel centres of a ``resolution``-sized crop, R x R x 2."""
        ab = (np.arange(resolution, dtype=np.float64) + 0.5) * (2.0 / resolution) - 1.0
        x, y = self.axes
        return self.centre + ab[None, :, None] * x + ab[:, None, None] * y

    # -- resampling -----------------------------------------------------------------------------
    def warp(self, image: ImageLike, antialias: bool = True, max_supersample: int = 8,
             border_blur: float = FFHQ_BORDER_BLUR) -> ImageLike:
        """The aligned ``S x S`` crop of ``image``.

        ``image``: H x W x C numpy (uint8 or float) -> S x S x C of the same dtype (uint8 rounded);
        or a float tensor C x H x W / B x C x H x W (any value range, e.g. [-1, 1]) -> C x S x S /
        B x C x S x S. Bilinear, reflection outside the image, FFHQ-style blurred border (module
        docstring); ``border_blur=0`` turns the border treatment off.
        """
        batch, how = _to_batch(image)
        h, w = batch.shape[-2:]
        work = batch if batch.dtype in (torch.float32, torch.float64) else batch.float()
        k = 1
        if antialias and self.qsize > self.size:
            k = min(int(math.ceil(self.qsize / self.size - 1e-9)), max(int(max_supersample), 1))
        points = self._image_points(self.size * k)
        grid = np.stack([(2.0 * points[..., 0] + 1.0) / w - 1.0, (2.0 * points[..., 1] + 1.0) / h - 1.0], -1)
        grid_t = torch.as_tensor(grid, dtype=work.dtype, device=work.device)[None].expand(work.shape[0], -1, -1, -1)
        out = F.grid_sample(work, grid_t, mode="bilinear", padding_mode="reflection", align_corners=False)
        if k > 1:
            out = F.avg_pool2d(out, k)
        if border_blur > 0:
            out = self._blend_border(out, work, h, w, border_blur)
        return _from_batch(out.to(batch.dtype), how)

    def _blend_border(self, out: torch.Tensor, source: torch.Tensor, h: int, w: int, blur: float) -> torch.Tensor:
        points = self._image_points(self.size)
        px, py = points[..., 0], points[..., 1]
        outside = np.max(np.stack([-0.5 - px, px - (w - 0.5), -0.5 - py, py - (h - 0.5)]), axis=0)
        if outside.max() <= 0:
            return out
        mask = torch.as_tensor(outside / (FFHQ_PAD_FRACTION * self.qsize), dtype=out.dtype, device=out.device)
        blurred = _gaussian_blur(out, blur * self.size)
        out = out + (blurred - out) * (3.0 * mask + 1.0).clamp(0.0, 1.0)
        median = source.flatten(2).median(dim=2).values[..., None, None]
        return out + (median - out) * mask.clamp(0.0, 1.0)

    def unwarp(self, aligned: ImageLike, canvas_size: tuple[int, int],
               antialias: bool = True) -> tuple[ImageLike, ImageLike]:
        """Paste an aligned crop back: ``(image on the canvas, validity mask)``.

        ``aligned``: S x S x C numpy or [B x] C x S x S float tensor (same conventions as
        :meth:`warp`); ``canvas_size``: ``(H, W)`` of the original image. Returns the crop resampled
        onto the ``H x W`` canvas (same layout/dtype as ``aligned``, zero where not covered) and a
        boolean ``H x W`` mask (numpy or tensor, like ``aligned``) of the canvas pixels whose
        centre lies inside the quad.
        """
        if image_height_width(aligned) != (self.size, self.size):
            raise ValueError(f"expected a {self.size} x {self.size} crop, got {image_height_width(aligned)}")
        batch, how = _to_batch(aligned)
        work = batch if batch.dtype in (torch.float32, torch.float64) else batch.float()
        target = int(math.ceil(self.qsize))
        if antialias and target < self.size:
            work = F.interpolate(work, size=(target, target), mode="bilinear", align_corners=False, antialias=True)
        height, width = int(canvas_size[0]), int(canvas_size[1])
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        ab = self._normalised(np.stack([xs, ys], axis=-1))  # exactly grid_sample's normalised coordinates
        valid = np.all(np.abs(ab) <= 1.0, axis=-1)
        grid = torch.as_tensor(ab, dtype=work.dtype, device=work.device)[None].expand(work.shape[0], -1, -1, -1)
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mask_t = torch.as_tensor(valid, device=work.device)
        out = out * mask_t.to(out.dtype)
        canvas = _from_batch(out.to(batch.dtype), how)
        return canvas, (valid if how["kind"] == "numpy" else mask_t)

    # -- records --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"quad": [[x, y] x 4], "size": S}``."""
        return {"quad": self.quad.tolist(), "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AlignTransform":
        return cls(np.asarray(data["quad"], dtype=np.float64), int(data["size"]))


def align_face(image: ImageLike, landmarks5: np.ndarray, size: int, zoom: float = 1.0,
               **warp_options) -> tuple[ImageLike, AlignTransform]:
    """FFHQ-align one face: ``(aligned S x S crop, transform)``; ``warp_options`` go to :meth:`AlignTransform.warp`."""
    transform = AlignTransform.from_landmarks(landmarks5, size, zoom)
    return transform.warp(image, **warp_options), transform
