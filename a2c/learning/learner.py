"""One synchronous A2C update under DistributedDataParallel: the same code in unit tests (one process,
with or without a process group) and across trainer processes.

Data flow: trainer forms a round of rollouts -> `Learner.batch(rollouts, version)`: values of every
observation (no grad; a rollout of the current version brings its own) -> `returns.gae` (`returns.vtrace`
for a rollout acted with older weights) -> a `Batch` of the valid samples -> `Learner.backward(batch,
share)`: DDP forward -> `loss.a2c_loss` (sums over this trainer's samples) -> backward, whose gradient
all-reduce is a SUM (our comm hook) carrying the loss terms and every trainer's share of the round with it
-> `Learner.step(reduced, job's sample count)`: divide, clip, optimizer step -> (with --normalize-obs) the
observation statistics take in the round's valid observations, job-wide (`obs_normalizer`). Every replica
ends the step with identical weights and buffers (DDP runs with forward_sync_buffers=False: the statistics are
all-reduced instead).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

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
class Batch:
    """This trainer's share of one update: the valid samples of its rollouts, flattened, with their
    advantages and returns (what the loss needs)."""

    obs: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

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


@dataclass
class Reduced:
    """What `Learner.backward` leaves for `step`: the gradients (summed, in the model) aside."""

    shares: torch.Tensor      # every trainer's share, summed across the group (`distributed.totals` reads it)
    loss_sums: list[float]    # policy, value, entropy terms summed over the job's samples
    samples: int              # this trainer's
    obs: torch.Tensor         # this trainer's observations (the job-wide statistics take them in after the step)
    seconds: dict[str, float]  # forward_backward, allreduce


class _HookState:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.report: torch.Tensor | None = None  # the step's loss terms: the first bucket carries them


def _sum_allreduce_hook(state: _HookState, bucket: Any) -> torch.futures.Future[torch.Tensor]:
    """Sum (not average) gradients across trainers: each loss is already divided by the job's sample count.

    The first bucket also carries this rank's loss terms (`state.report`), summed in the same collective
    and written back in place: one all-reduce per step, not one for the gradients and one for the report."""
    start = time.perf_counter()
    grads, report = bucket.buffer(), state.report
    if report is not None:
        state.report = None
        buf = torch.cat([grads, report.to(grads.dtype)])
    else:
        buf = grads
    fut = dist.all_reduce(buf, async_op=True).get_future()  # type: ignore[union-attr]

    def done(f: torch.futures.Future[Any]) -> torch.Tensor:
        state.seconds += time.perf_counter() - start
        out = f.value()[0]
        if report is None:
            return out  # type: ignore[no-any-return]
        report.copy_(out[grads.numel():])
        return out[:grads.numel()]  # type: ignore[no-any-return]

    return fut.then(done)


# DDP checks the hook's annotations as objects (this module's are strings under `from __future__`).
_sum_allreduce_hook.__annotations__.update(bucket=dist.GradBucket, **{"return": torch.futures.Future[torch.Tensor]})


class Learner:
    def __init__(self, model: agent_mod.Agent, algo: config.AlgoConfig, device: torch.device) -> None:
        self.model = model.to(device)
        self.algo = algo
        self.device = device
        self.optimizer = agent_mod.make_optimizer(self.model, algo)
        self._hook = _HookState()
        self.module: nn.Module = self.model
        if dist.is_initialized():
            ddp = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                forward_sync_buffers=False,  # identical at construction (synced once there), all-reduced after
            )
            ddp.register_comm_hook(self._hook, _sum_allreduce_hook)
            self.module = ddp

    def batch(self, rollouts: list[rollout.Rollout], version: int | None = None) -> Batch:
        """Advantages and returns per rollout, then the valid samples of all rollouts, flattened.

        A rollout acted with `version`, the weights this learner holds, brings the values it was acted
        with, which are these weights' values: only its bootstrap observation and final observations are
        evaluated here, and its advantages are `returns.gae`'s. A rollout acted with older weights
        (--max-policy-lag > 0) is evaluated whole with the current ones, and its advantages and returns are
        V-trace's (`returns.vtrace`), from the ratio of the current policy's log-probabilities to the ones it
        was acted with. With `version` None every rollout is taken as acted with the current weights,
        evaluated whole."""
        obs, actions, adv, ret = [], [], [], []
        gamma, lam = self.algo.gamma, self.algo.gae_lambda
        for r in rollouts:
            t, e = r.num_steps, r.num_envs
            o = torch.as_tensor(r.obs, device=self.device)
            acts = torch.as_tensor(r.actions, device=self.device).reshape(t * e, *r.actions.shape[2:])
            stale = version is not None and r.policy_version != version
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
                fin = torch.as_tensor(r.final_obs, device=self.device)
                v_fin = self.model.value(fin) if len(fin) else torch.zeros(0, device=self.device)
            nxt = returns.next_values_from(v_all, v_fin, torch.as_tensor(r.final_index, device=self.device))
            steps = (torch.as_tensor(r.rewards, device=self.device), v_all[:-1], nxt,
                     torch.as_tensor(r.terminated, device=self.device),
                     torch.as_tensor(r.truncated, device=self.device))
            if stale:
                a, g = returns.vtrace(*steps, log_rhos, gamma, lam)
            else:
                a, g = returns.gae(*steps, gamma, lam)
            mask = torch.as_tensor(r.valid, device=self.device).reshape(-1)
            obs.append(o[:-1].reshape(t * e, *o.shape[2:])[mask])
            actions.append(acts[mask])
            adv.append(a.reshape(-1)[mask])
            ret.append(g.reshape(-1)[mask])
        return Batch(torch.cat(obs), torch.cat(actions), torch.cat(adv), torch.cat(ret))

    def empty_batch(self, spec: rollout.Spec) -> Batch:
        """A zero-sample batch: a trainer without data still joins the gradient all-reduce, with zeros."""
        def zeros(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype, device=self.device)

        return Batch(zeros((0, *spec.obs_shape), spec.obs_dtype), zeros((0, *spec.action_shape), spec.action_dtype),
                     torch.zeros(0, device=self.device), torch.zeros(0, device=self.device))

    def update(self, batch: Batch, total_samples: int) -> UpdateStats:
        """One optimizer step on this trainer's batch; total_samples counts the whole job's batch (the
        caller has agreed on it with the other trainers; a trainer uses `backward` and `step`)."""
        return self.step(self.backward(batch, torch.zeros(0, dtype=torch.float64)), total_samples)

    def backward(self, batch: Batch, share: torch.Tensor) -> Reduced:
        """Forward and backward of the loss as sums over this trainer's samples. One all-reduce sums the
        gradients, the loss terms and every trainer's `share` (a float64 vector of the same size on every
        trainer: `distributed.share`) across the group; the summed shares tell the caller the job's sample
        count for `step`."""
        self._hook.seconds = 0.0
        t0 = time.perf_counter()
        logp, entropy, values = self._evaluate(batch.obs, batch.actions)
        terms = loss.a2c_loss(logp, entropy, values, batch.advantages, batch.returns, 1.0,
                              self.algo.vf_coef, self.algo.ent_coef)
        report = torch.stack([terms.policy.detach(), terms.value.detach(), terms.entropy.detach()])
        ride = torch.cat([report.double().cpu(), share]).to(self.device)
        ddp = isinstance(self.module, DistributedDataParallel)
        self._hook.report = ride if ddp else None
        self.optimizer.zero_grad(set_to_none=False)
        terms.total.backward()
        if ddp and self._hook.report is not None:  # no bucket was reduced (no gradients): reduce it alone
            self._hook.report = None
            dist.all_reduce(ride)
        t1 = time.perf_counter()
        allreduce = self._hook.seconds
        return Reduced(ride[3:], ride[:3].tolist(), batch.samples, batch.obs,
                       {"forward_backward": max(0.0, t1 - t0 - allreduce), "allreduce": allreduce})

    def step(self, reduced: Reduced, total_samples: int) -> UpdateStats:
        """Divide the summed gradients and loss terms by the job's sample count, clip, take the step."""
        t1 = time.perf_counter()
        scale = 1.0 / max(total_samples, 1)
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
            self.model.obs_norm.update(reduced.obs)
        policy, value, entropy = (x * scale for x in reduced.loss_sums)
        return UpdateStats(
            samples=reduced.samples,
            policy_loss=policy, value_loss=value, entropy=-entropy,
            grad_norm=norm, learning_rate=float(self.optimizer.param_groups[0]["lr"]),
            seconds={**reduced.seconds, "optimizer": time.perf_counter() - t1},
        )

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (the schedule's value, identical on every rank)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def follow_schedule(self, env_steps: int, max_env_steps: int) -> None:
        """Set the rate --lr-schedule gives after `env_steps` of a budget of `max_env_steps` (job-wide counts)."""
        self.set_lr(schedule.learning_rate(self.algo.lr, self.algo.lr_schedule, env_steps, max_env_steps))

    def _evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The forward through the DDP wrapper (it arms the gradient hooks); then the log-probs and entropy
        # of the taken actions under the distribution it parameterises (as Agent.evaluate, minus the forward).
        if isinstance(self.module, DistributedDataParallel):
            params, values = self.module(obs)
        else:
            params, values = self.model(obs)
        logp, entropy = self.model.logprob_entropy(params, actions)
        return logp, entropy, values

    def release(self) -> None:
        """Drop the DDP wrapper (its reducer and comm hook) while the process group still exists: destroyed
        after the group, it could abort the process at exit ("terminate called without an active exception",
        SIGABRT, seen in 1 of 3 two-rank runs). The model stays usable in this process."""
        if self.module is not self.model:
            self.module = self.model
            self._hook.report = None
            gc.collect()  # DDP sits in reference cycles (its hooks point back at it): free it now

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
