"""The rows of ``significance.tsv``: every measure per layer and image group (and the mean
over groups) with its permutation p-values, the null's band and its interval.

* ``p_value`` per layer (+1-corrected) and ``p_value_fwe`` (max over layers, family-wise)
  from the permutation null (:mod:`emergence.stats.permutation`): exact, unchanged; the
  null's shards are read block by block (:func:`emergence.tables.null_summary.null_summary`).
* ``null_low``..``null_high``: the null's central ``confidence`` band (chance at this k).
* ``ci_low``..``ci_high``: the interval of the measure's estimand (its mean over random
  sets of k concepts, and with ``interval_factors = concepts+groups`` over image groups
  too) from the jackknife over concepts (:mod:`emergence.uncertainty`), centred on the
  value; ``ci_df`` its degrees of freedom. A measure without a calibrated interval
  (:data:`emergence.uncertainty.WITHHELD`) has NaN there and ``interval_reason`` says why.

A layer that cannot be scored (NaN: its score row's ``reason``) has NaN p-values, bands
and intervals, is not significant and carries the reason; the ``mean`` row of a layer is
NaN when any group is (its reason names the groups). The family-wise maximum runs over the
layers that can be scored. Without permutations (or jackknife samples) those columns are
NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from emergence.formats.nulls import Samples, samples_of
from emergence.stats.comparisons import confidence_interval
from emergence.stats.intervals import RANGES, interval
from emergence.stats.measures import MEASURES, column_prefix
from emergence.stats.permutation import significant
from emergence.tables.null_summary import null_summary
from emergence.uncertainty import WITHHELD, resolve_factors
from emergence.uncertainty import Samples as Jackknife

__all__ = ["SIGNIFICANCE_COLUMNS", "percentile_band", "significance_columns",
           "significance_rows"]

_META = ["network", "model", "word_model", "group", "layer", "layer_index", "module"]
_PER_MEASURE = ["p_value", "p_value_fwe", "null_mean", "null_sd", "null_low", "null_high",
                "ci_low", "ci_high", "ci_df"]
FACTOR_LABEL = {"concepts": "concepts", "both": "concepts+groups"}


def significance_columns(measures: Sequence[str] = ("two_vs_two", "rsa")) -> list[str]:
    """The columns of ``significance.tsv``: per measure its value and ``<prefix>p_value``,
    ``p_value_fwe``, ``null_mean``, ``null_sd``, ``null_low``, ``null_high``, ``ci_low``,
    ``ci_high``, ``ci_df`` (prefix: :func:`~emergence.stats.measures.column_prefix`); then
    the counts, how the intervals were made, the 2 vs 2 decision and the reasons."""
    cols = [*_META, "k"]
    for m in (m for m in MEASURES if m in measures):
        cols += [m, *(column_prefix(m) + c for c in _PER_MEASURE)]
    return [*cols, "n_permutations", "n_jackknife", "confidence", "interval_factors",
            "interval_reason", "significant", "reason"]


SIGNIFICANCE_COLUMNS = significance_columns()
"""The columns with the default measures (2 vs 2 and RSA)."""


def percentile_band(samples: NDArray[np.float64], confidence: float
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per column of ``samples`` (n, L): the central ``confidence`` percentile interval of
    its finite values (:func:`emergence.stats.comparisons.confidence_interval`, numpy's
    linear quantiles); NaN for a column without finite values. The null's band of the
    table is the same interval, streamed (:func:`emergence.tables.null_summary.null_summary`)."""
    bands = [confidence_interval(samples[:, j], confidence) for j in range(samples.shape[1])]
    out = np.array(bands, dtype=np.float64).reshape(-1, 2)
    return out[:, 0], out[:, 1]


def significance_rows(score_table: Sequence[Mapping[str, str]],
                      nulls: Samples | Mapping[str, Mapping[str, NDArray[np.float64]]],
                      alpha: float, *, jackknife: Jackknife | None = None,
                      confidence: float = 0.95, factors: str = "auto") -> list[dict[str, Any]]:
    """Per-group and mean-over-groups rows (module doc). ``nulls``: the permutation shards
    (:class:`~emergence.formats.nulls.Shards`, read block by block: :mod:`emergence.
    summaries`) or arrays in memory ({group: {measure: (n, L)}}; the numbers are the same
    bit for bit); ``jackknife``: the samples of this network x word model; ``factors``:
    ``intervals.factors`` (auto, concepts, both) for the ``mean`` rows."""
    groups = list(dict.fromkeys(r["group"] for r in score_table))
    layers = list(dict.fromkeys(r["layer"] for r in score_table))
    first = score_table[0]
    measures = [m for m in MEASURES if m in first]
    meta = {r["layer"]: r for r in score_table if r["group"] == groups[0]}
    cell = {(r["group"], r["layer"]): r for r in score_table}
    why = {g: [cell[g, lay].get("reason", "") or "" for lay in layers] for g in groups}
    why["mean"] = ["; ".join(f"group {g}: {why[g][j]}" for g in groups if why[g][j])
                   for j in range(len(layers))]
    null_src = samples_of(nulls)
    n_perm = null_src.n if null_src is not None else 0
    n_jack = (next(iter(jackknife.groups[groups[0]].values())).shape[0]
              if jackknife is not None and groups[0] in jackknife.groups else 0)
    mean_factors = resolve_factors(factors, len(groups))
    nan = np.full(len(layers), np.nan)
    columns: dict[str, dict[str, NDArray[np.float64]]] = {g: {} for g in [*groups, "mean"]}
    no_interval: dict[str, list[str]] = {g: [] for g in [*groups, "mean"]}
    observed: dict[str, dict[str, NDArray[np.float64]]] = {
        g: {m: np.array([float(cell[g, lay][m]) for lay in layers]) for m in measures}
        for g in groups}
    observed["mean"] = {m: np.mean([observed[g][m] for g in groups], axis=0)
                        for m in measures}
    null = (null_summary(null_src, observed, groups, measures, confidence)
            if n_perm and null_src is not None else None)
    for m in measures:
        prefix = column_prefix(m)
        obs = {g: observed[g][m] for g in [*groups, "mean"]}
        for g in [*groups, "mean"]:
            col = columns[g]
            col[m] = obs[g]
            if null is not None:
                for c, values in null.items():
                    col[prefix + c] = values[g][m]
            members = groups if g == "mean" else [g]
            if jackknife is None or not n_jack:
                continue
            if m in WITHHELD:
                no_interval[g].append(WITHHELD[m])
                continue
            if not jackknife.has(m, members):
                no_interval[g].append(f"{m}: no jackknife samples")
                continue
            var = jackknife.variance(m, members, mean_factors if g == "mean" else "concepts")
            lo, hi = interval(obs[g], var, confidence, RANGES.get(m))
            undefined = np.isnan(obs[g])
            col[prefix + "ci_low"] = np.where(undefined, np.nan, lo)
            col[prefix + "ci_high"] = np.where(undefined, np.nan, hi)
            col[prefix + "ci_df"] = np.where(undefined, np.nan, var.df)
    rows = []
    for g in [*groups, "mean"]:
        col = columns[g]
        label = FACTOR_LABEL[mean_factors if g == "mean" else "concepts"] if n_jack else ""
        for j, lay in enumerate(layers):
            row: dict[str, Any] = {
                "network": first["network"], "model": first["model"],
                "word_model": first["word_model"], "group": g, "layer": lay, "layer_index": j,
                "module": meta[lay]["module"], "k": first["k"]}
            for m in measures:
                row[m] = float(col[m][j])
                for c in _PER_MEASURE:
                    row[column_prefix(m) + c] = float(col.get(column_prefix(m) + c, nan)[j])
            row.update({"n_permutations": n_perm, "n_jackknife": n_jack,
                        "confidence": confidence, "interval_factors": label,
                        "significant": significant(row["p_value"], alpha),
                        "reason": why[g][j], "interval_reason": "; ".join(no_interval[g])})
            rows.append(row)
    return rows
