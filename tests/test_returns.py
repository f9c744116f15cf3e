"""GAE and n-step returns on hand-computed three-step episodes (arithmetic written out, as in SB3's test_gae)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from a2c.learning import returns


def col(*xs: float) -> torch.Tensor:
    """A [T, 1] float64 column: one environment."""
    return torch.tensor(xs, dtype=torch.float64).unsqueeze(-1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(-1)


REWARDS = col(1.0, 2.0, 3.0)
VALUES = col(0.5, 1.0, 1.5)


def test_termination_does_not_bootstrap_lam1() -> None:
    # The episode ends in a terminal state after step 2; V(next) = 7.0 there must be ignored.
    next_values = col(1.0, 1.5, 7.0)
    adv, ret = returns.gae(REWARDS, VALUES, next_values, flags(0, 0, 1), flags(0, 0, 0), gamma=0.9, lam=1.0)
    # G2 = 3
    # G1 = 2 + 0.9 * 3   = 4.7
    # G0 = 1 + 0.9 * 4.7 = 5.23
    assert torch.allclose(ret, col(5.23, 4.7, 3.0))
    assert torch.allclose(adv, col(5.23 - 0.5, 4.7 - 1.0, 3.0 - 1.5))


def test_termination_gae_lambda_half() -> None:
    next_values = col(1.0, 1.5, 7.0)
    adv, ret = returns.gae(REWARDS, VALUES, next_values, flags(0, 0, 1), flags(0, 0, 0), gamma=0.9, lam=0.5)
    # deltas: d0 = 1 + 0.9 * 1.0 - 0.5 = 1.4
    #         d1 = 2 + 0.9 * 1.5 - 1.0 = 2.35
    #         d2 = 3 + 0 (terminal) - 1.5 = 1.5
    # gamma * lam = 0.45
    # A2 = 1.5;  A1 = 2.35 + 0.45 * 1.5 = 3.025;  A0 = 1.4 + 0.45 * 3.025 = 2.76125
    assert torch.allclose(adv, col(2.76125, 3.025, 1.5))
    assert torch.allclose(ret, col(2.76125 + 0.5, 3.025 + 1.0, 1.5 + 1.5))


def test_truncation_bootstraps_from_final_obs_but_does_not_flow_across() -> None:
    # Step 1 hits the time limit: next_values[1] is V(final_obs) = 4.0 (NOT V(obs[2]) = 1.5, the next episode).
    next_values = col(1.0, 4.0, 2.0)
    adv, ret = returns.gae(REWARDS, VALUES, next_values, flags(0, 0, 0), flags(0, 1, 0), gamma=0.9, lam=1.0)
    # G2 = 3 + 0.9 * 2.0 = 4.8           (new episode, bootstrapped from V(obs[3]) = 2.0)
    # G1 = 2 + 0.9 * 4.0 = 5.6           (bootstrapped from the final obs; G2 does not flow back)
    # G0 = 1 + 0.9 * 5.6 = 6.04
    assert torch.allclose(ret, col(6.04, 5.6, 4.8))
    assert torch.allclose(adv, col(6.04 - 0.5, 5.6 - 1.0, 4.8 - 1.5))


def test_truncation_with_gae_lambda() -> None:
    next_values = col(1.0, 4.0, 2.0)
    adv, _ = returns.gae(REWARDS, VALUES, next_values, flags(0, 0, 0), flags(0, 1, 0), gamma=0.9, lam=0.5)
    # d0 = 1 + 0.9 * 1.0 - 0.5 = 1.4;  d1 = 2 + 0.9 * 4.0 - 1.0 = 4.6;  d2 = 3 + 0.9 * 2.0 - 1.5 = 3.3
    # A2 = 3.3;  A1 = 4.6 (the boundary cuts the flow);  A0 = 1.4 + 0.45 * 4.6 = 3.47
    assert torch.allclose(adv, col(3.47, 4.6, 3.3))


def test_termination_in_the_middle() -> None:
    next_values = col(1.0, 4.0, 2.0)
    adv, ret = returns.gae(REWARDS, VALUES, next_values, flags(0, 1, 0), flags(0, 0, 0), gamma=0.9, lam=1.0)
    # G2 = 3 + 0.9 * 2.0 = 4.8;  G1 = 2 (terminal: no bootstrap, no flow);  G0 = 1 + 0.9 * 2 = 2.8
    assert torch.allclose(ret, col(2.8, 2.0, 4.8))
    assert torch.allclose(adv, col(2.3, 1.0, 3.3))


def test_no_episode_end_bootstraps_the_last_step() -> None:
    next_values = col(1.0, 1.5, 10.0)
    _, ret = returns.gae(REWARDS, VALUES, next_values, flags(0, 0, 0), flags(0, 0, 0), gamma=0.5, lam=1.0)
    # G2 = 3 + 0.5 * 10 = 8;  G1 = 2 + 0.5 * 8 = 6;  G0 = 1 + 0.5 * 6 = 4
    assert torch.allclose(ret, col(4.0, 6.0, 8.0))


def test_several_envs_in_parallel_match_each_env_alone() -> None:
    cases = [  # (next_values, terminated, truncated) per environment
        (col(1.0, 1.5, 7.0), flags(0, 0, 1), flags(0, 0, 0)),
        (col(1.0, 4.0, 2.0), flags(0, 0, 0), flags(0, 1, 0)),
        (col(1.0, 4.0, 2.0), flags(0, 1, 0), flags(0, 0, 0)),
        (col(1.0, 1.5, 10.0), flags(0, 0, 0), flags(0, 0, 0)),
    ]
    rewards = torch.cat([REWARDS, REWARDS * 2, REWARDS - 1, -REWARDS], dim=1)
    values = torch.cat([VALUES, VALUES + 1, VALUES * 3, VALUES], dim=1)
    nv = torch.cat([c[0] for c in cases], dim=1)
    term = torch.cat([c[1] for c in cases], dim=1)
    trunc = torch.cat([c[2] for c in cases], dim=1)
    adv, ret = returns.gae(rewards, values, nv, term, trunc, gamma=0.9, lam=0.7)
    assert adv.shape == ret.shape == (3, 4)
    for e, (n, te, tr) in enumerate(cases):
        a1, r1 = returns.gae(rewards[:, e:e + 1], values[:, e:e + 1], n, te, tr, gamma=0.9, lam=0.7)
        assert torch.allclose(adv[:, e:e + 1], a1)
        assert torch.allclose(ret[:, e:e + 1], r1)
    # and one column by hand (env 3, no end): G2 = -3 + 0.9 * 10 = 6 ... with lam 0.7 check A2 = d2 only
    assert torch.allclose(adv[2, 3], torch.tensor(-3.0 + 0.9 * 10.0 - 1.5, dtype=torch.float64))


@st.composite
def episodes(draw: st.DrawFn) -> tuple[torch.Tensor, ...]:
    """Random consistent [T, E] data: next_values[t] = V(obs[t+1]) unless step t ended an episode, where it is
    V(final obs) (an independent number), as `next_values_from` builds it."""
    t = draw(st.integers(1, 6))
    e = draw(st.integers(1, 3))
    floats = st.floats(-5, 5, allow_nan=False, width=32)

    def mat(rows: int) -> torch.Tensor:
        return torch.tensor(draw(st.lists(st.lists(floats, min_size=e, max_size=e), min_size=rows, max_size=rows)),
                            dtype=torch.float64)

    kinds = torch.tensor(draw(st.lists(st.lists(st.sampled_from([0, 1, 2]), min_size=e, max_size=e),
                                       min_size=t, max_size=t)))
    term, trunc = kinds == 1, kinds == 2
    values_all, final_values = mat(t + 1), mat(t)
    next_values = torch.where(term | trunc, final_values, values_all[1:])
    return mat(t), values_all[:-1], next_values, term, trunc


def _discounted_returns(rewards: torch.Tensor, next_values: torch.Tensor, term: torch.Tensor, trunc: torch.Tensor,
                        gamma: float) -> torch.Tensor:
    """Reference n-step returns, written as a forward sum: G_t = sum_k gamma^k r_{t+k} + gamma^n V(bootstrap)."""
    t_len, e_len = rewards.shape
    out = torch.zeros_like(rewards)
    for e in range(e_len):
        for t in range(t_len):
            g, discount = 0.0, 1.0
            for k in range(t, t_len):
                g += discount * float(rewards[k, e])
                discount *= gamma
                if term[k, e]:
                    break
                if trunc[k, e] or k == t_len - 1:
                    g += discount * float(next_values[k, e])
                    break
            out[t, e] = g
    return out


@settings(max_examples=60, deadline=None)
@given(episodes(), st.floats(0.0, 1.0))
def test_lam1_equals_nstep_discounted_returns(ep: tuple[torch.Tensor, ...], gamma: float) -> None:
    rewards, values, next_values, term, trunc = ep
    adv, ret = returns.gae(rewards, values, next_values, term, trunc, gamma=gamma, lam=1.0)
    expected = _discounted_returns(rewards, next_values, term, trunc, gamma)
    assert torch.allclose(ret, expected, atol=1e-6)
    assert torch.allclose(adv, expected - values, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(episodes(), st.floats(0.0, 1.0))
def test_lam0_equals_one_step_td_errors(ep: tuple[torch.Tensor, ...], gamma: float) -> None:
    rewards, values, next_values, term, trunc = ep
    adv, ret = returns.gae(rewards, values, next_values, term, trunc, gamma=gamma, lam=0.0)
    td = rewards + gamma * next_values * (~term).double() - values
    assert torch.allclose(adv, td, atol=1e-6)
    assert torch.allclose(ret, td + values, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(episodes(), st.floats(0.0, 1.0), st.floats(0.0, 3.0))
def test_vtrace_with_ratios_at_or_above_one_is_the_on_policy_nstep_return(ep: tuple[torch.Tensor, ...],
                                                                          gamma: float, log_rho: float) -> None:
    """Ratios are truncated at 1: a rollout no less likely under the current policy is taken as on-policy."""
    rewards, values, next_values, term, trunc = ep
    adv, ret = returns.vtrace(rewards, values, next_values, term, trunc, torch.full_like(rewards, log_rho),
                              gamma=gamma, lam=1.0)
    want_adv, want_ret = returns.gae(rewards, values, next_values, term, trunc, gamma=gamma, lam=1.0)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(ret, want_ret)


def test_vtrace_by_hand() -> None:
    # gamma 0.9, lam 1, ratios 0.5 and 0.25, no episode end; V = (0.5, 1.0), V(x_2) = 1.5 bootstraps
    # delta_1 = 0.25 (2 + 0.9 * 1.5 - 1.0) = 0.5875;  vs_1 = 1.0 + 0.5875 = 1.5875
    # delta_0 = 0.5 (1 + 0.9 * 1.0 - 0.5) = 0.7;      vs_0 = 0.5 + 0.7 + 0.9 * 0.5 * 0.5875 = 1.464375
    # A_1 = 0.25 (2 + 0.9 * 1.5 - 1.0) = 0.5875;       A_0 = 0.5 (1 + 0.9 * 1.5875 - 0.5) = 0.964375
    adv, ret = returns.vtrace(col(1.0, 2.0), col(0.5, 1.0), col(1.0, 1.5), flags(0, 0), flags(0, 0),
                              torch.log(col(0.5, 0.25)), gamma=0.9, lam=1.0)
    torch.testing.assert_close(ret, col(1.464375, 1.5875))
    torch.testing.assert_close(adv, col(0.964375, 0.5875))


def test_vtrace_stops_at_episode_ends_like_gae() -> None:
    # terminated at t=0: A_0 = rho_0 (r_0 - V_0) whatever follows; truncated at t=0: bootstraps V(final)
    for term, trunc, boot in ((flags(1, 0), flags(0, 0), 0.0), (flags(0, 0), flags(1, 0), 0.9 * 4.0)):
        adv, ret = returns.vtrace(col(1.0, 2.0), col(0.5, 1.0), col(4.0, 1.5), term, trunc,
                                  torch.log(col(0.5, 0.5)), gamma=0.9, lam=1.0)
        assert adv[0, 0].item() == pytest.approx(0.5 * (1.0 + boot - 0.5))
        assert ret[0, 0].item() == pytest.approx(0.5 + 0.5 * (1.0 + boot - 0.5))


def test_next_values_from_shifts_and_fills_final_values() -> None:
    # T = 3, E = 2: values of obs[0..3]
    values_all = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    # env 1 ended in step 0 (flat 0 * 2 + 1 = 1), env 0 in step 2 (flat 2 * 2 + 0 = 4)
    nxt = returns.next_values_from(values_all, torch.tensor([-1.0, -2.0]), torch.tensor([1, 4]))
    assert torch.equal(nxt, torch.tensor([[2.0, -1.0], [4.0, 5.0], [-2.0, 7.0]]))
    assert torch.equal(values_all[1:], torch.tensor([[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])), "input modified"


def test_next_values_from_without_final_obs_is_the_shift() -> None:
    values_all = torch.arange(8.0).reshape(4, 2)
    nxt = returns.next_values_from(values_all, torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert torch.equal(nxt, values_all[1:])
