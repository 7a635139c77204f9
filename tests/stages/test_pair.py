import numpy as np
import torch

from anon.stages.pair import nearest_neighbours


def test_chunked_topk_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    q, keys = torch.randn(37, 8, generator=gen), torch.randn(101, 8, generator=gen)
    sims, idx = nearest_neighbours(q, keys, k=3, query_chunk=5, key_chunk=7)
    qn = q.numpy() / np.linalg.norm(q.numpy(), axis=1, keepdims=True)
    kn = keys.numpy() / np.linalg.norm(keys.numpy(), axis=1, keepdims=True)
    full = qn @ kn.T
    expected = np.argsort(-full, axis=1)[:, :3]
    assert np.array_equal(idx.numpy(), expected)
    np.testing.assert_allclose(sims.numpy(), np.take_along_axis(full, expected, 1), atol=1e-6)


def test_k_larger_than_pool():
    sims, idx = nearest_neighbours(torch.randn(2, 4), torch.randn(3, 4), k=10, key_chunk=2)
    assert idx.shape == (2, 3) and sorted(idx[0].tolist()) == [0, 1, 2]
