"""The learning-curve picture a local run leaves behind (from its metrics.jsonl).

Data flow: trainer 0's metrics.jsonl -> `journal.read` -> `plot`: the training rows' moving mean return as
a line, the evaluation rows as markers with ± std error bars, against env steps and against wall time.
"""

from __future__ import annotations

from pathlib import Path

from a2c import journal as journal_mod


def preload() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def plot(journal: Path, out: Path, target: float | None = None, title: str = "") -> Path:
    """Mean return of the last episodes (and evaluations) against env steps and wall time; the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = journal_mod.read(journal)
    rows = [r for r in journal_mod.training(everything) if r.get("mean_return") is not None]
    evals = journal_mod.evaluations(everything)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # fixed margins: constrained_layout measured every label first, 0.05 of the plot's 0.18 s (it ends a run)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.13, top=0.88, wspace=0.2)
    for ax, key, label in ((axes[0], "env_steps", "environment steps"), (axes[1], "time_s", "wall time (s)")):
        ax.plot([r[key] for r in rows], [r["mean_return"] for r in rows], color="tab:blue", lw=1.5,
                label="training (mean of the last episodes)")
        if evals:
            ax.errorbar([r[key] for r in evals], [r["eval_mean_return"] for r in evals],
                        yerr=[r.get("eval_std_return", 0.0) for r in evals], fmt="o", ms=4, color="tab:orange",
                        ecolor="tab:orange", elinewidth=1, capsize=3,
                        label=f"greedy evaluation ({evals[-1].get('eval_episodes', '?')} episodes, ± std)")
        if target is not None:
            ax.axhline(target, color="tab:green", ls="--", lw=1, label=f"target {target:g}")
        if evals or target is not None:
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "a2c learning curve")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
