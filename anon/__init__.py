"""anon: attribute-preserving face anonymisation (FALCO) on Lightning + Hydra."""
import os as _os

# OpenMP threads that run out of work sleep instead of spinning (GNU OpenMP's default spins first).
# On a machine whose cores are shared (a laptop, CI, several jobs), the spinning threads took the
# cores that the working ones needed: the lite pipeline's anonymisation of 8 faces on 2 threads used
# 170 CPU s (423 s wall) with spinning, 35 CPU s (73 s wall) without, at a load average of 9. The
# results are the same bit for bit (the same threads split the same work; tests/test_omp_wait.py).
# It must be set before torch loads OpenMP, hence here; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
