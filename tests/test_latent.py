import pytest
import torch

from anon.errors import ConfigError
from anon.latent import LatentLayout


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
    with pytest.raises(ConfigError, match="trainable_init"):
        LatentLayout((3, 8), trainable_init="random")


def test_generator_without_wplus_accepts_only_the_whole_code():
    class ZOnly:
        num_ws, w_dim, has_wplus = 1, 100, False

    LatentLayout((0, None)).check_generator(ZOnly())
    with pytest.raises(ConfigError, match="no W\\+ space.*latent=whole"):
        LatentLayout((3, 8)).check_generator(ZOnly())
