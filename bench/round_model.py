"""The parts of one synchronous round, measured on this machine: what docs/scaling.md's model is made of.

For one player of E environments x T steps (CartPole, the default network): bytes uploaded (the rollout's
wire size) and fetched (the weights' wire size), the trainers' all-reduce bytes (gradients plus the loss
report, and each trainer's share of the round riding in it), trainer seconds per sample (`Learner.batch`
+ `Learner.update`, one torch thread, no process group) and gRPC seconds per round (Upload, then a Fetch
of a newer version; and the same as one Exchange, over loopback to a real server), each the median of
--repeats.

    python bench/round_model.py [--num-envs 256] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import torch

from a2c import config
from a2c.acting import player
from a2c.envs import vector as env
from a2c.learning import distributed, learner
from a2c.model import agent, weights
from a2c.service import client, codec, inbox, rollout, server
from a2c.v1 import trainer_pb2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    algo = config.AlgoConfig()
    e = env.Env(config.EnvConfig(num_envs=args.num_envs))
    model = agent.Agent(e.observation_space, e.action_space, algo)
    collector = player.Collector(e, model, 0, algo.n_steps, 0)
    r = collector.collect(0)
    spec = rollout.Spec.of(e.observation_space, e.action_space, algo.n_steps)
    up_bytes = sum(c.ByteSize() for c in codec.rollout_chunks(r))
    snap = agent.snapshot(model, 1)
    down_bytes = sum(len(codec.serialize(c)) for c in codec.weight_chunks(snap))
    params = sum(p.numel() for p in model.parameters())
    share_bytes = 8 * distributed.ROW

    lrn = learner.Learner(agent.Agent(e.observation_space, e.action_space, algo), algo, torch.device("cpu"))
    train_s = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        b = lrn.batch([r])
        lrn.update(b, b.samples)
        train_s.append(time.perf_counter() - t0)

    box = inbox.Inbox(spec, 0, 1, 1, 0, 4, lambda: version[0])
    version = [0]
    board = weights.WeightBoard()
    board.publish(agent.snapshot(model, 0))
    status = trainer_pb2.TrainerStatus
    running = server.start(box, board, status, "127.0.0.1", 0, 64 << 20, workers=8)
    c = client.TrainerClient(f"127.0.0.1:{running.port}")
    upload_s, fetch_s, exchange_s = [], [], []
    try:
        for i in range(args.repeats):
            r.policy_version = version[0]
            t0 = time.perf_counter()
            c.upload(r)
            t1 = time.perf_counter()
            box.take_round(version[0], 1.0)
            version[0] += 1
            board.publish(agent.snapshot(model, version[0]))
            t2 = time.perf_counter()
            got, _ = c.fetch(version[0] - 1, wait_s=1.0, player_id=0)
            t3 = time.perf_counter()
            assert got is not None and got.version == version[0], i
            upload_s.append(t1 - t0)
            fetch_s.append(t3 - t2)
        for i in range(args.repeats):  # the same round as one Exchange: the rollout up, the next weights down
            r.policy_version = version[0]

            def step() -> None:
                box.take_round(version[0], 5.0)
                version[0] += 1
                board.publish(agent.snapshot(model, version[0]))

            stepper = threading.Thread(target=step)
            t0 = time.perf_counter()
            stepper.start()
            reply, _ = c.exchange(r, wait_s=5.0)
            t1 = time.perf_counter()
            stepper.join()
            assert reply.snapshot is not None and reply.version == version[0], i
            exchange_s.append(t1 - t0 - reply.waited_s)
    finally:
        c.close()
        box.close()
        board.finish()
        running.stop(0)
    samples = r.num_samples
    med = statistics.median
    print(f"per player per round ({args.num_envs} envs x {algo.n_steps} steps = {samples} samples):")
    print(f"  uploaded {up_bytes:,} B ({up_bytes / samples:.1f} B/sample), fetched {down_bytes:,} B "
          f"({params:,} parameters)")
    print(f"  all-reduce per trainer per round: {4 * params + 12:,} B gradients + loss report "
          f"+ {share_bytes:,} B per trainer of shares (counts, episodes)")
    print(f"  trainer batch+update: {med(train_s) * 1e3:.2f} ms ({med(train_s) / samples * 1e6:.2f} us/sample)")
    print(f"  gRPC upload {med(upload_s) * 1e3:.2f} ms, fetch {med(fetch_s) * 1e3:.2f} ms (median of {args.repeats})")
    print(f"  gRPC exchange (one round trip, the trainer's wait for the next weights left out): "
          f"{med(exchange_s) * 1e3:.2f} ms (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
