"""The update: one process without a group, and the same code across two gloo processes (DDP)."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import config
from a2c.learning import distributed, learner, returns
from a2c.model import agent
from a2c.service import rollout
from tests.support.procs import free_port
from tests.support.rollouts import SPEC, cartpole_rollout, pixel_rollout


def make_rollout(seed: int) -> rollout.Rollout:
    """Random rewards, ends and invalid (reset) steps."""
    return cartpole_rollout(seed, random_ends=True)

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = gym.spaces.Discrete(2)


def _learner(algo: config.AlgoConfig, reduction: learner.Reduction | None = None) -> learner.Learner:
    torch.manual_seed(0)
    return learner.Learner(agent.Agent(OBS, ACT, algo), algo, torch.device("cpu"), reduction)


def _params(lrn: learner.Learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lrn.model.parameters()]


def _buffers(lrn: learner.Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lrn.model.named_buffers()}


def test_update_moves_weights_and_reports_terms() -> None:
    lrn = _learner(config.AlgoConfig())
    before = _params(lrn)
    batch = lrn.batch([make_rollout(1), make_rollout(2)])
    stats = lrn.update(batch, batch.samples)
    assert stats is not None
    assert stats.samples == int(make_rollout(1).valid.sum() + make_rollout(2).valid.sum())
    assert stats.grad_norm > 0 and np.isfinite(stats.value_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(lrn), strict=True))


def test_a_rollout_of_the_current_version_brings_its_own_values() -> None:
    """The values a rollout was acted with are the learner's values at that version: the batch built from
    them equals the batch that evaluates every observation again; another version's are not used."""
    lrn = _learner(config.AlgoConfig())
    r = make_rollout(3)
    with torch.no_grad():
        r.values = lrn.model.value(torch.as_tensor(r.obs[:-1]).reshape(-1, 4)).reshape(r.values.shape).numpy()
    full, own = lrn.batch([r]), lrn.batch([r], version=r.policy_version)
    torch.testing.assert_close(own.advantages, full.advantages)
    torch.testing.assert_close(own.returns, full.returns)
    r.values = np.zeros_like(r.values)  # wrong values, but of another version: evaluated again
    with torch.no_grad():  # acted by a policy that chose as the current one does: V-trace's ratios are all 1
        params, _ = lrn.model(torch.as_tensor(r.obs[:-1]).reshape(-1, 4))
        logp, _ = lrn.model.logprob_entropy(params, torch.as_tensor(r.actions).reshape(-1))
    r.logprobs = logp.reshape(r.logprobs.shape).numpy()
    other = lrn.batch([r], version=r.policy_version + 1)
    torch.testing.assert_close(other.advantages, full.advantages)
    torch.testing.assert_close(other.returns, full.returns)


@pytest.mark.parametrize("version", [None, 0, 1])  # evaluated whole, the rollout's own values, V-trace
def test_only_a_truncated_end_has_its_final_observation_evaluated(version: int | None) -> None:
    """A terminated end's next value counts for nothing, so its final observation is never evaluated: made
    NaN, the batch is still the one computed with every final observation's value."""
    lrn = _learner(config.AlgoConfig())
    r = cartpole_rollout(5)  # env 0 terminates at step 1, env 1 is truncated at step 2: a final obs for each
    assert r.terminated.reshape(-1)[r.final_index].tolist() == [True, False]
    with pytest.MonkeyPatch.context() as patch:  # every final observation evaluated, as before
        patch.setattr(learner.Learner, "_final_values",
                      lambda self, r, index: self.model.value(torch.as_tensor(r.final_obs)))
        expected = lrn.resolve(lrn.batch([r], version=version))
    rows: list[int] = []
    value = lrn.model.value
    lrn.model.value = lambda obs: rows.append(len(obs)) or value(obs)  # type: ignore[method-assign]
    r.final_obs = r.final_obs.copy()
    r.final_obs[0] = np.nan
    got = lrn.resolve(lrn.batch([r], version=version))
    torch.testing.assert_close(got.advantages, expected.advantages)  # the truncated end's value, evaluated
    torch.testing.assert_close(got.returns, expected.returns)  # alone, may differ in its last bit
    assert 1 in rows, "the truncated end's final observation is evaluated"
    assert torch.isfinite(got.advantages).all()


def test_a_rollout_of_an_older_version_is_corrected_by_its_behaviour_log_probs() -> None:
    """--max-policy-lag > 0: a rollout acted with older weights is weighted by pi/mu (V-trace), so actions
    the old policy took far more often than the current one would count less; its own version's are not."""
    lrn = _learner(config.AlgoConfig())
    r = make_rollout(4)
    with torch.no_grad():
        params, _ = lrn.model(torch.as_tensor(r.obs[:-1]).reshape(-1, 4))
        logp, _ = lrn.model.logprob_entropy(params, torch.as_tensor(r.actions).reshape(-1))
    r.logprobs = logp.reshape(r.logprobs.shape).numpy()
    on_policy = lrn.resolve(lrn.batch([r], version=r.policy_version + 1))
    r.logprobs = r.logprobs + np.log(4.0)  # the old policy was 4x as likely to act so: every ratio 1/4
    corrected = lrn.resolve(lrn.batch([r], version=r.policy_version + 1))
    assert corrected.samples == on_policy.samples
    assert corrected.advantages.abs().sum() < 0.5 * on_policy.advantages.abs().sum()
    assert not torch.allclose(corrected.returns, on_policy.returns)
    r.values = np.zeros_like(r.values)
    assert torch.equal(lrn.batch([r], version=r.policy_version).advantages,
                       lrn.batch([dataclasses.replace(r, logprobs=r.logprobs - 5.0)],
                                 version=r.policy_version).advantages), "on-policy: log-probs play no part"


def _vtrace_reference(lrn: learner.Learner, r: rollout.Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """A stale rollout's V-trace advantages and returns as the paper writes them: every observation evaluated
    under the current weights, apart from any update."""
    t, e = r.num_steps, r.num_envs
    with torch.no_grad():
        params, v = lrn.model(torch.as_tensor(r.obs).reshape(-1, 4))
        logp, _ = lrn.model.logprob_entropy(params[:t * e], torch.as_tensor(r.actions).reshape(-1))
        v_all = v.reshape(t + 1, e)
        v_fin = lrn.model.value(torch.as_tensor(r.final_obs))
    v_fin[torch.as_tensor(r.terminated).reshape(-1)[torch.as_tensor(r.final_index)]] = 0.0
    nxt = returns.next_values_from(v_all, v_fin, torch.as_tensor(r.final_index))
    a, g = returns.vtrace(torch.as_tensor(r.rewards), v_all[:-1], nxt, torch.as_tensor(r.terminated),
                          torch.as_tensor(r.truncated), logp.reshape(t, e) - torch.as_tensor(r.logprobs),
                          lrn.algo.gamma, lrn.algo.gae_lambda)
    return a.reshape(-1), g.reshape(-1)


def test_a_stale_rollout_is_evaluated_once_by_the_update_itself() -> None:
    """--max-policy-lag > 0: a rollout acted with older weights, all of its steps valid, is evaluated once:
    `batch` evaluates only its bootstrap and truncated final observations, and the update's own forward gives
    the log-probs and values its V-trace targets need. The step equals the one taken on those targets computed
    apart (`resolve`), and they are V-trace's as written with every observation evaluated."""
    r = cartpole_rollout(6)  # all valid; env 0 terminates, env 1 is truncated (one final observation evaluated)
    r.logprobs = r.logprobs - 0.3  # the older policy: every ratio e^0.3, clipped to 1 (rho) and lam (c)
    r.logprobs[0, 1] += 1.0  # and one action it was e^0.7 times as likely to take
    t, e = r.num_steps, r.num_envs
    deferred, apart = _learner(config.AlgoConfig()), _learner(config.AlgoConfig())
    expected = _vtrace_reference(apart, r)
    rows: list[int] = []
    deferred.model.critic_features.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    batch = deferred.batch([r], version=r.policy_version + 1)
    assert [s.rows for s in batch.stale] == [slice(0, t * e)]
    assert torch.isnan(batch.advantages).all(), "a stale rollout's targets wait for the update's forward"
    assert deferred.update(batch, batch.samples) is not None
    assert sorted(rows) == [1, e, t * e], "bootstrap + one truncated end in batch, the samples in the update"

    resolved = apart.resolve(apart.batch([r], version=r.policy_version + 1))
    assert not resolved.stale
    torch.testing.assert_close(resolved.advantages, expected[0])
    torch.testing.assert_close(resolved.returns, expected[1])
    assert apart.update(resolved, resolved.samples) is not None
    for a, b in zip(_params(deferred), _params(apart), strict=True):
        torch.testing.assert_close(a, b)


def test_a_stale_rollout_beside_others_gets_its_own_rows() -> None:
    """A round of a fresh rollout, a stale one with an invalid step (evaluated in `batch`, as before) and a stale
    one all valid (deferred): the deferred one's rows come after the others' valid samples, and each rollout's
    targets are the ones it gets alone."""
    lrn = _learner(config.AlgoConfig())
    fresh, partial, whole = cartpole_rollout(7, version=3), make_rollout(8), cartpole_rollout(9)
    batch = lrn.batch([fresh, partial, whole], version=3)
    n_fresh, n_partial = fresh.num_samples, partial.num_samples
    assert [s.rows for s in batch.stale] == [slice(n_fresh + n_partial, batch.samples)]
    got = lrn.resolve(batch)
    for r, part in ((fresh, slice(0, n_fresh)), (partial, slice(n_fresh, n_fresh + n_partial)),
                    (whole, slice(n_fresh + n_partial, None))):
        alone = lrn.resolve(lrn.batch([r], version=3))
        torch.testing.assert_close(got.advantages[part], alone.advantages)
        torch.testing.assert_close(got.returns[part], alone.returns)
    torch.testing.assert_close(got.advantages[batch.stale[0].rows], _vtrace_reference(lrn, whole)[0])


def test_only_valid_samples_are_trained_on() -> None:
    lrn = _learner(config.AlgoConfig())
    r = make_rollout(3)
    batch = lrn.batch([r])
    assert batch.obs.shape[0] == batch.samples == r.valid.sum()
    assert torch.equal(batch.obs, torch.as_tensor(r.obs[:-1][r.valid]))


def test_empty_batch_contributes_zero_gradient() -> None:
    lrn = _learner(config.AlgoConfig(max_grad_norm=0))
    empty = lrn.empty_batch(SPEC)
    before = _params(lrn)
    stats = lrn.update(empty, 10)
    assert stats is not None and stats.samples == 0 and stats.grad_norm == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, _params(lrn), strict=True))


def test_update_reports_the_job_means_of_the_loss_terms_entropy_positive() -> None:
    """The reported entropy is the policy's mean entropy (a2c_trainer_loss{term="entropy"}, the journal's
    `entropy`), not the loss's negative of it."""
    lrn = _learner(config.AlgoConfig(ent_coef=0.01))
    batch = lrn.batch([make_rollout(1)])
    with torch.no_grad():
        logp, ent, values = lrn.model.evaluate(batch.obs, batch.actions)
    stats = lrn.update(batch)
    assert stats is not None and stats.samples == batch.samples
    assert stats.entropy == pytest.approx(float(ent.mean()), rel=1e-5) and stats.entropy > 0
    assert stats.policy_loss == pytest.approx(float(-(batch.advantages * logp).mean()), rel=1e-4, abs=1e-6)
    assert stats.value_loss == pytest.approx(float(((batch.returns - values) ** 2).mean()), rel=1e-5)


def test_agree_reads_the_shares_and_sets_the_rate_before_the_step() -> None:
    """`agree` gets the summed shares (one process: its own) after the backward and before the step: the
    rate it sets is the step's, and its count divides the gradients."""
    batch = _learner(config.AlgoConfig()).batch([make_rollout(1), make_rollout(2)])
    share = distributed.share(batch.samples, 7, [1.5], [3], False)
    seen: list[torch.Tensor] = []
    lrn = _learner(config.AlgoConfig(lr=1e-3))

    def agree(shares: torch.Tensor) -> int:
        seen.append(shares.clone())
        lrn.set_lr(2.5e-4)
        return 2 * batch.samples

    stats = lrn.update(batch, agree, share)
    assert stats is not None and stats.learning_rate == 2.5e-4
    assert len(seen) == 1 and torch.equal(seen[0], share)
    ref = _learner(config.AlgoConfig(lr=2.5e-4))
    ref.update(batch, 2 * batch.samples)
    assert all(torch.equal(a, b) for a, b in zip(_params(lrn), _params(ref), strict=True))


def test_a_count_of_zero_takes_no_step() -> None:
    """A stop, or a round where nobody had data: no step, and the optimizer's state is untouched."""
    lrn = _learner(config.AlgoConfig())
    batch = lrn.batch([make_rollout(1)])
    before = _params(lrn)
    assert lrn.update(batch, lambda shares: 0) is None
    assert all(torch.equal(a, b) for a, b in zip(before, _params(lrn), strict=True))
    assert not lrn.optimizer.state, "no step was taken"


def test_in_a_group_of_one_the_update_equals_the_plain_one_and_needs_the_gradient_sum() -> None:
    """In a process group, DDP's own all-reduce would average: the learner refuses to run without the
    GradientSum; with it, a group of one steps exactly as a learner without a group."""
    rollouts = [make_rollout(1), make_rollout(2)]
    plain = _learner(config.AlgoConfig())
    batch = plain.batch(rollouts)
    expected = plain.update(batch)
    distributed.setup(0, 1, "127.0.0.1", free_port(), "gloo", "cpu", 30)
    try:
        with pytest.raises(ValueError, match="needs a distributed.GradientSum"):
            _learner(config.AlgoConfig())
        lrn = _learner(config.AlgoConfig(), distributed.GradientSum())
        stats = lrn.update(batch, lambda shares: int(shares[0]), distributed.share(batch.samples, 0, [], [], False))
        lrn.release()
    finally:
        distributed.teardown()
    assert stats is not None and expected is not None
    assert [stats.policy_loss, stats.value_loss, stats.entropy] == pytest.approx(
        [expected.policy_loss, expected.value_loss, expected.entropy], rel=1e-6)
    for a, b in zip(_params(lrn), _params(plain), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _worker(rank: int, port: int, seeds_per_rank: list[list[int]], out: str, normalize_obs: bool = False) -> None:
    torch.set_num_threads(1)
    distributed.setup(rank, 2, "127.0.0.1", port, "gloo", "cpu", 60)
    try:
        algo = config.AlgoConfig(normalize_obs=normalize_obs)
        with warnings.catch_warnings():  # a trainer's log shows no deprecation from DDP's constructor
            warnings.simplefilter("error", FutureWarning)
            lrn = _learner(algo, distributed.GradientSum())
        rollouts = [make_rollout(s) for s in seeds_per_rank[rank]]
        batch = lrn.batch(rollouts) if rollouts else lrn.empty_batch(SPEC)
        # as a trainer does: the shares ride the gradient all-reduce, then the step divides by the job's count
        agreed: list[distributed.Totals] = []

        def agree(shares: torch.Tensor) -> int:
            agreed.append(distributed.totals(shares))
            return agreed[0].samples

        stats = lrn.update(batch, agree, distributed.share(
            batch.samples, 0, [float(rank)] * (rank + 1), [rank + 1] * (rank + 1), rank == 1, rank, 2))
        totals = agreed[0]
        assert stats is not None
        assert (totals.episode_returns, totals.episode_lengths, totals.stop_requested) == ([0.0, 1.0, 1.0],
                                                                                          [1, 2, 2], True)
        if normalize_obs:  # a second round: its step runs with the statistics the first round left
            lrn.update(batch, totals.samples)
        torch.save({"params": _params(lrn), "samples": totals.samples_per_rank, "buffers": _buffers(lrn),
                    "terms": [stats.policy_loss, stats.value_loss, stats.entropy]}, f"{out}-{rank}.pt")
        lrn.release()  # as the trainer does: DDP before its process group
    finally:
        distributed.teardown()




@pytest.mark.slow
@pytest.mark.parametrize("split", [[[1], [2]], [[1, 2], []], [[], [1, 2]]], ids=["split", "rank1-empty", "rank0-empty"])
def test_ddp_step_equals_single_process_step(tmp_path: Path, split: list[list[int]]) -> None:
    """Sample-count-weighted averaging: however the samples are spread over trainers (even none on one),
    the DDP step equals one process training on all of them; every replica ends identical and reports the
    job's loss terms (they ride the gradient all-reduce)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, split, str(tmp_path / "out"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    single = _learner(config.AlgoConfig())
    batch = single.batch([make_rollout(1), make_rollout(2)])
    stats = single.update(batch, batch.samples)
    assert stats is not None
    expected = _params(single)
    for rank in range(2):
        got = torch.load(tmp_path / f"out-{rank}.pt")
        assert sum(got["samples"]) == batch.samples
        assert got["terms"] == pytest.approx([stats.policy_loss, stats.value_loss, stats.entropy], rel=1e-5, abs=1e-6)
        for a, b in zip(got["params"], expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("split", [[[1], [2, 3]], [[], [1, 2, 3]]], ids=["split", "rank0-empty"])
def test_ddp_observation_statistics_are_job_wide_and_identical(tmp_path: Path, split: list[list[int]]) -> None:
    """--normalize-obs: after two DDP rounds both ranks hold the same statistics and weights as one process
    that trained on the union of the data (a rank without data contributes zeros to the all-reduce)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, split, str(tmp_path / "out"), True)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    single = _learner(config.AlgoConfig(normalize_obs=True))
    rollouts = [make_rollout(s) for s in (1, 2, 3)]
    batch = single.batch(rollouts)
    for _ in range(2):
        single.update(batch, batch.samples)
    valid_obs = np.concatenate([r.obs[:-1][r.valid] for r in rollouts]).astype(np.float64)
    stats = _buffers(single)
    assert float(stats["obs_norm.count"]) == pytest.approx(2 * len(valid_obs) + 1e-4), "valid samples, twice"
    got = [torch.load(tmp_path / f"out-{rank}.pt") for rank in range(2)]
    for name in stats:
        assert torch.equal(got[0]["buffers"][name], got[1]["buffers"][name]), f"ranks differ in {name}"
        torch.testing.assert_close(got[0]["buffers"][name], stats[name], rtol=1e-9, atol=1e-12)
    for rank in range(2):
        for a, b in zip(got[rank]["params"], _params(single), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_update_then_statistics_only_valid_samples() -> None:
    """One process: the step uses the old statistics; afterwards they hold the round's valid observations."""
    lrn = _learner(config.AlgoConfig(normalize_obs=True))
    r = make_rollout(4)
    batch = lrn.batch([r])
    lrn.update(batch, batch.samples)
    assert lrn.model.obs_norm is not None
    valid = r.obs[:-1][r.valid].astype(np.float64)
    np.testing.assert_allclose(lrn.model.obs_norm.mean.numpy(), valid.mean(0) * len(valid) / (len(valid) + 1e-4),
                               rtol=1e-9)
    assert float(lrn.model.obs_norm.count) == pytest.approx(len(valid) + 1e-4)


def test_set_lr_changes_every_param_group() -> None:
    lrn = _learner(config.AlgoConfig(lr=1e-3))
    lrn.set_lr(2.5e-4)
    assert [g["lr"] for g in lrn.optimizer.param_groups] == [2.5e-4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checked on a lent GPU machine)")
def test_update_on_cuda_matches_cpu() -> None:
    cpu = _learner(config.AlgoConfig())
    torch.manual_seed(0)
    algo = config.AlgoConfig()
    gpu = learner.Learner(agent.Agent(OBS, ACT, algo), algo, torch.device("cuda", 0))
    rollouts = [make_rollout(1), make_rollout(2)]
    for lrn in (cpu, gpu):
        batch = lrn.batch(rollouts)
        lrn.update(batch, batch.samples)
    for a, b in zip(_params(cpu), _params(gpu), strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5)


def test_a_pixel_learner_trains_channels_last_and_takes_the_same_step_as_the_default_layout() -> None:
    """On CPU the trainer's NatureCNN is channels-last (its update is the faster one there, docs/atari.md): the
    same step as torch's default layout (to float rounding), and its snapshot loads into a player's model."""
    obs, act = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(4)
    algo = config.AlgoConfig(optimizer="rmsprop_tf", optim_eps=1e-5)
    r = pixel_rollout(0, t=5, e=2)
    torch.manual_seed(0)
    plain = agent.Agent(obs, act, algo)
    torch.manual_seed(0)
    lrn = learner.Learner(agent.Agent(obs, act, algo), algo, torch.device("cpu"))
    convs = [p for p in lrn.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    assert all(p.is_contiguous() for p in plain.parameters())
    reference = learner.Learner.__new__(learner.Learner)  # the same learner without the layout change
    reference.model, reference.algo, reference.device = plain, algo, torch.device("cpu")
    reference.optimizer, reference._ddp = agent.make_optimizer(plain, algo), None
    for lr in (lrn, reference):
        batch = lr.batch([r], None)
        assert lr.update(batch, batch.samples) is not None
    for a, b in zip(lrn.model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    snap = agent.snapshot(lrn.model, 1)
    assert all(v.flags.c_contiguous for v in snap.tensors.values())
    player = agent.Agent(obs, act, algo)
    agent.load_snapshot(player, snap)
    for a, b in zip(player.parameters(), lrn.model.parameters(), strict=True):
        assert torch.equal(a, b)
