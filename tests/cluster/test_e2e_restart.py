"""A trainer lost mid-run, on a test cluster set as a real one is: the kubelet's restart back-off (10 s, doubling
to 5 min) and the pods' own terminationGracePeriodSeconds (no cap). The controller restarts the trainer gang;
the new trainer pods come back under new IPs (a new network namespace each), and the players, which kept
running, must find them by name within seconds: gRPC re-resolves a name at most every
`grpc.dns_min_time_between_resolutions_ms` (30 s by default; a2c/service/server.py sets 1 s).

Measured: from the new group being Ready (every new trainer pod's Ready condition, as the API shows it; and, as
the trainers see it, the latest of their "ready" log lines) to each player's first completed round with the
new group (its log line "first round with the trainers' generation ..."). The job's status iteration is polled
from the kill on: it never goes backwards past the checkpoint the group resumed from.

The stall gRPC's 30 s default causes is what is left of the cooldown from a channel's last resolution once the new
group is Ready. After the kill that varies (the group is Ready 20-47 s after it: the kubelet's 10 s back-off, then
the gang restart; with the default, players came 0.02 and 0.24 s after the trainers' 'ready' in two runs, 5.2 s in
a third). So the trainer pods are then evicted at once, right after the players resolved the new names: that
group is back in ~15-25 s, inside the cooldown (with the default the players came 16.6 s after it).
tests/test_client_reresolve.py reproduces the stall in isolation (30.0 s) and pins the option.

Through a gang restart the trainers' names resolve to nothing (the old pods deleted, the new ones without an IP
yet), and gRPC's resolver backs off after each failed lookup (1 s, x1.6, up to 120 s): with pods as containers,
where that lasted longer, one player came 6.4-6.8 s after Ready in 2 of 4 runs, 43.2 s in another. The client
now replaces a channel that has failed for a second (a2c/service/client.py; tests/test_client_reresolve.py).
"""

from __future__ import annotations

import datetime
import math
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import node
from tests.cluster.apiserver import APIServer
from tests.cluster.conftest import ADMIN_TOKEN, NS, Chart, Cluster
from tests.cluster.journeys import JOB, phase, values

CATCH_UP_S = 5.0  # the goal: a player's first round within 5 s of the new group being Ready
INTERVAL = 10  # checkpoint interval (iterations)


@pytest.fixture
def real_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """conftest's `cluster`, with the kubelet's real restart back-off and no cap on the termination grace."""
    node.require_root()
    with APIServer(tls=True, anonymous=False, rbac=True, graceful_pods=True, namespaces=("default",)) as api:
        api.add_token(ADMIN_TOKEN, "e2e:admin")
        with node.Node.for_apiserver(api, backoff_s=(10.0, 300.0), grace_cap_s=math.inf) as n:
            yield Cluster(api, n, tmp_path)
            assert not n.errors, n.errors


def _logged_at(line: str) -> float:
    """The epoch time of a log line of ours ("%(asctime)s ...": local time, milliseconds after a comma)."""
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def _trainers(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in cluster.pods("trainer")}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class IterationLog:
    """The job's status.iteration, read at every poll (0.25 s) of the test's waits from the kill on (`wait`)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: list[int] = []  # each change of status.iteration

    def wait(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        def polled() -> Any:
            iteration = self.cluster.status(JOB).get("iteration")
            if iteration is not None and (not self.seen or self.seen[-1] != int(iteration)):
                self.seen.append(int(iteration))
            return predicate()

        return self.cluster.wait(polled, timeout_s, what)


@dataclass
class Regroup:
    """A new trainer group, and when each player first completed a round with it."""

    ips: dict[str, str]  # trainer pod -> its IP
    uids: set[str]
    ready_at: float  # when the API first showed every new trainer pod Ready (polled every 0.25 s)
    serving_at: float  # the latest of the new trainers' own "ready" log lines
    resumed: int  # the version trainer 0 resumed at
    first_round: dict[str, float]  # player pod -> its first round with the new group

    def figures(self) -> str:
        return ("players' first round after Ready (API): "
                + ", ".join(f"{n} {at - self.ready_at:+.2f} s" for n, at in self.first_round.items())
                + f"; the trainers' own 'ready' {self.serving_at - self.ready_at:+.2f} s from Ready, players after it: "
                + ", ".join(f"{n} {at - self.serving_at:+.2f} s" for n, at in self.first_round.items()))

    def check(self, before: dict[str, str]) -> None:
        assert all(self.ips[name] != ip for name, ip in before.items()), ("pod IPs unchanged", before, self.ips)
        late = {n: at - since for n, at in self.first_round.items() for since in (self.ready_at, self.serving_at)
                if at - since > CATCH_UP_S}
        assert not late, (f"players' first round more than {CATCH_UP_S} s after the group was Ready", late,
                          self.figures())


def _regroup(cluster: Cluster, progress: IterationLog, old_uids: set[str], replicas: int) -> Regroup:
    """Wait for a new trainer group (no pod of `old_uids`) to be Ready and every player's first round with it."""
    def ready() -> bool:
        now = _trainers(cluster)
        return len(now) == replicas and all(p["metadata"]["uid"] not in old_uids and _ready(p) for p in now.values())

    progress.wait(ready, 300, "the new trainer group to be Ready")
    ready_at = time.time()
    new = _trainers(cluster)
    logs = {name: cluster.node.logs(NS, name) for name in new}
    published = {name: re.search(r"^(.{23}) .*trainer \d+ ready: weights version \d+ \(generation (\w+)\)", log, re.M)
                 for name, log in logs.items()}
    assert all(published.values()), logs
    generation = published[f"{JOB}-trainer-0"].group(2)  # type: ignore[union-attr]
    resumed = int(re.findall(r"trainer 0 resumed at version (\d+)", logs[f"{JOB}-trainer-0"])[-1])
    players = sorted(p["metadata"]["name"] for p in cluster.pods("player"))
    pattern = re.compile(rf"^(.{{23}}) .*first round with the trainers' generation {generation} done", re.M)

    def caught_up() -> dict[str, float] | None:
        found = {name: pattern.search(cluster.node.logs(NS, name)) for name in players}
        return {name: _logged_at(m.group(1)) for name, m in found.items() if m} if all(found.values()) else None

    first_round = progress.wait(caught_up, 60, "every player's first round with the new trainer group")
    return Regroup({name: p["status"]["podIP"] for name, p in new.items()},
                   {p["metadata"]["uid"] for p in new.values()}, ready_at,
                   max(_logged_at(m.group(1)) for m in published.values() if m), resumed, first_round)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_lost_trainer_costs_the_players_seconds_after_the_new_group_is_ready(real_cluster: Cluster) -> None:
    cluster = real_cluster
    cluster.install(Chart.render(values(stop={"targetReturn": 10_000.0, "maxEnvSteps": 10**12},
                                        checkpoint={"interval": INTERVAL})))
    # status (not only the journal) past a checkpoint: what a drop during the restart would go back from
    cluster.wait(lambda: phase(cluster) == "Running" and cluster.status(JOB).get("iteration", 0) >= INTERVAL + 5,
                 300, "status to show a checkpoint and five rounds after it")
    old = _trainers(cluster)
    progress = IterationLog(cluster)
    progress.wait(lambda: True, 5, "a first reading of status")

    # a trainer's process dies: the kubelet restarts its container (10 s back-off), the controller the gang
    cluster.node.kill(NS, f"{JOB}-trainer-1", signal.SIGKILL)
    killed = time.time()
    progress.wait(lambda: cluster.status(JOB).get("gangRestarts") == 1, 180, "a gang restart")
    restarted = time.time()
    crash = _regroup(cluster, progress, {p["metadata"]["uid"] for p in old.values()}, len(old))

    # at once, the trainer pods are evicted (a node drained, `kubectl delete pod`): they stop at the next round with
    # a final checkpoint and come back in ~20 s, while the players' channels resolved the name moments ago: with
    # gRPC's 30 s default they would wait out the rest of it
    evicted = time.time()
    cluster.kubectl("delete", "pod", *sorted(crash.ips), "--wait=false")
    evict = _regroup(cluster, progress, crash.uids, len(old))
    beyond = max(progress.seen[0], evict.resumed) + 5  # status had shown seen[0] before the kill
    progress.wait(lambda: cluster.status(JOB).get("iteration", 0) >= beyond, 120,
                  "status to show five rounds past what it showed before the kill")
    print(f"e2e lost trainer (SIGKILL): status says gang restart {restarted - killed:.1f} s after the kill, group "
          f"Ready (API) {crash.ready_at - restarted:.1f} s later; {crash.figures()}; resumed at {crash.resumed}")
    print(f"e2e evicted trainers: group Ready (API) {evict.ready_at - evicted:.1f} s after the delete; "
          f"{evict.figures()}; resumed at {evict.resumed}")
    old_ips = {name: p["status"]["podIP"] for name, p in old.items()}
    print(f"e2e status iterations {progress.seen}; pod IPs {old_ips} -> {crash.ips} -> {evict.ips}")
    crash.check(old_ips)
    evict.check(crash.ips)

    # status iteration: it only goes back to the checkpoint a group resumed from, never below
    seen = progress.seen
    drops = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b < a]
    assert all(b >= crash.resumed for _, b in drops), (crash.resumed, drops, seen)
    assert seen[0] >= INTERVAL + 5 and max(seen) >= beyond, seen
