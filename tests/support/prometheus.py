"""Reading this process's metrics back, through prometheus_client's public registry."""

from __future__ import annotations

from prometheus_client import REGISTRY


def total(name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (over this process's other labels)."""
    return sum(s.value for m in REGISTRY.collect() for s in m.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def refused(reason: str) -> float:
    """a2c_trainer_rollouts_refused_total{reason=...}."""
    return total("a2c_trainer_rollouts_refused_total", reason=reason)
