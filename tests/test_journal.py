"""journal.py: metrics.jsonl rows from two threads, the same numbers in TensorBoard, a clear error without it;
reading the file back, and following it while it grows."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from a2c import config
from a2c.launch import local
from a2c.learning import trainer
from a2c.observe import journal

TRAIN = {"iteration": 3, "env_steps": 384, "mean_return": 21.5, "episodes": 12, "time_s": 1.25, "steps_per_s": 300.0,
         "policy_loss": -0.5, "value_loss": 2.0, "entropy": 0.69, "grad_norm": 1.5}
EVAL = {"iteration": 2, "env_steps": 256, "time_s": 1.0, "eval_mean_return": 9.5, "eval_std_return": 0.5,
        "eval_mean_length": 9.5, "eval_episodes": 2, "eval_seed": 0, "eval_seconds": 0.01}


def test_rows_are_told_apart_and_mapped_to_tags() -> None:
    assert journal.is_eval(EVAL) and not journal.is_eval(TRAIN)
    assert journal.scalars(TRAIN)["train/mean_return"] == 21.5 and "train/env_steps" not in journal.scalars(TRAIN)
    assert set(journal.scalars(EVAL)) == {"eval/mean_return", "eval/std_return", "eval/mean_length", "eval/episodes",
                                          "eval/seed", "eval/seconds"}
    assert "train/mean_return" not in journal.scalars({**TRAIN, "mean_return": None}), "no return yet: no point"


def test_two_writers_never_tear_a_line(tmp_path: Path) -> None:
    """The trainer's loop and the evaluator's thread write at once: every line stays one whole row."""
    j = journal.Journal(tmp_path / "metrics.jsonl")

    def write(row: dict[str, object]) -> None:
        for i in range(2000):
            j.write({**row, "iteration": i})

    threads = [threading.Thread(target=write, args=(row,)) for row in (TRAIN, EVAL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    j.write(TRAIN)  # a late evaluation after the end is dropped, not an error
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4000 and sum(journal.is_eval(r) for r in rows) == 2000


def test_tensorboard_gets_the_same_scalars_against_env_steps(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path / "metrics.jsonl", str(tmp_path / "tb"))
    j.write(TRAIN)
    j.write(EVAL)
    j.write({**TRAIN, "iteration": 4, "env_steps": 512, "mean_return": 30.0})
    j.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/mean_return", "train/policy_loss", "eval/mean_return", "eval/std_return"} <= tags
    assert [(e.step, e.value) for e in acc.Scalars("train/mean_return")] == [(384, 21.5), (512, 30.0)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/mean_return")] == [(256, 9.5)]


@pytest.fixture
def no_tensorboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError


@pytest.mark.usefixtures("no_tensorboard")
def test_without_the_package_the_flag_fails_at_start_up_with_the_fix(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(journal.TensorBoardMissing, match=r"pip install 'a2c\[tensorboard\]'"):
        journal.Journal(tmp_path / "metrics.jsonl", str(tmp_path / "tb"))
    run_dir = tmp_path / "run"
    cfg = config.LocalConfig(run_dir=str(run_dir), tensorboard=str(tmp_path / "tb"), progress=False)
    assert local.run(cfg) == 2
    err = capsys.readouterr().err
    assert "a2c local: --tensorboard needs the tensorboard package: pip install 'a2c[tensorboard]'" in err
    assert not run_dir.exists(), "refused before anything started"
    assert trainer.run(config.TrainerConfig(rank=0, run_dir=str(run_dir), tensorboard="tb", metrics_port=-1)) == 2
    journal.Journal(tmp_path / "metrics.jsonl").close()  # without the flag nothing needs it


def test_read_tells_training_and_evaluation_rows_apart(tmp_path: Path) -> None:
    path = tmp_path / journal.FILE
    late_eval = {**EVAL, "iteration": 1, "env_steps": 128}  # came back after the evaluation of iteration 2
    path.write_text("".join(json.dumps(r) + "\n" for r in (TRAIN, EVAL, late_eval)) + '{"iteration": 4, "env_st')
    rows = journal.read(path)
    assert rows == [TRAIN, EVAL, late_eval], "a torn last line is skipped"
    assert journal.training(rows) == [TRAIN]
    assert [r["env_steps"] for r in journal.evaluations(rows)] == [128, 256], "ordered by the weights' env steps"
    assert journal.read(tmp_path / "nothing-yet.jsonl") == []


def test_follower_follows_training_rows_and_remembers_the_newest_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    follow = journal.Follower(path)
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
