"""The FALCO method as plain PyTorch: the W+ layout, the losses, the schedule, the optimisation loop
(a pure function), inversion and pivotal tuning, the pixel baselines. No Lightning, no file IO."""
