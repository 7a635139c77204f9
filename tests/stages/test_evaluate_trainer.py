"""Evaluation through the Trainer: the same report as the one-process loop it replaced, the same report on two
CPU ranks as on one (each item measured exactly once, odd item counts included), batched FID features."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DistributedSampler

from anon.metrics.fid import build_fid, fid_features, frechet_distance
from anon.stages.evaluate import run_evaluate
from anon.stages.evaluate_inputs import RankShards
from anon.stages.evaluate_merge import merge_results
from tests.stages.evaluate_fakes import GOLDEN, ChannelMoments, FakeCosine, golden_run, relative


def _close(actual, expected, path="report", rel=1e-6, atol=1e-9):
    """Equal structure and values; floats to ``rel`` (default: float64 sums in another order, float32 FID)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{path}: keys {set(actual) ^ set(expected)}"
        for k in expected:
            _close(actual[k], expected[k], f"{path}.{k}", rel, atol)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual} != {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _close(a, e, f"{path}[{i}]", rel, atol)
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert actual == pytest.approx(expected, rel=rel, abs=atol), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _lines(run: Path) -> list[dict]:
    return [json.loads(s) for s in (run / "verification.jsonl").read_text().splitlines()]


def _ddp_trainer(devices: int = 2) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_fork", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False)


def test_trainer_path_reproduces_the_golden_report_of_the_old_loop(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    root = tmp_path.resolve()
    run, evaluators, kwargs = golden_run(root)
    report = run_evaluate(run, evaluators, **kwargs)
    _close(relative(report, str(root)), golden["report"])
    # the lines are in id order now; the old loop put a batch's unreadable items before its others (p5/g, p3/e)
    lines = relative(_lines(run), str(root))
    assert [line["id"] for line in lines] == sorted(line["id"] for line in golden["verification"])
    _close({line["id"]: line for line in lines}, {line["id"]: line for line in golden["verification"]}, "verification")
    assert json.loads((run / "report.json").read_text()) == report
    assert report["fid"] is not None and report["expression"]["count"] == 4  # the golden run exercises both
    assert not (run / "evaluation_shards").exists()  # the ranks' shards are removed once merged


def test_a_corrupt_inversion_is_that_items_error_not_a_crash(tmp_path):
    root = tmp_path.resolve()
    run, evaluators, kwargs = golden_run(root)
    (root / "inversions" / "p1" / "a.png").write_bytes(b"not a png")
    report = run_evaluate(run, evaluators, **{**kwargs, "plots": False})
    assert report["unreadable"] == ["p1/a", "p5/g"] and report["evaluated"] == 4
    line = {x["id"]: x for x in _lines(run)}["p1/a"]
    assert line["passed"] is None and "a.png" in line["error"]


class LoggingCosine(FakeCosine):
    """FakeCosine that appends ``<pid> <value>`` per embedded image to a file (ranks are other processes)."""

    def __init__(self, log: Path):
        super().__init__()
        self.log = log

    def embed(self, images):
        with open(self.log, "a") as f:
            f.writelines(f"{os.getpid()} {int(im[0, 0, 0])}\n" for im in images)
        return super().embed(images)


@pytest.mark.slow
def test_two_cpu_ranks_give_the_one_process_report_each_item_once(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    reports = {}
    for devices in (1, 2):
        root = (tmp_path / f"world{devices}").resolve()
        run, evaluators, kwargs = golden_run(root)
        # 5 done records (odd): drop the unreadable one, so two ranks get 3 and 2 items
        manifest = run / "manifest.jsonl"
        kept = [line for line in manifest.read_text().splitlines() if '"p5/g"' not in line]
        manifest.write_text("\n".join(kept) + "\n")
        log = root / "embedded.txt"
        evaluators["cos"] = LoggingCosine(log)
        report = run_evaluate(run, evaluators, trainer=_ddp_trainer(devices) if devices > 1 else None, **kwargs)
        reports[devices] = (relative(report, str(root)), relative(_lines(run), str(root)))
        calls = [line.split() for line in log.read_text().splitlines()]
        originals = Counter(v for _, v in calls if int(v) < 100)
        assert originals == Counter({str(k): 1 for k in range(1, 6)})  # each original embedded exactly once
        assert len({pid for pid, _ in calls}) == devices  # by that many processes
    one, two = reports[1], reports[2]
    _close(two[0], one[0])
    _close(two[1], one[1], "verification")
    assert [line["id"] for line in two[1]] == ["p1/a", "p1/b", "p2/c", "p3/d", "p3/e"]
    # and the one-process report is the golden one, less the unreadable record
    assert one[0]["images"] == 5 and one[0]["unreadable"] == [] and golden["report"]["unreadable"] == ["p5/g"]
    _close(one[0]["evaluators"], golden["report"]["evaluators"], "evaluators")
    assert one[0]["fid"] == pytest.approx(golden["report"]["fid"], rel=1e-6)


def test_merge_counts_each_item_once_under_distributed_sampler_padding():
    items = list(range(5))
    # torch's DistributedSampler pads 5 items to 6 for 2 ranks: one item is measured twice
    shards = [list(DistributedSampler(items, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sorted(i for s in shards for i in s) == [0, 0, 1, 2, 3, 4]
    per_rank = [[{"index": i, "id": f"x{i}", "rank": r} for i in s] for r, s in enumerate(shards)]
    merged = merge_results(per_rank)
    assert [m["index"] for m in merged] == items
    assert [m["rank"] for m in merged] == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("n, world", [(5, 2), (7, 3), (1, 2), (0, 2)])
def test_rank_shards_are_disjoint_complete_and_unpadded(n, world):
    data = list(range(n))
    shards = [list(RankShards(data, world, r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == data
    assert [len(RankShards(data, world, r)) for r in range(world)] == [len(s) for s in shards]


def test_batched_fid_features_and_statistics_match_the_metric_fed_one_image_at_a_time():
    gen = torch.Generator().manual_seed(0)
    sizes = [(8, 8), (6, 10), (8, 8), (6, 10), (8, 8)]
    real = [torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy() for h, w in sizes]
    fake = [torch.randint(30, 200, (h, w, 3), generator=gen, dtype=torch.uint8).numpy() for h, w in sizes]
    extractor = ChannelMoments()
    batched = fid_features(extractor, real, batch_size=2)  # two sizes: groups of 3 and 2, split in 2s
    for image, row in zip(real, batched):
        single = extractor(torch.from_numpy(image).permute(2, 0, 1)[None]).reshape(-1)
        assert torch.equal(row, single)
    metric = build_fid(feature=ChannelMoments())
    for r, f in zip(real, fake):  # what the old loop did: one image per update
        metric.update(torch.from_numpy(r).permute(2, 0, 1)[None].contiguous(), real=True)
        metric.update(torch.from_numpy(f).permute(2, 0, 1)[None].contiguous(), real=False)
    expected = float(metric.compute())
    value = frechet_distance(torch.stack(batched), torch.stack(fid_features(extractor, fake, batch_size=4)))
    assert math.isfinite(expected) and expected > 0.01
    assert value == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(torch.stack(batched[:1]), torch.stack(batched))


@pytest.mark.slow
def test_hydra_trainer_ddp_cpu_runs_two_ranks(tmp_path):
    from tests.stages.evaluate_fakes import make_run
    from tests.stages.test_evaluate import _compose

    from anon.stages.evaluate import evaluate

    run = make_run(tmp_path)
    base = [f"run_dir={run}", "evaluators=[tiny_irse]", "~detector", "~expression", "thresholds.tiny_irse=0.5",
            "pose=null", "device=cpu", "plots=false", f"output_root={tmp_path}", "inversion_dir=null"]
    torch.manual_seed(0)  # tiny_irse has random weights: the same ones for both runs
    one = evaluate(_compose(*base))
    one_lines = _lines(run)
    torch.manual_seed(0)
    two = evaluate(_compose(*base, "trainer=ddp_cpu", "trainer.devices=2"))
    # a float32 network batched differently on each rank: summation-order noise, far below 1e-4
    _close(two, one, rel=1e-4, atol=1e-6)
    _close(_lines(run), one_lines, "verification", rel=1e-4, atol=1e-6)
    assert two["evaluated"] == 5 and np.isfinite(two["evaluators"]["tiny_irse"]["mean_after"])


def test_a_relaunched_rank_of_anon_evaluate_runs_evaluate(monkeypatch):
    """Lightning's DDP relaunch (strategy=ddp: trainer=gpu) re-runs `anon` with the overrides only."""
    import anon.runtime.run
    import anon.stages.evaluate
    from anon.runtime import cli
    called = []
    monkeypatch.setattr(anon.stages.evaluate, "evaluate_entry", lambda: called.append(("evaluate", list(cli.sys.argv))))
    monkeypatch.setattr(anon.runtime.run, "hydra_entry", lambda: called.append(("anonymize", list(cli.sys.argv))))
    monkeypatch.setattr(cli.sys, "argv", ["anon"])
    monkeypatch.delenv(cli.RELAUNCH_COMMAND, raising=False)
    cli.main(["run_dir=/x"])  # a plain `anon run_dir=...` is still anonymize
    cli.main(["evaluate", "run_dir=/x"])  # the launching process: marks its children
    assert os.environ[cli.RELAUNCH_COMMAND] == "evaluate"
    cli.main(["run_dir=/x", "trainer=gpu"])  # a child rank
    assert called == [("anonymize", ["anon", "run_dir=/x"]), ("evaluate", ["anon", "run_dir=/x"]),
                      ("evaluate", ["anon", "run_dir=/x", "trainer=gpu"])]


@pytest.mark.slow
def test_cli_two_ranks_by_subprocess_relaunch_as_on_gpus(tmp_path):
    """`anon evaluate ... trainer.strategy=ddp`: rank 1 is a new process started by Lightning (the path of
    `trainer=gpu`), not a fork; the report is the one-process one."""
    from anon.stages.evaluate import evaluate
    from tests.helpers import run_anon
    from tests.stages.evaluate_fakes import make_run
    from tests.stages.test_evaluate import _compose

    # tiny_irse has random weights: conf/evaluate.yaml's seed makes them the same in every process
    tiny = ["evaluators=[tiny_irse]", "~detector", "~expression", "thresholds.tiny_irse=0.5", "pose=null", "device=cpu",
            "plots=false", f"output_root={tmp_path}", "inversion_dir=null"]
    one_run, two_run = make_run(tmp_path / "one"), make_run(tmp_path / "two")
    one = evaluate(_compose(f"run_dir={one_run}", *tiny))
    proc = run_anon("evaluate", f"run_dir={two_run}", *tiny, "trainer=ddp_cpu", "trainer.devices=2",
                    "trainer.strategy=ddp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MEMBER: 2/2" in proc.stderr
    two = json.loads((two_run / "report.json").read_text())
    _close(relative(two, str(two_run)), relative(one, str(one_run)), rel=1e-4, atol=1e-6)
