"""The whole pipeline with tiny random networks: every image reaches the manifest exactly once."""
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import open_dict

from anon.stages.pipeline import run_pipeline
from tests.helpers import shard_lines
from hydra import compose, initialize_config_dir
from anon.runtime.run import CONFIG_DIR

pytestmark = pytest.mark.slow


def pipeline_config(images: Path, out: Path, *extra: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("pipeline", overrides=[f"dataset.images={images}", f"output_root={out}", "dataset.image_size=64",
                                              "module.steps=1", "fakes.num_samples=32", "device=cpu",
                                              "dataset.batch_size=16", *extra])


@pytest.mark.parametrize("sample", ["celebahq_sample", "lfw_sample"])
def test_pipeline_on_shared_samples(shared_data, tmp_path, sample):
    images = shared_data / sample
    cfg = pipeline_config(images, tmp_path)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    summary = run_pipeline(cfg)
    expected = sorted(p.relative_to(images).with_suffix("").as_posix() for p in images.rglob("*.jpg"))
    lines = shard_lines(Path(summary["run_dir"]))
    counts = Counter(r["id"] for r in lines)
    assert sorted(counts) == expected and set(counts.values()) == {1}
    # every sample image is a readable face photo: each one is anonymised, none fails
    failures = [(r["id"], r.get("error")) for r in lines if r["status"] != "done"]
    assert not failures, failures[:3]
    assert (summary["images_done"], summary["images_failed"]) == (len(expected), 0)


def test_corrupt_image_goes_to_failure_lists_and_stages_are_reused(tiny_world, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_world / "images", images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cfg = pipeline_config(images, tmp_path / "out")
    summary = run_pipeline(cfg)
    records = {r["id"]: r for r in shard_lines(Path(summary["run_dir"]))}
    assert records["broken"]["status"] == "failed" and len(records) == 7
    failures = [json.loads(l) for p in Path(cfg.stages.invert_dir).glob("failures.rank*.jsonl")
                for l in p.read_text().splitlines()]
    assert [f["id"] for f in failures] == ["broken"]
    # A new loss weight: the fakes, inversions and pairs are reused, only anonymize runs again.
    stamp = {p: p.stat().st_mtime_ns for p in Path(cfg.stages.invert_dir).rglob("*.pt")}
    cfg2 = pipeline_config(images, tmp_path / "out", "loss.lambda_id=1")
    assert cfg2.stages.invert_dir == cfg.stages.invert_dir and cfg2.stages.pair_dir == cfg.stages.pair_dir
    summary2 = run_pipeline(cfg2)
    assert summary2["run_dir"] != summary["run_dir"]
    assert {p: p.stat().st_mtime_ns for p in Path(cfg.stages.invert_dir).rglob("*.pt")} == stamp


def test_each_stage_alone_in_order_then_whole_pipeline_reuses_them(tiny_world, tmp_path):
    from anon.errors import ConfigError

    images = tiny_world / "images"
    with pytest.raises(ConfigError, match="run only=fakes first"):
        run_pipeline(pipeline_config(images, tmp_path, "only=pair"))
    for stage in ("fakes", "invert", "pair"):
        out = run_pipeline(pipeline_config(images, tmp_path, f"only={stage}"))
        assert Path(out["stage_dir"]).is_dir()
    assert not (tmp_path / "runs").exists(), "no stage alone runs the anonymisation"
    summary = run_pipeline(pipeline_config(images, tmp_path, "only=anonymize"))
    assert summary["images_done"] == 6


def test_two_runs_of_the_default_pipeline_give_identical_fakes_pairs_and_images(tiny_world, tmp_path):
    """Whatever the process did before (the global torch generator), the tiny networks, the fake pool,
    the pairs and the anonymised images come out the same."""
    import numpy as np
    import torch
    from PIL import Image

    runs = []
    for name, before in (("first", 1), ("second", 2)):
        torch.manual_seed(before)
        torch.rand(before)
        cfg = pipeline_config(tiny_world / "images", tmp_path / name)
        runs.append((cfg, Path(run_pipeline(cfg)["run_dir"])))
    (cfg_a, run_a), (cfg_b, run_b) = runs
    codes_a = sorted(Path(cfg_a.stages.fakes_dir, "codes").glob("*.pt"))
    assert len(codes_a) == 32
    for path in codes_a:
        other = Path(cfg_b.stages.fakes_dir, "codes", path.name)
        assert torch.equal(torch.load(path, weights_only=True), torch.load(other, weights_only=True)), path.name
    for path in sorted(Path(cfg_a.stages.invert_dir, "codes").rglob("*.pt")):
        other = Path(cfg_b.stages.invert_dir, "codes", path.relative_to(Path(cfg_a.stages.invert_dir, "codes")))
        assert torch.equal(torch.load(path, weights_only=True), torch.load(other, weights_only=True)), path.name
    assert Path(cfg_a.stages.pair_dir, "pairs.json").read_text() == Path(cfg_b.stages.pair_dir, "pairs.json").read_text()
    images_a = sorted(run_a.rglob("images/**/*.png"))
    assert len(images_a) == 6
    for path in images_a:
        a, b = (np.asarray(Image.open(p)) for p in (path, run_b / path.relative_to(run_a)))
        assert np.array_equal(a, b), path


def test_a_relaunched_rank_of_anon_pipeline_runs_its_anonymisation(monkeypatch):
    """Lightning's DDP relaunch re-runs `anon` with the overrides only: a rank it starts for `anon pipeline`
    must join the pipeline's anonymisation (the stages before it are cached by then), not run `anon anonymize`."""
    import anon.runtime.run
    import anon.stages.pipeline
    from anon.runtime import cli
    called = []
    monkeypatch.setattr(anon.stages.pipeline, "pipeline_entry", lambda: called.append(("pipeline", list(cli.sys.argv))))
    monkeypatch.setattr(anon.runtime.run, "hydra_entry", lambda: called.append(("anonymize", list(cli.sys.argv))))
    monkeypatch.setattr(cli.sys, "argv", ["anon"])
    monkeypatch.delenv(cli.RELAUNCH_COMMAND, raising=False)
    cli.main(["pipeline", "dataset.images=/x"])  # the launching process: marks its children
    cli.main(["dataset.images=/x", "trainer=gpu"])  # a child rank
    cli.main(["dataset.images=/x", "only=anonymize"])  # a child of `anon pipeline only=anonymize`
    assert called == [("pipeline", ["anon", "dataset.images=/x"]),
                      ("pipeline", ["anon", "dataset.images=/x", "trainer=gpu", "only=anonymize"]),
                      ("pipeline", ["anon", "dataset.images=/x", "only=anonymize"])]


def test_pipeline_with_two_ranks_by_subprocess_relaunch_as_on_gpus(tiny_world, tmp_path):
    """`anon pipeline ... trainer.strategy=ddp` (the path of `trainer=gpu`): Lightning starts rank 1 as a new
    `anon` process with the overrides only; every image is still anonymised exactly once, by both ranks."""
    from tests.helpers import run_anon

    proc = run_anon("pipeline", f"dataset.images={tiny_world / 'images'}", f"output_root={tmp_path}",
                    "dataset.image_size=64", "module.steps=1", "fakes.num_samples=32", "device=cpu",
                    "dataset.batch_size=2", f"run_dir={tmp_path / 'run'}", "trainer=ddp_cpu", "trainer.devices=2",
                    "trainer.strategy=ddp", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = shard_lines(tmp_path / "run")
    counts = Counter(r["id"] for r in lines)
    assert len(counts) == 6 and set(counts.values()) == {1}
    assert {r["rank"] for r in lines} == {0, 1} and all(r["status"] == "done" for r in lines)
