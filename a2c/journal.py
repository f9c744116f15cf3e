"""What trainer 0 records per iteration and per evaluation: metrics.jsonl, and TensorBoard if asked for.

Data flow: `trainer` (training rows, on its loop) and `evaluator` results (eval rows, on the evaluator's
reader thread) -> `Journal.write` -> one JSON line in <run_dir>/metrics.jsonl (read by `supervisor` for
the progress bar and by `curve` for the picture) and, with --tensorboard DIR, the same numbers as
TensorBoard scalars against env_steps (`tensorboard --logdir DIR`).

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
    """Appends rows to metrics.jsonl (and TensorBoard); thread-safe."""

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
