"""The trainers' process group: set-up from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (what the
StatefulSet sets), backend and device choice, and each trainer's `share` of a round (samples, env steps,
finished episodes, whether to stop), which rides the gradient all-reduce (`GradientSum`, DDP's
communication hook) so that every trainer agrees on the job's `totals` without a collective of its own.

Data flow: trainer -> `setup` once, a `GradientSum` for its learner; each round `share` ->
`learner.Learner.update` (one all-reduce: gradients, loss terms and shares) -> `totals` -> the step. A lost
peer makes a collective fail after `dist_timeout_s` (or at once when its socket closes): the trainer exits
with that error, never hangs.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from a2c import cores, ports

log = logging.getLogger(__name__)

MAX_EPISODES_PER_ROUND = 512  # per trainer; more finished episodes in one round are summarised by the newest
GLOO_LOOP_THREAD = "gloo_tcp_loop"  # the kernel name of gloo's TCP event-loop thread


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


class Stopped(Exception):
    """Asked to stop (SIGTERM, Ctrl-C) before the group formed: nothing to save, the trainer exits at once."""


def setup(rank: int, world_size: int, master_addr: str, master_port: int, backend: str, device: str,
          timeout_s: float, stop: threading.Event | None = None) -> Group:
    """Join the trainers' process group (gloo on CPU, NCCL with CUDA). `stop` set while waiting for the other
    ranks (a pod deleted during a gang restart, Ctrl-C) raises `Stopped` within 0.1 s, not at the timeout."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1} (WORLD_SIZE={world_size})")
    dev = pick_device(device)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("the nccl backend needs --device cuda")
    stop = stop or threading.Event()
    log.info("joining process group: rank %d/%d via %s:%d (%s, %s)", rank, world_size, master_addr, master_port,
             backend, dev)
    # torch's store client, refused, tries again only ~0.4 s later: whenever rank 1 of `a2c local` got there
    # before rank 0 (which forks its evaluator first), the group formed that much later (a2c/ports.py)
    if rank > 0 and not ports.await_listening(master_addr, master_port, timeout_s, stop):
        if stop.is_set():
            raise Stopped(f"asked to stop while waiting for rank 0's rendezvous {master_addr}:{master_port}")
        raise RuntimeError(f"rank 0's rendezvous {master_addr}:{master_port} accepted no connection within "
                           f"{timeout_s:g} s (--dist-timeout-s)")
    _init_process_group(stop, backend=backend, init_method=f"tcp://{master_addr}:{master_port}", rank=rank,
                        world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
    if backend == "gloo" and cores.pinned():  # sharing a core with its player: gloo's spin waits (a2c/cores.py)
        idled = cores.idle_threads(GLOO_LOOP_THREAD)
        log.info("gloo's event loop at SCHED_IDLE (thread %s)", ", ".join(map(str, idled)) or "not found")
    return Group(rank=rank, world_size=world_size, backend=backend, device=dev)


def _init_process_group(stop: threading.Event, **kwargs: Any) -> None:
    """`dist.init_process_group` in a thread of its own. It waits in C++ until every rank has come (up to the
    timeout), and a signal handler runs only between Python instructions of the main thread: called there, a
    trainer asked to stop while a peer was missing went on waiting up to --dist-timeout-s (120 s), past a pod's
    grace period. If `stop` comes first, the thread is left to the process's exit (a daemon, blocked in C++)."""
    failed: list[BaseException] = []

    def join() -> None:
        try:
            dist.init_process_group(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=join, name="a2c-rendezvous", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        if thread.is_alive() and stop.is_set():
            raise Stopped("asked to stop while the process group was forming (a peer had not come)")
    if failed:
        raise failed[0]


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


ROW = 4 + 2 * MAX_EPISODES_PER_ROUND  # one trainer's share of a round: counts, stop flag, episodes


@dataclass
class Totals:
    """What every trainer agrees on after a round (identical on every rank)."""

    samples: int = 0
    env_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    stop_requested: bool = False
    samples_per_rank: list[int] = field(default_factory=list)


def share(samples: int, env_steps: int, returns: list[float], lengths: list[int], stop: bool, rank: int = 0,
          world_size: int = 1) -> torch.Tensor:
    """This trainer's round as a row in slot `rank` of a zero [world_size * ROW] vector: summed over the
    trainers (it rides the gradient all-reduce, `learner`), the vector holds every trainer's row."""
    returns, lengths = returns[-MAX_EPISODES_PER_ROUND:], lengths[-MAX_EPISODES_PER_ROUND:]
    n = len(returns)
    buf = torch.zeros(world_size * ROW, dtype=torch.float64)
    row = buf[rank * ROW:(rank + 1) * ROW]
    row[0], row[1], row[2], row[3] = samples, env_steps, n, float(stop)
    if n:
        row[4:4 + n] = torch.tensor(returns, dtype=torch.float64)
        row[4 + MAX_EPISODES_PER_ROUND:4 + MAX_EPISODES_PER_ROUND + n] = torch.tensor(lengths, dtype=torch.float64)
    return buf


def totals(shares: torch.Tensor) -> Totals:
    """The job's round from the summed shares of every trainer (rank order)."""
    rows = shares.detach().cpu().double().reshape(-1, ROW)
    out_returns: list[float] = []
    out_lengths: list[int] = []
    for row in rows:
        k = int(round(float(row[2])))
        out_returns.extend(row[4:4 + k].tolist())
        lengths = row[4 + MAX_EPISODES_PER_ROUND:4 + MAX_EPISODES_PER_ROUND + k]
        out_lengths.extend(int(round(x)) for x in lengths.tolist())
    counts = [int(round(float(r[0]))) for r in rows]
    return Totals(
        samples=sum(counts),
        env_steps=sum(int(round(float(r[1]))) for r in rows),
        episode_returns=out_returns,
        episode_lengths=out_lengths,
        stop_requested=any(float(r[3]) > 0.5 for r in rows),
        samples_per_rank=counts,
    )


class GradientSum:
    """DDP's gradient all-reduce as a SUM across trainers, not DDP's average (each trainer's loss is a sum over
    its samples; the learner divides the summed gradients by the job's sample count), with a float64 vector
    riding the first bucket (the update's loss terms and every trainer's `share`): summed in the same
    collective and written back in place. One all-reduce per update, not one for the gradients and one for
    the rest."""

    def __init__(self) -> None:
        self.seconds = 0.0  # spent in the all-reduce during the last `backward`
        self._rider: torch.Tensor | None = None

    def attach(self, ddp: DistributedDataParallel) -> None:
        ddp.register_comm_hook(self, _sum_hook)

    def backward(self, loss: torch.Tensor, rider: torch.Tensor) -> None:
        """`loss.backward()`, its gradients summed across the group and `rider` with them (in place)."""
        self.seconds = 0.0
        self._rider = rider
        loss.backward()
        if self._rider is not None:  # no bucket was reduced (no gradients): reduce it alone
            self._rider = None
            start = time.perf_counter()
            dist.all_reduce(rider)
            self.seconds += time.perf_counter() - start

    def release(self) -> None:
        self._rider = None


def _sum_hook(state: GradientSum, bucket: Any) -> torch.futures.Future[torch.Tensor]:
    """`GradientSum`'s hook: the bucket's gradients, and the rider with the first bucket, summed in one all-reduce."""
    start = time.perf_counter()
    grads, rider = bucket.buffer(), state._rider
    if rider is not None:
        state._rider = None
        buf = torch.cat([grads, rider.to(grads.dtype)])
    else:
        buf = grads
    fut = dist.all_reduce(buf, async_op=True).get_future()  # type: ignore[union-attr]

    def done(f: torch.futures.Future[Any]) -> torch.Tensor:
        state.seconds += time.perf_counter() - start
        out = f.value()[0]
        if rider is None:
            return out  # type: ignore[no-any-return]
        rider.copy_(out[grads.numel():])
        return out[:grads.numel()]  # type: ignore[no-any-return]

    return fut.then(done)


# DDP checks the hook's annotations as objects (this module's are strings under `from __future__`).
_sum_hook.__annotations__.update(bucket=dist.GradBucket, **{"return": torch.futures.Future[torch.Tensor]})


def broadcast_object(obj: object, device: torch.device) -> object:
    """Rank 0's object on every rank (the resumed checkpoint)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]
