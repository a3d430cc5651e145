"""The bootstrap 2 vs 2 test in torch float64, for CUDA (:mod:`emergence.stats.bootstrap`).

The same weighted sufficient statistics as :mod:`._bootstrap_kernels` (same expressions,
same exact treatment of constant rows and of samples with four drawn concepts), evaluated
for all pairs of drawn concepts and all layers at once on the device. Each sample is one
computation of its own shapes, never batched with others, so its value does not depend on
which batch it was in; torch's reductions and float64 matmuls give the same bits run after
run on one device. The CPU and CUDA values agree pair by pair except for a pair whose
statistic lies within rounding of the tie tolerance (never seen on planted data).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["two_vs_two_torch"]


def _row_extremes(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row of (..., D, D), over the columns other than the row itself: the two smallest
    values with the first one's column, and the two largest likewise."""
    d = x.shape[-1]
    eye = torch.eye(d, dtype=torch.bool, device=x.device)
    lo = torch.topk(x.masked_fill(eye, float("inf")), 2, dim=-1, largest=False, sorted=True)
    hi = torch.topk(x.masked_fill(eye, float("-inf")), 2, dim=-1, largest=True, sorted=True)
    return lo.values[..., 0], lo.indices[..., 0], lo.values[..., 1], hi.values[..., 0], \
        hi.indices[..., 0], hi.values[..., 1]


def _constant(ext: tuple[torch.Tensor, ...], u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether row u's values over the columns other than u and v are all equal."""
    mn1, amn, mn2, mx1, amx, mx2 = (e[..., u] for e in ext)
    mn = torch.where(amn == v, mn2, mn1)
    mx = torch.where(amx == v, mx2, mx1)
    return mn == mx


def _one(w: torch.Tensor, mats: torch.Tensor, g: torch.Tensor, mi: torch.Tensor, k: int,
         tol: float) -> torch.Tensor:
    """Weighted passed pairs of one sample for each layer (L,), at least five drawn concepts."""
    d = g.shape[0]
    mw = mi.to(torch.float64)
    wg = w[g][:, g]
    ig = mats[:, g][:, :, g]
    sw, qw = (wg * mw).sum(-1), (wg * wg * mw).sum(-1)
    si, qi = (ig * mw).sum(-1), (ig * ig * mw).sum(-1)
    cr = torch.matmul(wg * mw, ig.transpose(-1, -2))  # C[u, v] = sum_c m_c W[u, c] I[v, c]
    u, v = torch.triu_indices(d, d, 1, device=w.device)
    ma, mb = mw[u], mw[v]
    n = k - ma - mb
    w_aa, w_ab, w_ba, w_bb = wg[u, u], wg[u, v], wg[v, u], wg[v, v]
    i_aa, i_ab, i_ba, i_bb = ig[:, u, u], ig[:, u, v], ig[:, v, u], ig[:, v, v]
    sx_a = sw[u] - ma * w_aa - mb * w_ab
    sx_b = sw[v] - ma * w_ba - mb * w_bb
    sy_a = si[:, u] - ma * i_aa - mb * i_ab
    sy_b = si[:, v] - ma * i_ba - mb * i_bb
    vx_a = n * (qw[u] - ma * w_aa * w_aa - mb * w_ab * w_ab) - sx_a * sx_a
    vx_b = n * (qw[v] - ma * w_ba * w_ba - mb * w_bb * w_bb) - sx_b * sx_b
    vy_a = n * (qi[:, u] - ma * i_aa * i_aa - mb * i_ab * i_ab) - sy_a * sy_a
    vy_b = n * (qi[:, v] - ma * i_ba * i_ba - mb * i_bb * i_bb) - sy_b * sy_b
    n11 = n * (cr[:, u, u] - ma * w_aa * i_aa - mb * w_ab * i_ab) - sx_a * sy_a
    n22 = n * (cr[:, v, v] - ma * w_ba * i_ba - mb * w_bb * i_bb) - sx_b * sy_b
    n12 = n * (cr[:, u, v] - ma * w_aa * i_ba - mb * w_ab * i_bb) - sx_a * sy_b
    n21 = n * (cr[:, v, u] - ma * w_ba * i_aa - mb * w_bb * i_ab) - sx_b * sy_a
    xa, xb, ya, yb = vx_a.sqrt(), vx_b.sqrt(), vy_a.sqrt(), vy_b.sqrt()
    stat = (n11 * xb * yb + n22 * xa * ya) - (n12 * xb * ya + n21 * xa * yb)
    ew, ei = _row_extremes(wg), _row_extremes(ig)
    undefined = (_constant(ew, u, v) | _constant(ew, v, u) | _constant(ei, u, v)
                 | _constant(ei, v, u))
    ok = (stat > tol * (xa * xb) * (ya * yb)) & ~undefined
    return (ok.to(torch.int64) * (mi[u] * mi[v])).sum(-1)


def two_vs_two_torch(w: NDArray[np.float64], mats: NDArray[np.float64],
                     scored: NDArray[np.bool_], counts: NDArray[np.int64], tol: float,
                     device: torch.device) -> NDArray[np.float64]:
    """2 vs 2 accuracy of each sample (rows of ``counts``) and layer, (B, L), on ``device``;
    NaN for layers not ``scored`` and for samples with no pair to test."""
    from emergence.stats._bootstrap_kernels import _two_vs_two_four

    n_b = counts.shape[0]
    out = np.full((n_b, len(mats)), np.nan)
    idx = np.flatnonzero(scored)
    if not len(idx):
        return out
    w_dev = torch.as_tensor(w, dtype=torch.float64, device=device)
    m_dev = torch.as_tensor(mats[idx], dtype=torch.float64, device=device)
    for b in range(n_b):
        m = counts[b]
        g = np.flatnonzero(m)
        k = int(np.sum(m))  # the sample's size (less than the concepts for a subset)
        tested = (k * k - int(np.sum(m * m))) // 2
        if tested == 0:
            continue
        if len(g) < 4:
            passed = np.zeros(len(idx), dtype=np.int64)
        elif len(g) == 4:  # exact: every correlation is +-1 (see _bootstrap_kernels)
            passed = np.array([_two_vs_two_four(g, m, w, mats[j]) for j in idx])
        else:
            passed = _one(w_dev, m_dev, torch.as_tensor(g, device=device),
                          torch.as_tensor(m[g], device=device), k, tol).cpu().numpy()
        out[b, idx] = passed / tested
    return out
