"""Outputs through Lightning: the module returns results and writes nothing; the prediction writer puts
them in the run folder; the trainer's bf16-mixed is the module's bf16."""
import os
import signal
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from anon.errors import ConfigError
from anon.fit.module import FalcoModule
from anon.runtime.run import anonymize, build_module
from tests.conftest import compose_config, tiny_overrides
from tests.helpers import shard_lines


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_the_module_holds_no_run_folder_and_predict_without_the_writer_writes_nothing(tiny_world, tmp_path,
                                                                                        monkeypatch):
    cfg = compose_config(*tiny_overrides(tiny_world, tmp_path / "run", "dataset.limit=3", "module.steps=2"))
    module = build_module(cfg)
    assert not hasattr(module, "run_dir") and not hasattr(module, "output_format")
    data = instantiate(cfg.dataset)
    data.attach(tmp_path / "run", module.generator.num_ws)
    monkeypatch.chdir(tmp_path)  # anything written to a relative path would land here
    before = files_under(tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, default_root_dir=str(tmp_path / "root"),
                          enable_progress_bar=False)
    predictions = trainer.predict(module, datamodule=data)
    assert files_under(tmp_path) == before, "without the writer a predict writes no file"
    assert sum(p["images"].shape[0] for p in predictions) == 3
    assert all(p["codes"].device.type == "cpu" and len(p["final"]["similarity"]) == p["images"].shape[0]
               for p in predictions)
    # a module built for float32 under a bf16-mixed Trainer: one line that names the fix
    bf16_trainer = instantiate(cfg.trainer, logger=False, precision="bf16-mixed", enable_progress_bar=False,
                               default_root_dir=str(tmp_path / "root"))
    with pytest.raises(ValueError, match="needs module.precision=bf16, not 32"):
        bf16_trainer.predict(module, datamodule=data)


def _codes(run_dir: Path) -> dict:
    return {r["id"]: torch.load(run_dir / r["code"]) for r in shard_lines(run_dir)}


def _image_bytes(run_dir: Path) -> dict:
    return {r["id"]: (run_dir / r["image"]).read_bytes() for r in shard_lines(run_dir)}


def test_trainer_bf16_mixed_is_the_module_bf16_bitwise_and_the_same_run_folder(tiny_world, tmp_path):
    def run(name: str, *extra: str) -> Path:
        overrides = tiny_overrides(tiny_world, tmp_path / name, "dataset.limit=2", "module.steps=3", *extra)
        return Path(anonymize(compose_config(*overrides))["run_dir"])

    from_trainer, from_module = run("trainer", "trainer.precision=bf16-mixed"), run("module", "module.precision=bf16")
    fp32 = run("fp32")
    trainer_codes, module_codes = _codes(from_trainer), _codes(from_module)
    assert len(trainer_codes) == 2 and trainer_codes.keys() == module_codes.keys()
    assert all(torch.equal(trainer_codes[k], module_codes[k]) for k in trainer_codes)
    assert _image_bytes(from_trainer) == _image_bytes(from_module)
    numbers = ("identity_similarity_before", "identity_similarity_after", "loss", "loss_initial")
    by_id = {r["id"]: r for r in shard_lines(from_module)}
    assert all({k: r[k] for k in numbers} == {k: by_id[r["id"]][k] for k in numbers} for r in shard_lines(from_trainer))
    assert not all(torch.equal(c, _codes(fp32)[k]) for k, c in module_codes.items()), "bf16 must differ from fp32"

    def name(*extra: str) -> str:
        overrides = [o for o in tiny_overrides(tiny_world, tmp_path / "x", *extra) if not o.startswith("run_dir=")]
        return compose_config(*overrides).run_name

    assert name("trainer.precision=bf16-mixed") == name("module.precision=bf16") != name()


@pytest.mark.parametrize("overrides, message", [
    (("trainer.precision=bf16-mixed", "module.precision=tf32"), "contradicts module.precision=tf32"),
    (("trainer.precision=16-mixed",), "trainer.precision=16-mixed is not supported by the latent loop"),
])
def test_precision_contradictions_are_one_line_config_errors(tiny_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        anonymize(tiny_cfg(*overrides))


def test_a_stop_signal_takes_effect_once_the_batch_in_flight_is_written_and_recorded(tiny_cfg, monkeypatch):
    """SIGTERM arrives while the first batch is optimised: that batch's images, codes and records are on
    disk (the writer comes before the stop check), nothing of the next batch, and the run exits 143."""
    optimise = FalcoModule.optimise

    def signalled(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return optimise(self, *args, **kwargs)

    monkeypatch.setattr(FalcoModule, "optimise", signalled)
    cfg = tiny_cfg("dataset.batch_size=2", "module.steps=2")
    with pytest.raises(SystemExit) as stopped:
        anonymize(cfg)
    assert stopped.value.code == 128 + signal.SIGTERM
    run_dir = Path(cfg.run_dir)
    records = shard_lines(run_dir)
    assert [r["status"] for r in records] == ["done", "done"]
    assert all((run_dir / r["image"]).is_file() and (run_dir / r["code"]).is_file() for r in records)
    assert len(list((run_dir / "codes").rglob("*.pt"))) == 2
