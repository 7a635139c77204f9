"""FaRL ViT-B/16 attribute encoder: token features for the attribute loss, embeddings for pairing.

FaRL (Zheng et al., CVPR 2022) is a CLIP ViT-B/16 pre-trained on LAION-Face. Its released file
``FaRL-Base-Patch16-LAIONFace20M-ep64.pth`` is ``{"state_dict": <full CLIP ViT-B/16 state dict>}``;
only the image tower (the ``visual.*`` keys) is used here.

Image pipeline (input ``B x 3 x H x W``, any H, W):

1. resize the shorter side to R (= 224) with antialiased bilinear interpolation, keeping the
   aspect ratio, then centre-crop R x R;
2. value mapping, set by ``preprocess``:
   * ``"clip"`` (default): the input is taken to be in ``[-1, 1]``; map to ``[0, 1]`` and normalise
     with CLIP's mean/std;
   * ``"raw"``: feed the values as given (no range change, no normalisation). This is what FALCO's
     attribute loss does (its real images are in ``[0, 1]``, its generated ones roughly in
     ``[-1, 1]``); use it only to reproduce the official behaviour.
3. :meth:`FarlAttributes.forward` returns the outputs of the last transformer block before
   ``ln_post`` for all tokens, ``B x 197 x 768``; :meth:`FarlAttributes.embed` returns the
   L2-normalised 512-d ``encode_image`` embedding, always with CLIP normalisation (as FALCO's
   nearest-neighbour pairing does).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from anon.errors import CheckpointMismatchError
from anon.nets.checkpoint import key_mismatch, read_checkpoint
from anon.nets.frozen import FrozenNetwork
from anon.nets.resize import resize_center_crop
from anon.nets.vit import VisionTransformer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS_MODES = ("clip", "raw")

# FaRL was pre-trained with a masked-image-modelling head on the image tower (FaRL's
# ``VisualTransformer``: ``lm_transformer``, ``ln_lm``, ``lm_head``, ``mask_token``). CLIP's tower has
# no such modules; if a FaRL file carries them they are skipped. Any other unknown ``visual.*`` key
# is an error.
FARL_PRETRAINING_ONLY = ("visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.", "visual.mask_token")


def clip_visual_state_dict(ckpt: object, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The ``visual.*`` entries of a CLIP/FaRL checkpoint (keys keep their ``visual.`` prefix).

    Args:
        ckpt: ``{"state_dict": sd}`` (FaRL's format) or a bare full-CLIP state dict ``sd``.
    Raises:
        ValueError: no ``visual.*`` key (e.g. a file of another network, or a visual-only dict).
    """
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointMismatchError(f"{path}: expected a dict with a 'state_dict' entry, got {type(ckpt).__name__}")
    visual = {k: v for k, v in sd.items() if isinstance(k, str) and k.startswith("visual.")}
    if not visual:
        sample = ", ".join(list(map(str, sd))[:5])
        raise CheckpointMismatchError(f"{path}: no 'visual.*' key, so this is not a full CLIP/FaRL state dict "
                         f"(first keys: {sample})")
    return {k: v for k, v in visual.items() if not k.startswith(FARL_PRETRAINING_ONLY)}


#: Name of the official weights (``anon download farl_ep64``).
WEIGHTS_NAME = "farl_ep64"


class FarlAttributes(FrozenNetwork):
    """Attribute encoder: images -> FaRL ViT token features (``B x T x C``).

    Args:
        checkpoint: path to ``FaRL-Base-Patch16-LAIONFace20M-ep64.pth`` (or any full CLIP ViT state
            dict of the same shape); ``None`` keeps the random initialisation (tests, smoke runs).
        preprocess: ``"clip"`` (input in [-1, 1], CLIP normalisation) or ``"raw"`` (values as given,
            FALCO's loss behaviour). Affects :meth:`forward` only; :meth:`embed` always uses ``"clip"``.
        input_resolution, patch_size, width, layers, heads, output_dim: ViT shape (default ViT-B/16).
        frozen: disable parameter gradients and keep the network in eval mode even under
            ``.train()`` (gradients still reach the input).
        download_name: the ``anon download`` name given in the missing-file error.
    """

    weights = WEIGHTS_NAME

    def __init__(self, checkpoint: str | Path | None = None, preprocess: str = "clip", input_resolution: int = 224,
                 patch_size: int = 16, width: int = 768, layers: int = 12, heads: int = 12, output_dim: int = 512,
                 frozen: bool = True, download_name: str = WEIGHTS_NAME):
        super().__init__()
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}")
        self.preprocess = preprocess
        ckpt = None if checkpoint is None else read_checkpoint(checkpoint, download_name)  # fail fast
        self.visual = VisionTransformer(input_resolution, patch_size, width, layers, heads, output_dim)
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        if ckpt is not None:
            self.load_visual(ckpt, checkpoint)
        self.freeze(frozen)

    def load_visual(self, ckpt: object, path: str | Path = "<checkpoint>") -> None:
        """Load the ``visual.*`` tensors of ``ckpt`` strictly; text-tower keys are ignored.

        Raises:
            ValueError: no ``visual.*`` key, a ViT key missing, an unknown ``visual.*`` key, or a shape
                mismatch.
        """
        visual = clip_visual_state_dict(ckpt, path)
        own = self.state_dict()
        missing, unexpected, wrong = key_mismatch(own, visual)
        if missing or unexpected or wrong:
            details = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                       "shape mismatch " + str([(k, tuple(visual[k].shape), tuple(own[k].shape)) for k in wrong[:5]])
                       if wrong else ""]
            raise CheckpointMismatchError(f"{path}: image tower does not match this ViT "
                             f"({'; '.join(d for d in details if d)})")
        self.load_state_dict({k: v.float() for k, v in visual.items()}, strict=True)

    @property
    def num_tokens(self) -> int:
        """T: 1 CLS token plus the patch grid (197 for ViT-B/16 at 224)."""
        return self.visual.num_tokens

    @property
    def token_dim(self) -> int:
        """C: token width (768 for ViT-B/16)."""
        return self.visual.width

    @property
    def embedding_dim(self) -> int:
        """Size of :meth:`embed`'s output (512 for ViT-B/16)."""
        return self.visual.output_dim

    def _clip_normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1] -> ``(x - mean) / std`` per channel."""
        return ((x + 1.0) / 2.0 - self.clip_mean.to(x.dtype)) / self.clip_std.to(x.dtype)

    def prepare(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """``B x 3 x H x W`` images -> ``B x 3 x R x R`` network input (resize, crop, value mapping).

        ``mode`` defaults to ``self.preprocess``.
        """
        mode = self.preprocess if mode is None else mode
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}")
        x = resize_center_crop(x, self.visual.input_resolution)
        return self._clip_normalise(x) if mode == "clip" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token features for the attribute loss.

        Args:
            x: ``B x 3 x H x W`` images, in ``[-1, 1]`` for ``preprocess="clip"``.
        Returns:
            ``B x T x C`` outputs of the last block before ``ln_post`` (``B x 197 x 768`` for ViT-B/16).
        """
        return self.visual.tokens(self.prepare(x))

    def embed(self, x: torch.Tensor, values: str = "minus_one_one") -> torch.Tensor:
        """Embedding for nearest-neighbour pairing.

        Args:
            x: ``B x 3 x H x W`` images in ``[-1, 1]`` (always CLIP-normalised, whatever ``preprocess``).
            values: ``minus_one_one`` maps ``x`` to [0, 1] before the CLIP normalisation;
                ``as_given`` normalises the values as they are (the official pairing, which feeds reals
                in [0, 1] and fakes in [-1, 1]; FALCO.md section 9.2).
        Returns:
            ``B x output_dim`` L2-normalised ``encode_image`` embeddings (cosine = dot product).
        """
        if values == "as_given":
            x = resize_center_crop(x, self.visual.input_resolution)
            x = (x - self.clip_mean.to(x.dtype)) / self.clip_std.to(x.dtype)
            return F.normalize(self.visual.embed(x), dim=-1)
        if values != "minus_one_one":
            raise ValueError(f"values must be minus_one_one or as_given, not {values!r}")
        return F.normalize(self.visual.embed(self.prepare(x, "clip")), dim=-1)

