"""moments: Chan's parallel merge gives the statistics of the union, however the data is split."""

from __future__ import annotations

import numpy as np
import pytest

from a2c import moments


def test_merge_of_two_sets_equals_the_moments_of_their_union() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (7, 3)), rng.normal(-1.0, 0.5, (11, 3))
    mean, var, count = moments.merge(a.mean(0), a.var(0), len(a), b.mean(0), b.var(0), len(b))
    union = np.concatenate([a, b])
    np.testing.assert_allclose(mean, union.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, union.var(0), rtol=1e-12)
    assert count == 18


@pytest.mark.parametrize("splits", [[50], [1, 49], [10, 10, 30], [3] * 16 + [2]])
def test_running_statistics_do_not_depend_on_how_the_data_is_split(splits: list[int]) -> None:
    data = np.random.default_rng(1).normal(5.0, 3.0, (50, 2))
    rms = moments.RunningMeanStd((2,))
    start = 0
    for n in splits:
        rms.update(data[start:start + n])
        start += n
    rms.update(np.zeros((0, 2)))  # an empty batch changes nothing
    # the initial count of 1e-4 (mean 0, variance 1) weighs 2e-6 against 50 samples
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-5)
    assert rms.count == pytest.approx(50 + moments.INITIAL_COUNT)
