"""The method core without Lightning: one loop for the Lightning run and the photo path."""
import inspect
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from anon.runtime.compose import build_method
from anon.method.falco import FalcoMethod
from anon.fit.module import FalcoModule
from anon.method.optimise import FrozenNetworks, OptimiseOptions, adam, optimise
from anon.method.schedule import fractional_multistep
from anon.photos.falco_faces import FalcoFaceAnonymizer
from anon.runtime.run import anonymize
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]


def test_method_core_and_photo_anonymiser_import_no_lightning():
    code = ("import sys, anon.method.optimise, anon.method.falco, anon.photos.falco_faces; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_options_take_yaml_values_and_default_factories():
    """``module.precision=32`` on the command line is an int; 1 switches a flag on; None: the default factories."""
    options = OptimiseOptions(steps=3.0, precision=32, channels_last=1, compile=1, optimizer=None, scheduler=None)
    assert [(type(v), v) for v in (options.steps, options.precision, options.channels_last, options.compile)] == [
        (int, 3), (str, "32"), (bool, True), (bool, True)]
    assert options.optimizer is adam and options.scheduler is fractional_multistep
    weight = torch.zeros(2, requires_grad=True)
    optimizer = adam([weight])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.01
    assert optimizer.param_groups[0]["params"] == [weight]
    with pytest.raises(ValueError, match=r"^module.precision must be 32, tf32 or bf16, not 'fp16'$"):
        OptimiseOptions(precision="fp16")


def test_the_pure_function_alone_gives_the_methods_result():
    """``optimise(...)`` with no step-function cache and default keywords: the method object's result, and
    no first-step images kept unless asked for."""
    method = build_method(compose_config("dataset.images=unused", "dataset.inversions=unused",
                                         "dataset.neighbours=unused", "module.steps=2"))
    g = method.networks.generator
    torch.manual_seed(0)
    with torch.no_grad():
        w_inv, w_nb = g.mapping(torch.randn(2, g.z_dim)), g.mapping(torch.randn(2, g.z_dim), truncation_psi=0.7)
        images = g(w_inv)
    alone = optimise(method.networks, method.loss, method.latent, method.options, images, w_inv, w_nb)
    kept = method.optimise(images, w_inv, w_nb, keep_initial_images=True)
    assert alone["initial_images"] is None and kept["initial_images"].shape == images.shape
    assert torch.equal(alone["ws"], kept["ws"]) and torch.equal(alone["images"], kept["images"])
    assert torch.equal(alone["steps"], torch.tensor([2, 2]))


def test_module_defaults_are_the_options_defaults():
    """``FalcoModule(...)`` and a method built without a ``module.*`` key run the same loop."""
    module_defaults = {k: p.default for k, p in inspect.signature(FalcoModule.__init__).parameters.items()}
    for field in fields(OptimiseOptions):
        if field.name in ("optimizer", "scheduler"):  # None in the module: the options' default factory
            assert module_defaults[field.name] is None
        else:
            assert module_defaults[field.name] == field.default, field.name


def test_method_and_module_keep_the_networks_frozen_and_in_eval_mode():
    """The photo path has no LightningModule around the method: the method itself freezes the networks,
    and ``FalcoModule.train()`` (Lightning calls it) leaves them in eval mode."""
    cfg = compose_config("dataset.images=unused", "dataset.inversions=unused", "dataset.neighbours=unused")
    built = build_method(cfg)
    # plain modules (the project's networks keep themselves in eval mode) with dropout and weights
    networks = FrozenNetworks(built.networks.generator, torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()),
                              torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(2, 2)))

    def thaw():
        for net in networks.all():
            net.requires_grad_(True).train()

    def in_training(nets) -> bool:
        return any(m.training for n in nets for m in n.modules())

    thaw()
    method = FalcoMethod(networks, built.loss, built.latent)
    assert not any(p.requires_grad for n in networks.all() for p in n.parameters())
    assert not in_training(networks.all())
    thaw()
    assert not in_training(method.eval().networks.all())
    module = FalcoModule(*networks.all(), built.loss, built.latent)
    thaw()
    module.train(True)
    assert module.training and not in_training(networks.all())


class FeaturesOf(torch.nn.Module):
    """Pairing features: the whole image, so each image's nearest pool entry is itself (cosine 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_photo_path_and_lightning_run_give_the_same_code(tiny_cfg):
    """The same crops, inversions and neighbours in the same batches: the photo path's method object
    gives the codes and final identity similarities the Lightning run wrote, bit for bit."""
    # three images in batches of 2 and 1; settings that are not the defaults: both paths must read the config
    cfg = tiny_cfg("dataset.limit=3", "dataset.batch_size=2", "module.steps=3", "loss.margin=0.2")
    run_dir = Path(anonymize(cfg)["run_dir"])
    records = {r["id"]: r for r in map(json.loads, (run_dir / "manifest.jsonl").read_text().splitlines())}

    from hydra.utils import instantiate

    data = instantiate(cfg.dataset)
    method = build_method(cfg)
    data.attach(run_dir / "fresh", method.networks.generator.num_ws)  # no manifest there: every image
    data.setup("predict")
    optimised = []
    record_result = method.optimise
    method.optimise = lambda *args, **kwargs: optimised.append(record_result(*args, **kwargs)) or optimised[-1]
    batches = 0
    for batch in data.predict_dataloader():
        images, inversions, neighbours = batch["image"], batch["w_inversion"], batch["w_neighbour"]
        neighbour_of = dict(zip(batch["id"], neighbours))  # the fake pool: each image's own neighbour code
        anonymizer = FalcoFaceAnonymizer(method, lambda x, codes=inversions: codes, batch["id"], FeaturesOf()(images),
                                         neighbour_of.__getitem__, FeaturesOf(), image_size=images.shape[-1])
        anonymizer(images)
        for i, image_id in enumerate(batch["id"]):
            saved = torch.load(run_dir / records[image_id]["code"], weights_only=True)
            assert anonymizer.last[i]["fake"] == image_id  # its own neighbour code
            assert torch.equal(optimised[-1]["ws"][i], saved), image_id
            assert anonymizer.last[i]["identity_similarity_after"] == records[image_id]["identity_similarity_after"]
        batches += 1
    assert batches == 2 and len(records) == sum(len(r["ws"]) for r in optimised)
