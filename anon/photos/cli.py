"""``anon photos input=DIR output=DIR``: a folder of photographs anonymised into another (conf/photos.yaml).

Files (:func:`read_photo`, :func:`write_photo`):

* EXIF orientation is applied on reading; every output is stored upright.
* The output keeps the photo's size, relative path, name and format: JPEG (also MPO, a phone's
  multi-picture JPEG) stays JPEG -- re-encoded at ``files.jpeg_quality`` (95) with 4:4:4 chroma --,
  PNG stays PNG (lossless, same mode; alpha kept). Other formats are written as lossless PNG named
  ``<name>.<ext>.png``.
* Metadata: with ``files.strip_metadata`` (default) EXIF (GPS, camera serials, thumbnail), XMP,
  IPTC/Photoshop blocks, comments and PNG text chunks are dropped; the ICC colour profile is kept
  unless ``files.keep_icc=false``. With ``strip_metadata=false`` EXIF is kept, less its orientation
  (the pixels are upright now) and its thumbnail (which would show the original faces).
* A photo whose pixels need no change (no face, or every face left by the policy) and that is already
  upright is passed through bit for bit: a PNG is rewritten losslessly, a JPEG has its metadata segments
  cut out of the file (:func:`strip_jpeg_metadata`; the compressed image data is not touched, which is
  verified by decoding both).

``<output>/manifest.jsonl`` gets one line per photo (appended and fsynced as each photo is written):
source, output, status (``done`` | ``no_face`` | ``failed``), size, format, faces (box, probability,
face size, status, policy, alignment transform, and FALCO's pairing / identity facts), metadata
stripped, whether the file was re-encoded, seconds. A second run skips photos already recorded
(``files.overwrite=true`` redoes them). Every image-suffixed entry is a record: an unreadable file
(a symlink loop, a dangling link), a blank frame where no face can be searched, and a photo whose
output name another photo took (``x.webp`` -> ``x.webp.png`` beside a real ``x.webp.png``) are
``failed`` with an ``error`` and write nothing.
"""
from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps

from anon.atomic_write import write_atomically
from anon.data.images import is_image_entry, merge_image, split_image
from anon.errors import MissingDataError
from anon.runtime.folder_lock import FolderLock
from anon.runtime.manifest import append_jsonl
from anon.photos.records import PhotoResult
from anon.photos.anonymizer import Anonymizer
from anon.runtime.run import CONFIG_DIR, one_line_errors

MANIFEST = "manifest.jsonl"
JPEG_FORMATS = {"JPEG", "MPO"}
ORIENTATION, GPS_IFD = 0x0112, 0x8825
#: ``Image.info`` keys that describe how pixels are coded, not who or where: not reported as stripped.
TECHNICAL_INFO = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "progressive", "progression",
                  "adobe", "adobe_transform", "transparency", "gamma", "srgb", "chromaticity", "interlace",
                  "aspect", "compression", "mp", "mpoffset", "loop", "duration", "background"}


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Photo:
    """A decoded photo: ``rgb`` H x W x 3 uint8 (upright), alpha/mode to rebuild it, and its file facts."""

    path: Path
    rgb: np.ndarray
    alpha: Image.Image | None
    mode: str
    format: str
    orientation: int
    upright_source: Image.Image = field(repr=False)
    icc_profile: bytes | None = None
    exif: Image.Exif | None = None
    metadata: list[str] = field(default_factory=list)
    gps: bool = False


def read_photo(path: str | Path) -> Photo:
    """Decode ``path`` with EXIF orientation applied; raises ``OSError`` / ``ValueError`` if unreadable."""
    path = Path(path)
    with Image.open(path) as image:
        image.load()
        exif = image.getexif()
        try:
            orientation = int(exif.get(ORIENTATION, 1) or 1)
        except (TypeError, ValueError):
            orientation = 1  # unreadable tag: exif_transpose ignores it too
        gps = bool(exif.get_ifd(GPS_IFD)) if exif else False
        info_keys = sorted(str(k) for k in image.info if str(k).lower() not in TECHNICAL_INFO)
        icc = image.info.get("icc_profile")
        fmt = image.format or "PNG"
        upright = ImageOps.exif_transpose(image)
    rgb, alpha, mode = split_image(upright)
    return Photo(path, rgb, alpha, mode, fmt, orientation, upright, icc, exif if len(exif) else None, info_keys, gps)


# ---------------------------------------------------------------------------------------------- JPEG metadata
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0..7: markers without a length
#: Names (as Pillow's ``Image.info`` keys, where it has one) of the metadata segments a JPEG may carry.
_APP_NAMES = {(0xE1, b"Exif\x00"): "exif", (0xE1, b"http://ns.adobe.com/xap/1.0/"): "xmp",
              (0xE1, b"http://ns.adobe.com/xmp/extension/"): "xmp", (0xED, b"Photoshop 3.0"): "photoshop",
              (0xE2, b"MPF"): "mpf", (0xE0, b"JFXX"): "JFIF thumbnail"}


def _jpeg_segment_kept(marker: int, payload: bytes, keep_icc: bool) -> tuple[bool, bytes | None, str | None]:
    """``(keep, replacement payload or None, name of what is dropped)`` for one marker segment."""
    if marker == 0xE0 and payload.startswith(b"JFIF\x00"):
        if len(payload) >= 14 and (payload[12] or payload[13]):
            return True, payload[:12] + b"\x00\x00", "JFIF thumbnail"  # density kept, thumbnail dropped
        return True, None, None
    if marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
        return keep_icc, None, None if keep_icc else "icc_profile"
    if marker == 0xEE and payload.startswith(b"Adobe"):
        return True, None, None  # colour-transform flag the decoder needs
    if 0xE0 <= marker <= 0xEF:
        for (app, prefix), name in _APP_NAMES.items():
            if marker == app and payload.startswith(prefix):
                return False, None, name
        tag = payload[:payload.find(b"\x00")] if b"\x00" in payload[:40] else payload[:8]
        return False, None, f"APP{marker - 0xE0}:{tag.decode('latin-1', 'replace')}"
    if marker == 0xFE:
        return False, None, "comment"
    return True, None, None


def strip_jpeg_metadata(data: bytes, keep_icc: bool = True) -> tuple[bytes, list[str]]:
    """Cut the metadata segments out of a JPEG file without touching its compressed image data.

    Dropped: every APPn segment (EXIF, XMP, IPTC/Photoshop, maker notes, MPF, JFXX thumbnails) but
    JFIF (its thumbnail removed), ICC profiles (when ``keep_icc``) and Adobe's colour-transform
    segment; comments; anything after the end-of-image marker (an MPO's further pictures).
    Returns ``(new bytes, names of what was dropped)``; raises ``ValueError`` on a malformed file.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    out, dropped, i, n = bytearray(b"\xff\xd8"), [], 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            raise ValueError(f"malformed JPEG: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # EOI
            if i + 2 < n:
                dropped.append("data after the image")
            out += b"\xff\xd9"
            return bytes(out), dropped
        if marker in _STANDALONE:
            out += data[i:i + 2]
            i += 2
            continue
        if i + 4 > n:
            raise ValueError("malformed JPEG: truncated segment")
        length = int.from_bytes(data[i + 2:i + 4], "big")
        end = i + 2 + length
        if length < 2 or end > n:
            raise ValueError("malformed JPEG: bad segment length")
        keep, replacement, name = _jpeg_segment_kept(marker, data[i + 4:end], keep_icc)
        if name:
            dropped.append(name)
        if keep:
            payload = data[i + 4:end] if replacement is None else replacement
            out += bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
        i = end
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next marker that is not RSTn or a stuffed 0xFF00
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise ValueError("malformed JPEG: no end-of-image marker")
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    j += 2
                elif nxt == 0xFF:
                    j += 1
                else:
                    break
            out += data[i:j]
            i = j
    raise ValueError("malformed JPEG: no end-of-image marker")


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


# ---------------------------------------------------------------------------------------------- writing
def output_name(relative: Path, fmt: str) -> Path:
    """Output path (relative) of an input: same name for JPEG / PNG, ``<name>.png`` appended otherwise."""
    if fmt in JPEG_FORMATS or fmt == "PNG":
        return relative
    return relative.with_name(relative.name + ".png")


def _clean_exif(exif: Image.Exif) -> bytes:
    """EXIF without orientation (pixels are upright) and without the thumbnail (IFD1, not written)."""
    exif.pop(ORIENTATION, None)  # Pillow writes IFD0 and its sub-IFDs (Exif, GPS), never IFD1
    return exif.tobytes()


def write_photo(photo: Photo, result: PhotoResult, path: Path, jpeg_quality: int = 95, strip_metadata: bool = True,
                keep_icc: bool = True) -> dict[str, Any]:
    """Write ``result`` for ``photo`` to ``path`` (atomically); returns the manifest's file facts."""
    jpeg = photo.format in JPEG_FORMATS
    unchanged = not result.changed
    facts: dict[str, Any] = {"format": "JPEG" if jpeg else "PNG", "pixels_unchanged": unchanged}
    kept = ({"icc_profile"} if keep_icc else set()) | (set() if strip_metadata else {"exif"})
    stripped = [k for k in photo.metadata if k not in kept]
    if unchanged and photo.orientation == 1 and jpeg:
        data = photo.path.read_bytes()
        if strip_metadata:
            try:
                new, dropped = strip_jpeg_metadata(data, keep_icc)
                if not np.array_equal(_decoded(new), _decoded(data)):
                    raise ValueError("stripped file decodes differently")
                data, stripped = new, sorted(set(dropped))
            except Exception:
                data = None  # fall through to re-encoding
        if data is not None:
            write_atomically(path, lambda tmp: tmp.write_bytes(data))
            return {**facts, "reencoded": False, "metadata_stripped": stripped}
    icc = photo.icc_profile if keep_icc else None
    if unchanged and not jpeg:
        image = photo.upright_source  # the decoded pixels in their own mode: bit for bit
    else:
        image = merge_image(result.image, photo.alpha, photo.mode)
    # Everything explicit: Pillow would otherwise copy an ICC profile (PNG) or a comment (JPEG) from image.info.
    options: dict[str, Any] = {"icc_profile": icc if icc and image.mode == photo.upright_source.mode else None,
                               "exif": b"" if strip_metadata or photo.exif is None else _clean_exif(photo.exif)}
    if jpeg:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
            options["icc_profile"] = None
        write_atomically(path, lambda tmp: image.save(tmp, format="JPEG", quality=int(jpeg_quality), subsampling=0,
                                                      optimize=True, comment=b"", **options))
    else:
        write_atomically(path, lambda tmp: image.save(tmp, format="PNG", **options))
    return {**facts, "reencoded": True, "metadata_stripped": stripped}


# ---------------------------------------------------------------------------------------------- a folder
def list_photos(root: Path, exclude: Path | None = None) -> dict[Path, Path]:
    """``{relative path: path}`` of the image files under ``root`` (or ``root`` itself), sorted."""
    if root.is_file():
        return {Path(root.name): root}
    found = {}
    for path in sorted(root.rglob("*")):
        if not is_image_entry(path):  # a symlink loop or dangling link is kept: it gets a failed record
            continue
        try:
            if exclude is not None and exclude in path.resolve().parents:
                continue  # the output folder inside the input folder
        except (OSError, RuntimeError):  # a symlink loop cannot be resolved
            pass
        found[path.relative_to(root)] = path
    return found


def recorded_sources(output: Path) -> set[str]:
    """Sources already in ``output/manifest.jsonl`` (a torn last line is ignored)."""
    done = set()
    path = output / MANIFEST
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                done.add(json.loads(line)["source"])
            except (json.JSONDecodeError, KeyError):
                continue
    return done


def recorded_outputs(output: Path) -> dict[str, str]:
    """``{output name: source}`` of the photos already written into ``output`` (manifest lines)."""
    owners = {}
    path = output / MANIFEST
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("output"):
                owners[record["output"]] = record.get("source")
    return owners


def _append(path: Path, record: dict) -> None:
    append_jsonl(path, [record])  # fsynced; a line torn by a crash is cut off first


def anonymize_folder(anonymizer: Anonymizer, input: str | Path, output: str | Path, jpeg_quality: int = 95,
                     strip_metadata: bool = True, keep_icc: bool = True, overwrite: bool = False) -> dict:
    """Anonymise every photo under ``input`` into ``output`` (module docstring); returns counts."""
    root, output = Path(input), Path(output)
    if not root.exists():
        raise MissingDataError(root, "input photo or folder", "set input=PATH")
    output.mkdir(parents=True, exist_ok=True)
    manifest = output / MANIFEST
    photos = list_photos(root, exclude=output.resolve() if root.is_dir() else None)
    skip = set() if overwrite else recorded_sources(output)
    todo = [(rel, path) for rel, path in photos.items() if str(path) not in skip]
    counts = {"photos": len(photos), "skipped": len(photos) - len(todo), "done": 0, "no_face": 0, "failed": 0,
              "faces": 0, "faces_anonymised": 0}
    decoded: dict[Path, Photo] = {}

    def readable():
        for rel, path in todo:
            try:
                photo = read_photo(path)
            except Exception as err:
                counts["failed"] += 1
                _append(manifest, {"source": str(path), "output": None, "status": "failed",
                                   "error": f"unreadable image: {type(err).__name__}: {err}"})
                print(f"[anon] skipped {path}: {type(err).__name__}: {err}", flush=True)
                continue
            decoded[rel] = photo
            yield rel, photo.rgb

    claimed = {} if overwrite else recorded_outputs(output)  # output name -> the source written there
    for rel, result in anonymizer.process_many(readable()):
        photo = decoded.pop(rel)
        out_rel = output_name(rel, photo.format)
        owner = claimed.setdefault(out_rel.as_posix(), str(photo.path))
        if owner != str(photo.path):  # e.g. x.webp -> x.webp.png beside a real x.webp.png
            counts["failed"] += 1
            _append(manifest, {"source": str(photo.path), "output": None, "status": "failed",
                               "error": f"output name {out_rel.as_posix()} is already taken by {owner}"})
            continue
        record = {"source": str(photo.path), "output": out_rel.as_posix(), "status": result.status,
                  "size": [int(result.image.shape[1]), int(result.image.shape[0])], "source_format": photo.format,
                  "orientation": photo.orientation, "exif_gps": photo.gps,
                  "faces": [f.record() for f in result.faces], "seconds": round(result.seconds, 3)}
        try:
            if result.status == "failed":  # nothing written: an unsearched photo must not pass through
                record.update(output=None, error=result.error)
            else:
                record.update(write_photo(photo, result, output / out_rel, jpeg_quality, strip_metadata, keep_icc))
        except Exception as err:
            record.update(status="failed", error=f"cannot write: {type(err).__name__}: {err}")
        counts[record["status"]] += 1
        counts["faces"] += len(result.faces)
        counts["faces_anonymised"] += sum(f.policy == "anonymised" for f in result.faces)
        _append(manifest, record)
    return counts


def run_photos(cfg: DictConfig) -> dict:
    """The ``photos`` command: build the anonymiser from ``cfg`` and run it over ``cfg.input``."""
    started = time.perf_counter()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    keys = ["input", "output", "seed", "device", "threads", "photos", "files", "detector", "generator", "identity",
            "attribute", "inverter", "latent", "loss", "optim", "scheduler", "module", "fakes", "align"]
    resolved = {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
                for k in keys if k in cfg}
    with FolderLock(output, "output folder"):  # a second `anon photos` on this folder is refused
        (output / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        anonymizer = Anonymizer.from_config(cfg)
        f = cfg.files
        counts = anonymize_folder(anonymizer, cfg.input, output, f.jpeg_quality, f.strip_metadata, f.keep_icc,
                                  f.overwrite)
    wall = time.perf_counter() - started
    print(f"[anon] photos: {counts['done']} with faces ({counts['faces_anonymised']} of {counts['faces']} faces "
          f"anonymised), {counts['no_face']} without, {counts['failed']} failed, {counts['skipped']} already done; "
          f"{wall:.0f} s; outputs and {MANIFEST} in {output}", flush=True)
    print(f"[anon] photos: faces generated at {anonymizer.generated_px} px and upsampled to their size in the "
          f"photo (mask: {anonymizer.mask_shape}); a face much larger than that looks blurred", flush=True)
    return {**counts, "wall_s": wall, "generated_px": anonymizer.generated_px}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="photos")
def photos_entry(cfg: DictConfig) -> None:
    with one_line_errors():
        run_photos(cfg)


if __name__ == "__main__":
    sys.exit(photos_entry())
