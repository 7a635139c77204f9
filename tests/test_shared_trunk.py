"""One MobileFaceNet trunk for the identity and the attribute loss: fewer forwards, bitwise the same run."""
import copy

import pytest
import torch

import anon.method.losses
from anon.nets.mobilefacenet import MobileFaceNetIdentity, MobileFaceNetTokens
from anon.nets.views import ViewAveragedIdentity
from anon.method.shared_trunk import shares_trunk
from tests.test_module import make_problem, trajectory, watching


@pytest.fixture(scope="module")
def lite_losses():
    """The tiny generator with the lite set's loss networks (random MobileFaceNet weights, the same in both)."""
    module, images, w_inv, w_nb = make_problem("identity=mobilefacenet", "identity.checkpoint=null",
                                               "attribute=mobilefacenet_tokens", "attribute.checkpoint=null",
                                               "module.steps=3")
    module.attribute.net.load_state_dict(module.identity.net.state_dict())
    assert module.loss.lambda_attr and not module.loss.terms
    return module, images[:2], w_inv[:2], w_nb[:2]


def run(module, images, w_inv, w_nb):
    calls = []
    with trajectory(module) as (codes, on_step), watching(module.identity.net.conv2d_0, module.attribute.net.conv2d_0,
                                                          record=lambda m, inputs: calls.append(m)):
        out = module.optimise(images, w_inv, w_nb, on_step=on_step)
    return out, codes, len(calls)


def test_shared_trunk_run_is_bitwise_the_two_network_run(lite_losses, monkeypatch):
    module = lite_losses[0]
    assert shares_trunk(module.identity, module.attribute)
    shared, shared_codes, shared_calls = run(*lite_losses)
    monkeypatch.setattr(anon.method.losses, "shares_trunk", lambda identity, attribute: False)
    separate, separate_codes, separate_calls = run(*lite_losses)
    assert shared_calls == separate_calls - module.steps - 1  # one trunk forward less per step and at the end
    assert len(shared_codes) == len(separate_codes) == module.steps
    for a, b in zip(shared_codes, separate_codes):
        assert torch.equal(a, b)
    assert torch.equal(shared["ws"], separate["ws"]) and torch.equal(shared["images"], separate["images"])
    for when in ("initial", "final"):
        assert shared[when].keys() == separate[when].keys()
        for k in shared[when]:
            assert torch.equal(shared[when][k], separate[when][k]), (when, k)


def test_only_the_same_network_at_the_same_layer_shares_its_trunk():
    torch.manual_seed(0)
    identity = MobileFaceNetIdentity(None)
    tokens = MobileFaceNetTokens(None)
    assert not shares_trunk(identity, tokens)  # other random weights
    tokens.net.load_state_dict(identity.net.state_dict())
    assert shares_trunk(identity, tokens)
    assert not shares_trunk(ViewAveragedIdentity(identity), tokens)  # views: other images than the tokens see
    other_layer = copy.deepcopy(tokens)
    other_layer.token_layer = "conv2d_2"
    assert not shares_trunk(identity, other_layer)
    nchw = copy.deepcopy(tokens)
    nchw.net.to(memory_format=torch.contiguous_format)
    assert not shares_trunk(identity, nchw)  # same values, other layout: other kernels, maybe other rounding
    with torch.no_grad():
        tokens.net.logits_linear.conv.bias[0] += 1e-6
    assert not shares_trunk(identity, tokens)


def test_a_second_backward_through_the_one_trunk_forward_is_a_one_line_error():
    from anon.method.shared_trunk import embeddings_and_tokens

    torch.manual_seed(0)
    identity = MobileFaceNetIdentity(None).eval()
    images = (torch.rand(1, 3, 112, 112) * 2 - 1).requires_grad_(True)
    embeddings, tokens = embeddings_and_tokens(identity, images)
    total = embeddings.sum() + tokens.sum()
    total.backward(retain_graph=True)  # the first backward frees the trunk's graph
    with pytest.raises(RuntimeError, match="_TrunkOnce.backward without a graph"):
        total.backward()
