"""Running mean and variance, merged batch by batch: the statistics behind observation and return
normalisation.

Data flow: `obs_normalizer` (trainers, job-wide) and `return_normalizer` (each player) feed batches of
(count, mean, variance) into `merge`, the parallel algorithm of Chan, Golub and LeVeque (1979): merging
two sets' moments gives exactly the moments of their union, so the order and the split of the data
(rounds, ranks) do not change the result. Starting from count 1e-4, mean 0, variance 1, as
Stable-Baselines3's RunningMeanStd does, so the first batch practically sets the statistics.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

INITIAL_COUNT = 1e-4

A = TypeVar("A")  # numpy arrays or torch tensors: the formula is the same


def merge(mean: A, var: A, count: float, batch_mean: A, batch_var: A, batch_count: float) -> tuple[A, A, float]:
    """(mean, variance, count) of the union of two sets from their own (population variances)."""
    total = count + batch_count
    delta = batch_mean - mean  # type: ignore[operator]
    new_mean = mean + delta * (batch_count / total)  # type: ignore[operator]
    m2 = var * count + batch_var * batch_count + delta * delta * (count * batch_count / total)  # type: ignore[operator]
    return new_mean, m2 / total, total  # type: ignore[return-value]


class RunningMeanStd:
    """Mean and variance of every value seen so far, per component of a `shape`-shaped value (float64)."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = INITIAL_COUNT

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch [B, *shape]; an empty batch changes nothing."""
        batch = np.asarray(batch, np.float64)
        if len(batch) == 0:
            return
        self.mean, self.var, self.count = merge(self.mean, self.var, self.count, batch.mean(0), batch.var(0),
                                                float(len(batch)))
