"""StyleGAN2 paths the golden tests do not take: the grouped ("fused") modulated convolution,
truncation options, the mapping's running mean, the generator's own noise mode, ``from_checkpoint``.

The golden tests run the batched (unfused) convolution, the project default; the grouped form must
compute the same function (it is the official code's form, ``fused_modconv=True``).
"""
from __future__ import annotations

import pytest
import torch

from anon.nets import stylegan2 as sg
from anon.nets.stylegan2 import MappingNetwork, StyleGAN2Generator, modulated_conv2d
from tests.nets.test_stylegan2 import TINY, nvidia_shapes, nvidia_weights, widths_of

KERNEL = torch.tensor([1.0, 3.0, 3.0, 1.0])
KERNEL = KERNEL[:, None] * KERNEL[None, :] / 64.0  # StyleGAN2's resample filter, sums to 1


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_grouped_and_batched_modulated_convolutions_agree(up, demodulate):
    g = torch.Generator().manual_seed(3)
    x, weight = torch.randn(3, 4, 6, 6, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    styles = torch.rand(3, 4, generator=g) + 0.5
    fused = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, kernel=KERNEL, fused=True)
    batched = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, kernel=KERNEL, fused=False)
    assert fused.shape == (3, 5, 12 if up else 6, 12 if up else 6)
    torch.testing.assert_close(fused, batched, atol=1e-5, rtol=1e-5)
    one = modulated_conv2d(x[1:2], weight, styles[1:2], demodulate=demodulate, up=up, kernel=KERNEL, fused=True)
    torch.testing.assert_close(one, fused[1:2], atol=1e-5, rtol=1e-5)  # each sample is its own group


def test_fused_flag_picks_the_grouped_form_by_default(monkeypatch):
    calls = []
    monkeypatch.setattr(sg, "_modulated_conv2d_unfused", lambda *a: calls.append(a) or a[0])
    x, weight, styles = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.ones(2, 4)
    assert modulated_conv2d(x, weight, styles).shape == (2, 5, 6, 6) and not calls
    modulated_conv2d(x, weight, styles, fused=False)
    assert len(calls) == 1


def test_generator_gives_the_same_images_with_either_convolution():
    torch.manual_seed(0)
    g = StyleGAN2Generator(**TINY).eval()
    ws = torch.randn(2, g.num_ws, TINY["w_dim"])
    with torch.no_grad():
        batched = g(ws)
        g.set_fused_modconv(True)
        torch.testing.assert_close(g(ws), batched, atol=1e-4, rtol=1e-4)


def test_truncation_psi_and_cutoff_follow_the_official_formula():
    torch.manual_seed(0)
    m = MappingNetwork(8, 8, num_ws=4, num_layers=2).eval()
    m.w_avg.copy_(torch.randn(8))
    z = torch.randn(3, 8)
    with torch.no_grad():
        w = m(z)
        assert torch.isfinite(m(torch.zeros(2, 8))).all()  # pixel norm of z = 0 keeps its epsilon
        torch.testing.assert_close(m(z, truncation_psi=2.0), m.w_avg + 2.0 * (w - m.w_avg))
        cut = m(z, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], m.w_avg + 0.5 * (w[:, :2] - m.w_avg))
    assert torch.equal(cut[:, 2:], w[:, 2:])


def test_training_mode_tracks_the_running_mean_of_w_per_channel():
    torch.manual_seed(0)
    m = MappingNetwork(8, 8, num_ws=2, num_layers=2).train()
    z = torch.randn(5, 8)
    w = m(z)[:, 0].detach()
    torch.testing.assert_close(m.w_avg, (1 - 0.995) * w.mean(0))  # from w_avg = 0, beta 0.995
    assert m.w_avg.std() > 0


def test_generator_forward_uses_its_noise_mode_and_the_asked_resolution():
    torch.manual_seed(0)
    g = StyleGAN2Generator(**TINY, noise_mode="none").eval()
    for p in g.parameters():
        if p.ndim == 0:  # noise strengths start at 0: make the noise visible
            p.data.fill_(0.5)
    ws = torch.randn(2, g.num_ws, TINY["w_dim"])
    with torch.no_grad():
        assert torch.equal(g(ws), g.synthesis(ws, noise_mode="none"))
        assert not torch.allclose(g(ws), g.synthesis(ws, noise_mode="const"))
        assert torch.equal(g(ws, resolution=16), g.synthesis(ws, noise_mode="none", resolution=16))
        assert g(ws, resolution=16).shape == (2, 3, 16, 16)


def test_from_checkpoint_reads_the_file_with_the_overrides(tmp_path):
    nv = nvidia_weights(nvidia_shapes(64, 16, 16, 2, widths_of(64, 256, 16)), gen=torch.Generator().manual_seed(8))
    torch.save(nv, tmp_path / "g.pt")
    g = StyleGAN2Generator.from_checkpoint(tmp_path / "g.pt", conv_clamp=None, noise_mode="none")
    assert g.noise_mode == "none"
    assert torch.equal(g.synthesis.b4.conv1.weight, nv["synthesis.b4.conv1.weight"])


@pytest.mark.parametrize("fused", [True, False])
def test_a_zero_style_gives_zero_output_not_nan(fused):
    """Demodulation keeps its epsilon: a channel group with all-zero modulated weights gives 0, not NaN."""
    x, weight = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
    styles = torch.ones(2, 4)
    styles[0] = 0.0
    out = modulated_conv2d(x, weight, styles, fused=fused)
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros_like(out[0]))
