"""The local launcher's watch loop: progress bar, restarts of lost players, failure, Ctrl-C and SIGTERM handling.

Data flow: follows trainer 0's metrics.jsonl as it grows (`journal.Follower`: iteration, env steps, mean
return; the newest evaluation row's greedy return) for the bar; polls the child processes; ends when the
trainers end (or one fails, or the user interrupts).
"""

from __future__ import annotations

import multiprocessing.connection
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from a2c import config
from a2c.observe import journal

STOP_GRACE_S = 15.0


class Terminated(Exception):
    """SIGTERM reached the launcher (`timeout 1h a2c local`, a service manager): handled as Ctrl-C is, exit 143."""


def _terminated(*_: object) -> None:
    # the next SIGTERM is ignored until the children are stopped (`supervise`'s finally): `timeout` signals the
    # launcher, then its whole process group, and a second Terminated raised while the first was being handled
    # ended the launcher with a traceback and no summary
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def stop_all(children: list[Any], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every live child, then SIGKILL what is still alive after grace_s."""
    for c in children:
        if c.process is not None and c.process.is_alive():
            c.process.terminate()
    deadline = time.monotonic() + grace_s
    for c in children:
        if c.process is not None:
            c.process.join(max(0.0, deadline - time.monotonic()))
            if c.process.is_alive():
                c.process.kill()
                c.process.join(2.0)


def supervise(cfg: config.LocalConfig, run_dir: Path, children: list[Any], restart_player: Callable[[Any], object],
              restart_trainers: Callable[[], object], start: float) -> int:
    """Watch the run until the trainers end; returns the launcher's exit code."""
    console = Console(stderr=True, soft_wrap=True)
    follow = journal.Follower(run_dir / journal.FILE)
    trainers = [c for c in children if c.role == "trainer"]
    players = [c for c in children if c.role == "player"]
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f} steps"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, disable=not cfg.progress,
        refresh_per_second=4,
    )
    task = bar.add_task(cfg.env.env_id, total=cfg.stop.max_env_steps, info="starting")
    outcome = 0
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with bar:
            while True:
                row = follow.poll()
                if row is not None:
                    mean = row.get("mean_return")
                    bar.update(task, completed=row["env_steps"], info=(
                        f"it {row['iteration']:,}  {row.get('steps_per_s', 0):,.0f} steps/s  "
                        f"return {'-' if mean is None else f'{mean:.1f}'}{follow.eval_text()}"))
                failed = [t for t in trainers if t.process.exitcode not in (None, 0)]
                if failed:
                    t = failed[0]
                    gang_restarts = trainers[0].restarts
                    if gang_restarts >= cfg.max_trainer_restarts:
                        # every trainer that is down, not just the first in rank order: one lost trainer takes its
                        # peers down within a poll, so which one fell first is not told by the order
                        down = "; ".join(f"{f.name} failed (exit code {f.process.exitcode})" for f in failed)
                        console.print(f"[red]{down}; the log of {t.name} ({escape(str(t.log_path))}):[/red]\n"
                                      f"{escape(t.tail())}")
                        outcome = 1
                        break
                    console.print(f"[yellow]{t.name} exited with code {t.process.exitcode}; restarting every trainer "
                                  f"from the newest checkpoint ({gang_restarts + 1}/{cfg.max_trainer_restarts})"
                                  "[/yellow]")
                    restart_trainers()
                    continue
                if all(t.process.exitcode == 0 for t in trainers):
                    break
                for p in players:
                    code = p.process.exitcode
                    if code is None or code == 0:
                        continue
                    if p.restarts >= cfg.max_player_restarts:
                        console.print(f"[red]{p.name} failed {p.restarts + 1} times (exit code {code}); its log:"
                                      f"[/red]\n{escape(p.tail())}")
                        outcome = 1
                        break
                    p.restarts += 1
                    console.print(f"[yellow]{p.name} exited with code {code}; restarting it "
                                  f"({p.restarts}/{cfg.max_player_restarts})[/yellow]")
                    restart_player(p)
                if outcome:
                    break
                # wake when a child exits (the run's end is its trainers exiting), else poll the journal
                multiprocessing.connection.wait([c.process.sentinel for c in children if c.process.exitcode is None],
                                                timeout=0.1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every process (trainers write a final checkpoint)[/yellow]")
        outcome = 130
    except Terminated:
        console.print("[yellow]terminated (SIGTERM): stopping every process (trainers write a final checkpoint)"
                      "[/yellow]")
        outcome = 143
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
        stop_all(children)
        signal.signal(signal.SIGTERM, previous)
    row = follow.poll()
    elapsed = time.monotonic() - start
    if row is not None:
        mean = row.get("mean_return")
        solved = mean is not None and mean >= cfg.stop.target_return
        console.print(
            f"{'solved' if solved else 'stopped'}: {cfg.env.env_id} mean return "
            f"{'-' if mean is None else f'{mean:.1f}'} after {row['env_steps']:,} env steps, "
            f"{row['iteration']:,} iterations, {elapsed:.1f} s wall time; run directory {escape(str(run_dir))}")
    last_eval = follow.last_eval
    if last_eval is not None:
        console.print(f"last evaluation: greedy return {last_eval['eval_mean_return']:.1f} ± "
                      f"{last_eval.get('eval_std_return', 0.0):.1f} over {last_eval.get('eval_episodes', '?')} "
                      f"episodes at iteration {last_eval['iteration']:,} ({last_eval['env_steps']:,} env steps)")
    return outcome
