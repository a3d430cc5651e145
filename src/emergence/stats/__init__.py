"""The statistics of the paper: similarity matrices, the 2 vs 2 and 1 vs 2 tests, RSA and
permutation nulls. Each module is one statistic; the numba kernels (``_two_vs_two_cpu``: the
2 vs 2 test's CPU engine, ``_gram``) are the speed-up beneath them, behind ``TwoVsTwo`` and
``PearsonAccumulator``."""
