"""The statistics of the paper: similarity matrices, the 2 vs 2 and 1 vs 2 tests, RSA and
permutation nulls. Each module is one statistic; the numba kernels (``_kernels``, ``_gram``)
are the speed-up beneath them, behind ``TwoVsTwo`` and ``PearsonAccumulator``."""
