"""The column block of the streamed Pearson statistics, shared by the accumulator
(:mod:`emergence.stats.similarity`, light), its numba kernel (:mod:`emergence.stats._gram`)
and the chunked readers that align to it: a leaf, so that neither of the first two imports
the other to learn it."""

__all__ = ["CHUNK_COLUMNS"]

CHUNK_COLUMNS = 1024
"""Column chunks whose widths are multiples of this give bit-identical statistics however the
matrix is cut: the kernel's cache block (:mod:`emergence.stats._gram`), which chunked readers
align to (public as :data:`emergence.stats.similarity.CHUNK_COLUMNS`)."""
