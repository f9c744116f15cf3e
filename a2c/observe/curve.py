"""The learning-curve picture a local run leaves behind (from its metrics.jsonl).

Data flow: trainer 0's metrics.jsonl -> `journal.read` -> `plot`: the training rows' moving mean return as
a line, the evaluation rows as markers with ± std error bars, against env steps and against wall time.

`a2c local` draws it through a `Painter`: a side process (`python -m a2c.observe.curve`) started before the launcher
imports torch. It imports matplotlib and draws a first picture (~0.4 s of CPU) on the core the launcher's
own imports leave idle; done in the launcher after the fork, that work slowed the first rounds of training
by 0.13 s in all. At the end it gets one JSON line (what to draw) and answers one (the PNG's path, or the
error).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import select
import subprocess
import sys
from pathlib import Path

from a2c import processes
from a2c.observe import journal as journal_mod

log = logging.getLogger(__name__)


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


def warm_up() -> None:
    """Import matplotlib and draw a small throw-away picture (fonts, the Agg renderer), so that the real
    one costs only its own drawing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(3, 2))
    ax[0].errorbar([0, 1], [0, 1], yerr=[0.5, 0.5], fmt="o", label="x")
    ax[0].legend(loc="lower right")
    fig.suptitle("a2c")
    fig.savefig(io.BytesIO(), format="png", dpi=30)
    plt.close(fig)


class Painter:
    """`plot` in a side process started now (see the module docstring). Whatever happens to that process,
    `plot` draws the picture: here, when the side process is gone, hangs, or could not draw it."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.process: subprocess.Popen[str] | None = None
        try:
            # its own session: a terminal's Ctrl-C is the launcher's (which then ends it: end of input)
            self.process = processes.start(command or processes.command("a2c.observe.curve"), text=True)
        except OSError as exc:
            log.warning("the learning-curve process could not start (%s): the picture is drawn here", exc)

    def plot(self, journal: Path, out: Path, target: float | None = None, title: str = "",
             timeout_s: float = 60.0) -> Path:
        """The picture of `journal` at `out` (as `plot`). The side process's answer is read, its exit not
        waited for (`close`)."""
        proc = self.process
        why = "it did not start"
        if proc is not None and proc.stdin is not None and proc.stdout is not None:
            request = {"journal": str(journal), "out": str(out), "target": target, "title": title}
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
                line = proc.stdout.readline() if ready else ""
                reply = json.loads(line) if line.strip() else {}
                if "path" in reply:
                    return Path(reply["path"])
                why = reply.get("error") or (f"no answer within {timeout_s:g} s" if not ready else
                                             f"it ended without an answer (exit code {proc.poll()})")
            except (OSError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            self.close(kill=True)
        log.warning("the learning-curve process did not draw the picture (%s): drawing it here", why)
        return plot(journal, out, target, title)

    def close(self, kill: bool = False, wait_s: float = 0.0) -> None:
        """End the side process: end of its input (it exits by itself), or SIGKILL; wait up to wait_s."""
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        if kill:
            with contextlib.suppress(OSError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)


def main() -> int:
    """`python -m a2c.observe.curve`: warm up, then draw the one picture asked for on stdin (nothing at end of
    input)."""
    warm_up()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    try:
        request = json.loads(line)
        path = plot(Path(request["journal"]), Path(request["out"]), request["target"], request["title"])
    except Exception as exc:  # noqa: BLE001 - told to the launcher, which draws it itself (and sees it fail)
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"path": str(path)}), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # no interpreter teardown (~80 ms with matplotlib): the launcher's caller may be reading until this
    # process, which shares its stderr, has gone
    os._exit(code)
