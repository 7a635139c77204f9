import shutil

import torch
from hydra.utils import instantiate

from anon.stages.fakes import fake_latents, load_features, run_fakes
from tests.conftest import compose_config


def nets():
    cfg = compose_config()
    torch.manual_seed(0)
    return instantiate(cfg.generator), instantiate(cfg.attribute)


def test_pool_is_seeded_and_independent_of_ranks_and_interruptions(tmp_path):
    g, f = nets()
    one = run_fakes(g, f, tmp_path / "one", num_samples=10, chunk_size=3, batch_size=2)
    for rank in (1, 0):  # rank 1 first: rank 0 marks the pool done once every chunk is there
        two = run_fakes(g, f, tmp_path / "two", num_samples=10, chunk_size=3, batch_size=4, rank=rank, world=2)
    ids1, feats1 = load_features(one)
    ids2, feats2 = load_features(two)
    assert ids1 == ids2 == [f"fake{i:07d}" for i in range(10)]
    torch.testing.assert_close(feats1, feats2, atol=1e-5, rtol=0)
    code = torch.load(one / "codes" / "fake0000004.pt", weights_only=True)
    with torch.no_grad():
        expected = g.mapping(fake_latents(range(4, 5), g.z_dim, seed=0), truncation_psi=0.7)[0]
    torch.testing.assert_close(code, expected)
    assert torch.equal(code[0], code[-1]), "truncation on all rows: every W+ row is the same w"
    # An interrupted pool (a chunk lost, no DONE marker) is completed with identical values.
    (two / "DONE.json").unlink()
    (two / "features" / "chunk0000003.pt").unlink()
    shutil.rmtree(two / "codes")
    run_fakes(g, f, two, num_samples=10, chunk_size=3)
    torch.testing.assert_close(load_features(two)[1], feats1, atol=1e-5, rtol=0)


def test_other_seed_other_pool():
    a = fake_latents(range(3), 8, seed=0)
    assert torch.equal(a, fake_latents(range(3), 8, seed=0))
    assert not torch.allclose(a, fake_latents(range(3), 8, seed=1))
    assert torch.equal(a[2], fake_latents(range(2, 3), 8, seed=0)[0]), "fake i does not depend on its chunk"
