import numpy as np
import torch

from anon.losses import FalcoLoss, token_l1_loss
from anon.schedule import fractional_multistep


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
