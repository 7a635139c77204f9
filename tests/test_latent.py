import pytest
import torch

from anon.errors import ConfigError
from anon.method.latent import LatentLayout


def test_compose_takes_middle_rows_from_neighbour_and_the_rest_from_inversion():
    w_inv = torch.arange(18.0)[None, :, None].repeat(2, 1, 4)
    w_nb = -w_inv
    layout = LatentLayout((3, 8))
    frozen, trainable = layout.split(w_inv, w_nb)
    ws = layout.compose(frozen, trainable)
    expected_rows = [r if not 3 <= r < 8 else -r for r in range(18)]
    assert ws[0, :, 0].tolist() == expected_rows
    assert trainable.shape == (2, 5, 4)


def test_only_trainable_rows_receive_gradient():
    layout = LatentLayout((3, 8))
    frozen, trainable = layout.split(torch.randn(1, 18, 8), torch.randn(1, 18, 8))
    trainable.requires_grad_(True)
    ws = layout.compose(frozen, trainable)
    (ws * torch.randn_like(ws)).sum().backward()
    assert trainable.grad is not None and trainable.grad.abs().sum() > 0
    assert not frozen.requires_grad


def test_ranges_are_configurable_and_validated():
    layout = LatentLayout((0, None), trainable_init="inversion")
    w_inv, w_nb = torch.randn(1, 10, 2), torch.randn(1, 10, 2)
    frozen, trainable = layout.split(w_inv, w_nb)
    assert torch.equal(trainable, w_inv)
    with pytest.raises(ConfigError, match="does not fit a generator with 10 W"):
        LatentLayout((3, 12)).split(w_inv, w_nb)
    with pytest.raises(ConfigError, match=r"^latent\.trainable_init must be one of .*'random'"):
        LatentLayout((3, 8), trainable_init="random")
    with pytest.raises(ConfigError, match=r"^latent\.frozen_source must be one of .*'zero'"):
        LatentLayout((3, 8), frozen_source="zero")
    with pytest.raises(ConfigError, match=r"\[4, 4\] does not fit"):  # an empty range
        LatentLayout((4, 4)).rows(10)
    assert LatentLayout((4, 5)).rows(10) == (4, 5) and LatentLayout((9, None)).rows(10) == (9, 10)


def test_split_rejects_codes_of_different_shapes_or_ranks():
    layout = LatentLayout((3, 8))
    with pytest.raises(ValueError, match=r"N x L x D, got \(1, 10, 2\) and \(1, 10, 3\)"):
        layout.split(torch.randn(1, 10, 2), torch.randn(1, 10, 3))
    with pytest.raises(ValueError, match=r"N x L x D, got \(10, 2\) and \(10, 2\)"):
        layout.split(torch.randn(10, 2), torch.randn(10, 2))


def test_generator_without_wplus_accepts_only_the_whole_code():
    class ZOnly:
        num_ws, w_dim, has_wplus = 1, 100, False

    class WPlus:  # a generator that does not say: W+ is assumed (every StyleGAN)
        num_ws, w_dim = 18, 512

    LatentLayout((0, None)).check_generator(ZOnly())
    LatentLayout((0, 1)).check_generator(ZOnly())  # the whole code, written as a range
    with pytest.raises(ConfigError, match="^ZOnly has no W\\+ space.*latent=whole"):
        LatentLayout((3, 8)).check_generator(ZOnly())
    LatentLayout((3, 8)).check_generator(WPlus())
