"""Mutation check of the method core with mutmut: killed / survived per module, within a time budget.

    python experiments/mutants.py [MODULE ...] [--budget-min 28] [--workdir build/mutants] [--children 2]

Each module is mutated alone, in its own scratch copy of the repository (``<workdir>/<module>``), and
each mutant runs only the tests listed for that module in ``MODULES`` (mutmut further narrows them to
the tests that call the mutated function). Modules run in the order given (default: the small ones
first) while the budget lasts; a module that would start with under ``--min-left`` minutes left is
reported as not run. Survivors are listed by name (``mutmut show NAME`` in that module's folder shows
the diff); the ones judged equivalent are explained in ``experiments/mutants_equivalent.md``.
Exit status 1 when a mutant survives that is not listed there.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT = REPO / "experiments" / "mutants_equivalent.md"

GOLDEN = "tests/nets/test_golden.py::"  # a network's forward is guarded by its golden test against the official code
# module -> (file to mutate, the tests that guard it); slow tests left out (they run in `make test`)
MODULES: dict[str, tuple[str, list[str]]] = {
    "losses": ("anon/method/losses.py", ["tests/test_losses.py", "tests/test_loss_target.py", "tests/test_attribute_terms.py",
                                 "tests/test_shared_trunk.py"]),
    "latent": ("anon/method/latent.py", ["tests/test_latent.py", "tests/test_latent_offsets.py"]),
    "schedule": ("anon/method/schedule.py", ["tests/test_losses.py"]),
    "reid": ("anon/metrics/reid.py", ["tests/metrics/test_reid.py"]),
    # the optimisation loop (anon/method/optimise.py: all of it); FalcoModule and FalcoMethod only delegate to it
    "optimise": ("anon/method/optimise.py", ["tests/test_optimise.py", "tests/test_module.py", "tests/test_latent_offsets.py",
                                      "tests/stages/test_invert_offsets.py", "tests/test_loss_target.py"]),
    "irse": ("anon/nets/irse.py", ["tests/nets/test_irse.py", "tests/nets/test_arcface.py", GOLDEN + "test_arcface_ir_se50_matches_falco"]),
    "vit": ("anon/nets/vit.py", ["tests/nets/test_vit.py", "tests/nets/test_farl.py", GOLDEN + "test_farl_tokens_and_embedding_match_falco_on_clip_vit_b16"]),
    "farl": ("anon/nets/farl.py", ["tests/nets/test_farl_loader.py", "tests/nets/test_farl.py", GOLDEN + "test_farl_tokens_and_embedding_match_falco_on_clip_vit_b16"]),
    "stylegan2": ("anon/nets/stylegan2.py", ["tests/nets/test_stylegan2_paths.py", "tests/nets/test_stylegan2.py",
                                             GOLDEN + "test_stylegan2_rosinality_synthesis_and_mapping_match_the_official_generator",
                                             GOLDEN + "test_stylegan2_genforce_synthesis_and_truncated_mapping_match_falco",
                                             GOLDEN + "test_stylegan2_nvidia_synthesis_and_truncated_mapping_match_the_official_generator"]),
    # e4e: the one-image golden (half the time of the two-image one, which `make test` runs)
    "e4e": ("anon/nets/e4e.py", ["tests/nets/test_e4e_resize.py", "tests/nets/test_e4e.py",
                                 GOLDEN + "test_e4e_one_image_codes_match_falco_get_latents"]),
}
# Only these functions of a module are mutated (mutmut name patterns); default: all of them.
FUNCTIONS: dict[str, list[str]] = {
    # The generator's and the encoder's forward operations and the encoder's construction (all 854 / 503
    # mutants take hours on 2 cores: each e4e mutant runs a full-size golden, 2.5 s of CPU alone, far
    # more on a loaded machine). `--all-functions` mutates everything.
    "stylegan2": [f"anon.nets.stylegan2.{f}__mutmut_*" for f in (
        "x_fir_filter", "x_upsample2x", "xǁMappingNetworkǁforward", "x_modulated_conv2d",
        "xǁStyleGAN2Generatorǁforward", "xǁStyleGAN2Generatorǁfrom_checkpoint")],
    "e4e": [f"anon.nets.e4e.{f}__mutmut_*" for f in (
        "xǁE4EInverterǁforward", "xǁEncoder4Editingǁforward", "xǁEncoder4Editingǁ__init__", "x__upsample_add",
        "xǁGradualStyleBlockǁforward", "xǁGradualStyleBlockǁ__init__", "xǁEqualizedLinearǁforward",
        "xǁEqualizedLinearǁ__init__")],
}
DESELECT = "not compiled"  # torch.compile takes minutes per process on this CPU
COPY = ["anon", "conf", "tests", "experiments", "pyproject.toml"]


def scratch_copy(module: str, workdir: Path) -> Path:
    """A fresh copy of the repository whose pyproject.toml configures mutmut for ``module`` only."""
    target, tests = MODULES[module]
    root = workdir / module
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, root / name)
    settings = {"source_paths": ["anon"], "only_mutate": [target], "also_copy": ["conf", "experiments"],
                "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x", "-k", DESELECT],
                "pytest_add_cli_args_test_selection": tests, "use_git_change_detection": False}
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n".join(lines) + "\n")
    return root


def results(root: Path) -> dict[str, list[str]]:
    """``mutmut results --all true`` as status -> mutant names."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=root,
                         capture_output=True, text=True, env=environment()).stdout
    by_status: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m:
            by_status.setdefault(m.group(2).strip(), []).append(m.group(1))
    return by_status


def environment() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", PYTHONPATH="")


def listed_equivalent() -> set[str]:
    """Mutant names in the equivalent list (each a ``- `name` ...`` line)."""
    if not EQUIVALENT.is_file():
        return set()
    return set(re.findall(r"^- `([^`]+)`", EQUIVALENT.read_text(), flags=re.M))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=list(MODULES), help=f"default: {' '.join(MODULES)}")
    parser.add_argument("--budget-min", type=float, default=28.0, help="total wall-clock budget (minutes)")
    parser.add_argument("--min-left", type=float, default=3.0, help="do not start a module with less left")
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "mutants")
    parser.add_argument("--children", type=int, default=2, help="parallel mutant workers")
    parser.add_argument("--all-functions", action="store_true", help="ignore FUNCTIONS: mutate every function")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    deadline = time.monotonic() + 60 * args.budget_min
    equivalent = listed_equivalent()
    rows, unexplained = [], []
    for module in args.modules:
        left = (deadline - time.monotonic()) / 60
        if left < args.min_left:
            rows.append((module, "not run (budget spent)"))
            continue
        root = scratch_copy(module, args.workdir)
        started = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.children),
                                   *([] if args.all_functions else FUNCTIONS.get(module, []))],
                                  cwd=root, env=environment(), capture_output=True, text=True, timeout=60 * left)
            note = "" if proc.returncode == 0 else f" (mutmut exit {proc.returncode}: {proc.stdout[-300:]!r})"
        except subprocess.TimeoutExpired:
            note = " (stopped by the budget: partial)"
        by_status = results(root)
        by_status.pop("not checked", None)  # outside FUNCTIONS
        survived = by_status.get("survived", []) + by_status.get("no tests", [])
        eq = [n for n in survived if n in equivalent]
        unexplained += [n for n in survived if n not in equivalent]
        counts = ", ".join(f"{k} {len(v)}" for k, v in sorted(by_status.items()))
        rows.append((module, f"{counts}; equivalent (listed) {len(eq)}; "
                             f"{(time.monotonic() - started) / 60:.1f} min{note}"))
        print(f"{module}: {rows[-1][1]}", flush=True)
        for name in survived:
            print(f"    {'equivalent' if name in equivalent else 'SURVIVED  '} {name}", flush=True)
    print("\nmodule      result")
    for module, text in rows:
        print(f"{module:<11} {text}")
    if unexplained:
        print(f"\n{len(unexplained)} surviving mutant(s) neither killed nor listed in {EQUIVALENT.name}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
