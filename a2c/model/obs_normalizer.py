"""Observation normalisation that is part of the model: running mean and variance held as buffers of
the Agent, so the weights players fetch, the checkpoints and `a2c eval` carry the same statistics.

Data flow: player and trainer -> `Agent.forward` -> `ObsNormalizer`: clip((x - mean) / sqrt(var + 1e-8),
+-10) (Stable-Baselines3's VecNormalize) -> feature extractors. After each DDP step every trainer calls
`update(valid raw observations of its round)`: count, sum and sum of squares are all-reduced over the
trainers (a trainer without data adds zeros) and merged with `moments.merge`, so every rank holds
identical statistics: those of the union of the job's observations, whatever their split. The new
statistics go out with weights version k+1; the step itself used the statistics the data was acted with.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from a2c import moments

EPSILON = 1e-8
CLIP = 10.0


class ObsNormalizer(nn.Module):
    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...], clip: float = CLIP) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(moments.INITIAL_COUNT, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mean) / torch.sqrt(self.var + EPSILON)
        return z.clamp(-self.clip, self.clip).float()

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Merge a batch [B, *shape] of raw observations, job-wide when a process group is up (collective:
        every rank must call it, with B = 0 where it has no data)."""
        x = obs.to(self.mean.device, torch.float64).reshape(-1, *self.mean.shape)
        flat = torch.cat([torch.tensor([float(len(x))], dtype=torch.float64, device=x.device),
                          x.sum(0).reshape(-1), (x * x).sum(0).reshape(-1)])
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flat)
        n = float(flat[0])
        if n == 0:
            return
        d = self.mean.numel()
        batch_mean = (flat[1:1 + d] / n).reshape(self.mean.shape)
        batch_var = ((flat[1 + d:] / n).reshape(self.mean.shape) - batch_mean ** 2).clamp_min(0.0)
        mean, var, count = moments.merge(self.mean, self.var, float(self.count), batch_mean, batch_var, n)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.fill_(count)
