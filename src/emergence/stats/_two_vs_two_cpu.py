"""The 2 vs 2 test's CPU engine: fused numba kernels for single evaluations and permutation
nulls.

One evaluation of the 2 vs 2 test is a k x k x k cross-product matmul ``C = W I^T``
and one pass over the C(k, 2) pairs. On a CPU both are made cheap here:

**Certified float32 cross products.** ``C`` is computed in float32 (half the cost of
float64), and every pair's decision is *certified* against the float64 one. For a dot
product of length k of float64 inputs rounded to float32 (unit roundoff u = 2^-24), in
any summation order, blocked or with FMA (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., eq. 3.5)::

    |fl32(C)[u, v] - C[u, v]| <= e * sum_j |W[u, j]| |I[v, j]| <= e * ||W[u]|| ||I[v]||,
    e = (2u + u^2) + gamma_k (1 + u)^2,   gamma_k = k u / (1 - k u),

(the last step is Cauchy-Schwarz). The bound needs float32 products that neither
underflow nor overflow: every nonzero |entry| of W and I in [2^-60, 2^50]
(:func:`float32_safe`; correlation matrices always are, other matrices outside the range
go to the float64 torch engine). Only ``C`` enters the decision statistic inexactly,
and it enters linearly, so the error of the statistic of pair (a, c),
``D = (d - tol) * sd(i_a) * sd(i_c)`` with ``d`` the summed-correlation difference of
the paper, is at most::

    n * e * (||W[a]|| / sd(w_a) + ||W[c]|| / sd(w_c)) * (||I[a]|| sd(i_c) + ||I[c]|| sd(i_a))

(``n = k - 2``; ``sd`` are the reduced-row standard deviations times ``n``). ``e`` is
widened by 64 float64 roundoffs for the float64 arithmetic that follows. A pair whose
statistic is farther than this bound from zero has the same sign as with float64 cross
products; the rest (typically < 0.1 % of pairs, and every exact tie) are recomputed
with float64 dot products. The counts are therefore those of the float64 computation:
:func:`pair_statistics` exposes the statistic and its bound so that the tests check
the bound on every pair, and an infinite bound (recheck everything) gives the same
counts.

**One vectorised pass over the pairs.** For each row ``a`` the pairs ``(a, c > a)`` are
processed in chunks of 8 over zero-padded rows, indexed with unsigned integers (numba
then emits contiguous vector loads, not gathers), with out-of-range lanes masked.
Two square roots per pair, no divisions: W's reduced standard deviations are
precomputed once per word space (:func:`word_statistics`).

**Entry point.** :class:`CpuEngine` is what the rest of the package uses for the 2 vs 2
test: :class:`~emergence.stats.two_vs_two.TwoVsTwo` holds one per word space on the CPU
and falls back to its float64 definition where the engine declines (``None``: entries
outside float32's safe range, NaN or infinite). Two stand-alone kernels serve other
callers: :func:`invalid_permutation` (``check_permutations``) and
:func:`permuted_upper_dot` (the RSA null). The other functions are the engine's parts,
public for ``tests/test_stats_two_vs_two_cpu.py``, which checks the bound on every pair.

This module is over 400 lines on purpose: the error bound above, the kernels whose
decisions rely on it and the engine that is their only caller are one argument, kept
in one place.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from numpy.typing import NDArray

__all__ = [
    "BATCH_CHUNK",
    "LANES",
    "CpuEngine",
    "count_one",
    "count_passes",
    "cross_product_error",
    "float32_safe",
    "invalid_permutation",
    "pair_statistics",
    "padded_size",
    "permute_into",
    "permute_padded",
    "permuted_upper_dot",
    "word_statistics",
]

LANES = 8
"""Pairs per vector chunk; rows are zero-padded to a multiple of this."""

BATCH_CHUNK = 8
"""Matrices staged at once by :meth:`CpuEngine.count_batch`: each count is independent of
the others, so chunking changes no result and bounds the staging memory (~0.5 GB at
k = 1,854 instead of ~0.1 GB per layer of the batch)."""

_U32 = 2.0**-24
_U64 = 2.0**-53


def padded_size(k: int) -> int:
    """k rounded up to a multiple of :data:`LANES`."""
    return -(-k // LANES) * LANES


@njit(inline="always", error_model="numpy")
def _float32_unsafe(v: float) -> bool:  # pragma: no cover - compiled
    """Neither 0 nor of magnitude in [2^-60, 2^50] (see float32_safe); NaN is unsafe."""
    a = abs(v)
    return (a != 0.0) & ((a < 2.0**-60) | (a > 2.0**50) | (a != a))


@njit(cache=True, error_model="numpy")
def float32_safe(m: NDArray[np.float64]) -> bool:
    """Whether every entry is 0 or has magnitude in [2^-60, 2^50]: then float32 rounding
    of the entries is relative, their products are normal numbers, and sums of up to
    2^23 of them cannot overflow, so :func:`cross_product_error` bounds the error.
    NaN and infinite entries are not safe (the bound does not hold for them)."""
    flat = m.reshape(-1)
    bad = 0
    for i in range(flat.size):
        bad += _float32_unsafe(flat[i])
    return bad == 0


@njit(cache=True, error_model="numpy")
def stage_one(m, bits, out, out_t, out32) -> tuple:  # pragma: no cover - compiled
    """Copy one k x k image matrix into the zero-padded ``out`` (k x kp) and ``out32``
    (k x k, float32) in one pass; return ``(float32_safe(m), symmetric)``. ``symmetric``
    compares bit patterns (``bits`` is ``m`` viewed as int64), so when it is true the
    transpose is bit-identical to ``m`` and ``out`` serves as both; otherwise the
    transpose is written to ``out_t``."""
    k = m.shape[0]
    bad = 0
    for a in range(k):
        for b in range(k):
            v = m[a, b]
            out[a, b] = v
            out32[a, b] = np.float32(v)
            bad += _float32_unsafe(v)
    symmetric = True
    for a0 in range(0, k, 16):  # 16 x 16 tiles against their mirror: both stay in L1
        for b0 in range(a0, k, 16):
            for a in range(a0, min(a0 + 16, k)):
                for b in range(b0, min(b0 + 16, k)):
                    symmetric &= bits[a, b] == bits[b, a]
        if not symmetric:
            break
    if not symmetric:
        for a in range(k):
            for b in range(k):
                out_t[a, b] = m[b, a]
    return bad == 0, symmetric


@njit(cache=True, error_model="numpy")
def invalid_permutation(perms: NDArray[np.int64], k: int) -> tuple[int, int]:
    """``(row, column)`` of the first entry of ``perms`` (B x k) that makes its row not a
    permutation of ``0 .. k-1`` (out of range, or seen before in the row); ``(-1, -1)``
    when every row is one. One pass, O(B k): the kernels index with these values
    unchecked, so this runs before them."""
    seen = np.zeros(k, dtype=np.int64)  # row b + 1 where value v was last seen
    for b in range(perms.shape[0]):
        stamp = b + 1
        for i in range(perms.shape[1]):
            v = perms[b, i]
            if v < 0 or v >= k or seen[v] == stamp:
                return b, i
            seen[v] = stamp
    return -1, -1


def cross_product_error(k: int) -> float:
    """``e`` such that ``|fl32(x . y) - x . y| <= e ||x|| ||y||`` for float64 x, y of length k."""
    if k * _U32 >= 0.5:
        raise ValueError(f"k={k} is too large for float32 cross products")
    gamma = k * _U32 / (1.0 - k * _U32)
    return (2 * _U32 + _U32**2) + gamma * (1 + _U32) ** 2 + 64 * _U64


@njit(cache=True, error_model="numpy")
def word_statistics(w: NDArray[np.float64], kp: int) -> tuple:
    """Everything the pair pass needs from W, zero-padded to ``kp`` columns.

    Returns ``(w, w_t, row_sum, diag, row_norm, inv_sd, inv_sd_t)`` where
    ``inv_sd[r, x] = 1 / sd`` of row r without columns r and x (times n, see module doc).
    """
    k = w.shape[0]
    n = float(k - 2)
    w_p = np.zeros((k, kp))
    w_t = np.zeros((k, kp))
    rs = np.zeros(kp)
    rq = np.zeros(kp)
    dw = np.zeros(kp)
    nw = np.zeros(kp)
    for r in range(k):
        s = 0.0
        q = 0.0
        for j in range(k):
            x = w[r, j]
            w_p[r, j] = x
            w_t[j, r] = x
            s += x
            q += x * x
        rs[r] = s
        rq[r] = q
        dw[r] = w[r, r]
        nw[r] = np.sqrt(q)
    inv = np.zeros((k, kp))
    inv_t = np.zeros((k, kp))
    for r in range(k):
        w_rr = w[r, r]
        for x in range(k):
            if x == r:
                continue
            w_rx = w[r, x]
            s = rs[r] - w_rr - w_rx
            v = 1.0 / np.sqrt(n * (rq[r] - w_rr * w_rr - w_rx * w_rx) - s * s)
            inv[r, x] = v
            inv_t[x, r] = v
    return w_p, w_t, rs, dw, nw, inv, inv_t


def permute_padded(
    m: NDArray[np.float64], perms: NDArray[np.int64], kp: int
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """``m[p][:, p]`` for each permutation: (B, k, kp) float64 zero-padded, and (B*k, k) float32."""
    n_b, k = perms.shape
    out = np.zeros((n_b, k, kp))
    out32 = np.empty((n_b * k, k), dtype=np.float32)
    permute_into(m, perms, out, out32)
    return out, out32


@njit(cache=True, parallel=True, error_model="numpy")
def permute_into(m: NDArray[np.float64], perms: NDArray[np.int64], out: NDArray[np.float64],
                 out32: NDArray[np.float32]) -> None:  # pragma: no cover - compiled
    """:func:`permute_padded` into given buffers (``out``'s padding columns stay as they are:
    zero in the engine's reused buffers, which are never written there)."""
    n_b, k = perms.shape
    for b in prange(n_b):
        p = perms[b]
        for i in range(k):
            row = m[p[i]]
            for j in range(k):
                x = row[p[j]]
                out[b, i, j] = x
                out32[b * k + i, j] = x


@njit(cache=True, error_model="numpy")
def _exact_dot(x: NDArray[np.float64], y: NDArray[np.float64], k: int) -> float:
    s = 0.0
    for j in range(k):
        s += x[j] * y[j]
    return s


@njit(inline="always", error_model="numpy")
def _statistic(n, ne, tol, w_aa, i_aa, c_aa, rsw_a, rsi_a, rqi_a, nw_a, ni_a,
               w_ac, w_ca, w_cc, i_ac, i_ca, i_cc, al, be, rsw_c, rsi_c, rqi_c, nw_c, ni_c,
               c_cc, c_ac, c_ca):  # pragma: no cover - compiled
    """Statistic ``D = (d - tol) sd(i_a) sd(i_c)`` of pair (a, c) and its float32 bound."""
    sx_a = rsw_a - w_aa - w_ac
    sx_c = rsw_c - w_ca - w_cc
    sy_a = rsi_a - i_aa - i_ac
    sy_c = rsi_c - i_ca - i_cc
    sia = np.sqrt(n * (rqi_a - i_aa * i_aa - i_ac * i_ac) - sy_a * sy_a)
    sic = np.sqrt(n * (rqi_c - i_ca * i_ca - i_cc * i_cc) - sy_c * sy_c)
    n11 = n * (c_aa - w_aa * i_aa - w_ac * i_ac) - sx_a * sy_a
    n22 = n * (c_cc - w_ca * i_ca - w_cc * i_cc) - sx_c * sy_c
    n12 = n * (c_ac - w_aa * i_ca - w_ac * i_cc) - sx_a * sy_c
    n21 = n * (c_ca - w_ca * i_aa - w_cc * i_ac) - sx_c * sy_a
    d = (n11 * al - n21 * be) * sic + (n22 * be - n12 * al) * sia - tol * sia * sic
    bound = ne * (nw_a * al + nw_c * be) * (ni_a * sic + ni_c * sia)
    return d, bound


@njit(cache=True, error_model="numpy")
def _image_sums(im: NDArray[np.float64], im_t: NDArray[np.float64],
                cross: NDArray[np.float32]) -> tuple:
    """Row sums, sums of squares, norms and diagonal of I, and C's diagonal."""
    k, kp = im.shape
    rs_i = np.zeros(kp)
    rq_i = np.zeros(kp)
    di = np.zeros(kp)
    dc = np.zeros(kp)
    ni = np.zeros(kp)
    for j in range(k):  # row sums of I as column sums of I^T: contiguous and in order
        r = im_t[j]
        for v in range(kp):
            y = r[v]
            rs_i[v] += y
            rq_i[v] += y * y
    for v in range(k):
        di[v] = im[v, v]
        dc[v] = cross[v, v]
        ni[v] = np.sqrt(rq_i[v])
    return rs_i, rq_i, di, dc, ni


@njit(cache=True, error_model="numpy")
def _transpose_rows(cross: NDArray[np.float32], out: NDArray[np.float64], u: int) -> None:
    """``out[u, v] = cross[v, u]``: row u of C (``cross`` holds C transposed)."""
    row = out[u]
    for v in range(cross.shape[0]):
        row[v] = cross[v, u]


@njit(cache=True, error_model="numpy")
def _image_statistics(im: NDArray[np.float64], im_t: NDArray[np.float64],
                      cross: NDArray[np.float32]) -> tuple:
    """:func:`_image_sums` and ``C`` as float64 rows (``cross_t[a, c] ~ C[a, c]``)."""
    rs_i, rq_i, di, dc, ni = _image_sums(im, im_t, cross)
    k, kp = im.shape
    cross_t = np.zeros((k, kp))
    for u in range(k):
        _transpose_rows(cross, cross_t, u)
    return rs_i, rq_i, di, dc, ni, cross_t


@njit(cache=True, error_model="numpy")
def _count_row(a, w, w_t, rs_w, dw, nw, inv, inv_t, im, im_t, cross, stats, tol, e,
               record) -> int:
    """Passed pairs (a, c > a) of one row (see the module doc for the certification).

    ``im``/``im_t``: I and I^T (k x kp, zero-padded); ``cross[v, u] ~ C[u, v]`` in
    float32 (k x kp); ``stats`` from :func:`_image_statistics`. When ``record`` is
    (2, k, kp), the statistic and its bound are written to ``record[:, a, c]``.
    """
    k = w.shape[0]
    kp = w.shape[1]
    n = float(k - 2)
    ne = n * e
    rs_i, rq_i, di, dc, ni, cross_t = stats
    keep = record.shape[0] == 2
    count = 0
    w_aa = w[a, a]
    i_aa = im[a, a]
    c_aa = float(cross[a, a])
    wa = w[a]
    wta = w_t[a]
    ia = im[a]
    ita = im_t[a]
    xa = cross[a]  # xa[c] ~ C[c, a]
    xta = cross_t[a]  # xta[c] ~ C[a, c]
    al_r = inv[a]
    be_r = inv_t[a]
    rsw_a = rs_w[a]
    rsi_a = rs_i[a]
    rqi_a = rq_i[a]
    nw_a = nw[a]
    ni_a = ni[a]
    unsure = 0
    # The hot loop: 8 lanes, unsigned indices (no wrap-around: vector loads), no stores.
    for c0 in range((a + 1) // 8 * 8, kp, 8):
        for lane in range(8):
            c = np.uint64(c0 + lane)
            d, bound = _statistic(n, ne, tol, w_aa, i_aa, c_aa, rsw_a, rsi_a, rqi_a, nw_a,
                                  ni_a, wa[c], wta[c], dw[c], ia[c], ita[c], di[c],
                                  al_r[c], be_r[c], rs_w[c], rs_i[c], rq_i[c], nw[c],
                                  ni[c], dc[c], xta[c], xa[c])
            ok = (c0 + lane > a) & (c0 + lane < k)
            count += ok & (d > bound)
            unsure += ok & ~(abs(d) > bound)  # NaN (never with checked inputs): recheck
    if unsure == 0 and not keep:
        return count
    for c in range(a + 1, k):
        w_ac, w_ca, w_cc, i_ac, i_ca, i_cc = wa[c], wta[c], dw[c], ia[c], ita[c], di[c]
        al, be, rsw_c, rsi_c, rqi_c, nw_c, ni_c = (al_r[c], be_r[c], rs_w[c], rs_i[c],
                                                   rq_i[c], nw[c], ni[c])
        d, bound = _statistic(n, ne, tol, w_aa, i_aa, c_aa, rsw_a, rsi_a, rqi_a, nw_a, ni_a,
                              w_ac, w_ca, w_cc, i_ac, i_ca, i_cc, al, be, rsw_c, rsi_c,
                              rqi_c, nw_c, ni_c, dc[c], xta[c], xa[c])
        if keep:
            record[0, a, c] = d
            record[1, a, c] = bound
        if abs(d) > bound:
            continue
        # Not certified by float32: decide with float64 cross products, same formula.
        wc = w[c]
        ic = im[c]
        d, bound = _statistic(n, ne, tol, w_aa, i_aa, _exact_dot(wa, ia, k), rsw_a, rsi_a,
                              rqi_a, nw_a, ni_a, w_ac, w_ca, w_cc, i_ac, i_ca, i_cc, al, be,
                              rsw_c, rsi_c, rqi_c, nw_c, ni_c, _exact_dot(wc, ic, k),
                              _exact_dot(wa, ic, k), _exact_dot(wc, ia, k))
        count += d > 0.0
    return count


@njit(cache=True, error_model="numpy")
def _count_one(w, w_t, rs_w, dw, nw, inv, inv_t, im, im_t, cross, tol, e, record) -> int:
    """Passed pairs for one image matrix, one thread."""
    stats = _image_statistics(im, im_t, cross)
    count = 0
    for a in range(w.shape[0] - 1):
        count += _count_row(a, w, w_t, rs_w, dw, nw, inv, inv_t, im, im_t, cross, stats,
                            tol, e, record)
    return count


@njit(cache=True, parallel=True, error_model="numpy")
def _count_one_parallel(w, w_t, rs_w, dw, nw, inv, inv_t, im, im_t, cross, tol, e,
                        n_threads) -> int:
    """Passed pairs for one image matrix, rows dealt to threads in snake order (balanced)."""
    rs_i, rq_i, di, dc, ni = _image_sums(im, im_t, cross)
    k, kp = im.shape
    cross_t = np.zeros((k, kp))
    for u in prange(k):
        _transpose_rows(cross, cross_t, u)
    stats = (rs_i, rq_i, di, dc, ni, cross_t)
    counts = np.zeros(n_threads, dtype=np.int64)
    none = np.zeros((0, 0, 0))
    for t in prange(n_threads):
        s = 0
        for a in range(k - 1):
            r = a % (2 * n_threads)
            if r == t or r == 2 * n_threads - 1 - t:
                s += _count_row(a, w, w_t, rs_w, dw, nw, inv, inv_t, im, im_t, cross, stats,
                                tol, e, none)
        counts[t] = s
    return counts.sum()


def count_one(*args: object, n_threads: int = 1) -> int:
    """:func:`count_passes` for one image matrix (arguments without the batch axis)."""
    if n_threads > 1:
        return int(_count_one_parallel(*args, n_threads))
    return int(_count_one(*args, _NO_RECORD))


_NO_RECORD = np.zeros((0, 0, 0))


@njit(cache=True, parallel=True, error_model="numpy")
def count_passes(
    w: NDArray[np.float64],
    w_t: NDArray[np.float64],
    rs_w: NDArray[np.float64],
    dw: NDArray[np.float64],
    nw: NDArray[np.float64],
    inv: NDArray[np.float64],
    inv_t: NDArray[np.float64],
    images: NDArray[np.float64],
    images_t: NDArray[np.float64],
    cross: NDArray[np.float32],
    tol: float,
    e: float,
) -> NDArray[np.int64]:
    """Passed 2 vs 2 tests for each image matrix of a batch.

    The first seven arguments come from :func:`word_statistics`; ``images`` and
    ``images_t`` are (B, k, kp) zero-padded I_b and I_b^T (the same array for symmetric
    matrices); ``cross[b, v, u] = fl32(sum_j I_b[v, j] W[u, j])``, (B, k, kp).
    """
    n_b = images.shape[0]
    out = np.zeros(n_b, dtype=np.int64)
    none = np.zeros((0, 0, 0))
    for b in prange(n_b):
        out[b] = _count_one(w, w_t, rs_w, dw, nw, inv, inv_t, images[b], images_t[b],
                            cross[b], tol, e, none)
    return out


def pair_statistics(
    word: tuple, image: NDArray[np.float64], image_t: NDArray[np.float64],
    cross: NDArray[np.float32], tol: float, e: float,
) -> tuple[int, NDArray[np.float64]]:
    """Count and the (2, k, kp) record of statistic and bound per pair (for tests)."""
    k, kp = image.shape
    record = np.full((2, k, kp), np.nan)
    count = _count_one(*word, image, image_t, cross, tol, e, record)
    return int(count), record


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


class _float32_matmul_in_full_precision:
    """The error bound assumes IEEE float32 products: no TF32/bfloat16 shortcuts."""

    def __enter__(self) -> None:
        self._saved = torch.get_float32_matmul_precision()
        if self._saved != "highest":
            torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc: object) -> None:
        if self._saved != "highest":
            torch.set_float32_matmul_precision(self._saved)


class CpuEngine:
    """Pass counts of the 2 vs 2 test on the CPU for one fixed ``W`` (k x k float64) and
    tie tolerance ``tol``, equal to the float64 computation's (module doc).

    Each ``count_*`` method returns the passed pairs per image matrix, or ``None`` when
    the bound does not apply (W or I outside float32's safe range, or I with NaN or
    infinite entries): the caller then decides in float64.
    """

    def __init__(self, w: NDArray[np.float64], tol: float) -> None:
        w = np.ascontiguousarray(w, dtype=np.float64)
        self.tol = tol  # ties: differences at or below tol fail
        self.k = k = w.shape[0]
        self.kp = padded_size(k)
        self.word = word_statistics(w, self.kp)
        self.w_safe = bool(float32_safe(w))
        #: The right factor of the float32 cross product ``C^T = I W^T``: W^T zero-padded to
        #: ``kp`` columns (bench/scale.py times the bare product with it).
        self.w32_t = torch.from_numpy(self.word[1].astype(np.float32))
        self._e = cross_product_error(k)
        # Reused buffers for one matrix at a time (count_one).
        self._single = (np.zeros((1, k, self.kp)), np.zeros((1, k, self.kp)))
        self._single32 = np.zeros((k, k), dtype=np.float32)
        # Reused buffers for the last permutation batch size (count_permuted).
        self._permuted: tuple[NDArray[np.float64], NDArray[np.float32]] | None = None
        self._cross: torch.Tensor | None = None  # C^T of the last batch size (_counts)
        self._max_threads = int(numba.config.NUMBA_NUM_THREADS)
        self._threads = 0  # the numba thread count last set by _counts

    def certifiable(self, i_mat: NDArray[np.float64]) -> bool:
        """Whether the bound applies to ``W`` and ``i_mat`` (any shape)."""
        return self.w_safe and bool(float32_safe(np.ascontiguousarray(i_mat)))

    def count_one(self, i_mat: NDArray[np.float64],
                  tol: float | None = None) -> NDArray[np.int64] | None:
        """Passed pairs of one k x k matrix, shape (1,): one staging pass into reused
        buffers (the transpose only when ``i_mat`` is not bitwise symmetric). ``tol``
        replaces the engine's tolerance for this count (``-tol`` counts the ties too)."""
        m = np.ascontiguousarray(i_mat)
        images, images_t = self._single
        safe, symmetric = stage_one(m, m.view(np.int64), images[0], images_t[0],
                                    self._single32)
        if not (safe and self.w_safe):  # includes NaN/inf entries
            return None
        return self._counts(images, images if symmetric else images_t, self._single32, tol)

    def count_batch(self, i_mat: NDArray[np.float64]) -> NDArray[np.int64] | None:
        """Passed pairs of each matrix of a (B, k, k) batch, shape (B,)."""
        if not self.certifiable(i_mat):
            return None
        k = self.k
        out = np.empty(len(i_mat), dtype=np.int64)
        for lo in range(0, len(i_mat), BATCH_CHUNK):  # staging memory: O(BATCH_CHUNK k^2)
            part = i_mat[lo:lo + BATCH_CHUNK]
            images = np.zeros((len(part), k, self.kp))
            images_t = np.zeros_like(images)
            images[:, :, :k] = part
            images_t[:, :, :k] = part.transpose(0, 2, 1)
            out[lo:lo + len(part)] = self._counts(images, images_t,
                                                  part.astype(np.float32).reshape(-1, k))
        return out

    def count_permuted(self, i_mat: NDArray[np.float64],
                       perms: NDArray[np.int64]) -> NDArray[np.int64] | None:
        """Passed pairs of ``i_mat[p][:, p]`` for each row ``p`` of ``perms`` (checked
        permutations, B x k), shape (B,)."""
        if not self.certifiable(i_mat):
            return None
        n_b = len(perms)
        if self._permuted is None or len(self._permuted[0]) != n_b:  # reused: no page faults
            self._permuted = (np.zeros((n_b, self.k, self.kp)),
                              np.zeros((n_b * self.k, self.k), dtype=np.float32))
        images, images32 = self._permuted
        permute_into(i_mat, perms, images, images32)
        if np.array_equal(i_mat, i_mat.T):
            images_t = images
        else:
            images_t = permute_padded(np.ascontiguousarray(i_mat.T), perms, self.kp)[0]
        return self._counts(images, images_t, images32)

    def _counts(self, images: NDArray[np.float64], images_t: NDArray[np.float64],
                images32: NDArray[np.float32], tol: float | None = None) -> NDArray[np.int64]:
        """Passed pairs per image matrix via the certified float32 kernel (B, k, kp) -> (B,)."""
        tol = self.tol if tol is None else tol
        threads = max(1, min(torch.get_num_threads(), self._max_threads))
        if threads != self._threads:  # numba.get_num_threads() is not free
            numba.set_num_threads(threads)
            self._threads = threads
        b, k, kp = images.shape[0], self.k, self.kp
        if self._cross is None or self._cross.shape[0] != b * k:  # reused: no page faults
            self._cross = torch.empty((b * k, kp), dtype=torch.float32)
        with _float32_matmul_in_full_precision():  # [v, u] ~ sum_j I[v, j] W[u, j]
            torch.matmul(torch.from_numpy(images32), self.w32_t, out=self._cross)
        cross = self._cross.numpy().reshape(b, k, kp)
        if b == 1:  # rows dealt to threads: no idle thread for a single matrix
            return np.array([count_one(*self.word, images[0], images_t[0], cross[0],
                                       tol, self._e, n_threads=threads)])
        return count_passes(*self.word, images, images_t, cross, tol, self._e)
