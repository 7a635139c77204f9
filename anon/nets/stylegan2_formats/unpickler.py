"""A pickle reader for NVIDIA network pickles that never imports or runs the pickled code.

:class:`RestrictedUnpickler` resolves only the globals that rebuild tensors; the ``torch_utils`` /
``dnnlib`` objects of NVIDIA's code become inert :class:`PickledRecord` trees holding what the pickle says.
"""
from __future__ import annotations

import collections
import io
import pickle
from typing import Any

import torch

from anon.nets.stylegan2_formats.common import StyleGAN2CheckpointError, UnsafePickleError


class PickledRecord:
    """Inert stand-in for a pickled object of the NVIDIA code: it only keeps what the pickle says.

    ``class_name`` (the persistent class's name), ``state`` (its ``__dict__``: ``_parameters``,
    ``_buffers``, ``_modules``, plain attributes, ``_init_args``, ``_init_kwargs``), ``args`` (for
    non-persistent globals called by the pickle). The pickled module source is dropped, never run.
    """

    def __init__(self, class_name: str, state: dict | None = None, args: tuple = ()):
        self.class_name, self.state, self.args = class_name, dict(state or {}), args

    def __setstate__(self, state):
        self.state = dict(state) if isinstance(state, dict) else {"__state__": state}

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def __repr__(self):
        return f"<inert {self.class_name}>"


class _InertDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): data only."""


def _inert_global(module: str, name: str) -> type:
    """An inert class standing for ``module.name``: calling it or setting its state just records."""

    def __init__(self, *args, **kwargs):
        PickledRecord.__init__(self, f"{module}.{name}", kwargs, args)

    return type(name, (PickledRecord,), {"__init__": __init__, "__module__": __name__})


def _reconstruct_persistent_obj(meta):
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, never execs."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise StyleGAN2CheckpointError("malformed torch_utils.persistence record in the pickle")
    return PickledRecord(str(meta["class_name"]), meta.get("state") or {})


def _load_storage_from_bytes(data: bytes):
    """Stand-in for ``torch.storage._load_from_bytes``: the same bytes, read with ``weights_only=True``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` with any pickled backward hooks dropped."""
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """``torch._utils._rebuild_parameter`` without hooks: a frozen tensor is all the loader needs."""
    return data


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for plain (non-object) dtypes only."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError("refused numpy object scalar in the pickle")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a project dependency
        return {}
    out: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = _numpy_scalar
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for NVIDIA network pickles that resolves only data-rebuilding globals.

    Allowed: torch tensor/parameter/storage rebuild helpers (storages are re-read with
    ``torch.load(weights_only=True)``), ``collections.OrderedDict``, ``builtins.set/frozenset``,
    ``numpy.dtype`` and plain numpy scalars. ``torch_utils.persistence._reconstruct_persistent_obj``
    and any other ``dnnlib.*`` / ``torch_utils.*`` global become inert :class:`PickledRecord` objects (the
    pickled module source code is never imported or executed). Everything else -- e.g. ``os.system``,
    ``builtins.eval``, TensorFlow ``dnnlib.tflib`` networks -- raises :class:`UnsafePickleError` naming it.
    """

    _SAFE: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _InertDict,
        ("dnnlib", "EasyDict"): _InertDict,
    }

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in self._SAFE:
            return self._SAFE[key]
        numpy_globals = _numpy_globals()
        if key in numpy_globals:
            return numpy_globals[key]
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickleError(
                f"refused global {module}.{name}: this is a TensorFlow StyleGAN2 pickle; convert it first "
                "(stylegan2-ada-pytorch legacy.py, or rosinality convert_weight.py)")
        if module.split(".")[0] in ("dnnlib", "torch_utils"):
            return _inert_global(module, name)
        raise UnsafePickleError(
            f"refused global {module}.{name} in the pickle: it is not needed to rebuild tensors and could run code")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused persistent id {pid!r}: NVIDIA network pickles do not use them")
