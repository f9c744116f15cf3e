"""The pipe protocol between trainer 0's `periodic_eval.Evaluator` and its evaluator process.

Messages are pickles, one after another on the side process's stdin / stdout (or the two pipes of a forked
one): our own process on our own pipe, so nothing foreign is unpickled.

    trainer -> evaluator   `setup`: {"env": EnvConfig, "algo": AlgoConfig}, once, first
                           `request`: {"version", "tensors", "episodes", "seed"}, one snapshot to play
    evaluator -> trainer   per request one reply: {"version", "returns", "lengths", "seconds"}, or
                           {"version", "error", "seconds"} when the evaluation raised

End of input ends the evaluator; end of its output (EOFError) tells the trainer it has gone.
tests/fake_evaluator.py speaks the same protocol with bare pickles (no imports of ours).
"""

from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np

from a2c import config
from a2c.evaluation import evaluate


def send(stream: IO[bytes], message: Any) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message; EOFError when the other end has gone."""
    return pickle.load(stream)


def setup(env_cfg: config.EnvConfig, algo: config.AlgoConfig) -> dict[str, Any]:
    """The first message: what to build the agent and the environment from."""
    return {"env": env_cfg, "algo": algo}


def request(version: int, tensors: dict[str, np.ndarray], episodes: int, seed: int) -> dict[str, Any]:
    """Play these weights for `episodes` greedy episodes, episode i reset with seed + i."""
    return {"version": version, "tensors": tensors, "episodes": episodes, "seed": seed}


def reply(version: int, seconds: float, result: evaluate.Result | None = None,
          error: str | None = None) -> dict[str, Any]:
    """The answer to one request: the evaluation's result, or the error that ended it."""
    out: dict[str, Any] = {"version": version}
    if result is not None:
        out.update(returns=result.returns, lengths=result.lengths)
    if error is not None:
        out["error"] = error
    out["seconds"] = seconds
    return out


def result(message: dict[str, Any]) -> evaluate.Result:
    """The evaluation a reply without "error" carries."""
    return evaluate.Result(returns=list(message["returns"]), lengths=list(message["lengths"]))
