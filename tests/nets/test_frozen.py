"""The frozen-network base: which networks use it, their registry keys, and eval-only ``train()``."""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
from torch import nn

import anon.nets
from anon.lite.npm import LITE
from anon.nets.frozen import FrozenNetwork
from anon.runtime.weights import REGISTRY

# Every pretrained network the method only reads.
EXPECTED = {"ArcFaceIdentity", "E4EInverter", "FaceNetIdentity", "FarlAttributes", "MobileFaceNetIdentity",
            "MobileFaceNetTokens", "DCGANGenerator", "ViewAveragedIdentity", "FAN", "S3FD", "MiniXception",
            "PNet", "RNet", "ONet", "FIDInceptionV3", "ExpressionTerm", "LandmarkTerm",
            "StyleGAN2Generator"}


def frozen_networks() -> dict[str, type]:
    for module in pkgutil.walk_packages(anon.nets.__path__, "anon.nets."):
        importlib.import_module(module.name)
    importlib.import_module("anon.metrics.fid")
    importlib.import_module("anon.method.attribute_terms")
    found, todo = {}, [FrozenNetwork]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[sub.__name__] = sub
            todo.append(sub)
    return found


def test_every_pretrained_network_uses_the_base_with_a_known_weights_key():
    networks = frozen_networks()
    assert EXPECTED <= set(networks), f"not on the frozen base: {sorted(EXPECTED - set(networks))}"
    unknown = {name: cls.weights for name, cls in networks.items()
               if cls.weights is not None and cls.weights not in REGISTRY and cls.weights not in LITE}
    assert not unknown, f"weights keys that are neither `anon download` nor lite npm entries: {unknown}"
    assert networks["ArcFaceIdentity"].weights == "arcface_ir_se50" and networks["FAN"].weights == "fan_2dfan4"
    assert networks["MobileFaceNetTokens"].weights == "mobilefacenet"


def small_frozen_networks() -> dict[str, nn.Module]:
    from anon.method.attribute_terms import ExpressionTerm, LandmarkTerm
    from anon.nets.dcgan import DCGANGenerator
    from anon.nets.farl import FarlAttributes
    from anon.nets.mini_xception import MiniXception
    from anon.nets.mtcnn import ONet, PNet, RNet
    from anon.nets.views import ViewAveragedIdentity

    farl = dict(input_resolution=32, patch_size=8, width=32, layers=2, heads=2, output_dim=16)
    return {"farl": FarlAttributes(**farl), "dcgan": DCGANGenerator(checkpoint=None, ngf=8),
            "xception": MiniXception(), "pnet": PNet(None), "rnet": RNet(None), "onet": ONet(None),
            "views": ViewAveragedIdentity(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout())),
            "landmarks": LandmarkTerm(ONet(None)), "expression": ExpressionTerm(nn.Sequential(nn.BatchNorm1d(3)))}


def test_frozen_networks_stay_in_eval_mode_inside_a_module_that_trains():
    parent = nn.ModuleDict(small_frozen_networks())
    parent.train()
    training = [name for name, m in parent.named_modules() if m.training and name]
    assert not training, f"switched to training mode by a parent's train(): {training[:6]}"
    assert not any(p.requires_grad for p in parent.parameters())


def test_unfrozen_network_trains_and_gradients_reach_the_input_of_a_frozen_one():
    from anon.nets.farl import FarlAttributes

    farl = dict(input_resolution=32, patch_size=8, width=32, layers=2, heads=2, output_dim=16)
    free = FarlAttributes(frozen=False, **farl)
    assert free.train().training and all(p.requires_grad for p in free.parameters())
    frozen = FarlAttributes(**farl)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    frozen(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_base_from_checkpoint_loads_strictly_and_frozen(tmp_path):
    from anon.nets.mtcnn import PNet as cls

    source = cls(None)
    torch.save(source.state_dict(), tmp_path / "net.pt")
    loaded = cls.from_checkpoint(tmp_path / "net.pt")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    state = source.state_dict()
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "short.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        cls.from_checkpoint(tmp_path / "short.pt")
