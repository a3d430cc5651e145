"""Numba kernels of the jackknife over concepts (:mod:`emergence.stats.jackknife`): each
measure on the concepts left after deleting none, one or two of them.

A sample is a row ``(d1, d2)`` of deleted concepts (-1: none). Everything that does not
depend on the deletion is computed once per layer from all k concepts (row sums, the
cross-products ``C = W Iᵀ``, the Gram matrices' row sums); a deletion subtracts the
deleted concepts' terms, so a sample costs O(k²) (2 vs 2: every remaining pair) or O(k)
(RSA Pearson, CKA) instead of a recomputation from scratch.

Determinism: sums run in a fixed order (no BLAS, no fastmath), one sample per thread, so
every value has the same bits for any thread count and batching.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["cka_deleted", "rsa_pearson_deleted", "two_vs_two_deleted"]

N_EXTREMES = 5
"""Smallest and largest values kept per row: a pair's row excludes at most four columns
(the pair and two deleted concepts), so the fifth decides whether the rest is constant."""


@njit(cache=True, error_model="numpy")
def row_stats(x):  # pragma: no cover - compiled
    """Per row: sum, sum of squares, the N_EXTREMES smallest / largest values with their
    columns (ascending / descending), and whether the row can be constant once at most
    four columns are removed (its 5th smallest value equals its 5th largest)."""
    k = x.shape[0]
    s = np.zeros(k)
    q = np.zeros(k)
    lo = np.full((k, N_EXTREMES), np.inf)
    lo_c = np.full((k, N_EXTREMES), -1, dtype=np.int64)
    hi = np.full((k, N_EXTREMES), -np.inf)
    hi_c = np.full((k, N_EXTREMES), -1, dtype=np.int64)
    for u in range(k):
        su = 0.0
        qu = 0.0
        for c in range(k):
            y = x[u, c]
            su += y
            qu += y * y
            if y < lo[u, N_EXTREMES - 1]:
                t = N_EXTREMES - 1
                while t > 0 and lo[u, t - 1] > y:
                    lo[u, t] = lo[u, t - 1]
                    lo_c[u, t] = lo_c[u, t - 1]
                    t -= 1
                lo[u, t] = y
                lo_c[u, t] = c
            if y > hi[u, N_EXTREMES - 1]:
                t = N_EXTREMES - 1
                while t > 0 and hi[u, t - 1] < y:
                    hi[u, t] = hi[u, t - 1]
                    hi_c[u, t] = hi_c[u, t - 1]
                    t -= 1
                hi[u, t] = y
                hi_c[u, t] = c
        s[u] = su
        q[u] = qu
    risky = np.empty(k, dtype=np.bool_)
    for u in range(k):
        risky[u] = not lo[u, N_EXTREMES - 1] < hi[u, N_EXTREMES - 1]
    return s, q, lo, lo_c, hi, hi_c, risky


@njit(inline="always", error_model="numpy")
def _first_kept(vals, cols, u, a, b, d1, d2):  # pragma: no cover - compiled
    for t in range(N_EXTREMES):
        c = cols[u, t]
        if c != a and c != b and c != d1 and c != d2:
            return vals[u, t]
    return np.nan  # fewer than N_EXTREMES + 1 columns: never reached for k >= 5 kept


@njit(inline="always", error_model="numpy")
def _constant(st, u, a, b, d1, d2):  # pragma: no cover - compiled
    """Whether row u is constant over the columns other than a, b, d1 and d2."""
    if not st[6][u]:
        return False
    return _first_kept(st[2], st[3], u, a, b, d1, d2) == _first_kept(st[4], st[5], u, a, b,
                                                                    d1, d2)


@njit(cache=True, error_model="numpy")
def cross_full(w, im):  # pragma: no cover - compiled
    """``C[u, v] = sum_c W[u, c] I[v, c]`` over all k columns, c ascending."""
    k = w.shape[0]
    out = np.zeros((k, k))
    for u in range(k):
        wu = w[u]
        for v in range(k):
            iv = im[v]
            acc = 0.0
            for c in range(k):
                acc += wu[c] * iv[c]
            out[u, v] = acc
    return out


@njit(cache=True, error_model="numpy")
def _two_vs_two_one(w, wt, im, it, wst, ist, cr, d1, d2, tol):  # pragma: no cover - compiled
    """Passed pairs, tested pairs and the summed margins (over pairs whose correlations
    are defined) after deleting d1, d2 (-1: none): the deleted columns are subtracted from
    the row sums and the cross-products once, then every kept pair as in the bootstrap
    kernel with unit weights."""
    k = w.shape[0]
    sw = wst[0].copy()
    qw = wst[1].copy()
    si = ist[0].copy()
    qi = ist[1].copy()
    c = cr.copy()
    for d in (d1, d2):
        if d < 0:
            continue
        wd = wt[d]  # wd[u] = W[u, d]
        idd = it[d]  # idd[v] = I[v, d]
        for u in range(k):
            sw[u] -= wd[u]
            qw[u] -= wd[u] * wd[u]
            si[u] -= idd[u]
            qi[u] -= idd[u] * idd[u]
            cu = c[u]
            x = wd[u]
            for v in range(k):
                cu[v] -= x * idd[v]
    risky_w = wst[6]
    risky_i = ist[6]
    m = k - (d1 >= 0) - (d2 >= 0) - 2  # columns of each held-out correlation
    passed = 0
    tested = 0
    margins = 0.0
    defined = 0
    for a in range(k - 1):
        if a == d1 or a == d2:
            continue
        wa = w[a]
        wta = wt[a]  # wta[b] = W[b, a]
        ia = im[a]
        ita = it[a]  # ita[b] = I[b, a]
        ca = c[a]
        w_aa = wa[a]
        i_aa = ia[a]
        sw_a = sw[a]
        si_a = si[a]
        qw_a = qw[a]
        qi_a = qi[a]
        c_aa = ca[a]
        for b in range(a + 1, k):
            if b == d1 or b == d2:
                continue
            tested += 1
            if risky_w[a] or risky_w[b] or risky_i[a] or risky_i[b]:
                if (_constant(wst, a, a, b, d1, d2) or _constant(wst, b, a, b, d1, d2)
                        or _constant(ist, a, a, b, d1, d2)
                        or _constant(ist, b, a, b, d1, d2)):
                    continue
            w_ab = wa[b]
            w_ba = wta[b]
            w_bb = w[b, b]
            i_ab = ia[b]
            i_ba = ita[b]
            i_bb = im[b, b]
            sx_a = sw_a - w_aa - w_ab
            sx_b = sw[b] - w_ba - w_bb
            sy_a = si_a - i_aa - i_ab
            sy_b = si[b] - i_ba - i_bb
            vx_a = m * (qw_a - w_aa * w_aa - w_ab * w_ab) - sx_a * sx_a
            vx_b = m * (qw[b] - w_ba * w_ba - w_bb * w_bb) - sx_b * sx_b
            vy_a = m * (qi_a - i_aa * i_aa - i_ab * i_ab) - sy_a * sy_a
            vy_b = m * (qi[b] - i_ba * i_ba - i_bb * i_bb) - sy_b * sy_b
            n11 = m * (c_aa - w_aa * i_aa - w_ab * i_ab) - sx_a * sy_a
            n22 = m * (c[b, b] - w_ba * i_ba - w_bb * i_bb) - sx_b * sy_b
            n12 = m * (ca[b] - w_aa * i_ba - w_ab * i_bb) - sx_a * sy_b
            n21 = m * (c[b, a] - w_ba * i_aa - w_bb * i_ab) - sx_b * sy_a
            xa = np.sqrt(vx_a)
            xb = np.sqrt(vx_b)
            ya = np.sqrt(vy_a)
            yb = np.sqrt(vy_b)
            stat = (n11 * xb * yb + n22 * xa * ya) - (n12 * xb * ya + n21 * xa * yb)
            scale = (xa * xb) * (ya * yb)
            passed += stat > tol * scale
            margins += stat / scale
            defined += 1
    return passed, tested, margins, defined


@njit(cache=True, parallel=True, error_model="numpy")
def two_vs_two_deleted(w, im, wst, ist, cr, deleted, tol):  # pragma: no cover - compiled
    """2 vs 2 accuracy and mean margin ``(r11 + r22) - (r12 + r21)`` over the pairs whose
    correlations are defined, per sample (rows of ``deleted``, B x 2) for one layer ``im``
    (``wst``/``ist``: :func:`row_stats` of W and I; ``cr``: :func:`cross_full`): two (B,)
    arrays (the mean margin NaN without a defined pair)."""
    n_b = deleted.shape[0]
    acc = np.full(n_b, np.nan)
    mar = np.full(n_b, np.nan)
    wt = np.ascontiguousarray(w.T)
    it = np.ascontiguousarray(im.T)
    for s in prange(n_b):
        p, t, mg, dfn = _two_vs_two_one(w, wt, im, it, wst, ist, cr, deleted[s, 0],
                                       deleted[s, 1], tol)
        if t > 0:
            acc[s] = p / t
        if dfn > 0:
            mar[s] = mg / dfn
    return acc, mar


@njit(cache=True, error_model="numpy")
def _entry_sums(x, y, shift_x, shift_y):  # pragma: no cover - compiled
    """Per row u of the symmetric x, y (entries shifted by their means): the sums over
    v != u of x, y, x², y², xy; and the totals over the upper triangle."""
    k = x.shape[0]
    rows = np.zeros((5, k))
    tot = np.zeros(5)
    for u in range(k):
        for v in range(k):
            if v == u:
                continue
            xv = x[u, v] - shift_x
            yv = y[u, v] - shift_y
            rows[0, u] += xv
            rows[1, u] += yv
            rows[2, u] += xv * xv
            rows[3, u] += yv * yv
            rows[4, u] += xv * yv
            if v > u:
                tot[0] += xv
                tot[1] += yv
                tot[2] += xv * xv
                tot[3] += yv * yv
                tot[4] += xv * yv
    return rows, tot


@njit(cache=True, parallel=True, error_model="numpy")
def rsa_pearson_deleted(w, ims, scored, deleted):  # pragma: no cover - compiled
    """Pearson RSA over the upper-triangle entries between kept concepts, per sample and
    layer, (B, L); NaN where a side is constant (zero variance) or no entry is left.

    The entries are shifted by their means over all k concepts (a constant shift leaves
    r unchanged and keeps the sums small), and each sample subtracts the deleted concepts'
    row sums (adding back the entry between two deleted concepts, subtracted twice)."""
    n_b = deleted.shape[0]
    n_l = ims.shape[0]
    k = w.shape[0]
    out = np.full((n_b, n_l), np.nan)
    n_e = k * (k - 1) // 2
    mw = 0.0
    for u in range(k):
        for v in range(u + 1, k):
            mw += w[u, v]
    mw /= n_e
    for j in range(n_l):
        if not scored[j]:
            continue
        im = ims[j]
        mi = 0.0
        for u in range(k):
            for v in range(u + 1, k):
                mi += im[u, v]
        mi /= n_e
        rows, tot = _entry_sums(w, im, mw, mi)
        for s in prange(n_b):
            d1 = deleted[s, 0]
            d2 = deleted[s, 1]
            sums = tot.copy()
            n = n_e
            kept = k
            for d in (d1, d2):
                if d >= 0:
                    kept -= 1
                    for t in range(5):
                        sums[t] -= rows[t, d]
            if d1 >= 0 and d2 >= 0:
                xv = w[d1, d2] - mw
                yv = im[d1, d2] - mi
                sums[0] += xv
                sums[1] += yv
                sums[2] += xv * xv
                sums[3] += yv * yv
                sums[4] += xv * yv
            n = kept * (kept - 1) // 2
            if n < 2:
                continue
            sxx = n * sums[2] - sums[0] * sums[0]
            syy = n * sums[3] - sums[1] * sums[1]
            if sxx <= 0.0 or syy <= 0.0:
                continue
            r = (n * sums[4] - sums[0] * sums[1]) / np.sqrt(sxx * syy)
            out[s, j] = min(1.0, max(-1.0, r))
    return out


@njit(cache=True, error_model="numpy")
def _gram_sums(kx, ky):  # pragma: no cover - compiled
    """Row sums of Kx, Ky and Kx∘Ky over all columns, their diagonals and totals."""
    k = kx.shape[0]
    rx = np.zeros(k)
    ry = np.zeros(k)
    rxy = np.zeros(k)
    for u in range(k):
        for v in range(k):
            rx[u] += kx[u, v]
            ry[u] += ky[u, v]
            rxy[u] += kx[u, v] * ky[u, v]
    return rx, ry, rxy


@njit(cache=True, error_model="numpy")
def _hsic_deleted(kx, ky, rx, ry, rxy, d1, d2, debiased):  # pragma: no cover - compiled
    """HSIC of the Grams restricted to the kept concepts: biased ``tr(H Kx H Ky)`` (the
    Grams re-centred over the kept concepts), or the unbiased estimator with n = kept;
    and the scale of Kx (sum of its squared entries, debiased: off-diagonal, over
    n (n - 3))."""
    k = kx.shape[0]
    n = k - (d1 >= 0) - (d2 >= 0)
    trace = 0.0
    sx = 0.0
    sy = 0.0
    dot = 0.0
    for u in range(k):
        if u == d1 or u == d2:
            continue
        a = rx[u]
        b = ry[u]
        t = rxy[u]
        for d in (d1, d2):
            if d >= 0:
                a -= kx[u, d]
                b -= ky[u, d]
                t -= kx[u, d] * ky[u, d]
        if debiased:  # the diagonal is zeroed
            a -= kx[u, u]
            b -= ky[u, u]
            t -= kx[u, u] * ky[u, u]
        trace += t
        sx += a
        sy += b
        dot += a * b
    if not debiased:
        return trace - 2.0 / n * dot + sx * sy / (n * n)
    return (trace + sx * sy / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * dot) / (n * (n - 3))


@njit(cache=True, error_model="numpy")
def _scale_deleted(kx, rq, d1, d2, debiased):  # pragma: no cover - compiled
    """Sum of the squared entries of Kx between kept concepts (debiased: off-diagonal,
    over n (n - 3)), from the row sums of squares ``rq``."""
    k = kx.shape[0]
    n = k - (d1 >= 0) - (d2 >= 0)
    total = 0.0
    for u in range(k):
        if u == d1 or u == d2:
            continue
        t = rq[u]
        for d in (d1, d2):
            if d >= 0:
                t -= kx[u, d] * kx[u, d]
        if debiased:
            t -= kx[u, u] * kx[u, u]
        total += t
    if debiased:
        total /= float(n) * (n - 3)
    return total


@njit(cache=True, parallel=True, error_model="numpy")
def cka_deleted(kw, kis, scored, deleted, debiased, rel):  # pragma: no cover - compiled
    """CKA (biased: the Grams re-centred over the kept concepts; debiased: the unbiased
    HSIC, invariant to the centring) per sample and layer, (B, L); NaN where a side's HSIC
    is at most ``rel`` times its scale (as :func:`._bootstrap_measures.cka_batch`)."""
    n_b = deleted.shape[0]
    n_l = kis.shape[0]
    out = np.full((n_b, n_l), np.nan)
    rw, _, rww = _gram_sums(kw, kw)
    for j in range(n_l):
        if not scored[j]:
            continue
        ki = kis[j]
        ri, _, rii = _gram_sums(ki, ki)
        _, _, rwi = _gram_sums(kw, ki)
        for s in prange(n_b):
            d1 = deleted[s, 0]
            d2 = deleted[s, 1]
            xx = _hsic_deleted(kw, kw, rw, rw, rww, d1, d2, debiased)
            yy = _hsic_deleted(ki, ki, ri, ri, rii, d1, d2, debiased)
            sx = _scale_deleted(kw, rww, d1, d2, debiased)
            sy = _scale_deleted(ki, rii, d1, d2, debiased)
            if xx > rel * sx and yy > rel * sy:
                out[s, j] = _hsic_deleted(kw, ki, rw, ri, rwi, d1, d2, debiased) / np.sqrt(
                    xx * yy)
    return out
