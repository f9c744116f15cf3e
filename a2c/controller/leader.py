"""Leader election over a coordination.k8s.io Lease (the official client's `leaderelection`), so two
controller replicas never reconcile at once.

Data flow: `commands.run_controller` wraps the reconcile loop in `Election.run(work, stop_work, stopped)`:
the candidate campaigns for the Lease in a background thread; once it holds it, `work` (the loop) runs;
if a renewal fails, `stop_work` is called and `run` returns 1 so the pod restarts and campaigns again (a
replica that may have lost the lease must stop acting at once: another one may already hold it). SIGTERM
sets `stopped` and `run` returns 0; the lease then expires after `lease_duration_s` and a standby takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger(__name__)


def identity() -> str:
    """This replica's name in the Lease: the pod's name (downward API) plus a random suffix per process."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Election:
    def __init__(self, name: str, namespace: str, lease_duration_s: int = 15, renew_deadline_s: int = 10,
                 retry_period_s: int = 2) -> None:
        self.name, self.namespace, self.identity = name, namespace, identity()
        self.lease_duration_s, self.renew_deadline_s, self.retry_period_s = (
            lease_duration_s, renew_deadline_s, retry_period_s)
        self.leading = False
        self.lost = threading.Event()

    def run(self, work: Callable[[], None], stop_work: Callable[[], None], stopped: threading.Event) -> int:
        """Campaign; run `work` while leading. 0 when `stopped` was set, 1 when the lease was lost."""

        def started() -> None:
            self.leading = True
            log.info("leader election: %s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
            work()

        def lost() -> None:
            self.leading = False
            if not stopped.is_set():
                log.error("leader election: %s lost Lease %s/%s; stopping", self.identity, self.namespace, self.name)
                self.lost.set()
                stop_work()

        cfg = electionconfig.Config(LeaseLock(self.name, self.namespace, self.identity), self.lease_duration_s,
                                    self.renew_deadline_s, self.retry_period_s, started, lost)
        log.info("leader election: %s campaigns for Lease %s/%s", self.identity, self.namespace, self.name)
        threading.Thread(target=leaderelection.LeaderElection(cfg).run, name="leader-election", daemon=True).start()
        stopped.wait()  # SIGTERM, or `lost` (which stops the work)
        return 1 if self.lost.is_set() else 0
