"""The trainers' process group: set-up from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (what the
StatefulSet sets), backend and device choice, and the one small collective per round that makes every
trainer agree on the job's totals (samples, env steps, finished episodes, whether to stop).

Data flow: trainer -> `setup` once; each round `exchange` (all_gather) before the DDP step, whose
gradients `learner` sums across the same group. A lost peer makes a collective fail after
`dist_timeout_s` (or at once when its socket closes): the trainer exits with that error, never hangs.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

MAX_EPISODES_PER_ROUND = 512  # per trainer; more finished episodes in one round are summarised by the newest


@dataclass
class Group:
    rank: int
    world_size: int
    backend: str
    device: torch.device


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but CUDA is not available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup(rank: int, world_size: int, master_addr: str, master_port: int, backend: str, device: str,
          timeout_s: float) -> Group:
    """Join the trainers' process group (gloo on CPU, NCCL with CUDA)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1} (WORLD_SIZE={world_size})")
    dev = pick_device(device)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("the nccl backend needs --device cuda")
    log.info("joining process group: rank %d/%d via %s:%d (%s, %s)", rank, world_size, master_addr, master_port,
             backend, dev)
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return Group(rank=rank, world_size=world_size, backend=backend, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class Totals:
    """What every trainer agrees on after a round's exchange (identical on every rank)."""

    samples: int
    env_steps: int
    episode_returns: list[float]
    episode_lengths: list[int]
    stop_requested: bool
    samples_per_rank: list[int]


def exchange(samples: int, env_steps: int, returns: list[float], lengths: list[int], stop: bool,
             device: torch.device) -> Totals:
    """all_gather this round's counts and finished episodes from every trainer (rank order)."""
    returns, lengths = returns[-MAX_EPISODES_PER_ROUND:], lengths[-MAX_EPISODES_PER_ROUND:]
    n = len(returns)
    buf = torch.zeros(4 + 2 * MAX_EPISODES_PER_ROUND, dtype=torch.float64)
    buf[0], buf[1], buf[2], buf[3] = samples, env_steps, n, float(stop)
    if n:
        buf[4:4 + n] = torch.tensor(returns, dtype=torch.float64)
        buf[4 + MAX_EPISODES_PER_ROUND:4 + MAX_EPISODES_PER_ROUND + n] = torch.tensor(lengths, dtype=torch.float64)
    if not dist.is_initialized():
        rows = [buf]
    else:
        local = buf.to(device)
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        rows = [g.cpu() for g in gathered]
    out_returns: list[float] = []
    out_lengths: list[int] = []
    for row in rows:
        k = int(row[2])
        out_returns.extend(row[4:4 + k].tolist())
        out_lengths.extend(int(x) for x in row[4 + MAX_EPISODES_PER_ROUND:4 + MAX_EPISODES_PER_ROUND + k].tolist())
    return Totals(
        samples=int(sum(int(r[0]) for r in rows)),
        env_steps=int(sum(int(r[1]) for r in rows)),
        episode_returns=out_returns,
        episode_lengths=out_lengths,
        stop_requested=any(bool(r[3]) for r in rows),
        samples_per_rank=[int(r[0]) for r in rows],
    )


def broadcast_object(obj: object, device: torch.device) -> object:
    """Rank 0's object on every rank (the resumed checkpoint)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]
