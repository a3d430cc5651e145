"""The certified float32 kernel of the 2 vs 2 test (emergence.stats._two_vs_two_cpu).

Its claim: every pair's decision equals the float64 one, because the float32 error of
each pair's statistic is provably within the bound it computes, and pairs inside the
bound are recomputed in float64. Checked here on every pair of matrices built to be
hard: near-constant rows (correlations near 1), ties, non-symmetric inputs, k = 4 to 200.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import emergence
from emergence.stats import _two_vs_two_cpu
from emergence.stats.two_vs_two import TIE_TOLERANCE
from tests import literal


def _inputs(w_mat: np.ndarray, i_mat: np.ndarray) -> tuple:
    k = w_mat.shape[0]
    kp = _two_vs_two_cpu.padded_size(k)
    word = _two_vs_two_cpu.word_statistics(np.ascontiguousarray(w_mat), kp)
    im = np.zeros((k, kp))
    im[:, :k] = i_mat
    im_t = np.zeros((k, kp))
    im_t[:, :k] = i_mat.T
    w32_t = torch.from_numpy(word[1].astype(np.float32))
    cross = (torch.from_numpy(i_mat.astype(np.float32)) @ w32_t).numpy()
    return word, im, im_t, cross


def _statistic_float64(w_mat: np.ndarray, i_mat: np.ndarray) -> np.ndarray:
    """D = (d - tol) * sd(i_a) * sd(i_c) per pair, from the reduced rows (a, c > a)."""
    k = w_mat.shape[0]
    n = k - 2
    a, c = np.triu_indices(k, k=1)
    keep = np.ones((len(a), k), dtype=bool)
    keep[np.arange(len(a)), a] = False
    keep[np.arange(len(a)), c] = False

    def reduced(m: np.ndarray, rows: np.ndarray) -> np.ndarray:
        r = m[rows][keep].reshape(len(a), n)
        return r - r.mean(axis=1, keepdims=True)

    w1, w2, i1, i2 = reduced(w_mat, a), reduced(w_mat, c), reduced(i_mat, a), reduced(i_mat, c)

    def corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))

    d = corr(w1, i1) + corr(w2, i2) - corr(w1, i2) - corr(w2, i1)
    sd_i1 = n * np.sqrt((i1 * i1).sum(1) / n)
    sd_i2 = n * np.sqrt((i2 * i2).sum(1) / n)
    out = np.full((k, k), np.nan)
    out[a, c] = (d - TIE_TOLERANCE) * sd_i1 * sd_i2
    return out


def _hard_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    cases = []
    for k, signal in ((4, 1.0), (9, 0.0), (40, 0.5), (166, 0.5), (166, 0.05), (200, 2.0)):
        latent = rng.standard_normal((k, 8))
        x = latent @ rng.standard_normal((8, 300)) * signal + rng.standard_normal((k, 300))
        y = latent @ rng.standard_normal((8, 200)) * signal + rng.standard_normal((k, 200))
        cases.append((f"planted k={k} s={signal}", emergence.similarity_matrix(x),
                      emergence.similarity_matrix(y)))
    # Positive activations: every correlation near 1, reduced rows nearly constant.
    base = rng.random((1, 2000)) * 10
    x = base + rng.random((120, 2000)) * 0.3
    y = base[:, :500] * 3 + rng.random((120, 500)) * 0.2
    cases.append(("correlations near 1", emergence.similarity_matrix(x),
                  emergence.similarity_matrix(y)))
    # Not symmetric, entries far from [-1, 1].
    cases.append(("general matrices", rng.standard_normal((50, 50)) * 30 + 5,
                  rng.standard_normal((50, 50)) * 0.01 - 2))
    # Exact ties: I equals W with two concepts duplicated.
    w_mat = cases[3][1]
    i_mat = w_mat.copy()
    i_mat[1, :] = i_mat[0, :]
    i_mat[:, 1] = i_mat[:, 0]
    cases.append(("duplicated concepts", w_mat, i_mat))
    return cases


@pytest.mark.parametrize(("name", "w_mat", "i_mat"), _hard_cases(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_float32_error_is_within_the_certified_bound_on_every_pair(
        name: str, w_mat: np.ndarray, i_mat: np.ndarray) -> None:
    k = w_mat.shape[0]
    word, im, im_t, cross = _inputs(w_mat, i_mat)
    e = _two_vs_two_cpu.cross_product_error(k)
    count, record = _two_vs_two_cpu.pair_statistics(word, im, im_t, cross, TIE_TOLERANCE, e)
    exact = _statistic_float64(w_mat, i_mat)
    a, c = np.triu_indices(k, k=1)
    fast, bound, ref = record[0, a, c], record[1, a, c], exact[a, c]
    finite = np.isfinite(ref)
    assert np.all(np.abs(fast[finite] - ref[finite]) <= bound[finite]), name
    # Forcing a float64 recheck of every pair changes nothing: the counts are float64's.
    assert _two_vs_two_cpu.pair_statistics(word, im, im_t, cross, TIE_TOLERANCE, np.inf)[0] == count
    # And they are the literal implementation's.
    assert count / len(a) == literal.two_vs_two(w_mat, i_mat)


def test_bound_is_tight_enough_to_matter() -> None:
    """At the paper's k the bound leaves well under 1 % of pairs to the float64 recheck."""
    (_, w_mat, i_mat) = _hard_cases()[3]
    word, im, im_t, cross = _inputs(w_mat, i_mat)
    _, record = _two_vs_two_cpu.pair_statistics(word, im, im_t, cross, TIE_TOLERANCE,
                                         _two_vs_two_cpu.cross_product_error(166))
    a, c = np.triu_indices(166, k=1)
    unsure = np.abs(record[0, a, c]) <= record[1, a, c]
    assert unsure.mean() < 0.01
    # A pure float32 decision (no bound) would differ from float64 on some hard input:
    # the bound is not decoration. Near-constant rows make float32 lose every digit.
    (_, w_mat, i_mat) = _hard_cases()[6]
    word, im, im_t, cross = _inputs(w_mat, i_mat)
    _, record = _two_vs_two_cpu.pair_statistics(word, im, im_t, cross, TIE_TOLERANCE, 0.0)
    exact = _statistic_float64(w_mat, i_mat)
    a, c = np.triu_indices(w_mat.shape[0], k=1)
    assert np.any(np.sign(record[0, a, c]) != np.sign(exact[a, c]))


def test_error_constant_and_padding() -> None:
    assert _two_vs_two_cpu.padded_size(166) == 168 and _two_vs_two_cpu.padded_size(8) == 8
    e = _two_vs_two_cpu.cross_product_error(166)
    assert 166 * 2.0**-24 < e < 169 * 2.0**-24 * 1.001
    with pytest.raises(ValueError, match="too large"):
        _two_vs_two_cpu.cross_product_error(2**23)


def test_cpu_kernel_matches_float64_torch_engine_on_non_symmetric_batches() -> None:
    rng = np.random.default_rng(5)
    w_mat = rng.standard_normal((30, 30))
    batch = rng.standard_normal((4, 30, 30))
    engine = emergence.TwoVsTwo(w_mat)
    reference = engine.outcomes(batch).sum(dim=-1).numpy() / engine.n_pairs
    assert np.array_equal(engine.accuracy(batch), reference)
    perms = np.stack([rng.permutation(30) for _ in range(5)])
    permuted = np.stack([batch[0][p][:, p] for p in perms])
    assert np.array_equal(engine.permuted_accuracy(batch[0], perms),
                          engine.outcomes(permuted).sum(dim=-1).numpy() / engine.n_pairs)


def test_matrices_outside_float32_safe_range_go_to_float64() -> None:
    """Tiny or huge entries would underflow/overflow in float32, where the bound fails:
    such matrices are decided by the float64 engine, with the same results."""
    rng = np.random.default_rng(9)
    w_mat = rng.standard_normal((20, 20))
    i_mat = rng.standard_normal((20, 20))
    assert _two_vs_two_cpu.float32_safe(w_mat) and _two_vs_two_cpu.float32_safe(np.zeros((3, 3)))
    for w_scaled, i_scaled in ((w_mat * 1e-25, i_mat), (w_mat, i_mat * 1e20),
                               (w_mat, np.where(np.eye(20) > 0, 1e-30, i_mat))):
        assert not (_two_vs_two_cpu.float32_safe(w_scaled)
                    and _two_vs_two_cpu.float32_safe(i_scaled))
        engine = emergence.TwoVsTwo(w_scaled)
        reference = float(engine.outcomes(i_scaled).sum()) / engine.n_pairs
        assert float(engine.accuracy(i_scaled)) == reference == literal.two_vs_two(w_scaled,
                                                                                    i_scaled)
        perms = np.stack([rng.permutation(20) for _ in range(3)])
        expected = [literal.two_vs_two(w_scaled, literal.permuted(i_scaled, p)) for p in perms]
        assert engine.permuted_accuracy(i_scaled, perms).tolist() == expected


def test_single_matrix_staging_symmetric_or_not() -> None:
    """One matrix is staged in one pass into reused buffers; the transpose is only
    written when the matrix is not bitwise symmetric (a -0.0 mirrored by 0.0 counts as
    asymmetric). Alternating symmetric and asymmetric inputs on one engine (stale
    buffers) gives the float64 engine's and the literal's accuracies every time."""
    rng = np.random.default_rng(11)
    k = 37  # not a multiple of the 16 x 16 tiles or of the 8 lanes
    w_mat = emergence.similarity_matrix(rng.standard_normal((k, 12)))
    sym = emergence.similarity_matrix(rng.standard_normal((k, 9)))
    asym = sym.copy()
    asym[30, 2] = np.nextafter(asym[30, 2], 2.0)  # one ulp, in the last row tile
    signed = sym.copy()
    signed[4, 9] = signed[9, 4] = 0.0
    signed[9, 4] = -0.0
    skew = rng.standard_normal((k, k))
    out, out_t = np.zeros((k, 40)), np.zeros((k, 40))
    out32 = np.zeros((k, k), dtype=np.float32)
    for m, symmetric in ((sym, True), (asym, False), (signed, False), (skew, False)):
        safe, is_sym = _two_vs_two_cpu.stage_one(m, m.view(np.int64), out, out_t, out32)
        assert safe and is_sym == symmetric
        assert np.array_equal(out[:, :k], m) and not out[:, k:].any()
        assert np.array_equal(out32, m.astype(np.float32))
        if not symmetric:
            assert np.array_equal(out_t[:, :k], m.T)
    engine = emergence.TwoVsTwo(w_mat)
    for m in (sym, skew, sym, asym, signed, skew.T.copy(), sym):
        expected = float(engine.outcomes(m).sum()) / engine.n_pairs
        got = engine.accuracy(m)
        assert got.shape == () and float(got) == expected == literal.two_vs_two(w_mat, m)


def test_cpu_engine_counts_or_declines() -> None:
    """The entry point: counts equal to the float64 definition's for one matrix, a batch
    and permutations; None (decide in float64) where the bound does not apply."""
    rng = np.random.default_rng(13)
    k = 21
    w_mat = emergence.similarity_matrix(rng.standard_normal((k, 15)))
    batch = np.stack([emergence.similarity_matrix(rng.standard_normal((k, 9)))
                      for _ in range(3)])
    definition = emergence.TwoVsTwo(w_mat)
    cpu = _two_vs_two_cpu.CpuEngine(w_mat, TIE_TOLERANCE)
    expected = definition.outcomes(batch).sum(dim=-1).numpy()
    assert cpu.count_one(batch[0]).tolist() == [expected[0]]
    assert cpu.count_batch(batch).tolist() == expected.tolist()
    perms = np.stack([rng.permutation(k) for _ in range(4)])
    permuted = np.stack([batch[1][p][:, p] for p in perms])
    assert (cpu.count_permuted(batch[1], perms).tolist()
            == definition.outcomes(permuted).sum(dim=-1).numpy().tolist())
    bad = batch[0].copy()
    bad[2, 3] = np.nan
    huge = batch[0] * 2.0**55
    for m in (bad, huge):
        assert cpu.count_one(m) is None and cpu.count_batch(m[None]) is None
        assert cpu.count_permuted(m, perms) is None
    assert _two_vs_two_cpu.CpuEngine(w_mat * 2.0**55, TIE_TOLERANCE).count_one(batch[0]) is None
