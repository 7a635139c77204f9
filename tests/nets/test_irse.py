"""IR / IR-SE builders (anon/nets/irse.py) on their defaults and small shapes.

The ArcFace and e4e tests build the network through their wrappers with explicit arguments; these
hold the builders' own defaults (which e4e relies on: ``make_body(units, widths, mode)``), the tiny
shapes tests use, and the argument checks. Expected layouts come from the official description in
``tests/nets/test_arcface.py``, never from the module under test.
"""
from __future__ import annotations

import pytest
import torch

from anon.nets.irse import Backbone, ResidualUnit, SqueezeExcite, make_body, make_input_layer, resolve_stages, stage_end_indices
from tests.nets.test_arcface import IR_SE_50_STAGES, official_ir_se50_shapes, official_ir_se_trunk_shapes


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_backbone_defaults_are_the_official_ir_se50():
    with torch.device("meta"):
        net = Backbone()
    assert _shapes(net) == official_ir_se50_shapes()
    assert net.output_layer[1].p == 0.4  # TreB1eN's default drop ratio
    assert (net.input_size, net.embedding_dim) == (112, 512)


def test_make_body_defaults_to_squeeze_excite_with_reduction_16():
    """e4e builds its trunk with ``make_body(units, widths, mode)``: the reduction is the default."""
    units, widths = resolve_stages(50)
    with torch.device("meta"):
        trunk = {**_shapes(make_input_layer(64), "input_layer."), **_shapes(make_body(units, widths), "body.")}
    assert trunk == official_ir_se_trunk_shapes(IR_SE_50_STAGES)


def test_stem_and_units_keep_the_resolution_until_the_strided_conv():
    stem = make_input_layer(8)
    assert stem[0].stride == (1, 1) and stem[0].bias is None
    unit = make_body((1,), (8,))[0]
    assert [m.stride for m in unit.res_layer if isinstance(m, torch.nn.Conv2d)] == [(1, 1), (2, 2)]
    assert all(m.bias is None for m in unit.modules() if isinstance(m, torch.nn.Conv2d))
    assert unit(torch.zeros(1, 8, 8, 8)).shape == (1, 8, 4, 4)


def test_tiny_stages_widths_and_reduction_are_used():
    with torch.device("meta"):
        net = Backbone(input_size=16, stage_units=(1, 2), stage_widths=(8, 32), embedding_dim=6, se_reduction=4,
                       affine=False)
    assert stage_end_indices((1, 2)) == [0, 2] and len(net.body) == 3
    assert tuple(net.body[0].res_layer[5].fc1.weight.shape) == (2, 8, 1, 1)  # 8 // 4
    assert tuple(net.body[2].res_layer[5].fc2.weight.shape) == (32, 8, 1, 1)  # 32 // 4
    assert tuple(net.output_layer[3].weight.shape) == (6, 32 * 4 * 4)
    assert "output_layer.4.weight" not in net.state_dict()  # affine=False: FaceNet-style plain BN
    assert all(not isinstance(m, SqueezeExcite) for m in Backbone(16, stage_units=(1,), stage_widths=(8,),
                                                                 mode="ir").modules())


def test_squeeze_excite_keeps_one_hidden_channel_for_narrow_layers():
    se = SqueezeExcite(8)  # 8 // 16 == 0 -> 1 hidden channel
    assert tuple(se.fc1.weight.shape) == (1, 8, 1, 1) and se.fc1.bias is None and se.fc2.bias is None
    assert tuple(SqueezeExcite(64).fc1.weight.shape) == (4, 64, 1, 1)  # default reduction 16


def test_unit_and_stage_defaults_are_ir_se50():
    unit = ResidualUnit(64, 64, 1)  # squeeze-excite on, reduction 16
    assert tuple(unit.res_layer[5].fc1.weight.shape) == (4, 64, 1, 1)
    assert resolve_stages() == ((3, 4, 14, 3), (64, 128, 256, 512))


def test_stage_end_indices_of_the_official_depths():
    assert stage_end_indices((3, 4, 14, 3)) == [2, 6, 20, 23]
    assert stage_end_indices((3, 13, 30, 3)) == [2, 15, 45, 48]


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_layers=34), r"num_layers must be one of \[50, 100, 152\]"),
    (dict(stage_units=(1, 1), stage_widths=(8,)), "one width per stage"),
    (dict(stage_units=(1, 0), stage_widths=(8, 8)), ">= 1 unit per stage"),
    (dict(input_size=18, stage_units=(1, 1), stage_widths=(8, 8)), "input_size must be divisible by 4, got 18"),
    (dict(mode="se"), "mode must be 'ir' or 'ir_se', got 'se'"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        Backbone(**kwargs)


def test_wrong_input_size_names_the_expected_and_given_shapes():
    net = Backbone(input_size=16, stage_units=(1,), stage_widths=(8,), embedding_dim=4).eval()
    with pytest.raises(ValueError, match=r"expected B x 3 x 16 x 16, got \(1, 3, 16, 8\)"):
        net(torch.zeros(1, 3, 16, 8))
    out = net(torch.randn(3, 3, 16, 16))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))  # unit rows: normalised along the embedding
