"""A checkpoint of another network, an empty one, a cut one: one line naming the file and the fix."""
import pytest
import torch
from hydra.utils import instantiate

from anon.errors import AnonError
from tests.conftest import compose_config
from tests.helpers import caused_by


def _identity_error(path) -> str:
    with pytest.raises(Exception) as caught:
        instantiate(compose_config(f"identity.checkpoint={path}").identity)
    return str(caused_by(caught.value, AnonError))


def test_wrong_architecture_is_one_short_line(tmp_path):
    vit = instantiate(compose_config().attribute)
    path = tmp_path / "attribute_weights.pt"
    torch.save(vit.state_dict(), path)
    irse_keys = len(instantiate(compose_config().identity).backbone.state_dict())
    message = _identity_error(path)
    assert "\n" not in message and len(message) < 600, message
    assert str(path) in message
    assert f"{irse_keys} of its {irse_keys} keys missing" in message
    assert f"{len(vit.state_dict())} unexpected" in message and "visual." in message
    assert "point the config at a checkpoint" in message


def test_shape_mismatch_names_one_example(tmp_path):
    state = instantiate(compose_config().identity).backbone.state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 2)
    path = tmp_path / "resized.pt"
    torch.save(state, path)
    message = _identity_error(path)
    assert "\n" not in message and f"1 with another shape (e.g. {key}" in message


@pytest.mark.parametrize("cut", [0, 0.5])
def test_empty_or_truncated_checkpoint_names_the_file(tmp_path, cut):
    full = tmp_path / "full.pt"
    torch.save(instantiate(compose_config().identity).backbone.state_dict(), full)
    path = tmp_path / "cut.pt"
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    message = _identity_error(path)
    assert "\n" not in message and str(path) in message and "truncated" in message
    assert f"({path.stat().st_size} bytes" in message
