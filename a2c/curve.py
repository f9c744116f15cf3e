"""The learning-curve picture a local run leaves behind (from its metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a torn last line (a killed writer) is skipped."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def preload() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def plot(journal: Path, out: Path, target: float | None = None, title: str = "") -> Path:
    """Mean return of the last episodes against env steps and wall time; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_journal(journal) if r.get("mean_return") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "env_steps", "environment steps"), (axes[1], "time_s", "wall time (s)")):
        ax.plot([r[key] for r in rows], [r["mean_return"] for r in rows], color="tab:blue", lw=1.5)
        if target is not None:
            ax.axhline(target, color="tab:green", ls="--", lw=1, label=f"target {target:g}")
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel("mean return (last 100 episodes)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "a2c learning curve")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
