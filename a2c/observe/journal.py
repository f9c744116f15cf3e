"""metrics.jsonl, the run's journal: the one module that writes, reads and follows it (and TensorBoard).

Data flow: trainer 0's `recorder` (training rows, on the trainer's loop; eval rows, on the periodic
evaluator's reader thread) -> `Journal.write` -> one JSON line in <run_dir>/metrics.jsonl and, with
--tensorboard DIR, the same numbers as TensorBoard scalars against env_steps (`tensorboard --logdir DIR`).
`Follower` tails the file while a local run goes (the launcher's progress bar, `supervisor`); `read`,
`training` and `evaluations` read it afterwards (`curve`'s picture, the benchmarks, the tests).

Rows: a training row has `mean_return` (and the loss terms); an evaluation row has `eval_mean_return`
instead (see `is_eval`). TensorBoard tags are `train/<key>` for a training row's numbers and
`eval/<key without eval_>` for an evaluation row's. One lock makes both writers safe; the file is
line-buffered so a reader never waits for a flush.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

FILE = "metrics.jsonl"  # in the run directory
INSTALL_HINT = "pip install 'a2c[tensorboard]' (or pip install tensorboard)"


class TensorBoardMissing(RuntimeError):
    """--tensorboard was given but the tensorboard package is not installed."""


def is_eval(row: dict[str, Any]) -> bool:
    """An evaluation row (greedy returns of one snapshot), not a training row."""
    return "eval_mean_return" in row


def require_tensorboard() -> None:
    """Raise TensorBoardMissing with the command that fixes it (call at start-up, not mid-run)."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it, and says so less clearly
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise TensorBoardMissing(f"--tensorboard needs the tensorboard package: {INSTALL_HINT} ({exc})") from exc


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> value of the finite numbers in a row (env_steps is the x axis, not a scalar)."""
    out: dict[str, float] = {}
    evaluation = is_eval(row)
    for key, value in row.items():
        if key == "env_steps" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        if evaluation:
            if key.startswith("eval_"):
                out[f"eval/{key[len('eval_'):]}"] = float(value)
        else:
            out[f"train/{key}"] = float(value)
    return out


class Journal:
    """Appends rows to metrics.jsonl (and TensorBoard); thread-safe. Trainer 0's writer."""

    def __init__(self, path: Path, tensorboard_dir: str = "") -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self._writer: Any = None
        if tensorboard_dir:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            Path(tensorboard_dir).mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=tensorboard_dir, flush_secs=10)

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row) + "\n"
        with self._lock:
            if self._file.closed:
                return  # a late evaluation result after the run ended: nothing left to record it in
            self._file.write(line)
            if self._writer is not None:
                step = int(row.get("env_steps", 0))
                for tag, value in scalars(row).items():
                    self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        with self._lock:
            self._file.close()
            if self._writer is not None:
                self._writer.close()


# --- reading ------------------------------------------------------------------------------------------


def _row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None  # a torn last line (a killed writer)
    return row if isinstance(row, dict) else None


def read(path: Path) -> list[dict[str, Any]]:
    """Every row of a metrics.jsonl (none if it does not exist yet); a torn line is skipped."""
    if not path.exists():
        return []
    return [row for row in map(_row, path.read_text().splitlines()) if row is not None]


def training(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training rows (one per iteration, in order), without the evaluation rows."""
    return [r for r in rows if not is_eval(r)]


def evaluations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation rows, by the env steps of the weights they evaluated."""
    return sorted((r for r in rows if is_eval(r)), key=lambda r: r["env_steps"])


class Follower:
    """Follows metrics.jsonl as trainer 0 appends to it: `last` training row, `last_eval` evaluation row."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.last: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None

    def poll(self) -> dict[str, Any] | None:
        """Read what was appended since the last poll (whole lines only); the newest training row."""
        if not self.path.exists():
            return self.last
        with self.path.open() as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind("\n")
        if end >= 0:
            self.offset += len(data[: end + 1].encode())
            for row in map(_row, data[: end + 1].splitlines()):
                if row is None:
                    continue
                if is_eval(row):
                    self.last_eval = row
                else:
                    self.last = row
        return self.last

    def eval_text(self) -> str:
        """'  eval 187.3 ± 12.1' for the progress bar, or '' before the first evaluation."""
        row = self.last_eval
        if row is None:
            return ""
        return f"  eval {row['eval_mean_return']:.1f} ± {row.get('eval_std_return', 0.0):.1f}"
