"""Run folders named by what produced them: ``<dataset>-<hash of the result-affecting config>``.

The same config always maps to the same folder, so re-running a command resumes it, and changing a
loss weight gives a new folder -- without spelling hyper-parameters out in folder names (the run
folder keeps its resolved ``config.yaml``).
"""
from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, ListConfig, OmegaConf

# Keys that change how fast or how verbosely a run goes, never its per-image results beyond float
# rounding (batch size, memory layout and compilation reorder sums; see tests/test_module.py).
NON_RESULT_KEYS = {"batch_size", "num_workers", "limit", "log_every", "log_images", "channels_last", "compile"}


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in NON_RESULT_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def config_hash(*nodes, length: int = 8) -> str:
    """Short sha256 of the given config nodes (resolved, with :data:`NON_RESULT_KEYS` removed)."""
    plain = [OmegaConf.to_container(n, resolve=True) if isinstance(n, (DictConfig, ListConfig)) else n for n in nodes]
    blob = json.dumps(_strip(plain), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", config_hash)
