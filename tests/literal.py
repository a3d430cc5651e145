"""Slow, literal implementations written from the paper's text (reference for tests only).

Nothing here is vectorised: one pair, one image, one permutation at a time, with the
correlations computed from their definition on explicitly built vectors.
"""

from __future__ import annotations

import itertools
import math

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


def pair_difference(w_mat: np.ndarray, i_mat: np.ndarray, c1: int, c2: int) -> float:
    """Section 2, one pair: hold out c1, c2; rows of W and I without columns c1, c2;
    Eq. 1 (matched) minus Eq. 2 (mismatched)."""
    k = w_mat.shape[0]
    keep = [j for j in range(k) if j not in (c1, c2)]
    w1, w2 = w_mat[c1, keep], w_mat[c2, keep]
    i1, i2 = i_mat[c1, keep], i_mat[c2, keep]
    matched = pearson(w1, i1) + pearson(w2, i2)
    mismatched = pearson(w1, i2) + pearson(w2, i1)
    return matched - mismatched


def pair_passes(w_mat: np.ndarray, i_mat: np.ndarray, c1: int, c2: int) -> bool:
    """Pass if Eq. 1 > Eq. 2 (strict: beyond TIE)."""
    return bool(pair_difference(w_mat, i_mat, c1, c2) > TIE)


def two_vs_two_ties(w_mat: np.ndarray, i_mat: np.ndarray) -> int:
    """How many of the C(k, 2) pairs tie: Eq. 1 and Eq. 2 equal within TIE
    (-TIE < difference <= TIE); each of them fails."""
    k = w_mat.shape[0]
    return sum(-TIE < pair_difference(w_mat, i_mat, c1, c2) <= TIE
               for c1, c2 in itertools.combinations(range(k), 2))


def two_vs_two(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """Section 2: the fraction of all C(k, 2) pairs that pass (:func:`pair_passes`)."""
    k = w_mat.shape[0]
    outcomes = [pair_passes(w_mat, i_mat, c1, c2)
                for c1, c2 in itertools.combinations(range(k), 2)]
    return sum(outcomes) / len(outcomes)


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


# ---------------------------------------------------------------- beyond the paper (issue #14)


def centring_matrix(n: int) -> np.ndarray:
    """H = I - 11ᵀ/n."""
    return np.eye(n) - np.ones((n, n)) / n


def cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA as Kornblith et al. (2019) define it: HSIC(K, L) / sqrt(HSIC(K, K)
    HSIC(L, L)) with HSIC(K, L) = tr(K H L H) / (n - 1)², K = x xᵀ, L = y yᵀ."""
    n = x.shape[0]
    h = centring_matrix(n)
    k_mat, l_mat = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k_mat, l_mat) / math.sqrt(hsic(k_mat, k_mat) * hsic(l_mat, l_mat))


def hsic_unbiased(k_mat: np.ndarray, l_mat: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, element by element: K̃, L̃ with zero diagonals,
    [tr(K̃L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1] / (n(n-3))."""
    n = k_mat.shape[0]
    kt = [[0.0 if i == j else float(k_mat[i, j]) for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else float(l_mat[i, j]) for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))
    # 1ᵀ K̃ L̃ 1 = sum over i, j, q of K̃[i][j] L̃[j][q]
    col_k = [sum(kt[i][j] for i in range(n)) for j in range(n)]
    row_l = [sum(lt[j][q] for q in range(n)) for j in range(n)]
    triple = sum(col_k[j] * row_l[j] for j in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * triple) / (n * (n - 3))


def cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased linear CKA: the unbiased HSIC of the centred features' Gram matrices."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    k_mat, l_mat = xc @ xc.T, yc @ yc.T
    return hsic_unbiased(k_mat, l_mat) / math.sqrt(
        hsic_unbiased(k_mat, k_mat) * hsic_unbiased(l_mat, l_mat))


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Huh et al. (2024): per concept, its k nearest other concepts by Pearson correlation
    of rows in each space (ties to the lower index); the mean fraction shared."""
    wx, wy = corr_matrix(x), corr_matrix(y)
    n = x.shape[0]
    shared = 0.0
    for i in range(n):
        near_x = sorted((j for j in range(n) if j != i), key=lambda j: (-wx[i, j], j))[:k]
        near_y = sorted((j for j in range(n) if j != i), key=lambda j: (-wy[i, j], j))[:k]
        shared += len(set(near_x) & set(near_y)) / k
    return shared / n


def kendall_tau_a(u: list[float], v: list[float]) -> float:
    """(concordant - discordant) / (n(n-1)/2) over all pairs of entries; ties count 0."""
    n = len(u)
    score = 0
    for a, b in itertools.combinations(range(n), 2):
        product = (u[a] - u[b]) * (v[a] - v[b])
        score += (product > 0) - (product < 0)
    return score / (n * (n - 1) / 2)


def rsa_kendall(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """RSA with Kendall's tau-a between the upper triangles."""
    k = w_mat.shape[0]
    pairs = list(itertools.combinations(range(k), 2))
    return kendall_tau_a([float(w_mat[a, b]) for a, b in pairs],
                         [float(i_mat[a, b]) for a, b in pairs])


# ---- comparisons (helper C)


def percentile_interval(samples: list[float], confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite samples: sort them, then for q = (1-c)/2 and
    (1+c)/2 interpolate linearly between the order statistics around position (n-1) q."""
    xs = sorted(s for s in samples if math.isfinite(s))
    if not xs:
        return math.nan, math.nan
    ends = []
    for q in ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0):
        h = (len(xs) - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, len(xs) - 1)
        ends.append(xs[lo] + (h - lo) * (xs[hi] - xs[lo]))
    return ends[0], ends[1]


def bootstrap_p(samples: list[float]) -> float:
    """Two-sided p of "0": count the finite samples <= 0 and >= 0 one at a time,
    min(1, 2 min(1 + below, 1 + above) / (1 + B))."""
    below = above = n = 0
    for s in samples:
        if not math.isfinite(s):
            continue
        n += 1
        if s <= 0:
            below += 1
        if s >= 0:
            above += 1
    if n == 0:
        return math.nan
    return min(1.0, 2.0 * min(1 + below, 1 + above) / (1 + n))


def average_ranks(values: list[float]) -> list[float]:
    """Ranks 1..n; a run of tied values in sorted order shares the mean of its positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for pos in range(start, end + 1):
            ranks[order[pos]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(u: list[float], v: list[float]) -> float:
    """Spearman's rho: Pearson's r of the average ranks, summed term by term; NaN when
    fewer than 3 values, any is not finite, or either side is constant."""
    n = len(u)
    if n < 3 or not all(math.isfinite(x) for x in [*u, *v]):
        return math.nan
    ru, rv = average_ranks(u), average_ranks(v)
    mu, mv = sum(ru) / n, sum(rv) / n
    num = sum((a - mu) * (b - mv) for a, b in zip(ru, rv, strict=True))
    su = sum((a - mu) ** 2 for a in ru)
    sv = sum((b - mv) ** 2 for b in rv)
    if su == 0 or sv == 0:
        return math.nan
    return num / math.sqrt(su * sv)


# ---- permutation nulls of the new measures (helper B)
# One null entry = the literal measure of the fixed word side against the explicitly
# permuted image side (permuted() above: concept c takes the place of perm[c]), one
# permutation at a time, from matrices (similarities or centred Gram matrices).


def cka_from_grams(k_mat: np.ndarray, l_mat: np.ndarray) -> float:
    """Kornblith et al. (2019) from Gram matrices: HSIC(K, L) = tr(K H L H) / (n - 1)²."""
    n = k_mat.shape[0]
    h = centring_matrix(n)

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k_mat, l_mat) / math.sqrt(hsic(k_mat, k_mat) * hsic(l_mat, l_mat))


def cka_debiased_from_grams(k_mat: np.ndarray, l_mat: np.ndarray) -> float:
    """Debiased CKA from centred Gram matrices: the unbiased HSIC (hsic_unbiased above)."""
    return hsic_unbiased(k_mat, l_mat) / math.sqrt(
        hsic_unbiased(k_mat, k_mat) * hsic_unbiased(l_mat, l_mat))


def shared_neighbours(s_x: np.ndarray, s_y: np.ndarray, k: int) -> list[int]:
    """Per concept, how many of its k nearest other concepts (highest similarity, ties to
    the lower index) the two similarity matrices share."""
    n = s_x.shape[0]
    shared = []
    for i in range(n):
        near_x = sorted((j for j in range(n) if j != i), key=lambda j: (-s_x[i, j], j))[:k]
        near_y = sorted((j for j in range(n) if j != i), key=lambda j: (-s_y[i, j], j))[:k]
        shared.append(len(set(near_x) & set(near_y)))
    return shared


def mutual_knn_from_similarity(s_x: np.ndarray, s_y: np.ndarray, k: int) -> float:
    """Mutual kNN alignment of two similarity matrices: the mean shared fraction."""
    shared = shared_neighbours(s_x, s_y, k)
    return sum(c / k for c in shared) / len(shared)


def null_entry(measure: str, w_mat: np.ndarray, i_mat: np.ndarray, perm: np.ndarray,
               knn_k: int = 10) -> float:
    """The literal measure of W (or Kw) against the permuted I (or Ki): one null entry.
    measure: 'rsa' (Pearson), 'rsa_kendall', 'cka', 'cka_debiased' or 'mutual_knn'."""
    p = permuted(i_mat, perm)
    if measure == "rsa":
        return rsa(w_mat, p)
    if measure == "rsa_kendall":
        return rsa_kendall(w_mat, p)
    if measure == "cka":
        return cka_from_grams(w_mat, p)
    if measure == "cka_debiased":
        return cka_debiased_from_grams(w_mat, p)
    if measure == "mutual_knn":
        return mutual_knn_from_similarity(w_mat, p, knn_k)
    raise ValueError(measure)


# ---- bootstrap (helper A)
# A bootstrap sample draws concepts with replacement: counts m (k,), materialised in concept
# order idx = repeat(arange(k), m) (copies adjacent). The rule: a copy is the concept itself.


def materialise(m: np.ndarray) -> np.ndarray:
    """The positions' concepts: idx = repeat(arange(k), m)."""
    return np.repeat(np.arange(len(m)), m)


def pearson_defined(u: list[float] | np.ndarray, v: list[float] | np.ndarray) -> float:
    """:func:`pearson`, NaN when a vector is empty or constant (exactly equal entries: the
    correlation is undefined; computing it would divide rounding noise by rounding noise)."""
    a, b = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if len(a) == 0 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return pearson(a, b)


def boot_pair_passes(w_b: np.ndarray, i_b: np.ndarray, idx: np.ndarray, s: int, t: int) -> bool:
    """One pair of positions (s, t) of the materialised matrices: the rows of s and t with
    every column that is a copy of either held-out concept removed; Eq. 1 > Eq. 2 (strict,
    TIE); an undefined correlation (constant or empty row) fails."""
    keep = np.flatnonzero((idx != idx[s]) & (idx != idx[t]))
    w1, w2 = w_b[s, keep], w_b[t, keep]
    i1, i2 = i_b[s, keep], i_b[t, keep]
    matched = pearson_defined(w1, i1) + pearson_defined(w2, i2)
    mismatched = pearson_defined(w1, i2) + pearson_defined(w2, i1)
    return bool(matched - mismatched > TIE)


def boot_two_vs_two(w_mat: np.ndarray, i_mat: np.ndarray, m: np.ndarray) -> float:
    """2 vs 2 on the materialised sample: every pair of positions s < t whose concepts
    differ is tested (:func:`boot_pair_passes`); accuracy = passes / tested (NaN if none)."""
    idx = materialise(m)
    w_b, i_b = w_mat[np.ix_(idx, idx)], i_mat[np.ix_(idx, idx)]
    outcomes = [boot_pair_passes(w_b, i_b, idx, s, t)
                for s, t in itertools.combinations(range(len(idx)), 2) if idx[s] != idx[t]]
    return sum(outcomes) / len(outcomes) if outcomes else float("nan")


def boot_entries(w_mat: np.ndarray, i_mat: np.ndarray, m: np.ndarray) -> tuple[list, list]:
    """The entries (s < t) of the materialised matrices whose concepts differ."""
    idx = materialise(m)
    pairs = [(s, t) for s, t in itertools.combinations(range(len(idx)), 2) if idx[s] != idx[t]]
    return ([float(w_mat[idx[s], idx[t]]) for s, t in pairs],
            [float(i_mat[idx[s], idx[t]]) for s, t in pairs])


def boot_rsa(w_mat: np.ndarray, i_mat: np.ndarray, m: np.ndarray, method: str) -> float:
    """RSA of the materialised sample's entries: Pearson, Spearman (average ranks of those
    entries) or Kendall's tau-a (pair by pair; NaN when either side is constant)."""
    from scipy.stats import rankdata

    w, v = boot_entries(w_mat, i_mat, m)
    if method == "kendall":
        if len(w) < 2 or len(set(w)) == 1 or len(set(v)) == 1:
            return float("nan")
        return kendall_tau_a(w, v)
    if method == "spearman":
        if len(w) == 0:
            return float("nan")
        w, v = list(rankdata(w)), list(rankdata(v))
    return pearson_defined(w, v)


def boot_gram(k_mat: np.ndarray, m: np.ndarray, debiased: bool) -> np.ndarray:
    """H K[idx][:, idx] H over the k positions; debiased: entries between two copies of
    one concept (the diagonal included) set to zero."""
    idx = materialise(m)
    n = len(idx)
    h = centring_matrix(n)
    kb = h @ k_mat[np.ix_(idx, idx)] @ h
    if debiased:
        kb = np.array([[0.0 if idx[s] == idx[t] else kb[s, t] for t in range(n)]
                       for s in range(n)])
    return kb


def boot_cka(kw: np.ndarray, ki: np.ndarray, m: np.ndarray, debiased: bool,
             negligible: float = 1e-10) -> float:
    """CKA of the materialised, re-centred Grams: tr(KL) / sqrt(tr(KK) tr(LL)), or with the
    unbiased HSIC (:func:`hsic_unbiased`, n = k) after zeroing the copies' entries. NaN when
    a side's HSIC with itself is at most ``negligible`` times the sum of its squared
    materialised entries before centring (debiased: between different concepts, over
    n (n - 3)): no variance left, the ratio would be rounding noise."""
    kb, lb = boot_gram(kw, m, debiased), boot_gram(ki, m, debiased)
    idx = materialise(m)
    n = len(idx)
    other = idx[:, None] != idx[None, :]

    def scale(g: np.ndarray) -> float:
        raw = g[np.ix_(idx, idx)] ** 2
        return float(np.sum(raw[other])) / (n * (n - 3)) if debiased else float(np.sum(raw))

    if debiased:
        xy, xx, yy = hsic_unbiased(kb, lb), hsic_unbiased(kb, kb), hsic_unbiased(lb, lb)
    else:
        xy, xx, yy = (float(np.sum(kb * lb)), float(np.sum(kb * kb)), float(np.sum(lb * lb)))
    if xx <= negligible * scale(kw) or yy <= negligible * scale(ki):
        return float("nan")
    return xy / math.sqrt(xx * yy)


def boot_mutual_knn(sx: np.ndarray, sy: np.ndarray, m: np.ndarray, k: int) -> float:
    """Mutual kNN on the materialised similarities: for each position, its k nearest
    positions whose concept differs (copies excluded like the concept itself), ties to the
    lower position; the mean over positions of the fraction shared. NaN when a position
    has fewer than k candidates."""
    idx = materialise(m)
    n = len(idx)
    shared = 0
    for s in range(n):
        cand = [t for t in range(n) if idx[t] != idx[s]]
        if len(cand) < k:
            return float("nan")
        near_x = sorted(cand, key=lambda t: (-sx[idx[s], idx[t]], t))[:k]
        near_y = sorted(cand, key=lambda t: (-sy[idx[s], idx[t]], t))[:k]
        shared += len(set(near_x) & set(near_y))
    return shared / (n * k)


# ---- language models layer by layer (issue 22)
# A concept's tokens inside its prompt: the template is filled by plain string replacement,
# the word starts where the text before {word} ends, and a token is the word's when one of
# the word's characters lies inside the token's characters [a, b) (special tokens never).


def filled_template(template: str, word: str, gloss: str) -> tuple[str, int, int]:
    """The text, and the word's first and one-past-last character."""
    before, after = template.split("{word}")
    before = before.replace("{gloss}", gloss)
    return before + word + after.replace("{gloss}", gloss), len(before), len(before) + len(word)


def concept_token_positions(offsets: list[tuple[int, int]], special: list[int], start: int,
                            end: int) -> list[int]:
    """Character by character: the position of every token that holds a character of the
    word, each once, in order."""
    positions: list[int] = []
    for char in range(start, end):
        for position, ((a, b), is_special) in enumerate(zip(offsets, special, strict=True)):
            if not is_special and a <= char < b and position not in positions:
                positions.append(position)
    return sorted(positions)


def pooled(states: np.ndarray, positions: list[int], pooling: str) -> np.ndarray:
    """mean: the tokens' hidden states added one after the other in float64, divided by
    their number; last: the last token's; cls: the first position's."""
    if pooling == "cls":
        return np.array(states[0], dtype=np.float64)
    if pooling == "last":
        return np.array(states[positions[-1]], dtype=np.float64)
    total = np.zeros(states.shape[1], dtype=np.float64)
    for position in positions:
        total = total + np.asarray(states[position], dtype=np.float64)
    return total / len(positions)


# ---- jackknife and calibrated intervals (helper h20)
# A jackknife sample is the study without one or two concepts: every measure of the kept
# concepts' matrices (similarities restricted; Gram matrices re-centred over them).


def kept(k: int, deleted: tuple[int, int]) -> list[int]:
    return [c for c in range(k) if c not in deleted]


def subset(m: np.ndarray, keep: list[int]) -> np.ndarray:
    """The kept concepts' rows and columns, entry by entry."""
    return np.array([[m[a, b] for b in keep] for a in keep])


def recentred(g: np.ndarray) -> np.ndarray:
    """A Gram matrix of the kept concepts centred over them: H G H."""
    h = centring_matrix(g.shape[0])
    return h @ g @ h


def two_vs_two_undefined(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """:func:`two_vs_two` where a pair with a constant held-out row fails (undefined)."""
    k = w_mat.shape[0]
    passed = 0
    for c1, c2 in itertools.combinations(range(k), 2):
        keep = [j for j in range(k) if j not in (c1, c2)]
        r = [pearson_defined(w_mat[a, keep], i_mat[b, keep])
             for a, b in ((c1, c1), (c2, c2), (c1, c2), (c2, c1))]
        passed += bool(all(math.isfinite(x) for x in r) and (r[0] + r[1]) - (r[2] + r[3]) > TIE)
    return passed / math.comb(k, 2)


def margin_mean(w_mat: np.ndarray, i_mat: np.ndarray) -> float:
    """The 2 vs 2's companion: the mean over the pairs whose four held-out correlations are
    defined of (r11 + r22) - (r12 + r21)."""
    k = w_mat.shape[0]
    margins = []
    for c1, c2 in itertools.combinations(range(k), 2):
        keep = [j for j in range(k) if j not in (c1, c2)]
        r = [pearson_defined(w_mat[a, keep], i_mat[b, keep])
             for a, b in ((c1, c1), (c2, c2), (c1, c2), (c2, c1))]
        if all(math.isfinite(x) for x in r):
            margins.append((r[0] + r[1]) - (r[2] + r[3]))
    return sum(margins) / len(margins) if margins else float("nan")


def knn_fixed(s_x: np.ndarray, s_y: np.ndarray, knn: int, keep: list[int]) -> float:
    """Mutual kNN's companion: neighbour lists among all k concepts, the indicator
    s_ab = [b in both of a's lists] averaged over ordered pairs of kept concepts, times
    (k - 1) / knn."""
    k = s_x.shape[0]
    near = {}
    for s, name in ((s_x, "x"), (s_y, "y")):
        for a in range(k):
            near[name, a] = set(sorted((b for b in range(k) if b != a),
                                       key=lambda b, a=a, s=s: (-s[a, b], b))[:knn])
    pairs = [(a, b) for a in keep for b in keep if a != b]
    shared = sum(1 for a, b in pairs if b in near["x", a] and b in near["y", a])
    return (k - 1) / knn * shared / len(pairs)


def jackknife_value(measure: str, w_mat: np.ndarray, i_mat: np.ndarray, kw: np.ndarray,
                    ki: np.ndarray, deleted: tuple[int, int], knn: int = 3) -> float:
    """One jackknife sample of a measure (or companion) from its definition."""
    k = w_mat.shape[0]
    keep = kept(k, deleted)
    w, i = subset(w_mat, keep), subset(i_mat, keep)
    if measure == "two_vs_two":
        return two_vs_two_undefined(w, i)
    if measure == "two_vs_two_margin":
        return margin_mean(w, i)
    if measure == "rsa":
        return rsa(w, i)
    if measure == "rsa_kendall":
        return rsa_kendall(w, i)
    if measure == "cka":
        return cka_from_grams(recentred(subset(kw, keep)), recentred(subset(ki, keep)))
    if measure == "cka_debiased":
        return cka_debiased_from_grams(recentred(subset(kw, keep)), recentred(subset(ki, keep)))
    if measure == "mutual_knn":
        return mutual_knn_from_similarity(w, i, knn)
    if measure == "mutual_knn_fixed":
        return knn_fixed(w_mat, i_mat, knn, keep)
    raise ValueError(measure)


def corrected_variance(values: list[float], k: int, pairs: list[tuple[int, int]],
                       second: list[float] | None = None, scale: float = 1.0
                       ) -> tuple[float, float]:
    """(V, degrees of freedom) from the definitions, loop by loop. ``values``: S, then the k
    delete-one values, then one per deleted pair. The pair interactions come from
    ``second`` (a companion's samples; default: ``values``), their mean square times
    ``scale``.

    J = (k-1)/k sum_i (d_i - dbar)²; Q_ab = S - d_a - d_b + e_ab - (D_a + D_b)/(k-2), centred
    over the pairs; m = scale * sum Q² / (P - 1); V1 = J - (k-1)(k-2)(k-3)/k m,
    V2 = (k-2)²(k-3)/(2k) m; V = V1 + V2; Var(V) = 2 J²/(k-1) + ((k-2)(k-3)/2)² Var(m).
    When V1 < 0: V1 = 0, V2 = the inverse-variance weighted mean of J / a (a = 2(k-1)/(k-2),
    variance 2 (J/a)²/(k-1)) and (k-2)²(k-3)/(2k) m (variance its square times Var(m)), and
    Var(V) that mean's. df = 2 V² / Var(V), at least k - 1 (inf without noise)."""
    d = values[1:k + 1]
    dbar = sum(d) / k
    j = (k - 1) / k * sum((x - dbar) ** 2 for x in d)
    src = second if second is not None else values
    s2, d2, e2 = src[0], src[1:k + 1], src[k + 1:]
    dbar2 = sum(d2) / k
    q = [s2 - d2[a] - d2[b] + e - ((d2[a] - dbar2) + (d2[b] - dbar2)) / (k - 2)
         for (a, b), e in zip(pairs, e2, strict=True)]
    qbar = sum(q) / len(q)
    sq = [(x - qbar) ** 2 for x in q]
    p = len(sq)
    m = scale * sum(sq) / (p - 1)
    msq = sum(sq) / p
    var_m = scale * scale * sum((x - msq) ** 2 for x in sq) / (p - 1) / p
    c1 = (k - 1) * (k - 2) * (k - 3) / k
    c2 = (k - 2) ** 2 * (k - 3) / (2 * k)
    v1 = j - c1 * m
    if v1 >= 0:
        v = v1 + c2 * m
        noise = 2 * j * j / (k - 1) + (c1 - c2) ** 2 * var_m
    else:  # V1 = 0; V2 from both of its estimates, J / a and c2 m, by inverse variance
        a = 2 * (k - 1) / (k - 2)
        noise_j = 2 * (j / a) ** 2 / (k - 1)
        noise_m = c2 * c2 * var_m
        w = noise_m / (noise_j + noise_m) if noise_j + noise_m > 0 else 0.0
        v = w * j / a + (1 - w) * c2 * m
        noise = w * w * noise_j + (1 - w) ** 2 * noise_m
    df = max(2 * v * v / noise, k - 1) if noise > 0 else math.inf
    return v, df


def jackknife_j(values: list[float], k: int) -> float:
    d = values[1:k + 1]
    dbar = sum(d) / k
    return (k - 1) / k * sum((x - dbar) ** 2 for x in d)


def measure_variance(measure: str, values: list[float], k: int, pairs: list[tuple[int, int]],
                     companion: list[float] | None = None) -> tuple[float, float]:
    """The measure's rule: 2 vs 2 from its margin's interactions scaled by J / J(margin),
    mutual kNN from its fixed lists' interactions, the others from their own."""
    if measure == "two_vs_two":
        assert companion is not None
        return corrected_variance(values, k, pairs, companion,
                                  jackknife_j(values, k) / jackknife_j(companion, k))
    if measure == "mutual_knn":
        return corrected_variance(values, k, pairs, companion)
    return corrected_variance(values, k, pairs)


def two_factor_variance(per_group: list[list[float]], k: int, pairs: list[tuple[int, int]],
                        measure: str = "rsa", companions: list[list[float]] | None = None
                        ) -> tuple[float, float]:
    """Concepts x image groups: V_c of the group mean (its rule), V_g = s²(S_h) / g,
    V_cg = sum_h V(S_h - mean) / (g (g-1)), each group's deviation from the mean over
    groups by the same rule; V = V_c + max(V_g - V_cg, 0); df g - 1 when the group term
    is positive (containment), else V_c's."""
    g = len(per_group)
    n = len(per_group[0])
    mean = [sum(v[i] for v in per_group) / g for i in range(n)]
    cmean = None if companions is None else [sum(v[i] for v in companions) / g
                                            for i in range(n)]
    vc, dfc = measure_variance(measure, mean, k, pairs, cmean)
    s = [v[0] for v in per_group]
    sbar = sum(s) / g
    vg = sum((x - sbar) ** 2 for x in s) / (g - 1) / g
    vcg = 0.0
    for h in range(g):
        dev = [per_group[h][i] - mean[i] for i in range(n)]
        cdev = None if cmean is None or companions is None else [
            companions[h][i] - cmean[i] for i in range(n)]
        vcg += measure_variance(measure, dev, k, pairs, cdev)[0]
    vcg /= g * (g - 1)
    group = max(vg - vcg, 0.0)
    return vc + group, (float(g - 1) if group > 0 else dfc)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, NaN left out of the family."""
    idx = sorted((i for i, x in enumerate(p) if math.isfinite(x)), key=lambda i: p[i])
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * p[i]))
        out[i] = running
    return out


def slope(values: list[float], positions: list[float]) -> float:
    """Least-squares slope of values on positions."""
    mx = sum(positions) / len(positions)
    my = sum(values) / len(values)
    return (sum((x - mx) * (y - my) for x, y in zip(positions, values, strict=True))
            / sum((x - mx) ** 2 for x in positions))


def grid_fwe_p(observed: list[list[float]], nulls: list[list[list[float]]]) -> list[list[float]]:
    """Family-wise p over a vision x language grid, cell by cell: ``observed[j][i]`` (language
    layer j, vision layer i), ``nulls[j][t][i]`` (permutation t). A cell with a NaN observed
    value or any NaN null value is untested (NaN) and left out of the maximum; each
    permutation's maximum over the tested cells counts where it is >= the observed value;
    ``(1 + count) / (1 + n)``."""
    n_lang, n_vis, n = len(observed), len(observed[0]), len(nulls[0])
    tested = [[not math.isnan(observed[j][i])
               and not any(math.isnan(nulls[j][t][i]) for t in range(n))
               for i in range(n_vis)] for j in range(n_lang)]
    peaks = []
    for t in range(n):
        peak = -math.inf
        for j in range(n_lang):
            for i in range(n_vis):
                if tested[j][i] and nulls[j][t][i] > peak:
                    peak = nulls[j][t][i]
        peaks.append(peak)
    return [[(1 + sum(1 for pk in peaks if pk >= observed[j][i])) / (1 + n) if tested[j][i]
             else math.nan for i in range(n_vis)] for j in range(n_lang)]
