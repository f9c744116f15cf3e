"""schedule: the learning rate over training, constant or rl-baselines3-zoo's lin_X."""

from __future__ import annotations

import pytest

from a2c.learning import schedule


def test_constant() -> None:
    assert schedule.learning_rate(7e-4, "constant", 999_999, 1_000_000) == 7e-4


@pytest.mark.parametrize(("steps", "expected"), [(0, 1e-3), (250_000, 7.5e-4), (500_000, 5e-4), (1_000_000, 0.0),
                                                 (1_200_000, 0.0)])
def test_linear_decays_to_zero_at_the_step_budget(steps: int, expected: float) -> None:
    assert schedule.learning_rate(1e-3, "linear", steps, 1_000_000) == pytest.approx(expected, abs=1e-15)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule"):
        schedule.learning_rate(1e-3, "cosine", 0, 10)
