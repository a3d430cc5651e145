"""The rows of the result tables, one module per table (its columns and rows; written with
:func:`emergence.io.write_tsv`):

* :mod:`.score_table`: ``scores.tsv`` (every measure per layer and group), and the
  permutation and jackknife shards beside it;
* :mod:`.significance_table`: ``significance.tsv`` (permutation p-values, the null's band,
  the jackknife intervals), its permutation columns streamed by :mod:`.null_summary`;
* :mod:`.comparison_table`: ``comparisons.tsv`` (paired comparisons on the same jackknife
  samples);
* :mod:`.one_vs_two_table`: ``one_vs_two/<wm>.tsv`` and ``<wm>_tests.tsv``.

The statistics themselves are :mod:`emergence.stats`; nothing is re-exported here.
"""
