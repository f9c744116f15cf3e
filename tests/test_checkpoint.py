"""checkpoint: atomic save, keep the newest N, fall back past a corrupt newest one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import config
from a2c.model import agent, checkpoint


def state(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = agent.Agent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), config.AlgoConfig())
    opt = agent.make_optimizer(model, config.AlgoConfig())
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "progress": {"env_steps": 123 + seed}}


def names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_save_load_round_trip(tmp_path: Path) -> None:
    s = state()
    path = checkpoint.save(tmp_path, 42, s)
    assert path == tmp_path / "checkpoints" / "ckpt-000000042.pt" == checkpoint.path_for(tmp_path, 42)
    back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 42 and back["progress"] == {"env_steps": 123}
    assert back["model"].keys() == s["model"].keys()
    assert all(torch.equal(back["model"][k], v) for k, v in s["model"].items())
    assert back["optimizer"]["param_groups"] == s["optimizer"]["param_groups"]


def test_atomic_write_leaves_only_the_final_file(tmp_path: Path) -> None:
    for v in (1, 2):
        checkpoint.save(tmp_path, v, state())
    assert names(tmp_path) == ["ckpt-000000001.pt", "ckpt-000000002.pt"]


def test_nothing_appears_under_the_final_name_until_the_write_is_complete(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer killed mid-write (no exception handler runs) must leave no torn ckpt-*.pt behind."""
    during: list[list[str]] = []
    real_save = torch.save

    def spy(obj: object, f: Any) -> None:
        during.append(names(tmp_path))
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", spy)
    checkpoint.save(tmp_path, 7, state())
    (listing,) = during
    assert len(listing) == 1 and not checkpoint.PATTERN.match(listing[0]), listing  # one temp file, same folder
    assert names(tmp_path) == ["ckpt-000000007.pt"]


def test_a_failed_write_leaves_no_temp_file_and_the_previous_checkpoint(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint.save(tmp_path, 1, state())

    def dies_halfway(obj: object, f: Any) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 2, state())
    assert names(tmp_path) == ["ckpt-000000001.pt"]
    monkeypatch.undo()
    back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 1


def test_keeps_the_newest_n(tmp_path: Path) -> None:
    s = state()
    for v in (9, 10, 11, 100, 1000):  # numeric, not lexicographic, order
        checkpoint.save(tmp_path, v, s, keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-000000011.pt", "ckpt-000000100.pt", "ckpt-000001000.pt"]
    back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 1000


def test_keep_zero_keeps_everything(tmp_path: Path) -> None:
    for v in range(4):
        checkpoint.save(tmp_path, v, {"model": {}}, keep=0)
    assert len(checkpoint.list_checkpoints(tmp_path)) == 4


def test_corrupt_newest_falls_back_to_the_previous_with_a_warning(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    checkpoint.save(tmp_path, 1, state(1))
    newest = checkpoint.save(tmp_path, 2, state(2))
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    with caplog.at_level(logging.WARNING, logger="a2c.model.checkpoint"):
        back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 1 and back["progress"] == {"env_steps": 124}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(newest) in warnings[0].getMessage()
    assert "is not a readable a2c checkpoint" in warnings[0].getMessage()


def test_a_file_that_is_not_a_checkpoint_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkpoint.save(tmp_path, 1, state())
    torch.save({"weights": 1}, checkpoint.path_for(tmp_path, 5))
    with caplog.at_level(logging.WARNING, logger="a2c.model.checkpoint"):
        back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 1
    assert "is not an a2c checkpoint" in caplog.text
    with pytest.raises(ValueError, match="is not an a2c checkpoint"):
        checkpoint.load(checkpoint.path_for(tmp_path, 5))


def test_all_corrupt_gives_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkpoint.path_for(tmp_path, 1).parent.mkdir(parents=True)
    checkpoint.path_for(tmp_path, 1).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="a2c.model.checkpoint"):
        assert checkpoint.load_latest(tmp_path) is None
    assert "ckpt-000000001.pt" in caplog.text


def test_no_checkpoints_gives_none(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path) is None  # no folder
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".ckpt-abc.tmp").write_bytes(b"leftover temp file")
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "checkpoints" / "ckpt-1.pt").write_text("wrong name pattern")
    assert checkpoint.list_checkpoints(tmp_path) == []
    assert checkpoint.load_latest(tmp_path) is None


def test_save_never_deletes_the_checkpoint_it_just_wrote(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torn = checkpoint.save(tmp_path, 3, state(), keep=1)
    torn.write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="a2c.model.checkpoint"):
        assert checkpoint.load_latest(tmp_path) is None  # nothing to resume from: training starts over
    # ... and reaches version 2, older than the torn file's name
    written = checkpoint.save(tmp_path, 2, state(), keep=1)
    assert written.exists(), "the checkpoint just written was pruned"
    back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 2


# --- best.pt (--keep-best) ------------------------------------------------------------------------------


def tensors(seed: int) -> dict[str, np.ndarray]:
    """Weights as the evaluator gets them: the model's state dict as numpy arrays."""
    return {k: v.numpy().copy() for k, v in state(seed)["model"].items()}


def test_best_keeps_only_a_strictly_better_evaluation(tmp_path: Path) -> None:
    """The best so far, not the newest: a worse and an equal evaluation leave best.pt as it was."""
    best = checkpoint.Best(tmp_path, {"env": {"env_id": "CartPole-v1"}, "algo": {}})
    assert best.score is None
    assert best.offer(100, 1000, {"mean_return": 200.0}, tensors(1))
    assert not best.offer(200, 2000, {"mean_return": 150.0}, tensors(2)), "a worse policy replaced the best"
    assert not best.offer(300, 3000, {"mean_return": 200.0}, tensors(3)), "of equal scores the first is kept"
    kept = checkpoint.load(checkpoint.best_path(tmp_path))
    assert (kept["version"], kept["progress"], kept["eval"]) == (100, {"env_steps": 1000}, {"mean_return": 200.0})
    assert kept["config"] == {"env": {"env_id": "CartPole-v1"}, "algo": {}}
    assert all(torch.equal(kept["model"][k], torch.from_numpy(v)) for k, v in tensors(1).items())
    assert best.offer(400, 4000, {"mean_return": 250.0}, tensors(4))
    assert checkpoint.load(checkpoint.best_path(tmp_path))["version"] == 400
    assert names(tmp_path) == ["best.pt"], "written atomically: no temporary file left"


def test_a_resumed_run_starts_from_the_best_score_on_disk(tmp_path: Path) -> None:
    checkpoint.Best(tmp_path, {}).offer(100, 1000, {"mean_return": 300.0}, tensors(1))
    again = checkpoint.Best(tmp_path, {})  # the trainer restarted
    assert again.score == 300.0
    assert not again.offer(200, 2000, {"mean_return": 120.0}, tensors(2)), "the restart forgot the best"
    assert checkpoint.load(checkpoint.best_path(tmp_path))["version"] == 100


def test_a_torn_best_is_replaced_by_the_next_evaluation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = checkpoint.best_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"torn")
    with caplog.at_level(logging.WARNING):
        best = checkpoint.Best(tmp_path, {})
    assert best.score is None and "best.pt does not load" in caplog.text
    assert best.offer(5, 50, {"mean_return": -10.0}, tensors(1))
    assert checkpoint.load(path)["version"] == 5


def test_best_is_never_resumed_from_nor_pruned(tmp_path: Path) -> None:
    checkpoint.Best(tmp_path, {}).offer(900, 9000, {"mean_return": 1.0}, tensors(1))
    for v in (1, 2, 3, 4):
        checkpoint.save(tmp_path, v, state(v), keep=2)
    assert names(tmp_path) == ["best.pt", "ckpt-000000003.pt", "ckpt-000000004.pt"]
    back = checkpoint.load_latest(tmp_path)
    assert back is not None and back["version"] == 4, "a restart resumes from the newest checkpoint, with optimizer"
