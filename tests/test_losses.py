from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from anon.method.losses import FalcoLoss, Reference, token_l1_loss
from anon.method.schedule import fractional_multistep


def test_identity_term_matches_hand_computation():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[4.0, 3.0], [-1.0, 0.0]])
    # cos: 24/25 = 0.96 and -1; with margin 0.5 -> |0.96-0.5| = 0.46, |-1-0.5| = 1.5
    loss = FalcoLoss(margin=0.5, lambda_id=10.0, lambda_attr=0.0)
    ref = type("R", (), {"embedding": torch.tensor(b, dtype=torch.float32), "tokens": None})
    ident = torch.nn.Identity()
    out = loss(ident, None, torch.tensor(a, dtype=torch.float32), ref)
    np.testing.assert_allclose(out["similarity"].numpy(), [0.96, -1.0], atol=1e-6)
    np.testing.assert_allclose(out["identity"].numpy(), [0.46, 1.5], atol=1e-6)
    np.testing.assert_allclose(out["total"].numpy(), [4.6, 15.0], atol=1e-5)


def test_token_l1_is_sum_over_tokens_of_channel_mean():
    gen = torch.zeros(1, 3, 2)
    ref = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [0.0, -4.0]]])
    # token means of |diff|: 2, 2, 2 -> sum 6
    assert token_l1_loss(gen, ref).item() == 6.0
    # per sample (N = 2), a difference (not a sum) of non-zero tokens: sample 1 is |[1,1]-[2,-1]| -> 1, 2
    gen2 = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])
    ref2 = torch.tensor([[[1.0, 3.0]], [[2.0, -1.0]]])
    assert token_l1_loss(gen2, ref2).tolist() == [2.0, 1.5]


class Flatten(torch.nn.Module):
    """A stand-in identity network: N x T x C "images" -> N x (T C) embeddings."""

    def forward(self, x):
        return x.flatten(1)


def test_full_objective_by_hand():
    # generated "images" are N x T x C token grids: the attribute network passes them through, the
    # identity network flattens them
    gen = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    ref = Reference(embedding=torch.tensor([[0.0, 0.0, 0.0, 5.0], [1.0, 1.0, 1.0, 1.0]]),
                    tokens=torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 3.0], [1.0, 1.0]]]))
    out = FalcoLoss(margin=0.2, lambda_id=10.0, lambda_attr=0.5)(Flatten(), torch.nn.Identity(), gen, ref)
    # sample 0: cos = 20 / (5 * 5) = 0.8 -> |0.8 - 0.2| = 0.6; tokens |[2,0]|,|[0,4]| -> 1 + 2 = 3
    # sample 1: cos = 1 -> 0.8; tokens |[0,-2]|,|[0,0]| -> 1 + 0 = 1
    assert list(out) == FalcoLoss().term_names == ["total", "identity", "attribute", "similarity"]
    np.testing.assert_allclose(out["similarity"].numpy(), [0.8, 1.0], atol=1e-6)
    np.testing.assert_allclose(out["identity"].numpy(), [0.6, 0.8], atol=1e-6)
    np.testing.assert_allclose(out["attribute"].numpy(), [3.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out["total"].numpy(), [10 * 0.6 + 0.5 * 3, 10 * 0.8 + 0.5 * 1], atol=1e-5)


def test_defaults_are_the_papers_and_the_configs():
    loss = FalcoLoss()
    assert (loss.margin, loss.lambda_id, loss.lambda_attr, loss.official_value_ranges) == (0.0, 10.0, 0.1, False)
    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "loss" / "falco.yaml")
    assert (conf.margin, conf.lambda_id, conf.lambda_attr, conf.official_value_ranges) == (0.0, 10.0, 0.1, False)


def test_reference_select_keeps_rows_of_both_fields():
    ref = Reference(embedding=torch.arange(6.0).reshape(3, 2), tokens=torch.arange(12.0).reshape(3, 2, 2))
    picked = ref.select(torch.tensor([2, 0]))
    assert picked.embedding.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert picked.tokens.tolist() == [[[8.0, 9.0], [10.0, 11.0]], [[0.0, 1.0], [2.0, 3.0]]]


def test_official_value_ranges_feeds_originals_in_zero_one():
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert FalcoLoss(official_value_ranges=True).reference_input(x).tolist() == [0.0, 0.5, 1.0]
    assert FalcoLoss().reference_input(x).tolist() == [-1.0, 0.0, 1.0]


def test_schedule_matches_official_milestones():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = fractional_multistep(opt, steps=50)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[36] == 0.01 and abs(lrs[37] - 0.008) < 1e-12 and abs(lrs[45] - 0.0064) < 1e-12 and abs(lrs[44] - 0.008) < 1e-12
