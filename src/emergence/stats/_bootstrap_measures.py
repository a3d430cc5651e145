"""Numba kernels of the bootstrap over concepts for RSA (Pearson, Spearman, Kendall's
tau-a), CKA (biased, debiased) and mutual kNN (:mod:`emergence.stats.bootstrap`).

The same conventions as :mod:`._bootstrap_kernels`: integer weights (counts) on the drawn
concepts or on the upper-triangle entries (``m_a m_b`` for entry ``(a, b)``), one sample per
thread in a fixed order, so every value has the same bits for any thread count or batching.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from emergence.stats._bootstrap_kernels import _drawn

__all__ = ["cka_batch", "kendall_batch", "mutual_knn_batch", "rank_pearson_batch"]


@njit(cache=True, error_model="numpy")
def _entry_weights(m, ea, eb):  # pragma: no cover - compiled
    """Weight of each entry (a < b) of the upper triangle: m_a m_b, its copies."""
    we = np.empty(ea.shape[0], dtype=np.int64)
    for e in range(ea.shape[0]):
        we[e] = m[ea[e]] * m[eb[e]]
    return we


@njit(cache=True, error_model="numpy")
def _weighted_ranks(order, new_group, we):  # pragma: no cover - compiled
    """Average ranks (1-based) of the entries repeated ``we`` times: walk the entries in
    sorted order (``order``; ``new_group[j]``: sorted position j starts a run of equal
    values), each run of equal values sharing the mean of its positions."""
    p = order.shape[0]
    ranks = np.zeros(p)
    cum = 0
    j = 0
    while j < p:
        h = j + 1
        while h < p and not new_group[h]:
            h += 1
        gw = 0
        for t in range(j, h):
            gw += we[order[t]]
        r = cum + (gw + 1) / 2.0
        for t in range(j, h):
            ranks[order[t]] = r
        cum += gw
        j = h
    return ranks


@njit(cache=True, error_model="numpy")
def _weighted_pearson(x, y, we):  # pragma: no cover - compiled
    """Pearson's r of x, y with integer weights (two passes); NaN when either side is
    constant over the entries of positive weight, or there are none."""
    n = 0
    sx = 0.0
    sy = 0.0
    x0 = np.nan
    y0 = np.nan
    cx = True
    cy = True
    for e in range(x.shape[0]):
        w = we[e]
        if w == 0:
            continue
        if n == 0:
            x0 = x[e]
            y0 = y[e]
        cx &= x[e] == x0
        cy &= y[e] == y0
        n += w
        sx += w * x[e]
        sy += w * y[e]
    if n == 0 or cx or cy:
        return np.nan
    mx = sx / n
    my = sy / n
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for e in range(x.shape[0]):
        w = we[e]
        if w == 0:
            continue
        dx = x[e] - mx
        dy = y[e] - my
        sxx += w * (dx * dx)
        syy += w * (dy * dy)
        sxy += w * (dx * dy)
    return min(1.0, max(-1.0, sxy / np.sqrt(sxx * syy)))


@njit(cache=True, parallel=True, error_model="numpy")
def rank_pearson_batch(xw, ow, gw, yl, ol, gl, ea, eb, counts, scored,
                       ranked):  # pragma: no cover - compiled
    """RSA (Pearson, or Spearman when ``ranked``) of each sample and layer, (B, L).

    ``xw`` (P,) and ``yl`` (L, P): upper-triangle entries (a < b, pairs ``ea, eb``) of W and
    of each I; ``ow``/``ol`` their stable sort orders and ``gw``/``gl`` the run starts."""
    n_b = counts.shape[0]
    n_l = yl.shape[0]
    out = np.full((n_b, n_l), np.nan)
    for b in prange(n_b):
        we = _entry_weights(counts[b], ea, eb)
        x = _weighted_ranks(ow, gw, we) if ranked else xw
        for j in range(n_l):
            if scored[j]:
                y = _weighted_ranks(ol[j], gl[j], we) if ranked else yl[j]
                out[b, j] = _weighted_pearson(x, y, we)
    return out


@njit(cache=True, error_model="numpy")
def _kendall_one(ow, gw, xw, yr, n_ranks, we):  # pragma: no cover - compiled
    """Kendall's tau-a of the entries repeated ``we`` times: entries in order of x, runs of
    equal x queried before they are inserted into a Fenwick tree over y's dense ranks,
    each adding w_f (lighter - heavier weight in y); an exact integer numerator."""
    p = ow.shape[0]
    tree = np.zeros(n_ranks + 1, dtype=np.int64)
    n = 0
    s = np.int64(0)
    x0 = np.nan
    y0 = -1
    cx = True
    cy = True
    j = 0
    while j < p:
        h = j + 1
        while h < p and not gw[h]:
            h += 1
        for t in range(j, h):
            e = ow[t]
            w = we[e]
            if w == 0:
                continue
            if y0 < 0:  # the first entry of positive weight
                x0 = xw[e]
                y0 = yr[e]
            cx &= xw[e] == x0
            cy &= yr[e] == y0
            r = yr[e]
            below = np.int64(0)  # inserted weight with a smaller y
            i = r
            while i > 0:
                below += tree[i]
                i -= i & -i
            upto = np.int64(0)  # inserted weight with y at most this one's
            i = r + 1
            while i > 0:
                upto += tree[i]
                i -= i & -i
            s += w * (below - (n - upto))
        for t in range(j, h):
            e = ow[t]
            w = we[e]
            if w == 0:
                continue
            i = yr[e] + 1
            while i <= n_ranks:
                tree[i] += w
                i += i & -i
            n += w
        j = h
    if n < 2 or cx or cy:
        return np.nan
    return s / (n * (n - 1) / 2)


@njit(cache=True, parallel=True, error_model="numpy")
def kendall_batch(xw, ow, gw, yr, n_ranks, ea, eb, counts,
                  scored):  # pragma: no cover - compiled
    """Kendall tau-a RSA of each sample and layer, (B, L): ``yr`` (L, P) dense ranks
    (0-based) of each layer's entries, ``n_ranks`` (L,) their counts."""
    n_b = counts.shape[0]
    n_l = yr.shape[0]
    out = np.full((n_b, n_l), np.nan)
    for b in prange(n_b):
        we = _entry_weights(counts[b], ea, eb)
        for j in range(n_l):
            if scored[j]:
                out[b, j] = _kendall_one(ow, gw, xw, yr[j], n_ranks[j], we)
    return out


@njit(cache=True, error_model="numpy")
def _centred(kmat, g, mg, k, debiased):  # pragma: no cover - compiled
    """H K[idx][:, idx] H on the drawn concepts (D x D): K minus the weighted row and
    column means over the k positions plus the grand mean; and the scale of the
    materialised K before centring (sum of its squared entries; debiased: those between
    different concepts, over n (n - 3))."""
    d = g.shape[0]
    sub = np.empty((d, d))
    scale = 0.0
    for u in range(d):
        row = 0.0
        for v in range(d):
            x = kmat[g[u], g[v]]
            sub[u, v] = x
            if not (debiased and u == v):
                row += mg[v] * (x * x)
        scale += mg[u] * row
    if debiased:
        scale /= float(k) * (k - 3)
    rm = np.zeros(d)
    cm = np.zeros(d)
    for u in range(d):
        for v in range(d):
            rm[u] += mg[v] * sub[u, v]
            cm[v] += mg[u] * sub[u, v]
    gm = 0.0
    for u in range(d):
        rm[u] /= k
        cm[u] /= k
        gm += mg[u] * rm[u]
    gm /= k
    for u in range(d):
        for v in range(d):
            sub[u, v] = ((sub[u, v] - rm[u]) - cm[v]) + gm
    return sub, scale


@njit(cache=True, error_model="numpy")
def _hsic(x, y, mg, k, debiased):  # pragma: no cover - compiled
    """tr(K L) of the materialised Grams (biased), or the unbiased HSIC with n = k and the
    entries between copies of one concept (the diagonal included) zeroed."""
    d = mg.shape[0]
    trace = 0.0
    sx = 0.0
    sy = 0.0
    triple = 0.0
    for u in range(d):
        t_u = 0.0
        rx = 0.0
        ry = 0.0
        for v in range(d):
            if debiased and u == v:
                continue
            t_u += mg[v] * (x[u, v] * y[u, v])
            rx += mg[v] * x[u, v]
            ry += mg[v] * y[u, v]
        trace += mg[u] * t_u
        sx += mg[u] * rx
        sy += mg[u] * ry
        triple += mg[u] * (rx * ry)
    if not debiased:
        return trace
    n = float(k)
    return (trace + sx * sy / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * triple) / (n * (n - 3))


@njit(cache=True, parallel=True, error_model="numpy")
def cka_batch(kw, kis, scored, counts, debiased, rel):  # pragma: no cover - compiled
    """CKA (biased or debiased) of each sample and layer, (B, L); NaN where a side's HSIC
    is at most ``rel`` times its scale (no variance left: the ratio is rounding noise)."""
    n_b = counts.shape[0]
    n_l = kis.shape[0]
    out = np.full((n_b, n_l), np.nan)
    for b in prange(n_b):
        m = counts[b]
        k = np.sum(m)  # the sample's size (k for a bootstrap sample, less for a subset)
        g = _drawn(m)
        mg = m[g].astype(np.float64)
        x, sx = _centred(kw, g, mg, k, debiased)
        xx = _hsic(x, x, mg, k, debiased)
        for j in range(n_l):
            if not scored[j]:
                continue
            y, sy = _centred(kis[j], g, mg, k, debiased)
            yy = _hsic(y, y, mg, k, debiased)
            if xx > rel * sx and yy > rel * sy:
                out[b, j] = _hsic(x, y, mg, k, debiased) / np.sqrt(xx * yy)
    return out


@njit(cache=True, parallel=True, error_model="numpy")
def mutual_knn_batch(ox, oy, counts, knn):  # pragma: no cover - compiled
    """Mutual kNN of each sample for one pair of similarities, (B,). ``ox``, ``oy`` (k, k-1):
    each concept's other concepts, nearest first (ties to the lower index). A concept's
    copies are one block of positions (they are adjacent and equally similar), so its
    neighbours are the first concepts of its order, whole blocks, the last one cut to its
    lowest positions; the positions shared with the other space's list of concept c are
    min(taken_x(c), taken_y(c))."""
    n_b, k = counts.shape
    out = np.full(n_b, np.nan)
    for b in prange(n_b):
        m = counts[b]
        n = np.sum(m)  # the sample's size (k for a bootstrap sample, less for a subset)
        taken = np.zeros(k, dtype=np.int64)
        stamp = np.zeros(k, dtype=np.int64)
        total = 0
        ok = True
        for a in range(k):
            if m[a] == 0:
                continue
            if n - m[a] < knn:
                ok = False
                break
            left = knn
            for t in range(k - 1):
                c = ox[a, t]
                if m[c] == 0:
                    continue
                q = min(m[c], left)
                taken[c] = q
                stamp[c] = a + 1
                left -= q
                if left == 0:
                    break
            left = knn
            shared = 0
            for t in range(k - 1):
                c = oy[a, t]
                if m[c] == 0:
                    continue
                q = min(m[c], left)
                if stamp[c] == a + 1:
                    shared += min(q, taken[c])
                left -= q
                if left == 0:
                    break
            total += m[a] * shared
        if ok:
            out[b] = total / (n * knn)
    return out
