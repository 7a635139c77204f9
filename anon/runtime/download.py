"""HTTP download of one file: resumable, checksummed, atomic; and tar-member extraction.

Only the standard library is used for the transfer (``urllib``); ``tqdm`` draws the progress
bar when it is installed, otherwise a plain text line is printed to stderr.

How a file is fetched (``fetch_url``):

* bytes go to ``<dest>.part``; if that file already exists the request carries
  ``Range: bytes=<size>-`` and a ``206`` answer is appended to it (a ``200`` answer means the
  server ignored the range: the part file is rewritten from the start);
* a transfer cut short is retried (resumed) ``retries`` times, then the next mirror URL is
  tried; the ``.part`` file is kept so that running the command again resumes it;
* when the bytes are complete, their sha256 is computed and compared with the expected sum
  (when one is known); on a mismatch both ``<dest>.part`` and ``<dest>`` are deleted and
  ``ChecksumError`` names the expected and the actual sum;
* only a verified file is renamed to ``dest`` (``os.replace``, atomic on one file system).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from anon.errors import AnonError

CHUNK = 1 << 20  # bytes per read / write
USER_AGENT = "anon-weights/0.1 (python urllib)"


class DownloadError(AnonError):
    """A file could not be fetched (every URL failed, or the transfer was cut short)."""


class ChecksumError(DownloadError):
    """The bytes received do not have the expected sha256 (nothing is left in the cache)."""


class _Incomplete(Exception):
    """The server closed the connection before the announced length: resumable."""


def sha256_file(path: str | Path) -> str:
    """Lower-case hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- progress
class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _TextBar:
    """Fallback progress line on stderr when tqdm is not installed."""

    def __init__(self, total: int | None, initial: int, desc: str):
        self.total, self.done, self.desc, self._last = total, initial, desc, -1

    def update(self, n: int) -> None:
        self.done += n
        mib = self.done >> 20
        if self.total:
            pct = 100 * self.done // self.total
            if pct != self._last:
                self._last = pct
                sys.stderr.write(f"\r{self.desc}: {pct:3d}% ({mib} MiB)")
        elif mib // 16 != self._last:
            self._last = mib // 16
            sys.stderr.write(f"\r{self.desc}: {mib} MiB")

    def close(self) -> None:
        sys.stderr.write("\n")


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=False)


# ----------------------------------------------------------------------------- transfer
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    # A fresh opener per request: it reads the proxy settings (and no_proxy) of this moment.
    return urllib.request.build_opener().open(req, timeout=timeout)


def _transfer(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (create it if absent). Raises on failure."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # Range not satisfiable: the part file is already complete, or longer than the file.
        m = re.search(r"/(\d+)", err.headers.get("Content-Range", "") or "")
        err.close()
        if m and int(m.group(1)) == offset:
            return
        part.unlink()
        offset = 0
        resp = _open(url, 0, timeout)
    with resp:
        mode = "wb"
        if offset and resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != offset:
                part.unlink()
                raise _Incomplete(f"server answered an unexpected range {resp.headers.get('Content-Range')!r}")
            mode = "ab"
        else:
            offset = 0  # a 200 answer: the whole file again
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        got = offset
        bar = _progress_bar(total, offset, part.name.removesuffix(".part"), progress)
        try:
            with open(part, mode) as f:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if total is not None and got < total:
        raise _Incomplete(f"connection closed after {got} of {total} bytes")


def fetch_url(urls: Sequence[str], dest: str | Path, *, sha256: str | None = None,
              size: int | None = None, retries: int = 2, fresh: bool = False,
              progress: bool = True, timeout: float = 60.0) -> str:
    """Download the file served at ``urls`` (mirrors of identical bytes, tried in order) to ``dest``.

    Args:
        sha256: expected lower-case hex sum, or None when unknown (the file is then kept as is).
        size: expected size in bytes, or None when unknown.
        retries: how many times a cut-short transfer is resumed from the same URL.
        fresh: delete a leftover ``<dest>.part`` first instead of resuming it.

    Returns:
        the sha256 computed over the received bytes.

    Raises:
        ChecksumError: the bytes do not match ``sha256`` or ``size`` (``dest`` and the part file
            are deleted).
        DownloadError: no URL gave the whole file (the part file is kept for a resume).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if fresh:
        part.unlink(missing_ok=True)
    failures: list[str] = []
    for url in urls:
        if _try_url(url, part, retries, failures, timeout=timeout, progress=progress):
            return _verify_and_commit(part, dest, sha256, size)
    kept = f"; the partial file {part} is kept: run the command again to resume" if part.exists() else ""
    raise DownloadError(f"could not download {dest.name} ({'; '.join(dict.fromkeys(failures)) or 'no URL'}){kept}")


def _try_url(url: str, part: Path, retries: int, failures: list[str], *, timeout: float,
             progress: bool) -> bool:
    """Up to ``1 + retries`` resumed transfers from one URL; True once the bytes are complete."""
    for _ in range(retries + 1):
        try:
            _transfer(url, part, timeout=timeout, progress=progress)
            return True
        except urllib.error.HTTPError as err:  # 404, 403, ...: another attempt will not help
            failures.append(f"{url}: HTTP {err.code} {err.reason}")
            err.close()
            return False
        except (_Incomplete, urllib.error.URLError, http.client.HTTPException, OSError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
    return False


def _verify_and_commit(part: Path, dest: Path, sha256: str | None, size: int | None) -> str:
    actual = sha256_file(part)
    n = part.stat().st_size
    problem = None
    if sha256 is not None and actual != sha256.lower():
        problem = f"sha256 mismatch for {dest.name}: expected {sha256.lower()}, got {actual}"
    elif size is not None and n != size:
        problem = f"size mismatch for {dest.name}: expected {size} bytes, got {n}"
    if problem:
        part.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        raise ChecksumError(f"{problem} (the download was deleted; the server or a mirror sent "
                            "different bytes, or the checksum pinned for it is wrong)")
    os.replace(part, dest)
    return actual


# ----------------------------------------------------------------------------- archives
def _norm(member: str) -> str:
    return member.replace("\\", "/").lstrip("/").removeprefix("./")


def extract_members(archive: str | Path, wanted: Mapping[str, str | Path]) -> None:
    """Copy the regular-file members ``wanted`` (member path -> destination) out of a tar archive.

    Member paths are matched after dropping a leading ``./``; if no exact match exists, a unique
    member with the same base name is used. Each file is written to ``<dest>.part`` and renamed,
    so a destination is either complete or absent. Nothing else is extracted (no ``extractall``,
    so no path in the archive can write outside the destinations).
    """
    archive = Path(archive)
    with tarfile.open(archive, "r:*") as tar:
        files = {_norm(m.name): m for m in tar.getmembers() if m.isfile()}
        for member, dest in wanted.items():
            info = files.get(_norm(member))
            if info is None:
                base = _norm(member).rsplit("/", 1)[-1]
                same = [m for n, m in files.items() if n.rsplit("/", 1)[-1] == base]
                if len(same) != 1:
                    raise DownloadError(f"{archive.name} has no member {member!r} "
                                        f"(it holds: {', '.join(sorted(files)) or 'no files'})")
                info = same[0]
            dest = Path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            src = tar.extractfile(info)
            assert src is not None  # regular files always have a stream
            with src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f, CHUNK)
            os.replace(tmp, dest)
