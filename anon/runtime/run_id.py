"""Run folders named by what produced them: ``<dataset>-<hash of the result-affecting config>``.

The same config always maps to the same folder, so re-running a command resumes it, and changing a
loss weight gives a new folder -- without spelling hyper-parameters out in folder names (the run
folder keeps its resolved ``config.yaml``).

The hash never sees where things happen to lie on this machine (:func:`machine_free`): a checkpoint
counts by its registry name and sha256 (a file outside the registry by its name and sha256), an image
folder by its content (:func:`folder_key`, the ``${folder_key:...}`` resolver: sorted relative names
and sizes, listed once per composed config; a ``dataset`` node's own ``images`` path is left out of
the hash, which gets the folder's key as a term of its own), the stage folders of codes
by their last three components (``invert/<hash>/codes``) and small side files (split lists,
attributes) by their sha256. Copying the data to another mount or the weights to another ``HOME``
resumes the same run; adding, removing or resizing an image starts a new one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from anon.runtime.moved_modules import hashed_target

# Keys that change how fast or how verbosely a run goes, never its per-image results beyond float
# rounding (batch size, memory layout and compilation reorder sums; see tests/test_module.py).
NON_RESULT_KEYS = {"batch_size", "num_workers", "limit", "log_every", "log_images", "channels_last", "compile"}
#: Keys whose values are paths, by what they name.
WEIGHT_KEYS = {"checkpoint", "path"}
IMAGE_FOLDER_KEYS = {"images"}
CODE_KEYS = {"inversions", "neighbours", "pairs"}
SIDE_FILE_KEYS = {"attributes", "mapping", "partition", "identities", "verification_pairs"}


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_key(path: str) -> str:
    """``<name>:<sha256>`` of an existing file (memoised per size and mtime), else ``missing:<name>``."""
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except OSError:
        return f"missing:{p.name}"
    return f"{p.name}:{_file_sha256(str(p.resolve()), stat.st_size, stat.st_mtime_ns)[:16]}"


def weights_key(value: str) -> str:
    """A checkpoint path -> ``weights:<registry name>:<sha256>``; ``pkg://`` paths stay as they are."""
    if not isinstance(value, str) or value.startswith("pkg://"):
        return value
    from anon.lite.npm import LITE
    from anon.runtime.weights import REGISTRY

    posix = value.replace(os.sep, "/")
    for entry in [*REGISTRY.values(), *LITE.values()]:
        if posix == entry.filename or posix.endswith("/" + entry.filename):
            return f"weights:{entry.name}:{entry.sha256 or 'unpinned'}"
    return "file:" + file_key(value)


def folder_key(path: str) -> str:
    """The content of an image folder: ``images:<count>:<sha256 of its sorted relative names and sizes>``."""
    from anon.data.images import list_images

    root = Path(path).expanduser()
    if not root.is_dir():
        return f"missing-folder:{root.name}"
    lines = []
    for file in list_images(root).values():
        try:
            size = file.stat().st_size
        except OSError:  # a symlink loop or a dangling link: still part of the set
            size = -1
        lines.append(f"{file.relative_to(root).as_posix()}\t{size}\n")
    return f"images:{len(lines)}:{hashlib.sha256(''.join(lines).encode()).hexdigest()[:16]}"


def _tail(path: str, parts: int = 3) -> str:
    return "/".join(Path(path).parts[-parts:])


def machine_free(key: str | None, value):
    """``value`` of config key ``key`` with machine-specific paths replaced by what they name."""
    if key == "_target_" and isinstance(value, str):  # moved code keeps its run folders
        return hashed_target(value)
    if not isinstance(value, str) or value in ("", "???"):
        return value
    if key in WEIGHT_KEYS:
        return weights_key(value)
    if key in IMAGE_FOLDER_KEYS:  # the folder's content enters through a ${folder_key:...} term of the hash
        return "<image folder>"
    if key in CODE_KEYS:
        return _tail(value)
    if key in SIDE_FILE_KEYS:
        return file_key(value)
    return value


def _strip(value, key: str | None = None):
    if isinstance(value, dict):
        return {k: _strip(v, k) for k, v in value.items() if k not in NON_RESULT_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return machine_free(key, value)


def config_hash(*nodes, length: int = 8) -> str:
    """Short sha256 of the given config nodes (resolved, with :data:`NON_RESULT_KEYS` removed and paths
    made machine-free, see the module docstring)."""
    plain = [OmegaConf.to_container(n, resolve=True) if isinstance(n, (DictConfig, ListConfig)) else n for n in nodes]
    blob = json.dumps(_strip(plain), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", config_hash)
    if not OmegaConf.has_resolver("effective_module"):  # module.precision as trainer.precision makes it
        from anon.fit.precision import effective_module

        OmegaConf.register_new_resolver("effective_module", effective_module)
    if not OmegaConf.has_resolver("folder_key"):  # an image folder by content, listed once per config
        OmegaConf.register_new_resolver("folder_key", folder_key, use_cache=True)
