"""Every command of the README's first block (install / test / demo) and of "The paper's setting" runs.

The commands are read from README.md itself; each line is mapped to what runs here (the table below).
A README line without a mapping fails the test, so a new command cannot be added untested. Mapping:

| README line                          | runs here                                                          |
|--------------------------------------|--------------------------------------------------------------------|
| `make install`                       | not run: this test runs inside the environment it builds           |
| `make test`                          | not run: this test is part of it                                   |
| `make demo`                          | `python -m anon.demo data=<one shared LFW photo> out=<tmp>`        |
| `anon pipeline ...` (three lines)    | as written, the README's data paths replaced by the shared samples, `trainer=gpu` by `trainer=cpu`, plus TINY (random tiny networks instead of the checkpoints, 2 images, 1 step) and, for the sweep, `loss.margin=0.0,1.0` |
| `anon evaluate run_dir=outputs/runs/<run>` | as written, `<run>` the LFW run above (the defaults: dlib, offline) |
| `make tables`                        | `python experiments/tables.py --runs <tmp> --out <tmp>/tables`     |
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, env, run_anon

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

TINY = ["generator=tiny", "identity=tiny_irse", "attribute=tiny_vit", "inverter=tiny_e4e", "dataset.image_size=64",
        "align.size=64", "module.steps=1", "fakes.num_samples=32", "dataset.limit=2", "device=cpu"]


def readme_commands(section: str | None) -> list[str]:
    """Command lines (comments stripped) of the first ``bash`` block after the heading ``section``
    (None: the README's first block)."""
    text = (REPO / "README.md").read_text()
    if section is not None:
        text = text[text.index(f"## {section}"):]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def mapped(line: str, shared: Path, out: Path) -> list[str] | None:
    """The command that runs for a README line (None: not run, see the module docstring)."""
    if line in ("make install", "make test"):
        return None
    if line == "make demo":
        photos = out / "demo_photos"
        photos.mkdir(parents=True, exist_ok=True)
        (photos / "Aaron_Peirsol_0001.jpg").write_bytes(
            (shared / "lfw_sample" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes())
        return [sys.executable, "-m", "anon.demo", f"data={photos}", f"out={out / 'demo'}"]
    if line == "make tables":
        return [sys.executable, "experiments/tables.py", "--runs", str(out), "--out", str(out / "tables")]
    words = line.split()
    if words[:2] == ["anon", "pipeline"]:
        celeba = shared / "celebahq_sample"
        # the README's placeholder folders, by their last name ("..." continues the CelebA-HQ line above it)
        data = {"CelebA-HQ-img": celeba, "...": celeba, "lfw": shared / "lfw_sample"}
        args = []
        for word in words[2:]:
            key, _, value = word.partition("=")
            if key == "dataset.images":
                folder = data[value.rstrip("/").rsplit("/", 1)[-1]]
                word = f"dataset.images={folder}"
                if folder == celeba:
                    args += [f"dataset.attributes={celeba / 'CelebAMask-HQ-attribute-anno.txt'}",
                             f"dataset.identities={celeba / 'identity_and_mapping.txt'}"]
            elif word == "trainer=gpu":
                word = "trainer=cpu"
            args.append(word)
        sweep = ["loss.margin=0.0,1.0"] if "--multirun" in words else []
        return ["anon", "pipeline", *args, *TINY, *sweep, f"output_root={out}"]
    if words[:2] == ["anon", "evaluate"] and words[2:] == ["run_dir=outputs/runs/<run>"]:
        lfw_run = next(p.parent for p in (out / "runs").glob("lfw-*/manifest.jsonl"))
        return ["anon", "evaluate", f"run_dir={lfw_run}", f"output_root={out}"]
    raise AssertionError(f"README line without a test mapping: {line!r} (add one in tests/test_readme.py)")


def run(command: list[str]) -> subprocess.CompletedProcess:
    if command[0] == "anon":
        return run_anon(*command[1:], timeout=900)
    return subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)


def test_readme_commands_run_as_written(shared_data, tmp_path):
    from tests.test_demo import lite_available

    lite_available()
    lines = readme_commands(None) + readme_commands("The paper's setting")
    assert "make demo" in lines and any(x.startswith("anon evaluate") for x in lines) and "make tables" in lines
    for line in lines:
        command = mapped(line, shared_data, tmp_path)
        if command is None:
            continue
        result = run(command)
        assert result.returncode == 0, f"{line!r} -> {' '.join(command)}:\n{result.stderr[-3000:]}"
        if line.startswith("anon evaluate"):
            assert "own_original: output" in result.stdout and "privacy" in result.stdout
    tables = sorted(p.name for p in (tmp_path / "tables").glob("*.md"))
    assert tables == ["lfw_main.md", "lite.md"], "the evaluated runs' tables (the LFW run, the demo)"
    assert len(list((tmp_path / "sweeps").glob("*/manifest.jsonl"))) == 2, "one folder per swept margin"


def test_evaluate_without_facenet_weights_is_one_line_naming_the_download(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.jsonl").write_text("")
    result = run_anon("evaluate", f"run_dir={run_dir}", "evaluators=[facenet_vggface2]",
                      f"weights_dir={tmp_path / 'weights'}", f"output_root={tmp_path}")
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "anon download facenet_vggface2" in errors[0]
    assert "Traceback" not in result.stderr
