"""Numba kernels of the bootstrap over concepts (:mod:`emergence.stats.bootstrap`): the
2 vs 2 test (the other measures: :mod:`._bootstrap_measures`).

A bootstrap sample is a vector of counts ``m`` (k,): concept c drawn ``m[c]`` times. Every
kernel works on the drawn concepts ``g`` (``m[g] > 0``, ascending) with integer weights
instead of the materialised k x k matrices; the module doc of :mod:`~emergence.stats.bootstrap`
states the rule and why the weighted forms equal it.

Determinism: each sample is computed by one thread, sequentially, in a fixed order (no
BLAS, no fastmath), so its value has the same bits for any thread count and any batching;
samples are dealt to threads with ``prange`` and written to their own rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["two_vs_two_batch"]


@njit(cache=True, error_model="numpy")
def _drawn(m):  # pragma: no cover - compiled
    """Indices of the drawn concepts (ascending)."""
    n = 0
    for c in range(m.shape[0]):
        n += m[c] > 0
    g = np.empty(n, dtype=np.int64)
    j = 0
    for c in range(m.shape[0]):
        if m[c] > 0:
            g[j] = c
            j += 1
    return g


@njit(cache=True, error_model="numpy")
def _gather(x, g, mw, transpose):  # pragma: no cover - compiled
    """``out[u, c] = x[g_u, g_c]`` (or ``x[g_c, g_u]``), rows padded to a multiple of 4,
    plus per row: weighted sum and sum of squares over the drawn columns (weights ``mw``),
    and the smallest/largest value over columns c != u with their column and the runner-up
    values (for the exact constant-row test of a pair)."""
    d = g.shape[0]
    dp = (d + 3) // 4 * 4
    out = np.zeros((dp, d))
    s = np.zeros(d)
    q = np.zeros(d)
    ext = np.empty((6, d))  # min1, argmin1, min2, max1, argmax1, max2
    for u in range(d):
        row = out[u]
        xu = x[g[u]]
        for c in range(d):
            row[c] = x[g[c], g[u]] if transpose else xu[g[c]]
        su = 0.0
        qu = 0.0
        for c in range(d):
            y = row[c] * mw[c]
            su += y
            qu += y * row[c]
        s[u] = su
        q[u] = qu
        mn1 = np.inf
        mn2 = np.inf
        mx1 = -np.inf
        mx2 = -np.inf
        amn = -1
        amx = -1
        for c in range(d):
            if c == u:
                continue
            y = row[c]
            if y < mn1:
                mn2 = mn1
                mn1 = y
                amn = c
            elif y < mn2:
                mn2 = y
            if y > mx1:
                mx2 = mx1
                mx1 = y
                amx = c
            elif y > mx2:
                mx2 = y
        ext[0, u] = mn1
        ext[1, u] = amn
        ext[2, u] = mn2
        ext[3, u] = mx1
        ext[4, u] = amx
        ext[5, u] = mx2
    return out, s, q, ext


@njit(cache=True, error_model="numpy")
def _cross(wm, it, d):  # pragma: no cover - compiled
    """``C[u, v] = sum_c wm[u, c] it[c, v]`` in a fixed order (c ascending), 4 rows at a time."""
    dp = wm.shape[0]
    out = np.zeros((dp, d))
    for u0 in range(0, dp, 4):
        r0 = out[u0]
        r1 = out[u0 + 1]
        r2 = out[u0 + 2]
        r3 = out[u0 + 3]
        for c in range(d):
            x0 = wm[u0, c]
            x1 = wm[u0 + 1, c]
            x2 = wm[u0 + 2, c]
            x3 = wm[u0 + 3, c]
            row = it[c]
            for v in range(d):
                y = row[v]
                r0[v] += x0 * y
                r1[v] += x1 * y
                r2[v] += x2 * y
                r3[v] += x3 * y
    return out


@njit(inline="always", error_model="numpy")
def _constant(ext, u, v):  # pragma: no cover - compiled
    """Whether row u's values over the columns other than u and v are all equal."""
    mn = ext[2, u] if ext[1, u] == v else ext[0, u]
    mx = ext[5, u] if ext[4, u] == v else ext[3, u]
    return mn == mx


@njit(cache=True, error_model="numpy")
def _word_side(w, g, mw):  # pragma: no cover - compiled
    wg, sw, qw, ew = _gather(w, g, mw, False)
    d = g.shape[0]
    wm = np.zeros_like(wg)
    wt = np.empty((d, d))
    dw = np.empty(d)
    for u in range(d):
        dw[u] = wg[u, u]
        for c in range(d):
            wm[u, c] = wg[u, c] * mw[c]
            wt[c, u] = wg[u, c]
    return wg, sw, qw, ew, wm, wt, dw


@njit(cache=True, error_model="numpy")
def _transposed(x, g):  # pragma: no cover - compiled
    """``out[c, v] = x[g_v, g_c]``."""
    d = g.shape[0]
    out = np.empty((d, d))
    for v in range(d):
        xv = x[g[v]]
        for c in range(d):
            out[c, v] = xv[g[c]]
    return out


@njit(cache=True, error_model="numpy")
def _two_vs_two_one(k, g, mw, mi, word, im, symmetric, tol):  # pragma: no cover - compiled
    """Weighted passed pairs of one sample and one layer (see the bootstrap module doc):
    ``mw`` the drawn concepts' counts as float64, ``mi`` as int64."""
    wg, sw, qw, ew, wm, wt, dw = word
    d = g.shape[0]
    ig, si, qi, ei = _gather(im, g, mw, False)
    it = ig if symmetric else _transposed(im, g)  # it[c, v] = I[g_v, g_c]
    cr = _cross(wm, it, d)
    ct = np.empty((d, d))
    for u in range(d):
        for v in range(d):
            ct[u, v] = cr[v, u]
    di = np.empty(d)
    dc = np.empty(d)
    for u in range(d):
        di[u] = ig[u, u]
        dc[u] = cr[u, u]
    passed = 0
    for u in range(d - 1):
        ma = mw[u]
        w_aa = dw[u]
        i_aa = di[u]
        c_aa = dc[u]
        wa = wg[u]
        wta = wt[u]
        ia = ig[u]
        ita = it[u]  # ita[v] = I[g_v, g_u]
        ca = cr[u]
        cta = ct[u]
        sw_a = sw[u]
        qw_a = qw[u]
        si_a = si[u]
        qi_a = qi[u]
        count = 0
        for v in range(u + 1, d):
            mb = mw[v]
            n = k - ma - mb
            w_ab = wa[v]
            w_ba = wta[v]
            w_bb = dw[v]
            i_ab = ia[v]
            i_ba = ita[v]
            i_bb = di[v]
            sx_a = sw_a - ma * w_aa - mb * w_ab
            sx_b = sw[v] - ma * w_ba - mb * w_bb
            sy_a = si_a - ma * i_aa - mb * i_ab
            sy_b = si[v] - ma * i_ba - mb * i_bb
            vx_a = n * (qw_a - ma * w_aa * w_aa - mb * w_ab * w_ab) - sx_a * sx_a
            vx_b = n * (qw[v] - ma * w_ba * w_ba - mb * w_bb * w_bb) - sx_b * sx_b
            vy_a = n * (qi_a - ma * i_aa * i_aa - mb * i_ab * i_ab) - sy_a * sy_a
            vy_b = n * (qi[v] - ma * i_ba * i_ba - mb * i_bb * i_bb) - sy_b * sy_b
            n11 = n * (c_aa - ma * w_aa * i_aa - mb * w_ab * i_ab) - sx_a * sy_a
            n22 = n * (dc[v] - ma * w_ba * i_ba - mb * w_bb * i_bb) - sx_b * sy_b
            n12 = n * (ca[v] - ma * w_aa * i_ba - mb * w_ab * i_bb) - sx_a * sy_b
            n21 = n * (cta[v] - ma * w_ba * i_aa - mb * w_bb * i_ab) - sx_b * sy_a
            xa = np.sqrt(vx_a)
            xb = np.sqrt(vx_b)
            ya = np.sqrt(vy_a)
            yb = np.sqrt(vy_b)
            stat = (n11 * xb * yb + n22 * xa * ya) - (n12 * xb * ya + n21 * xa * yb)
            undefined = (_constant(ew, u, v) | _constant(ew, v, u) | _constant(ei, u, v)
                         | _constant(ei, v, u))
            ok = (stat > tol * (xa * xb) * (ya * yb)) & ~undefined
            count += ok * mi[v]
        passed += count * mi[u]
    return passed


@njit(inline="always", error_model="numpy")
def _sign_corr(x1, x2, y1, y2):  # pragma: no cover - compiled
    """Pearson's r over two distinct points (any positive weights): the sign of the
    product of the differences; NaN when either side is constant."""
    dx = x1 - x2
    dy = y1 - y2
    if dx == 0.0 or dy == 0.0:
        return np.nan
    return 1.0 if (dx > 0.0) == (dy > 0.0) else -1.0


@njit(cache=True, error_model="numpy")
def _two_vs_two_four(g, m, w, im):  # pragma: no cover - compiled
    """Four drawn concepts: each pair keeps two concepts, so every correlation is exactly
    +-1 (or undefined) and the summed difference an exact even integer; decided exactly
    (sufficient statistics would decide the ties by rounding)."""
    passed = 0
    for u in range(3):
        for v in range(u + 1, 4):
            a, b = g[u], g[v]
            c1 = -1
            c2 = -1
            for x in range(4):
                if x != u and x != v:
                    if c1 < 0:
                        c1 = g[x]
                    else:
                        c2 = g[x]
            r11 = _sign_corr(w[a, c1], w[a, c2], im[a, c1], im[a, c2])
            r22 = _sign_corr(w[b, c1], w[b, c2], im[b, c1], im[b, c2])
            r12 = _sign_corr(w[a, c1], w[a, c2], im[b, c1], im[b, c2])
            r21 = _sign_corr(w[b, c1], w[b, c2], im[a, c1], im[a, c2])
            if (r11 + r22) - (r12 + r21) > 0.0:
                passed += m[a] * m[b]
    return passed


@njit(cache=True, parallel=True, error_model="numpy")
def two_vs_two_batch(w, ims, scored, symmetric, counts, tol):  # pragma: no cover - compiled
    """2 vs 2 accuracy of each sample (rows of ``counts``, B x k, any row sum: a subset of
    the concepts has zeros) and layer (``ims``,
    L x k x k; layers with ``scored`` false are NaN; ``symmetric``: bitwise symmetric
    layers, whose transpose is not gathered): (B, L)."""
    n_b = counts.shape[0]
    n_l = ims.shape[0]
    out = np.full((n_b, n_l), np.nan)
    for b in prange(n_b):
        mw = counts[b]
        g = _drawn(mw)
        mi = mw[g]
        mg = mi.astype(np.float64)
        d = g.shape[0]
        k = np.sum(mw)  # the sample's size (k for a bootstrap sample, less for a subset)
        tested = (k * k - np.sum(mw * mw)) // 2
        if tested == 0:
            continue
        word = _word_side(w, g, mg)
        for j in range(n_l):
            if not scored[j]:
                continue
            if d < 4:  # every pair keeps at most one concept: constant rows, all fail
                passed = 0
            elif d == 4:
                passed = _two_vs_two_four(g, mw, w, ims[j])
            else:
                passed = _two_vs_two_one(k, g, mg, mi, word, ims[j], symmetric[j], tol)
            out[b, j] = passed / tested
    return out
