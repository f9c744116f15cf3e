"""Which CPU core each process of `a2c local` runs on, when its processes outnumber the cores.

At --max-policy-lag 0 a trainer and its players take turns: the players act while the trainer waits for
their rollouts, the trainer trains while they wait for its weights. Left to the scheduler, four such
processes on two cores migrate between cores and land a trainer beside another pair's player; pinned, a
trainer and its players share one core, and the rollout a player writes is read by its trainer from the
same core's cache. On the 2-core build machine `a2c local` ran 33-45% more env steps per second at 64
envs and 6-19% more at 256 this way (`bench/throughput.py`, alternated; docs/benchmarks.md). With at least as many
cores as processes, or trainers that do not divide evenly over the cores, nothing is pinned
(`--pin-cores false`: never).

Side processes (the periodic evaluator) get the cores the pinned process had before (`release`).

A pinned trainer's gloo event-loop thread runs at SCHED_IDLE (`idle_threads`, from distributed.setup):
gloo's TCP transport busy-polls while a peer's data waits for a receive buffer this side has not posted
yet (gloo/transport/tcp/pair.cc, `getBuffer`), which is every all-reduce the other trainer reaches first.
On a shared core that spin took the core from the trainer's own backward pass, which the peer then waits
for; at SCHED_IDLE it spins only on time nobody else on the core wants. Measured on the 2-core build
machine (medians of alternated runs, docs/benchmarks.md): 64 envs 91k -> 105k env steps/s, 256 envs 250k -> 289k,
--max-policy-lag 1 at 64 envs 114k -> 122k. The numbers a run computes do not change.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

_before: set[int] | None = None  # this process's cores before `pin`


def allowed() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def assign(role: str, index: int, trainers: int, players_per_trainer: int, cores: Sequence[int]) -> int | None:
    """The core of trainer `index` or player `index` (a player belongs to trainer index % trainers): its
    trainer's, cores[trainer % C]. None (not pinned) when there are at least as many cores as processes,
    or when the trainers do not divide evenly over the cores (pinning would leave cores idle)."""
    if role not in ("trainer", "player"):
        raise ValueError(f"role must be trainer or player, got {role!r}")
    if not cores or trainers < 1 or players_per_trainer < 0 or index < 0:
        raise ValueError(f"cannot assign {role} {index} of {trainers} trainer(s) to cores {list(cores)}")
    if len(cores) >= trainers * (1 + players_per_trainer) or trainers % len(cores):
        return None
    trainer = index if role == "trainer" else index % trainers
    return cores[trainer % len(cores)]


def pin(core: int) -> None:
    """Run this process on `core` only, remembering the cores it had for `release`."""
    global _before
    if _before is None:
        _before = set(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})


def pinned() -> bool:
    """Whether this process has been pinned (`pin`)."""
    return _before is not None


def idle_threads(name: str) -> list[int]:
    """Put this process's threads whose kernel name (/proc/self/task/<tid>/comm) is `name` under SCHED_IDLE:
    they run only when nothing else on their core is runnable. Returns their thread ids (none: no such thread)."""
    changed = []
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        changed.append(tid)
    return changed


def release(pid: int) -> None:
    """Give process `pid` (a side process this one started) the cores this one had before `pin`; nothing
    when this process was not pinned."""
    if _before is not None:
        with contextlib.suppress(ProcessLookupError):  # it has already exited: nothing to give
            os.sched_setaffinity(pid, _before)
