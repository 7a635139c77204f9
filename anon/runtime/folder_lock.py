"""One writer per output folder: an exclusive ``flock`` on ``<folder>/.anon.lock``.

A second ``anon anonymize`` (or ``anon photos``) on the same folder is refused with a one-line error
instead of doing every image again beside the first. The kernel drops the lock when its holder exits,
however it exits (kill -9 included), so a lock file left by a dead process never blocks a rerun; the
file records the holder's pid and host to name it in the error, and a clean exit removes it. DDP ranks
forked by the holder share its lock.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from anon.errors import AnonError

LOCK_NAME = ".anon.lock"


class FolderInUseError(AnonError):
    """Another live process holds the folder's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> str:
    try:
        fields = dict(part.split("=", 1) for part in path.read_text().split() if "=" in part)
    except OSError:
        return "another process"
    pid, host = fields.get("pid", "?"), fields.get("host", "?")
    text = f"pid {pid} on {host}"
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        text += " (gone; processes it started still hold the lock)"
    return text


def _same_file(fh, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


class FolderLock:
    """Context manager: holds the folder's lock, or raises :class:`FolderInUseError`."""

    def __init__(self, folder: str | Path, what: str = "run folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fh = None

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fh = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                raise FolderInUseError(
                    f"{self.what} {self.folder} is in use by another anon process ({_holder(self.path)}); "
                    f"wait for it to finish or stop it, then run the same command to resume") from None
            if _same_file(fh, self.path):
                break
            fh.close()  # the holder removed the file as we opened it: lock the new one
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid={os.getpid()} host={socket.gethostname()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Remove the lock file, then unlock (a clean exit leaves no file; kill -9 leaves one, unlocked)."""
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
