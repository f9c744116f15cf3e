"""CPU of each step of the wire path for one Atari round, with Breakout-shaped data, on one thread.

A player's round (the zoo's flags: 8 copies x 5 steps of uint8 [4, 84, 84] frames) goes up and NatureCNN's
weights come back down, as in `a2c local`. Each step is timed alone with `time.thread_time` (CPU, not wall:
robust on a loaded machine), --repeats times, and reported as its median in us per round and in us per env step
of the round (num_envs x n_steps samples):

- trainer, once per version: `codec.weight_chunks` of a fresh snapshot (the encode is cached on the snapshot)
- trainer, per reply: `codec.weight_reply` + the serializer gRPC applies to each message
- player, per reply: gRPC's deserializer on each message + `codec.weight_reply_from_chunks` + `agent.load_snapshot`
- player, per round: `codec.exchange_request` + its serialization
- trainer, per round: its deserialization + `codec.rollout_from_request` + `rollout.validate`
- loopback (with --loopback): `client.TrainerClient.exchange` against a real server on 127.0.0.1 in this process
  (a fresh weight version each round), the whole process's CPU per round (gRPC's threads included)

    python bench/wire_codec.py [--env-id BreakoutNoFrameskip-v4] [--num-envs 8] [--n-steps 5] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from a2c import config
from a2c.envs import vector as env
from a2c.model import agent, weights
from a2c.service import codec, rollout
from a2c.v1 import rollout_pb2, weights_pb2

# Before the codec sent weights serialized once per version, the server serialized each message of a reply and
# the client parsed each (WeightChunk.FromString); now both ends pass the bytes through. The same script times
# either version of the codec, as gRPC runs it.
RAW = hasattr(codec, "serialize")


def serialize(message: Any) -> bytes:
    """What the trainer's gRPC server does to a message of a weight reply."""
    return message if isinstance(message, bytes) else message.SerializeToString()  # type: ignore[no-any-return]


def received(wire: list[bytes]) -> list[Any]:
    """What the player's gRPC stub hands the codec for the messages of a weight reply."""
    return wire if RAW else [weights_pb2.WeightChunk.FromString(b) for b in wire]


def fake_rollout(spec: rollout.Spec, num_envs: int, rng: np.random.Generator) -> rollout.Rollout:
    t, e = spec.num_steps, num_envs
    return rollout.Rollout(
        player_id=0, policy_version=0,
        obs=rng.integers(0, 256, (t + 1, e, *spec.obs_shape), dtype=np.uint8),
        actions=rng.integers(0, max(spec.num_actions, 1), (t, e), dtype=np.int64),
        rewards=rng.random((t, e), dtype=np.float32), terminated=np.zeros((t, e), bool),
        truncated=np.zeros((t, e), bool), valid=np.ones((t, e), bool),
        logprobs=rng.random((t, e), dtype=np.float32), values=rng.random((t, e), dtype=np.float32),
        final_obs=np.zeros((0, *spec.obs_shape), np.uint8), final_index=np.zeros(0, np.int64))


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median thread CPU seconds of fn over repeats (after two warm-up calls)."""
    fn(), fn()
    out = []
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        out.append(time.thread_time() - t)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--loopback", action="store_true", help="also time exchange over a real local server")
    parser.add_argument("--only-loopback", action="store_true", help="the loopback rounds alone (for a profiler)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    obs_space, act_space = env.spaces(config.EnvConfig(env_id=args.env_id))
    spec = rollout.Spec.of(obs_space, act_space, args.n_steps)
    model = agent.Agent(obs_space, act_space, config.AlgoConfig())
    model.eval()
    r = fake_rollout(spec, args.num_envs, np.random.default_rng(0))
    samples = args.num_envs * args.n_steps
    max_bytes = 64 << 26
    snap = agent.snapshot(model, 1)
    chunks = codec.weight_reply(snap, 0.0)
    wire_weights = [serialize(c) for c in chunks]
    request = codec.exchange_request(r, 2.0)
    wire_request = request.SerializeToString()
    print(f"{args.env_id}: rollout {r.nbytes() / 1e6:.2f} MB ({samples} samples), weights "
          f"{snap.nbytes() / 1e6:.2f} MB in {len(wire_weights)} messages; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    def encode_version() -> None:
        fresh = weights.WeightSnapshot(version=snap.version, tensors=snap.tensors)
        codec.weight_chunks(fresh)

    def reply() -> None:
        for c in codec.weight_reply(snap, 0.0):
            serialize(c)

    def player_weights() -> None:
        got = codec.weight_reply_from_chunks(iter(received(wire_weights)), max_bytes)
        assert got.snapshot is not None
        agent.load_snapshot(model, got.snapshot)

    def player_rollout() -> None:
        codec.exchange_request(r, 2.0).SerializeToString()

    def trainer_rollout() -> None:
        got = codec.rollout_from_request(rollout_pb2.ExchangeRequest.FromString(wire_request), max_bytes)
        rollout.validate(got, spec)

    if args.only_loopback:
        loopback(args, spec, model, r, samples)
        return 0
    rows = [("trainer: encode a version's weights (once per version)", encode_version),
            ("trainer: reply with them (per reply: header copy + serialize)", reply),
            ("player: parse + decode the weights + load_snapshot", player_weights),
            ("player: encode + serialize the rollout", player_rollout),
            ("trainer: parse + decode + validate the rollout", trainer_rollout)]
    total = 0.0
    print(f"{'step':64s} {'us/round':>9s} {'us/step':>8s}")
    for name, fn in rows:
        sec = timed(fn, args.repeats)
        total += sec
        print(f"{name:64s} {sec * 1e6:9.0f} {sec * 1e6 / samples:8.1f}", flush=True)
    print(f"{'all of the above':64s} {total * 1e6:9.0f} {total * 1e6 / samples:8.1f}")
    if args.loopback:
        loopback(args, spec, model, r, samples)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


def loopback(args: argparse.Namespace, spec: rollout.Spec, model: agent.Agent, r: rollout.Rollout,
             samples: int) -> None:
    """Rounds of exchange against a real server in this process: its whole CPU per round."""
    from a2c.service import client, inbox, server

    version = [1]
    board = weights.WeightBoard()
    box = inbox.Inbox(spec, 0, 1, 1, 1, 1 << 20, lambda: version[0])  # lag 1: the rollout of the version before
    board.publish(agent.snapshot(model, version[0]))
    running = server.start(box, board, lambda: None, "127.0.0.1", 0, 64 << 20, workers=4)  # type: ignore
    c = client.TrainerClient(f"127.0.0.1:{running.port}")
    try:
        def one() -> None:
            version[0] += 1  # every round a new version, encoded afresh, as in training
            board.publish(agent.snapshot(model, version[0]))
            r.policy_version = version[0] - 1
            reply, _ = c.exchange(r, wait_s=0.0)
            box.take_round(version[0], 0.0)
            assert reply.snapshot is not None and reply.version == version[0]
            agent.load_snapshot(model, reply.snapshot)

        for _ in range(5):
            one()
        t, w = time.process_time(), time.perf_counter()
        n = max(20, args.repeats // 2)
        for _ in range(n):
            one()
        cpu, wall = (time.process_time() - t) / n, (time.perf_counter() - w) / n
        print(f"{'loopback: exchange + new version + load, process CPU':64s} {cpu * 1e6:9.0f} "
              f"{cpu * 1e6 / samples:8.1f}   (wall {wall * 1e3:.1f} ms/round)")
    finally:
        c.close()
        running.stop(0)


if __name__ == "__main__":
    sys.exit(main())
