"""The package layout holds: small files, a method core and networks free of the runtime's frameworks,
every config ``_target_`` importable, minimal package ``__init__``s, and run folders that survive the move."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_object

REPO = Path(__file__).resolve().parents[1]
ANON = REPO / "anon"
MAX_LINES = 400
#: the Lightning / Hydra / W&B world stays out of the method and the networks (plain PyTorch)
FRAMEWORKS = {"pytorch_lightning", "lightning", "lightning_fabric", "hydra", "wandb"}
PURE_PACKAGES = ("method", "nets")


def long_files(root: Path, limit: int = MAX_LINES) -> dict[str, int]:
    counts = {str(p.relative_to(root.parent)): len(p.read_text().splitlines()) for p in sorted(root.rglob("*.py"))}
    return {path: n for path, n in counts.items() if n > limit}


def test_no_file_in_anon_is_over_400_lines():
    assert long_files(ANON) == {}


def module_file(module: str, root: Path = REPO) -> Path | None:
    """``anon.x.y`` -> its file under ``root`` (``y.py`` or ``y/__init__.py``), None outside the repository."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level imports count too)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}", root)}
    return found


def framework_imports(package: str, root: Path = REPO) -> dict[str, list[str]]:
    """file -> the framework modules it reaches, directly or through the project's own modules."""
    reached: dict[str, list[str]] = {}
    for start in sorted((root / "anon" / package).rglob("*.py")):
        seen, todo, hits = {start}, [start], set()
        while todo:
            for module in imports_of(todo.pop(), root):
                if module.split(".")[0] in FRAMEWORKS:
                    hits.add(module)
                target = module_file(module, root) if module.startswith("anon") else None
                if target and target not in seen:
                    seen.add(target)
                    todo.append(target)
        if hits:
            reached[str(start.relative_to(root))] = sorted(hits)
    return reached


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_the_method_and_the_networks_reach_no_lightning_hydra_or_wandb(package):
    assert (ANON / package).is_dir()
    assert framework_imports(package) == {}


def test_the_import_check_sees_indirect_and_function_level_imports(tmp_path):
    (tmp_path / "anon" / "method").mkdir(parents=True)
    (tmp_path / "anon" / "__init__.py").write_text("")
    (tmp_path / "anon" / "method" / "__init__.py").write_text("")
    (tmp_path / "anon" / "helper.py").write_text("def f():\n    import pytorch_lightning\n")
    (tmp_path / "anon" / "method" / "core.py").write_text("from anon import helper\n")
    (tmp_path / "anon" / "method" / "clean.py").write_text("import torch\n")
    assert framework_imports("method", tmp_path) == {"anon/method/core.py": ["pytorch_lightning"]}


def conf_targets() -> list[tuple[str, str]]:
    found = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str) and "${" not in value:
                    found.append((where, value))
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in sorted((REPO / "conf").rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(REPO)))
    return found


def test_every_conf_target_is_importable():
    targets = conf_targets()
    assert len(targets) > 40  # the walk finds the groups' targets (57 when written)
    broken = []
    for where, target in targets:
        try:
            get_object(target)
        except Exception as err:  # noqa: BLE001 -- report them all
            broken.append(f"{where}: {target} ({type(err).__name__})")
    assert broken == []


@pytest.mark.parametrize("package", ["method", "fit", "runtime", "report"])
def test_package_inits_import_nothing(package):
    tree = ast.parse((ANON / package / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_the_photo_api_is_importable_from_the_package():
    from anon.photos import Anonymizer
    from anon.photos.anonymizer import Anonymizer as Defined

    assert Anonymizer is Defined


def test_moved_targets_keep_their_run_folder_hash():
    from anon.runtime.moved_modules import ROOT_NAME_BEFORE, current_target
    from anon.runtime.run_id import config_hash

    assert "anon.fit.module" in ROOT_NAME_BEFORE and "anon.method.latent" in ROOT_NAME_BEFORE
    for now, old in ROOT_NAME_BEFORE.items():
        before = "anon." + old + ".Thing"
        assert config_hash({"_target_": now + ".Thing", "x": 1}) == config_hash({"_target_": before, "x": 1})
        assert current_target(before) == now + ".Thing"
    # a different target still gives a different folder
    assert config_hash({"_target_": "anon.method.latent.A"}) != config_hash({"_target_": "anon.method.latent.B"})
    assert config_hash({"_target_": "anon.method.latent.A"}) != config_hash({"_target_": "anon.method.losses.A"})


def readme_layout_blocks() -> tuple[str, str]:
    """The README's "Layout" section: its package tree and its data-flow diagram (the first two code blocks)."""
    section = (REPO / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")
    return blocks[1], blocks[3]


def test_readme_layout_lists_every_package_and_nothing_else():
    tree, _ = readme_layout_blocks()
    listed = {line.split()[0].rstrip("/") for line in tree.splitlines() if line.startswith("anon/")}
    listed = {name for name in listed if not name.endswith(",")}
    packages = {str(p.parent.relative_to(REPO)) for p in ANON.glob("*/__init__.py")}
    assert listed == packages


def test_readme_data_flow_names_only_code_that_exists():
    """Every class or function the diagram names (``Name``, ``x.name``) is defined in anon/ under that name."""
    import re

    _, diagram = readme_layout_blocks()
    defined = set()
    for path in ANON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
    named = set(re.findall(r"\b([A-Z][a-z]+(?:[A-Z][a-z0-9]+)+)\b", diagram))  # CamelCase classes
    named |= {m.split(".")[-1] for m in re.findall(r"\b[a-z_]+\.[a-z_]+(?:\.[a-z_]+)*\b", diagram)
              if not m.endswith((".png", ".pt", ".jsonl", ".json", ".yaml")) and not m.startswith(("anon.", "conf"))}
    named -= {"Trainer", "reduce"}  # Lightning's (Trainer, strategy.reduce)
    assert named and not (named - defined), sorted(named - defined)
    # snake_case words (functions, batch keys, config keys): each a name the code uses
    used = set(defined)
    for path in ANON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.arg):
                used.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.add(node.value)
    words = set(re.findall(r"(?<![./<])\b([a-z]+(?:_[a-z0-9]+)+)\b(?![./])", diagram))
    assert words and not (words - used), sorted(words - used)
