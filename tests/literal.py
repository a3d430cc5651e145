"""Slow, literal implementations written from the paper's text (reference for tests only).

Nothing here is vectorised: one pair, one image, one permutation at a time, with the
correlations computed from their definition on explicitly built vectors.
"""

from __future__ import annotations

import itertools

import numpy as np

# The paper's comparison is strict. Floating point makes "equal" fuzzy: a tie is a
# difference within 1e-12 (far below any real effect), and ties fail.
TIE = 1e-12


def pearson(u: np.ndarray | list[float], v: np.ndarray | list[float]) -> float:
    """Pearson's r of two vectors, from its definition (centred dot product over norms)."""
    a = np.asarray(u, dtype=np.float64)
    b = np.asarray(v, dtype=np.float64)
    a = a - a.mean()
    b = b - b.mean()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def corr_matrix(x: np.ndarray) -> np.ndarray:
    """Pearson correlation between every pair of rows, one pair at a time."""
    k = x.shape[0]
    out = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            out[i, j] = 1.0 if i == j else pearson(x[i], x[j])
    return out


def two_vs_two(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """Section 2: hold out c1, c2; rows of W and I without columns c1, c2; Eq. 1 > Eq. 2."""
    k = w_mat.shape[0]
    passed = 0
    total = 0
    for c1, c2 in itertools.combinations(range(k), 2):
        passed += two_vs_two_pair(w_mat, i_mat, c1, c2)
        total += 1
    return passed / total


def two_vs_two_pair(w_mat: np.ndarray, i_mat: np.ndarray, c1: int, c2: int) -> bool:
    """One held-out pair (c1, c2) of the 2 vs 2 test: does it pass?"""
    k = w_mat.shape[0]
    keep = [j for j in range(k) if j not in (c1, c2)]
    w1, w2 = w_mat[c1, keep], w_mat[c2, keep]
    i1, i2 = i_mat[c1, keep], i_mat[c2, keep]
    matched = pearson(w1, i1) + pearson(w2, i2)
    mismatched = pearson(w1, i2) + pearson(w2, i1)
    return bool(matched - mismatched > TIE)


def rsa(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """Correlation between the matrices' entries above the diagonal."""
    k = w_mat.shape[0]
    w = [w_mat[i, j] for i in range(k) for j in range(i + 1, k)]
    v = [i_mat[i, j] for i in range(k) for j in range(i + 1, k)]
    return pearson(w, v)


def permuted(m: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Shuffle the concepts of one space: concept c takes the place of perm[c]."""
    k = m.shape[0]
    return np.array([[m[perm[i], perm[j]] for j in range(k)] for i in range(k)])


# Not in the paper: a test over fewer than 3 reference concepts is not counted (over 2
# points every correlation is +-1; over 0 or 1 it is undefined).
MIN_REFERENCE = 3


def one_vs_two(w_mat: np.ndarray, i_mat: np.ndarray, predicted: list[int]) -> list[bool | None]:
    """Section 3.3: for each misclassified image, is it closer to w_true than to w_pred?

    None for a test that is not counted: a reference set of fewer than MIN_REFERENCE
    concepts, or an undefined (NaN) correlation.
    """
    k = len(predicted)
    correct = [c for c in range(k) if predicted[c] == c]
    outcomes: list[bool | None] = []
    for m in range(k):
        p = predicted[m]
        if p < 0 or p == m:
            continue
        ref = [c for c in correct if c not in (m, p)]
        if len(ref) < MIN_REFERENCE:
            outcomes.append(None)
            continue
        i_m = [i_mat[m, c] for c in ref]
        w_true = [w_mat[m, c] for c in ref]
        w_pred = [w_mat[p, c] for c in ref]
        with np.errstate(invalid="ignore", divide="ignore"):
            r_true, r_pred = pearson(i_m, w_true), pearson(i_m, w_pred)
        if np.isnan(r_true) or np.isnan(r_pred):
            outcomes.append(None)
            continue
        outcomes.append(bool(r_true - r_pred > TIE))
    return outcomes
