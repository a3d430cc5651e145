"""Pearson statistics of a row store held in device memory, computed on the device."""

from __future__ import annotations

import torch

from emergence.stats.similarity import SHIFT_COLUMNS, PearsonAccumulator

__all__ = ["device_moments"]


def device_moments(store: torch.Tensor, chunk_features: int) -> PearsonAccumulator:
    """:class:`PearsonAccumulator` statistics of a device store, computed on its device.

    The same float64 statistics as :meth:`PearsonAccumulator.update` (shift by the
    mean of the first ``SHIFT_COLUMNS`` columns, then sums and Gram matrix chunk by
    chunk), in torch (a different summation order: equal to float64 rounding).
    """
    n, n_features = store.shape
    shift = store[:, :SHIFT_COLUMNS].double().mean(dim=1)
    sums = torch.zeros(n, dtype=torch.float64, device=store.device)
    gram = torch.zeros((n, n), dtype=torch.float64, device=store.device)
    for col in range(0, n_features, chunk_features):
        block = store[:, col : col + chunk_features].double() - shift[:, None]
        sums += block.sum(dim=1)
        gram += block @ block.T
    return PearsonAccumulator.from_moments(
        sums.cpu().numpy(), gram.cpu().numpy(), shift.cpu().numpy(), n_features)
