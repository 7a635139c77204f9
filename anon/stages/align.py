"""Stage ``align``: detect the face in each image and crop it FFHQ-style (optional, before invert).

Writes ``aligned/<id>.png`` and, per rank, ``alignment.rank<r>.jsonl``: one record per image with its
status (``aligned`` | ``unaligned`` | ``skipped`` | ``failed``), the reason, the face size and the
similarity transform (so the face can be pasted back). Faces that cannot be aligned follow the
configured policy (``skip`` or ``unaligned``: centre crop, as FALCO does). ``fallback`` names policy
and threshold together: ``unaligned_512`` is FALCO's (no face, or an FFHQ quad under 512 px: the
unaligned image, resized); ``unaligned_32`` is this project's default. Per-item cache.
"""
from __future__ import annotations

from pathlib import Path

from anon.data.align_policy import AlignmentPolicy, align_with_policy
from anon.data.images import degenerate, load_rgb
from anon.errors import ConfigError
from anon.runtime.manifest import ManifestWriter, latest_by_id
from anon.runtime.outputs import save_png


def read_alignment(stage_dir: str | Path) -> dict[str, dict]:
    return latest_by_id(stage_dir, "alignment")


def best_face(detections):
    """Landmarks of the most confident detection (ties: the larger box), or None."""
    if not detections:
        return None
    box, prob, landmarks = max(detections, key=lambda d: (float(d[1]), (d[0][2] - d[0][0]) * (d[0][3] - d[0][1])))
    return landmarks


def parse_fallback(fallback: str) -> tuple[str, float]:
    """``"<policy>_<min face size px>"`` (e.g. ``unaligned_512``) -> ``(policy, min_face_size)``."""
    policy, _, pixels = str(fallback).rpartition("_")
    try:
        return AlignmentPolicy(policy).value, float(pixels)
    except ValueError:
        choices = ", ".join(f"{p.value}_<px>" for p in AlignmentPolicy)
        raise ConfigError(f"align.fallback={fallback!r}: expected one of {choices} (e.g. unaligned_512)") from None


def run_align(detector, images: dict[str, Path], stage_dir: str | Path, size: int = 256, policy: str = "unaligned",
              min_face_size: float = 32, zoom: float = 1.0, rank: int = 0, world: int = 1,
              fallback: str | None = None) -> dict[str, Path]:
    """Align ``images`` (``{id: path}``); returns ``{id: aligned path}`` for every image that has a crop.

    ``fallback`` (e.g. ``unaligned_512``, FALCO's), when given, replaces ``policy`` and ``min_face_size``.
    """
    if fallback is not None:
        policy, min_face_size = parse_fallback(fallback)
    stage_dir = Path(stage_dir)
    done = read_alignment(stage_dir)
    writer = ManifestWriter(stage_dir, rank, prefix="alignment")
    for image_id in sorted(images)[rank::world]:
        if image_id in done:
            continue
        source = images[image_id]
        record = {"id": image_id, "source": str(source)}
        try:
            pixels = load_rgb(source)
        except Exception as err:
            writer.append([{**record, "status": "failed", "reason": f"unreadable image: {type(err).__name__}: {err}"}])
            continue
        face = best_face(detector.detect(pixels))
        blank = degenerate(pixels) if face is None else None
        if blank:  # no face could be searched: not a faceless image to crop and "anonymise"
            writer.append([{**record, "status": "failed", "reason": blank}])
            continue
        crop, outcome = align_with_policy(pixels, face, size, policy, min_face_size, zoom)
        if crop is not None:
            save_png(crop, stage_dir / "aligned" / f"{image_id}.png")
        writer.append([{**record, **outcome.to_dict()}])
    records = read_alignment(stage_dir)
    return {i: stage_dir / "aligned" / f"{i}.png" for i in sorted(images)
            if records.get(i, {}).get("status") in ("aligned", "unaligned")}
