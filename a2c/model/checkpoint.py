"""Checkpoints: written atomically by trainer 0, read back on every (re)start.

Data flow: trainer 0 -> `save` every --checkpoint-interval iterations and at the end; on start, rank 0
-> `load_latest` -> broadcast to every rank, so the whole group resumes from one state. Beside them,
with --keep-best, trainer 0's periodic evaluator -> `save_best`: `checkpoints/best.pt`, the weights of the
best evaluation so far (`Best`, below; `a2c eval --best` plays it). It is never resumed from (it has
no optimizer state) and never pruned; `best_score` reads its evaluation back when a run resumes.

Atomic: the file is written to a temporary name in the same directory, flushed and fsynced, then
renamed over its final name (rename is atomic on POSIX), so a killed trainer never leaves a torn file.
A newest checkpoint that fails to load is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^ckpt-(\d{9})\.pt$")
BEST = "best.pt"  # not matched by PATTERN: never resumed from, never pruned


def path_for(run_dir: Path, version: int) -> Path:
    return run_dir / "checkpoints" / f"ckpt-{version:09d}.pt"


def best_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / BEST


def _write(final: Path, obj: dict[str, Any]) -> None:
    """torch.save to a temporary name in the same directory, fsync, rename over `final`, fsync the directory."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def save(run_dir: Path, version: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write `state` as the checkpoint of `version`, atomically; keep only the newest `keep`."""
    final = path_for(run_dir, version)
    _write(final, {"version": version, **state})
    others = [p for p in list_checkpoints(run_dir) if p != final]
    for old in others[: max(0, len(others) - (keep - 1))] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def save_best(run_dir: Path, version: int, state: dict[str, Any]) -> Path:
    """Write `state` (model, config, progress, and `eval`: the evaluation that made it the best) as best.pt,
    atomically, over the previous best."""
    final = best_path(run_dir)
    _write(final, {"version": version, **state})
    return final


def best_score(run_dir: Path) -> float | None:
    """The mean evaluation return recorded in best.pt; None when there is none (or it does not load: the next
    evaluation then replaces it, with a warning here)."""
    path = best_path(run_dir)
    if not path.exists():
        return None
    try:
        return float(load(path)["eval"]["mean_return"])
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a torn or foreign file
        log.warning("%s does not load (%s): the next evaluation replaces it", path, exc)
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.match(p.name))


def load(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "version" not in state or "model" not in state:
        raise ValueError(f"{path} is not an a2c checkpoint")
    return state


class Unreadable(ValueError):
    """No candidate checkpoint loads; `errors` says why for each one tried, newest first."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors[0] if len(errors) == 1 else "no readable checkpoint: " + "; ".join(errors))
        self.errors = errors


def load_first(candidates: list[Path]) -> tuple[Path, dict[str, Any]]:
    """(path, state) of the first of `candidates` that loads, warning for each one skipped; else `Unreadable`."""
    errors: list[str] = []
    for i, path in enumerate(candidates):
        try:
            return path, load(path)
        except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a torn or foreign file
            errors.append(str(exc) if str(path) in str(exc) else f"{path} is not a readable a2c checkpoint: {exc}")
            if i + 1 < len(candidates):
                log.warning("%s; trying the previous one", errors[-1])
    raise Unreadable(errors)


def load_latest(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; older ones are tried when the newest is corrupt. None: nothing loads."""
    candidates = list(reversed(list_checkpoints(run_dir)))
    if not candidates:
        return None
    try:
        path, state = load_first(candidates)
    except Unreadable as exc:
        log.warning("%s", exc)
        return None
    log.info("resuming from %s (version %d)", path, state["version"])
    return state


class Best:
    """Trainer 0's keeper of best.pt: offered every periodic evaluation (on the evaluator's thread), it writes
    the evaluated weights when their mean greedy return beats every earlier one of the run (strictly, as
    Stable-Baselines3's EvalCallback: of equal scores the first is kept). A resumed run starts from the score
    in best.pt, so a restart never replaces a better policy with a worse one."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir, self.config = run_dir, config
        self.score = best_score(run_dir)

    def offer(self, version: int, env_steps: int, evaluation: dict[str, Any], tensors: dict[str, Any]) -> bool:
        """Keep these weights (numpy arrays by state-dict key) if `evaluation["mean_return"]` is the best yet;
        True if they were written."""
        score = float(evaluation["mean_return"])
        if self.score is not None and not score > self.score:
            return False
        model = {k: torch.as_tensor(v).clone() for k, v in tensors.items()}
        path = save_best(self.run_dir, version, {"model": model, "config": self.config, "eval": dict(evaluation),
                                                 "progress": {"env_steps": env_steps}})
        self.score = score
        log.info("best checkpoint %s: version %d, evaluation return %.2f", path, version, score)
        return True
