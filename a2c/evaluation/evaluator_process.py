"""The evaluator process: trainer 0's side process that plays the snapshots `periodic_eval.Evaluator` sends.

Data flow: pipe (`protocol`: the set-up, then one request per snapshot) -> `serve`: the agent built once
from the set-up, each snapshot's weights loaded into it, `evaluate.evaluate` (greedy, fixed seed) -> one
reply per request -> pipe. It runs with 1 torch thread; a snapshot that cannot be played is answered with
its error and the process goes on.

Started either way `periodic_eval` chooses: forked from the trainer (`forked`, on two pipes) or as a fresh
interpreter, `python -m a2c.evaluation.evaluator_process [--nice N]` (`main`, on stdin / stdout); either
way `processes.become_side_process` first (die with the trainer, lowest CPU priority). Logs go to stderr,
which is the trainer's log.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import IO

import torch

from a2c import processes
from a2c.envs import vector as env
from a2c.evaluation import evaluate, protocol
from a2c.model import agent, weights

log = logging.getLogger(__name__)

MODULE = "a2c.evaluation.evaluator_process"  # `python -m` this (the name of this module when it is __main__)
LOG_FORMAT = "%(asctime)s %(levelname)s evaluator: %(message)s"


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    """The loop: one set-up message, then snapshot in -> evaluation out, until end of input."""
    torch.set_num_threads(1)
    try:
        setup = protocol.receive(inp)
    except EOFError:
        return 0
    env_cfg, algo = setup["env"], setup["algo"]
    obs_space, action_space = env.spaces(env_cfg)
    model = agent.Agent(obs_space, action_space, dataclasses.replace(algo, precision="fp32"))  # as `evaluate.load`
    model.eval()
    while True:
        try:
            request = protocol.receive(inp)
        except EOFError:
            return 0
        started = time.perf_counter()
        result: evaluate.Result | None = None
        error: str | None = None
        try:
            agent.load_snapshot(model, weights.WeightSnapshot(request["version"], request["tensors"]))
            result = evaluate.evaluate(model, env_cfg, int(request["episodes"]), int(request["seed"]))
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the trainer, which goes on
            log.exception("evaluating version %d failed", request["version"])
            error = f"{type(exc).__name__}: {exc}"
        protocol.send(out, protocol.reply(request["version"], time.perf_counter() - started, result, error))


def forked(reader: IO[bytes], writer: IO[bytes]) -> None:
    """Entry of the evaluator forked from the trainer (`processes.Forked`): the trainer's memory, so torch and
    this module are imported already."""
    logging.basicConfig(level=logging.INFO, force=True, stream=sys.stderr, format=LOG_FORMAT)
    serve(reader, writer)


def main(argv: list[str] | None = None) -> int:
    """`python -m a2c.evaluation.evaluator_process [--nice N]`: messages on stdin/stdout, logs on stderr (the
    trainer's log)."""
    args = list(sys.argv[1:] if argv is None else argv)
    processes.become_side_process(int(args[args.index("--nice") + 1]) if "--nice" in args else 0)
    # The pipe to the trainer gets a private descriptor; stray prints of libraries go to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
