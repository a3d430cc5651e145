"""Fused CPU kernels (numba) for the permutation null of the 2 vs 2 test.

The batched torch engine in :mod:`emergence.two_vs_two` streams ~60 arrays of C(k, 2)
values through memory per permutation; on a CPU that, not arithmetic, is the cost.
Here each permutation is one pass over the pairs with everything in registers and the
k x k operands in cache. Only the ``C = W I_p`` cross products stay a (batched) BLAS
matmul. Same formulas, same tie tolerance; checked against the literal implementation.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

__all__ = ["count_passes", "permute_concepts", "permuted_upper_dot"]


@njit(cache=True, parallel=True)
def permute_concepts(m: NDArray[np.float64], perms: NDArray[np.int64]) -> NDArray[np.float64]:
    """``out[b] = m[perms[b]][:, perms[b]]`` for a batch of permutations (B x k x k)."""
    n_b, k = perms.shape
    out = np.empty((n_b, k, k))
    for b in prange(n_b):
        p = perms[b]
        for i in range(k):
            row = m[p[i]]
            for j in range(k):
                out[b, i, j] = row[p[j]]
    return out


@njit(cache=True, parallel=True)
def count_passes(
    w: NDArray[np.float64],
    rs_w: NDArray[np.float64],
    rq_w: NDArray[np.float64],
    images: NDArray[np.float64],
    cross_t: NDArray[np.float64],
    tol: float,
) -> NDArray[np.int64]:
    """Number of passed 2 vs 2 tests for each image matrix of a batch.

    ``w`` is W (k x k) with row sums ``rs_w`` and row sums of squares ``rq_w``;
    ``images`` is (B, k, k) image matrices; ``cross_t[b] = I_b W^T``, so that the cross
    products ``C[u, v] = sum_j W[u, j] I_b[v, j]`` are ``cross_t[b, v, u]``.
    """
    n_b, k = images.shape[0], images.shape[1]
    n = float(k - 2)
    out = np.zeros(n_b, dtype=np.int64)
    for b in prange(n_b):
        im = images[b]
        ct = cross_t[b]
        rs_i = np.empty(k)
        rq_i = np.empty(k)
        for v in range(k):
            s = 0.0
            q = 0.0
            for j in range(k):
                x = im[v, j]
                s += x
                q += x * x
            rs_i[v] = s
            rq_i[v] = q
        count = 0
        for a in range(k):
            w_aa = w[a, a]
            i_aa = im[a, a]
            c_aa = ct[a, a]
            for c in range(a + 1, k):
                w_ac = w[a, c]
                w_ca = w[c, a]
                w_cc = w[c, c]
                i_ac = im[a, c]
                i_ca = im[c, a]
                i_cc = im[c, c]
                sx_a = rs_w[a] - w_aa - w_ac
                sx_c = rs_w[c] - w_ca - w_cc
                sy_a = rs_i[a] - i_aa - i_ac
                sy_c = rs_i[c] - i_ca - i_cc
                sd_wa = np.sqrt(n * (rq_w[a] - w_aa * w_aa - w_ac * w_ac) - sx_a * sx_a)
                sd_wc = np.sqrt(n * (rq_w[c] - w_ca * w_ca - w_cc * w_cc) - sx_c * sx_c)
                sd_ia = np.sqrt(n * (rq_i[a] - i_aa * i_aa - i_ac * i_ac) - sy_a * sy_a)
                sd_ic = np.sqrt(n * (rq_i[c] - i_ca * i_ca - i_cc * i_cc) - sy_c * sy_c)
                # C[u, v] = ct[v, u]
                r11 = (n * (c_aa - w_aa * i_aa - w_ac * i_ac) - sx_a * sy_a) / (sd_wa * sd_ia)
                r22 = (n * (ct[c, c] - w_ca * i_ca - w_cc * i_cc) - sx_c * sy_c) / (sd_wc * sd_ic)
                r12 = (n * (ct[c, a] - w_aa * i_ca - w_ac * i_cc) - sx_a * sy_c) / (sd_wa * sd_ic)
                r21 = (n * (ct[a, c] - w_ca * i_aa - w_cc * i_ac) - sx_c * sy_a) / (sd_wc * sd_ia)
                if (r11 + r22) - (r12 + r21) > tol:
                    count += 1
        out[b] = count
    return out


@njit(cache=True, parallel=True)
def permuted_upper_dot(
    w: NDArray[np.float64], m: NDArray[np.float64], perms: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``out[b] = sum_{i<j} w[i, j] * m[p_i, p_j]`` for each permutation ``p = perms[b]``."""
    n_b, k = perms.shape
    out = np.empty(n_b)
    for b in prange(n_b):
        p = perms[b]
        s = 0.0
        for i in range(k):
            row = m[p[i]]
            for j in range(i + 1, k):
                s += w[i, j] * row[p[j]]
        out[b] = s
    return out
