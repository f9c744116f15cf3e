"""One synchronous A2C update under DistributedDataParallel: the same code in unit tests (one process,
with or without a process group) and across trainer processes.

Data flow: trainer forms a round of rollouts -> `Learner.batch(rollouts, version)`: values of every
observation (no grad; a rollout of the current version brings its own) -> `returns.gae` (`returns.vtrace`
for a rollout acted with older weights; where its steps are all valid, after the update's forward: `Stale`)
-> a `Batch` of the valid samples -> `Learner.update(batch, agree, share)`, in the order of Stable-Baselines3's
`A2C.train`: evaluate the actions (`Agent.evaluate`, through DDP) -> the batch's advantages and returns (a
stale rollout's V-trace targets from that forward's log-probs and values) -> `loss.a2c_loss` (sums over this
trainer's samples) ->
backward, whose gradient all-reduce is a SUM (`distributed.GradientSum`) carrying the loss terms and every
trainer's share of the round -> `agree`: the job's sample count from the summed shares -> divide, clip,
optimizer step -> (with --normalize-obs) the observation statistics take in the round's valid observations,
job-wide (`obs_normalizer`). Every replica ends the step with identical weights and buffers (DDP runs with
forward_sync_buffers=False: the statistics are all-reduced instead).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch._dynamo  # noqa: F401 - DDP and torch's optimizers import it on first use (~0.65 s): here, with torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from a2c import config
from a2c.learning import loss, returns, schedule
from a2c.model import agent as agent_mod
from a2c.service import rollout


@dataclass
class Stale:
    """A rollout acted with older weights whose steps are all valid, in a `Batch`: its V-trace targets need its
    log-probabilities and values under the current weights, which are the update's own forward pass on its
    rows (no grad: detached). `Learner.update` computes them there, so the rollout is evaluated once, not in
    `batch` and again in the update; its rows of the batch's advantages and returns are NaN until then.

    Why: at --max-policy-lag 1 many rollouts are stale, and evaluating them in `batch` too cost Breakout 514-563
    us of trainer CPU an env step against 125-136 at lag 0; evaluated once, 130-146 (`a2c local`, fp32,
    docs/atari.md)."""

    rows: slice                  # its samples in the batch
    rewards: torch.Tensor        # [T, E]
    terminated: torch.Tensor     # [T, E]
    truncated: torch.Tensor      # [T, E]
    behaviour_logp: torch.Tensor  # [T, E]: the log-probs it was acted with
    bootstrap: torch.Tensor      # [E]: V(obs[T]) under the current weights
    final_values: torch.Tensor   # V(final_obs) at final_index (`Learner._final_values`)
    final_index: torch.Tensor


@dataclass
class Batch:
    """This trainer's share of one update: the valid samples of its rollouts, flattened, with their
    advantages and returns (what the loss needs; `stale` rollouts' rows get theirs in `Learner.update`)."""

    obs: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    stale: list[Stale] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return int(self.advantages.numel())


@dataclass
class UpdateStats:
    samples: int
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    learning_rate: float = 0.0  # the rate this step was taken with
    seconds: dict[str, float] = field(default_factory=dict)  # forward_backward, allreduce, optimizer


class Reduction(Protocol):
    """How the gradients of a learner in a process group are summed across trainers, with a vector riding
    along: `distributed.GradientSum` (the trainer makes it; this module does not import `distributed`)."""

    seconds: float  # spent in the all-reduce during the last `backward`

    def attach(self, ddp: DistributedDataParallel) -> None: ...

    def backward(self, loss: torch.Tensor, rider: torch.Tensor) -> None: ...

    def release(self) -> None: ...


# The job's sample count from the summed shares of every trainer (0: no step this round).
Agree = Callable[[torch.Tensor], int]
NO_SHARE = torch.zeros(0, dtype=torch.float64)


class _Evaluating(nn.Module):
    """The module DDP wraps: its forward is `Agent.evaluate`, so the forward that arms DDP's gradient hooks
    is the one the loss is taken of (the agent's parameters and buffers, in the agent's order)."""

    def __init__(self, agent: agent_mod.Agent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.agent.evaluate(obs, actions)


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts end to end: one part as it is (no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class Learner:
    def __init__(self, model: agent_mod.Agent, algo: config.AlgoConfig, device: torch.device,
                 reduction: Reduction | None = None) -> None:
        """In a process group, `reduction` (a `distributed.GradientSum`) sums the gradients across trainers."""
        self.model = model.to(device)
        if device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
            # NatureCNN's update on a trainer's batch (Breakout, 40 frames, one thread): 740-763 us a sample with
            # the weights channels-last, 833-952 without; the players keep torch's default layout, in which their
            # acting forward is the faster (262-276 against 281-345 us). Weights and numerics are the same
            # tensors; only the order of the sums inside a convolution differs.
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.algo = algo
        self.device = device
        self.optimizer = agent_mod.make_optimizer(self.model, algo)
        self._ddp: tuple[DistributedDataParallel, Reduction] | None = None  # in a process group
        if dist.is_initialized():
            if reduction is None:
                raise ValueError("a learner in a process group needs a distributed.GradientSum: DDP's own "
                                 "all-reduce averages the gradients, which the loss's sums must not be")
            ddp = DistributedDataParallel(
                _Evaluating(self.model), device_ids=[device.index] if device.type == "cuda" else None,
                forward_sync_buffers=False,  # identical at construction (synced once there), all-reduced after
            )
            reduction.attach(ddp)
            self._ddp = ddp, reduction

    def batch(self, rollouts: list[rollout.Rollout], version: int | None = None) -> Batch:
        """Advantages and returns per rollout, then the valid samples of all rollouts, flattened.

        A rollout acted with `version`, the weights this learner holds, brings the values it was acted
        with, which are these weights' values: only its bootstrap observation and final observations are
        evaluated here, and its advantages are `returns.gae`'s. A rollout acted with older weights
        (--max-policy-lag > 0) is evaluated whole with the current ones, and its advantages and returns are
        V-trace's (`returns.vtrace`), from the ratio of the current policy's log-probabilities to the ones it
        was acted with; where its steps are all valid only its bootstrap and final observations are evaluated
        here, and the update's forward gives the rest (`Stale`; `resolve` computes them apart). With `version`
        None every rollout is taken as acted with the current weights, evaluated whole."""
        obs: list[torch.Tensor] = []
        actions: list[torch.Tensor] = []
        adv: list[torch.Tensor] = []
        ret: list[torch.Tensor] = []
        deferred: list[Stale] = []
        for r in rollouts:
            t, e = r.num_steps, r.num_envs
            o = torch.as_tensor(r.obs, device=self.device)
            acts = torch.as_tensor(r.actions, device=self.device).reshape(t * e, *r.actions.shape[2:])
            stale = version is not None and r.policy_version != version
            mask = torch.as_tensor(r.valid, device=self.device).reshape(-1)
            keep = slice(None) if bool(mask.all()) else mask  # all valid: views, not copies (pixels: 1.1 MB a round)
            obs.append(o[:-1].reshape(t * e, *o.shape[2:])[keep])
            actions.append(acts[keep])
            fin_index = torch.as_tensor(r.final_index, device=self.device)
            rewards, terminated, truncated = (torch.as_tensor(x, device=self.device)
                                              for x in (r.rewards, r.terminated, r.truncated))
            if stale and isinstance(keep, slice):
                start = sum(int(x.numel()) for x in adv)  # its rows follow the samples before it
                with torch.no_grad():
                    deferred.append(Stale(
                        slice(start, start + t * e), rewards, terminated, truncated,
                        torch.as_tensor(r.logprobs, device=self.device), self.model.value(o[-1]),
                        self._final_values(r, fin_index), fin_index))
                adv.append(torch.full((t * e,), float("nan"), device=self.device))
                ret.append(torch.full((t * e,), float("nan"), device=self.device))
                continue
            log_rhos: torch.Tensor | None = None
            with torch.no_grad():
                if version is not None and not stale:
                    v_all = torch.cat([torch.as_tensor(r.values, device=self.device), self.model.value(o[-1])[None]])
                elif stale:
                    params, v_flat = self.model(o.reshape(-1, *o.shape[2:]))
                    logp, _ = self.model.logprob_entropy(params[:t * e], acts)
                    log_rhos = logp.reshape(t, e) - torch.as_tensor(r.logprobs, device=self.device)
                    v_all = v_flat.reshape(t + 1, e)
                else:
                    v_all = self.model.value(o.reshape(-1, *o.shape[2:])).reshape(t + 1, e)
                v_fin = self._final_values(r, fin_index)
            a, g = self._targets(v_all, v_fin, fin_index, rewards, terminated, truncated, log_rhos)
            adv.append(a.reshape(-1)[keep])
            ret.append(g.reshape(-1)[keep])
        return Batch(_joined(obs), _joined(actions), _joined(adv), _joined(ret), deferred)

    def _targets(self, v_all: torch.Tensor, v_fin: torch.Tensor, fin_index: torch.Tensor, rewards: torch.Tensor,
                 terminated: torch.Tensor, truncated: torch.Tensor, log_rhos: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages and returns [T, E] of a rollout from the values of its observations ([T+1, E]) and of its
        final observations: `returns.gae`'s, or with `log_rhos` (acted with older weights) `returns.vtrace`'s."""
        steps = (rewards, v_all[:-1], returns.next_values_from(v_all, v_fin, fin_index), terminated, truncated)
        gamma, lam = self.algo.gamma, self.algo.gae_lambda
        if log_rhos is None:
            return returns.gae(*steps, gamma, lam)
        return returns.vtrace(*steps, log_rhos, gamma, lam)

    def resolve(self, batch: Batch, logp: torch.Tensor | None = None, values: torch.Tensor | None = None) -> Batch:
        """`batch` with its stale rollouts' advantages and returns filled in (V-trace, `Stale`), from `logp` and
        `values` of the batch's rows under the current weights (detached): the update's forward gives them;
        without them, they are evaluated here (no grad). A batch without stale rollouts is returned as it is."""
        if not batch.stale:
            return batch
        if logp is None or values is None:
            with torch.no_grad():
                logp, _, values = self.model.evaluate(batch.obs, batch.actions)
        logp, values = logp.detach(), values.detach()
        adv, ret = batch.advantages.clone(), batch.returns.clone()
        for s in batch.stale:
            t, e = s.rewards.shape
            v_all = torch.cat([values[s.rows].reshape(t, e), s.bootstrap[None]])
            a, g = self._targets(v_all, s.final_values, s.final_index, s.rewards, s.terminated, s.truncated,
                                 logp[s.rows].reshape(t, e) - s.behaviour_logp)
            adv[s.rows], ret[s.rows] = a.reshape(-1), g.reshape(-1)
        return Batch(batch.obs, batch.actions, adv, ret)

    def _final_values(self, r: rollout.Rollout, index: torch.Tensor) -> torch.Tensor:
        """V(final_obs) where a step's next value is used: truncated ends. A terminated end's next value is
        multiplied by 0 in `returns` (gae and vtrace alike), so its final observation is not evaluated and its
        value is 0. In Atari a lost life ends an episode in most rounds (Breakout, random play: 215 of 300
        rounds of 8 copies x 5 steps), and NatureCNN's forward pass on one or two final observations took
        0.8-1.4 ms, about half of the one on the 8 bootstrap observations (1.9-2.6 ms; one core, bf16)."""
        values = torch.zeros(len(index), device=self.device)
        if not len(index):
            return values
        needed = ~torch.as_tensor(r.terminated, device=self.device).reshape(-1)[index]
        if bool(needed.any()):
            values[needed] = self.model.value(torch.as_tensor(r.final_obs, device=self.device)[needed])
        return values

    def empty_batch(self, spec: rollout.Spec) -> Batch:
        """A zero-sample batch: a trainer without data still joins the gradient all-reduce, with zeros."""
        def zeros(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype, device=self.device)

        return Batch(zeros((0, *spec.obs_shape), spec.obs_dtype), zeros((0, *spec.action_shape), spec.action_dtype),
                     torch.zeros(0, device=self.device), torch.zeros(0, device=self.device))

    def update(self, batch: Batch, agree: Agree | int | None = None, share: torch.Tensor = NO_SHARE
               ) -> UpdateStats | None:
        """One A2C update on this trainer's batch, in the order of SB3's `A2C.train`. The loss terms are sums
        over the batch, divided (with the gradients) by the job's sample count: `agree`'s answer, given the
        summed `share`s of every trainer (a float64 vector of the same size on each, `distributed.share`, that
        rides the gradient all-reduce); or a count known in advance; or, by default, this batch's. A count of
        0 takes no step (None: a stop, or nobody had data)."""
        t0 = time.perf_counter()
        # evaluate the actions: log-probs, entropy and values under the current weights; in a group through
        # DDP (its forward arms the gradient hooks)
        evaluate = self.model.evaluate if self._ddp is None else self._ddp[0]
        logp, entropy, values = evaluate(batch.obs, batch.actions)
        # advantages and returns: the batch's (`batch`; stale rollouts' from this forward, `resolve`); the
        # losses, as sums over this trainer's samples
        targets = self.resolve(batch, logp, values)
        terms = loss.a2c_loss(logp, entropy, values, targets.advantages, targets.returns, self.algo.vf_coef,
                              self.algo.ent_coef)
        # backward: in a group one all-reduce sums the gradients, the loss terms and the shares
        rider = torch.cat([torch.stack([terms.policy.detach(), terms.value.detach(), terms.entropy.detach()]
                                       ).double().cpu(), share]).to(self.device)
        self.optimizer.zero_grad(set_to_none=False)
        if self._ddp is None:
            terms.total.backward()
            allreduce = 0.0
        else:
            reduction = self._ddp[1]
            reduction.backward(terms.total, rider)
            allreduce = reduction.seconds
        t1 = time.perf_counter()
        seconds = {"forward_backward": max(0.0, t1 - t0 - allreduce), "allreduce": allreduce}
        if agree is None:
            total_samples = batch.samples
        elif isinstance(agree, int):
            total_samples = agree
        else:
            total_samples = agree(rider[3:])  # the summed shares
        if total_samples <= 0:
            return None
        t2 = time.perf_counter()
        # the sums become means over the job's samples; clip; step
        scale = 1.0 / total_samples
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        if self.algo.max_grad_norm > 0:
            norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.algo.max_grad_norm))
        else:
            norm = float(torch.norm(torch.stack([p.grad.norm() for p in self.model.parameters()
                                                 if p.grad is not None])))
        self.optimizer.step()
        if self.model.obs_norm is not None:  # after the step: the step used the statistics the data was acted with
            self.model.obs_norm.update(batch.obs)
        policy, value, entropy = (x * scale for x in rider[:3].tolist())
        return UpdateStats(
            samples=batch.samples, policy_loss=policy, value_loss=value, entropy=entropy, grad_norm=norm,
            learning_rate=float(self.optimizer.param_groups[0]["lr"]),
            seconds={**seconds, "optimizer": time.perf_counter() - t2})

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (the schedule's value, identical on every rank)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def follow_schedule(self, env_steps: int, max_env_steps: int) -> None:
        """Set the rate --lr-schedule gives after `env_steps` of a budget of `max_env_steps` (job-wide counts)."""
        self.set_lr(schedule.learning_rate(self.algo.lr, self.algo.lr_schedule, env_steps, max_env_steps))

    def release(self) -> None:
        """Drop the DDP wrapper (its reducer and comm hook) while the process group still exists: destroyed
        after the group, it could abort the process at exit ("terminate called without an active exception",
        SIGABRT, seen in 1 of 3 two-rank runs). The model stays usable in this process."""
        if self._ddp is not None:
            self._ddp[1].release()
            self._ddp = None
            gc.collect()  # DDP sits in reference cycles (its hooks point back at it): free it now

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
