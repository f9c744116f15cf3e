"""supervisor.py: the progress bar's reader of metrics.jsonl keeps training and evaluation rows apart."""

from __future__ import annotations

import json
from pathlib import Path

from a2c import supervisor


def test_journal_poll_follows_training_rows_and_remembers_the_newest_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    follow = supervisor.Journal(path)
    assert follow.poll() is None and follow.eval_text() == ""
    train = {"iteration": 7, "env_steps": 896, "mean_return": 30.5, "steps_per_s": 1000.0}
    evaluation = {"iteration": 5, "env_steps": 640, "time_s": 1.0, "eval_mean_return": 187.25, "eval_std_return": 12.0}
    with path.open("a") as f:
        f.write(json.dumps(train) + "\n" + json.dumps(evaluation) + "\n" + '{"iteration": 8')  # last line torn
    assert follow.poll() == train, "an evaluation row is not the newest training row"
    assert follow.last_eval == evaluation and follow.eval_text() == "  eval 187.2 ± 12.0"
    with path.open("a") as f:
        f.write(', "env_steps": 1024, "mean_return": 31.0}\n')
    assert follow.poll() == {"iteration": 8, "env_steps": 1024, "mean_return": 31.0}
    assert follow.last_eval == evaluation
