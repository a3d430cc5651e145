"""The 1 vs 2 test for misclassified images (Dharmaretnam & Fyshe 2018, sec. 3.3).

Within one image group (one image per concept), take every image that the network
misclassifies into another concept of the concept set. For such an image ``m`` with
true concept ``t`` and predicted concept ``p``, the reference set ``R`` is every
concept whose image was classified correctly, minus ``t`` and ``p``. With

* ``w_true = W[t, R]`` and ``w_pred = W[p, R]`` (word-space correlations), and
* ``i_m = I[m, R]`` (correlations of the misclassified image's layer representation
  to the representations of the correctly classified images),

the test passes when ``corr(i_m, w_true) > corr(i_m, w_pred)`` (strict; differences
within ``TIE_TOLERANCE`` are ties and fail, as in the 2 vs 2 test). Accuracy is
the fraction passed; chance is 0.5. Significance: a one-sided binomial test against
0.5, and a permutation test that shuffles the concepts of the word space
(``W -> W[q][:, q]``, the same seeded permutations as the 2 vs 2 test) and reruns.

Tests that cannot be counted are *skipped*, not failed: a test whose reference set has
fewer than :data:`MIN_REFERENCE` concepts (a correlation over 2 points is +-1, over 0 or
1 undefined), a test whose observed correlation is undefined (constant over R), and every
test of an image matrix with NaN or infinite entries (a concept with constant
activations). Skipped tests are reported with their reason and enter neither the
accuracy nor the binomial and permutation tests; with no counted test the accuracy and
both p-values are NaN, as is the permutation p-value with ``n_permutations = 0``.

All tests of a group are evaluated at once with masked sums; permutations are
batched. :func:`pool` pools the tests of several groups (the ``all`` rows): passes and
tests are summed, and the pooled null counts the passes of every group under the same
permutation (each group's null uses the same seeded permutations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from emergence.stats.permutation import batch_ranges, p_value, permutations
from emergence.stats.two_vs_two import TIE_TOLERANCE

__all__ = ["MIN_REFERENCE", "OneVsTwo", "Pooled", "binomial_p", "misclassified_tests", "one_vs_two",
           "pool"]

MIN_REFERENCE = 3
"""Fewest concepts in a test's reference set R for the test to count: with 2 the
correlations are +-1 (the outcome is a coin flip on signs), with 0 or 1 undefined."""


NULL_CHUNK_BYTES = 64 << 20
"""Size of one (permutations x tests x k) float64 array of the permutation null: tests are
taken in chunks that fit (at k = 1,854 with 900 tests, a batch of 64 would be ~0.9 GB per
array, and the correlation needs several)."""


def _accuracy(n_passed: int, n_tests: int) -> float:
    """Fraction of the counted tests passed; NaN without counted tests."""
    return n_passed / n_tests if n_tests else float("nan")


def binomial_p(n_passed: int, n_tests: int) -> float:
    """One-sided binomial test of ``n_passed`` of ``n_tests`` against chance (0.5);
    NaN without tests."""
    if not n_tests:
        return float("nan")
    from scipy.stats import binomtest  # scipy.stats costs ~0.5 s: only the 1 vs 2 job loads it

    return float(binomtest(n_passed, n_tests, 0.5, alternative="greater").pvalue)


def misclassified_tests(predicted: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices ``(m, p)`` of images misclassified into another concept of the set.

    ``predicted[c]`` is the concept index predicted for the image of concept ``c``,
    or -1 when the prediction is not in the concept set (such images are skipped,
    as in the paper: the predicted class must have a word vector).
    """
    pred = np.asarray(predicted, dtype=np.int64)
    m = np.flatnonzero((pred >= 0) & (pred != np.arange(pred.size)))
    return m, pred[m]


def _masked_corr(
    x: NDArray[np.float64], y: NDArray[np.float64], mask: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Pearson correlation of x and y along the last axis, over entries where mask is true."""
    mk = mask.astype(np.float64)
    n = mk.sum(axis=-1)
    xm, ym = x * mk, y * mk
    sx, sy = xm.sum(axis=-1), ym.sum(axis=-1)
    sxy = (xm * y).sum(axis=-1)
    sxx = (xm * x).sum(axis=-1)
    syy = (ym * y).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))


@dataclass(frozen=True)
class OneVsTwo:
    """Results of the 1 vs 2 test in one group and one layer."""

    image: NDArray[np.int64]  # concept index of each misclassified image (skipped too)
    predicted: NDArray[np.int64]  # concept index it was classified as
    n_reference: NDArray[np.int64]  # size of its reference set R
    r_true: NDArray[np.float64]  # corr(i_m, w_true); NaN when skipped
    r_predicted: NDArray[np.float64]  # corr(i_m, w_pred); NaN when skipped
    passed: NDArray[np.bool_]  # False when skipped
    binomial_p: float  # NaN without counted tests
    null: NDArray[np.float64]  # permutation null of the accuracy over the counted tests
    permutation_p: float  # NaN without counted tests or permutations
    reason: tuple[str, ...] = ()  # per test: why it was skipped, "" when counted

    @property
    def counted(self) -> NDArray[np.bool_]:
        """Which tests count (not skipped)."""
        return np.array([not r for r in self.reason], dtype=bool) if self.reason \
            else np.ones(self.image.size, dtype=bool)

    @property
    def n_tests(self) -> int:
        """Counted tests (skipped ones excluded)."""
        return int(self.counted.sum())

    @property
    def n_skipped(self) -> int:
        return int(self.image.size) - self.n_tests

    @property
    def n_passed(self) -> int:
        return int(self.passed.sum())

    @property
    def accuracy(self) -> float:
        """Fraction of the counted tests passed; NaN without counted tests."""
        return _accuracy(self.n_passed, self.n_tests)


def _statistics(
    w: NDArray[np.float64],
    i_mat: NDArray[np.float64],
    m: NDArray[np.int64],
    p: NDArray[np.int64],
    mask: NDArray[np.bool_],
    perm: NDArray[np.int64] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(r_true, r_pred) for tests (m, p); word space relabelled by ``perm`` (B x k) if given."""
    i_rows = i_mat[m]  # (T, k)
    if perm is None:
        return _masked_corr(i_rows, w[m], mask), _masked_corr(i_rows, w[p], mask)
    cols = perm[:, None, :]  # (B, 1, k)
    w_true = w[perm[:, m][:, :, None], cols]  # (B, T, k)
    w_pred = w[perm[:, p][:, :, None], cols]
    return _masked_corr(i_rows[None], w_true, mask[None]), _masked_corr(
        i_rows[None], w_pred, mask[None]
    )


def one_vs_two(
    word_similarity: ArrayLike,
    image_similarity: ArrayLike,
    predicted: ArrayLike,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
) -> OneVsTwo:
    """Run the 1 vs 2 test for every misclassified image of one group and layer.

    Parameters
    ----------
    word_similarity:
        ``W``, k x k over the concept set.
    image_similarity:
        k x k correlation between the group's images, row ``c`` = the image of concept ``c``.
    predicted:
        Length-k concept index predicted for each image (-1: outside the concept set).

    ``W`` must be finite (ValueError otherwise). Tests are skipped, with a reason, when
    their reference set has fewer than :data:`MIN_REFERENCE` concepts, when an observed
    correlation is undefined, or (all of them) when ``I`` has NaN or infinite entries.
    ``n_permutations = 0`` gives ``permutation_p`` NaN (not tested).
    """
    w = np.asarray(word_similarity, dtype=np.float64)
    i_mat = np.asarray(image_similarity, dtype=np.float64)
    k = w.shape[0]
    if w.shape != (k, k) or i_mat.shape != (k, k):
        raise ValueError(f"W and I must both be k x k; got {w.shape} and {i_mat.shape}")
    if not np.isfinite(w).all():
        raise ValueError("word similarity W has non-finite entries (a constant embedding row?)")
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0, got {n_permutations}")
    pred = np.asarray(predicted, dtype=np.int64)
    if pred.shape != (k,):
        raise ValueError(f"predicted must have one entry per concept ({k}), got {pred.shape}")
    if ((pred < -1) | (pred >= k)).any():
        raise ValueError(f"predicted concept indices must be in -1..{k - 1}, got "
                         f"{pred[(pred < -1) | (pred >= k)][:5].tolist()}")
    correct = pred == np.arange(k)
    m_all, p_all = misclassified_tests(pred)
    mask_all = np.repeat(correct[None, :], m_all.size, axis=0)
    mask_all[np.arange(m_all.size), p_all] = False  # t is not correct by construction; drop p
    n_ref = mask_all.sum(axis=1)
    reason = [""] * m_all.size
    image_finite = bool(np.isfinite(i_mat).all())
    for t in range(m_all.size):
        if not image_finite:
            reason[t] = "image correlations undefined (constant activations)"
        elif n_ref[t] < MIN_REFERENCE:
            reason[t] = f"reference set of {n_ref[t]} concepts < {MIN_REFERENCE}"
    r_true = np.full(m_all.size, np.nan)
    r_pred = np.full(m_all.size, np.nan)
    ok = np.array([not r for r in reason], dtype=bool)
    if ok.any():
        r_true[ok], r_pred[ok] = _statistics(w, i_mat, m_all[ok], p_all[ok], mask_all[ok], None)
        for t in np.flatnonzero(ok & (np.isnan(r_true) | np.isnan(r_pred))):
            reason[t] = "correlation undefined (constant over the reference set)"
            r_true[t] = r_pred[t] = np.nan
        ok = np.array([not r for r in reason], dtype=bool)
    passed = np.zeros(m_all.size, dtype=bool)
    passed[ok] = r_true[ok] - r_pred[ok] > TIE_TOLERANCE
    # The tests that count, and their permutation null.
    m, p, mask = m_all[ok], p_all[ok], mask_all[ok]
    n_pass = int(passed.sum())
    binom_p = binomial_p(n_pass, m.size)
    null = np.empty(n_permutations if m.size else 0, dtype=np.float64)
    if m.size:
        for lo, hi in batch_ranges(0, n_permutations, batch_size):
            perms = permutations(seed, lo, hi, k)
            # Tests in chunks: the word rows of a batch are (B, tests, k) float64.
            step = max(1, NULL_CHUNK_BYTES // (8 * k * (hi - lo)))
            passes = np.zeros(hi - lo, dtype=np.int64)
            for t0 in range(0, m.size, step):
                sl = slice(t0, t0 + step)
                rt, rp = _statistics(w, i_mat, m[sl], p[sl], mask[sl], perms)
                passes += (rt - rp > TIE_TOLERANCE).sum(axis=1)
            null[lo:hi] = passes / m.size
    perm_p = (p_value(_accuracy(n_pass, m.size), null) if m.size and n_permutations
              else float("nan"))
    return OneVsTwo(
        image=m_all, predicted=p_all, n_reference=n_ref, r_true=r_true, r_predicted=r_pred,
        passed=passed, binomial_p=binom_p, null=null, permutation_p=perm_p,
        reason=tuple(reason),
    )


@dataclass(frozen=True)
class Pooled:
    """The 1 vs 2 test pooled over groups (one layer): the ``all`` rows."""

    n_passed: int
    n_tests: int  # counted tests
    n_skipped: int
    binomial_p: float  # NaN without counted tests
    permutation_p: float  # NaN without counted tests or permutations

    @property
    def accuracy(self) -> float:
        """Fraction of the counted tests passed; NaN without counted tests."""
        return _accuracy(self.n_passed, self.n_tests)


def pool(results: Sequence[OneVsTwo], n_permutations: int) -> Pooled:
    """Pool the tests of several groups' results for one layer (same seed and
    ``n_permutations``): permutation ``i`` of the pooled null counts the passes of every
    group under its permutation ``i``."""
    n_passed = sum(r.n_passed for r in results)
    n_tests = sum(r.n_tests for r in results)
    null = np.zeros(n_permutations, dtype=np.int64)  # passes per permutation
    for r in results:
        if r.n_tests and n_permutations:
            null += np.rint(r.null * r.n_tests).astype(np.int64)
    perm_p = p_value(n_passed, null) if n_tests and n_permutations else float("nan")
    return Pooled(n_passed, n_tests, sum(r.n_skipped for r in results),
                  binomial_p(n_passed, n_tests), perm_p)
