"""Shared plumbing of the golden-output scripts: bring the official code in from a fetched snapshot.

The official repository is given as a git directory (``--official-git``, e.g. a bare mirror). Its
Python sources at ``HEAD`` are exported into a temporary folder outside the project, which goes on
``sys.path``; nothing of it is copied into the project. The commit is recorded with the outputs.
In the scripts' usage lines ``<mirror>/owner+name/repo`` stands for such a git directory, e.g. made by
``git clone --mirror https://github.com/owner/name``.
"""
from __future__ import annotations

import argparse
import atexit
import importlib.util
import subprocess
import sys
import shutil
import tempfile
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # the scripts import tests.golden_data (seeded weights, file format)
    sys.path.insert(0, str(REPO_ROOT))


def parse_args(description: str, git: bool = True, flags: dict[str, str] | None = None,
               **extra: str) -> argparse.Namespace:
    """``--official-git DIR`` (required unless ``git`` is false), one ``--<name> DIR`` per ``extra``,
    and one optional switch ``--<name>`` per entry of ``flags`` (name -> help)."""
    parser = argparse.ArgumentParser(description=description)
    if git:
        parser.add_argument("--official-git", required=True, help="git directory of the official repository")
    for name, help_text in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=help_text)
    for name, help_text in (flags or {}).items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=help_text)
    return parser.parse_args()


def export_sources(git_dir: str | Path, suffixes: tuple[str, ...] = (".py",)) -> tuple[Path, str]:
    """Export the files of ``HEAD`` ending in ``suffixes`` to a fresh temporary folder.

    Returns ``(folder, commit)``. Only source files are exported: mirrors may lack large binaries.
    """
    git = ["git", f"--git-dir={git_dir}"]
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    names = subprocess.run(git + ["ls-tree", "-r", "--name-only", "HEAD"], check=True, capture_output=True,
                           text=True).stdout.split("\n")
    wanted = [n for n in names if n.endswith(suffixes)]
    folder = Path(tempfile.mkdtemp(prefix="official_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    archive = subprocess.run(git + ["archive", "HEAD", "--", *wanted], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    if REPO_ROOT in folder.resolve().parents:
        raise RuntimeError(f"official sources must stay outside the project, got {folder}")
    return folder, commit


def stub_module(name: str, **attrs) -> types.ModuleType:
    """Register an empty module ``name`` (and its parents) for an import the used code never calls."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)
    return sys.modules[name]


def load_file(module_name: str, path: Path) -> types.ModuleType:
    """Import one official source file under ``module_name`` without running its package ``__init__``."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def source_record(repo: str, commit: str, files: list[str], **notes) -> dict:
    """The provenance part of a golden JSON file."""
    return {"official_repository": f"https://github.com/{repo}", "official_commit": commit,
            "official_files": files, **notes}


def seed_official_model(model, seed: int, seeding: dict, constant_suffix: str | None = None) -> tuple[list, dict]:
    """Load seeded weights into an official model; return ``(layout, constants)`` for the golden files.

    Buffers whose key ends with ``constant_suffix`` (e.g. FIR filters that ``__init__`` computes) keep
    their official values and are returned as ``{"constant.<key>": tensor}``; every other entry is
    seeded by :func:`tests.golden_data.seeded_state` from the official key order and shapes.
    """
    from tests.golden_data import golden_state, state_layout

    fresh = model.state_dict()
    constants = {f"constant.{k}": v for k, v in fresh.items() if constant_suffix and k.endswith(constant_suffix)}
    layout = state_layout({k: v for k, v in fresh.items() if f"constant.{k}" not in constants})
    model.load_state_dict(golden_state(dict(layout=layout, weight_seed=seed, seeding=seeding), constants), strict=True)
    return layout, constants


def import_facenet_pytorch():
    """The installed ``facenet_pytorch`` package (the official code, from PyPI).

    Its ``detect_face`` helpers import torchvision, which cannot be installed beside this torch; the
    two names they import are registered as placeholders that fail if called. The networks
    (``InceptionResnetV1``, ``PNet``, ``RNet``, ``ONet``) and ``fixed_image_standardization`` never
    call them.
    """
    def not_run(*_args, **_kwargs):
        raise RuntimeError("torchvision placeholder called: this golden output would not be official")

    stub_module("torchvision.transforms.functional")
    stub_module("torchvision.ops.boxes", batched_nms=not_run)
    import facenet_pytorch

    return facenet_pytorch


def package_record(name: str, module, files: list[str]) -> dict:
    """The provenance of an installed package: distribution, version, and sha256 of the files used."""
    import hashlib
    from importlib.metadata import version

    root = Path(module.__file__).parent
    return {"official_package": f"{name}=={version(name)} (PyPI)",
            "official_files": {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}}
