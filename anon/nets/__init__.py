"""Networks as plain ``nn.Module``s (no Lightning import here).

Conventions shared by every network in this package (the fit loop relies on them):

* images are ``B x 3 x H x W`` float RGB tensors in ``[-1, 1]`` (the generator's range);
  each encoder resizes/crops to its own input size inside ``forward``;
* an *identity encoder* maps images to ``B x D`` L2-normalised embeddings and exposes
  ``embedding_dim``;
* an *attribute encoder* maps images to ``B x T x C`` token features;
* a *generator* exposes ``num_ws``, ``w_dim``, ``z_dim``, ``resolution``,
  ``mapping(z, truncation_psi)`` -> ``B x num_ws x w_dim`` and ``synthesis(ws)`` -> images.

Each real network comes with a loader for its official checkpoint file
(``from_checkpoint``), and a tiny random-weight configuration of the same architecture
for tests.
"""
