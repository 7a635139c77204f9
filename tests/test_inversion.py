"""anon/method/inversion.py: an image's random starts are keyed by (seed, image id), never by its place in a batch."""
import pytest
import torch

from anon.method.inversion import OptimisationInverter
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def generator():
    from anon.runtime.compose import build_network

    return build_network(compose_config(), "generator").eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("steps", [0, 2])
def test_image_alone_and_in_any_batch_position_gets_the_same_result(generator, steps):
    inverter = OptimisationInverter(generator, steps=steps, starts=2, init="random", seed=3)
    batch = images(3)
    together = inverter(batch, ids=["a", "b", "c"])
    alone = inverter(batch[1:2], ids=["b"])
    reordered = inverter(batch[[2, 1]], ids=["c", "b"])
    assert torch.allclose(together[1], alone[0], atol=1e-5)  # batched mapping: float rounding only
    assert torch.allclose(reordered[1], alone[0], atol=1e-5) and torch.allclose(reordered[0], together[2], atol=1e-5)
    # Different ids or seeds draw different starts.
    assert not torch.allclose(inverter(batch[1:2], ids=["z"]), alone, atol=1e-3)
    other_seed = OptimisationInverter(generator, steps=steps, starts=2, init="random", seed=4)
    assert not torch.allclose(other_seed(batch[1:2], ids=["b"]), alone, atol=1e-3)


def test_without_ids_the_image_content_keys_the_start(generator):
    inverter = OptimisationInverter(generator, steps=0, starts=1, init="random", seed=0)
    batch = images(3, seed=1)
    assert torch.allclose(inverter(batch)[2], inverter(batch[2:])[0], atol=1e-5)
    assert not torch.allclose(inverter(batch)[0], inverter(batch)[1], atol=1e-3)


def test_ids_must_match_the_images(generator):
    with pytest.raises(ValueError, match="2 ids for 3 images"):
        OptimisationInverter(generator, steps=0, init="random")(images(3), ids=["a", "b"])


def test_a_module_without_the_generator_interface_is_one_line_error():
    with pytest.raises(TypeError, match="Linear cannot be inverted: it has no num_ws, z_dim, resolution, w_avg, mapping"):
        OptimisationInverter(torch.nn.Linear(2, 2))


def test_random_init_without_starts_is_an_error_not_none(generator):
    with pytest.raises(ValueError, match="inverter.starts must be >= 1 with init=random, not 0"):
        OptimisationInverter(generator, steps=0, starts=0, init="random")(images(1), ids=["a"])


def test_pipeline_freezes_the_generator_and_frozen_inversion_gives_the_same_codes(generator):
    from anon.stages.pipeline import build_inverter

    batch = images(2, seed=5)
    generator.requires_grad_(True)  # as built: weights that would get gradients
    unfrozen = OptimisationInverter(generator, steps=3, starts=1, init="random", seed=1)(batch, ids=["a", "b"])
    cfg = compose_config("inverter=optimisation", "inverter.steps=3", "inverter.init=random", "inverter.seed=1")
    inverter = build_inverter(cfg, generator)
    assert not any(p.requires_grad for p in generator.parameters())  # no weight gradients in the inversion
    frozen = inverter(batch, ids=["a", "b"])
    assert torch.equal(frozen, unfrozen)  # freezing the weights changes no code, bit for bit
