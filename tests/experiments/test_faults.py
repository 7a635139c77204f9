"""The fault-injection script: its checker catches what it must, and a config row runs end to end."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
from faults import Failed, check_survived, main  # noqa: E402

from anon.runtime.outputs import save_code, save_png  # noqa: E402


def _finished_run(run_dir: Path, ids: list[str]) -> Path:
    records = [{"id": i, "status": "done"} for i in ids]
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "summary.json").write_text(json.dumps({"images_done": len(ids)}))
    for k, i in enumerate(ids):
        save_png(np.full((4, 4, 3), 10 * k, np.uint8), run_dir / "images" / f"{i}.png")
        save_code(torch.full((2, 3), float(k)), run_dir / "codes" / f"{i}.pt")
    return run_dir


def test_checker_accepts_a_copy_and_catches_each_difference(tmp_path):
    ref = _finished_run(tmp_path / "ref", ["a", "b"])
    same = tmp_path / "same"
    shutil.copytree(ref, same)
    assert check_survived(same, ref) == "2 items once, bitwise identical"

    pixel = tmp_path / "pixel"
    shutil.copytree(ref, pixel)
    save_png(np.full((4, 4, 3), 11, np.uint8), pixel / "images" / "b.png")
    with pytest.raises(Failed, match=r"b.png differs .*max \|diff\| 1\)"):
        check_survived(pixel, ref)

    twice = tmp_path / "twice"
    shutil.copytree(ref, twice)
    with open(twice / "manifest.rank0.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "a", "status": "done"}) + "\n")
    with pytest.raises(Failed, match=r"done twice: \['a'\]"):
        check_survived(twice, ref)

    stale = tmp_path / "stale"
    shutil.copytree(ref, stale)
    (stale / "manifest.jsonl").write_text(json.dumps({"id": "a"}) + "\n")
    with pytest.raises(Failed, match="manifest.jsonl has 1 records, the shards 2"):
        check_survived(stale, ref)


@pytest.mark.slow
def test_a_config_row_runs_and_is_counted(capsys):
    assert main(["-k", "steps_zero"]) == 0
    out = capsys.readouterr().out
    assert "faults injected: 1;" in out and "the same run folder): 1/1" in out


def test_the_run_name_row_passes_and_is_counted_as_a_config_fault(capsys):
    assert main(["-k", "run_name_machine_free"]) == 0
    out = capsys.readouterr().out
    assert "run_name_machine_free" in out and "the same run folder): 1/1" in out
