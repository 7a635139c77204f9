"""The identity network seen through fixed views: shifts by hand, mirror invariance, batch independence."""
import torch
from torch import nn

from anon.nets.views import ViewAveragedIdentity, shifted


def test_shift_moves_pixels_and_replicates_the_edge():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    right_down = shifted(x, 1, 1)
    assert right_down[0, 0].tolist() == [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]]
    assert shifted(x, -1, 0)[0, 0, 0].tolist() == [1, 2, 3, 3]


class Lopsided(nn.Module):
    """An 'identity net' that is not mirror-symmetric: embeddings are the column means."""

    def forward(self, x):
        return x.mean(dim=(1, 2))


def test_with_the_mirror_view_the_embedding_does_not_change_under_a_flip():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    plain = ViewAveragedIdentity(Lopsided(), flip=False, shifts=(), blur=False)
    mirrored = ViewAveragedIdentity(Lopsided(), flip=True, shifts=(), blur=False)
    assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-3)
    torch.testing.assert_close(mirrored(x), mirrored(x.flip(-1)))
    assert len(ViewAveragedIdentity(Lopsided()).views(x)) == 5  # itself, mirror, two shifts, blurred


def test_each_image_gets_its_own_embedding_in_a_batch():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8)
    net = ViewAveragedIdentity(Lopsided())
    torch.testing.assert_close(net(x)[1:2], net(x[1:2]))
    assert torch.allclose(net(x).norm(dim=1), torch.ones(3))
