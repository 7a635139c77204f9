"""Random draws keyed by what they are for, never by when or where they happen.

An item's random numbers come from a generator seeded by ``(seed, item id)`` through sha256 (stable
across processes and platforms, unlike Python's ``hash``), so the item gets the same draw alone, in
any batch, on any rank and after any resume. Randomly initialised networks (the tiny test set) are
built under a seed keyed by ``(seed, network name)``, whatever ran before them.
"""
from __future__ import annotations

import hashlib
import inspect
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def stable_seed(seed: int, key: str) -> int:
    """A 63-bit seed from ``seed`` and a string key (sha256; the same in every process)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def item_generator(seed: int, key: str) -> torch.Generator:
    """A CPU ``torch.Generator`` of its own for one item (draw on the CPU, then move: device-independent)."""
    return torch.Generator().manual_seed(stable_seed(seed, key))


def content_key(tensor: torch.Tensor) -> str:
    """An item id from its content, for callers that have none (sha256 of the float32 values)."""
    return "content:" + hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def built_seeded(seed: int, name: str, build: Callable[[], T]) -> T:
    """``build()`` with torch's global generator seeded by ``(seed, name)``; the caller's state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, f"network/{name}"))
        return build()


def takes_ids(fn) -> bool:
    """Whether ``fn`` (a module's forward or any callable) accepts an ``ids`` keyword."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        return "ids" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
