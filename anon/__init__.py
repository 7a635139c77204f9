"""anon: attribute-preserving face anonymisation (FALCO) on Lightning + Hydra."""
