"""Typed configuration for every role: the one place flags, environment variables and defaults live.

Data flow: `cli` builds one of these dataclasses from flags (environment variables as fallback, the way
a pod is configured) and hands it to `player.run`, `trainer.run` or `local.run`. The controller and the
Helm chart render the same flag names, so the names here are the contract between them.

Each field's `help` metadata is its `--help` text; `env` names the environment variable read when the
flag is absent (default: `A2C_<FIELD_NAME_UPPER>`). Every knob is a field, with its flag and its variable,
declared once. Groups (`EnvConfig`, `AlgoConfig`, `StopConfig`) nest and are flattened into flags;
`RunConfig` is what every trainer and player of a run shares, `TrainingConfig` the group `a2c trainer` and
`a2c local` share, both by inheritance; a role that wants another default for a knob says so with `same_as`.

A field with `crd` metadata is also a field of the A2CJob (its path under `spec`, e.g. `algorithm.lr`):
`tools/gen_config.py` writes the CRD's schema for it, the chart's values.schema.json and values.yaml from
the type, default, help, choices and bounds here (`minimum`, `maximum`, `above` = exclusive minimum,
`schema` = extra JSON-schema keywords), and `a2c.controller.spec` reads the job's value into the config.
The bounds are what the A2CJob and the chart admit; the CLI does not check them.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2c.flags import arg, opt, same_as


@dataclass
class EnvConfig:
    env_id: str = opt("CartPole-v1", "gymnasium environment id", crd="environment.id", schema={"minLength": 1})
    env_kwargs: str = opt("{}", "JSON object of keyword arguments for gymnasium.make", crd="environment.kwargs",
                           schema={"type": "object"})
    num_envs: int = opt(64, "environment copies per player (one vectorized environment)", crd="players.envsPerPlayer",
                        minimum=1, maximum=4096)
    seed: int = opt(0, "base random seed; player j uses seed + max(1000, num_envs) * j", crd="environment.seed",
                    minimum=0)
    vectorization: str = opt("auto", "how E copies are stepped: the environment's own vector_entry_point "
                             "where it has one (auto), else one process (sync) or one subprocess each (async)",
                             choices=("auto", "sync", "async", "envpool"), crd="environment.vectorization")

    def kwargs(self) -> dict[str, Any]:
        value = json.loads(self.env_kwargs)
        if not isinstance(value, dict):
            raise ValueError(f"--env-kwargs must be a JSON object, got {self.env_kwargs!r}")
        return value


PRECISIONS = ("auto", "fp32", "bf16")  # --precision's choices; `agent.Agent` refuses others (a checkpoint's config)


@dataclass
class AlgoConfig:
    lr: float = opt(4e-3, "learning rate", crd="algorithm.lr", above=0)
    # linear and normalize_reward by default (issue 27): with a constant rate and raw rewards, CartPole runs
    # trained past solving forgot what they had learned (docs/benchmarks.md#stability)
    lr_schedule: str = opt("linear", "learning-rate schedule: linear decay to 0 over --max-env-steps "
                           "(rl-baselines3-zoo's lin_<lr>; a short budget lowers the rate early on), or constant",
                           choices=("constant", "linear"), crd="algorithm.lrSchedule")
    gamma: float = opt(0.99, "discount factor", crd="algorithm.gamma", above=0, maximum=1)
    gae_lambda: float = opt(1.0, "GAE lambda (1.0 = n-step returns, as in the A2C paper)", crd="algorithm.gaeLambda",
                             minimum=0, maximum=1)
    n_steps: int = opt(8, "environment steps per rollout (T)", crd="algorithm.nSteps", minimum=1, maximum=100_000)
    ent_coef: float = opt(0.0, "entropy bonus coefficient", crd="algorithm.entCoef", minimum=0)
    vf_coef: float = opt(0.5, "value loss coefficient", crd="algorithm.vfCoef", above=0)
    max_grad_norm: float = opt(0.5, "gradient clipping norm (0 disables)", crd="algorithm.maxGradNorm", minimum=0)
    optimizer: str = opt("rmsprop", "optimizer: torch's RMSprop, TensorFlow-style RMSprop (eps inside the square "
                         "root, square average starting at ones; rl-baselines3-zoo's choice for Atari), or Adam",
                         choices=("rmsprop", "rmsprop_tf", "adam"), crd="algorithm.optimizer")
    rms_alpha: float = opt(0.99, "RMSprop smoothing constant", crd="algorithm.rmsAlpha", above=0, maximum=1)
    optim_eps: float = opt(1e-5, "optimizer epsilon", crd="algorithm.optimEps", above=0)
    precision: str = opt("auto", "arithmetic of the convolutional feature extractor (pixel observations). bf16: "
                         "players hold its weights in bfloat16, trainers train it under autocast with weights, "
                         "gradients and optimizer in fp32; MLPs and the policy and value heads stay fp32. Faster "
                         "where the hardware has bf16 (AVX512-BF16 or AMX CPUs), slower elsewhere. auto: bf16 in "
                         "a process on such a CPU, fp32 on other CPUs and on GPUs",
                         choices=PRECISIONS, crd="algorithm.precision")
    max_policy_lag: int = opt(0, "oldest accepted policy version is current - lag (0 = strict on-policy)",
                              crd="algorithm.maxPolicyLag", minimum=0, maximum=1000)
    hidden_sizes: str = opt("64,64", "hidden layer sizes of the MLP feature extractor", crd="algorithm.hiddenSizes",
                            schema={"type": "array", "minItems": 1, "maxItems": 16,
                                    "items": {"type": "integer", "minimum": 1, "maximum": 65536}})
    activation: str = opt("tanh", "MLP activation", choices=("tanh", "relu"), crd="algorithm.activation")
    shared_extractor: bool = opt(False, "share one feature extractor between actor and critic",
                                  crd="algorithm.sharedExtractor")
    log_std_init: float = opt(0.0, "initial log standard deviation of the Gaussian policy (Box actions)",
                              crd="algorithm.logStdInit")
    use_sde: bool = opt(False, "gSDE: the Gaussian policy explores with state-dependent noise, a function of the "
                        "actor's latent features times a random matrix each player draws (Box actions)",
                        crd="algorithm.useSde")
    sde_sample_freq: int = opt(-1, "with --use-sde, draw new exploration matrices every this many steps of a "
                               "rollout (-1: once per rollout, at its first step)", crd="algorithm.sdeSampleFreq",
                               minimum=-1, maximum=100_000)
    normalize_obs: bool = opt(False, "normalise observations by their running mean and variance, job-wide, "
                              "inside the model (never for uint8 image observations)", crd="algorithm.normalizeObs")
    normalize_reward: bool = opt(True, "scale each player's rewards by the running std of the discounted "
                                 "return (reported returns stay raw)", crd="algorithm.normalizeReward")

    def hidden(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.hidden_sizes.split(",") if s.strip())


@dataclass
class StopConfig:
    target_return: float = opt(475.0, "stop when the mean return of the last --return-window episodes reaches this",
                                crd="stop.targetReturn")
    return_window: int = opt(100, "episodes in the moving mean return", crd="stop.returnWindow", minimum=1,
                             maximum=100_000)
    max_env_steps: int = opt(2_000_000, "stop after this many environment steps in total", crd="stop.maxEnvSteps",
                             minimum=1)


JOB_HELP = "name of the run: the a2c_job label of every metric (the controller sets the A2CJob's name)"
BACKENDS, DEVICES = ("auto", "gloo", "nccl"), ("auto", "cpu", "cuda")


def check_evaluation(interval: int = 0, episodes: int = 1) -> None:
    """The one check of the periodic-evaluation flags (a trainer's, `a2c local`'s before anything starts, and
    the evaluator's): ValueError saying which values are wrong."""
    if interval < 0 or episodes < 1:
        raise ValueError(f"--eval-interval must be >= 0 and --eval-episodes >= 1, got {interval} and {episodes}")


@dataclass
class ProcessConfig:
    """What a trainer and a player process both have: a metrics port, TLS files, and how to end."""

    metrics_port: int = opt(9090, "Prometheus /metrics port (0 picks a free one, -1 disables)")
    tls_cert: str = opt("", "PEM certificate (chain): a trainer's server certificate, or a player's client "
                        "certificate for a trainer that requires mutual TLS; with --tls-key ('' = plaintext)")
    tls_key: str = opt("", "PEM private key of --tls-cert")
    tls_ca: str = opt("", "PEM CA bundle: a trainer with it requires client certificates it signed (mutual TLS); "
                      "a player verifies its trainer with it, and set (or --tls-cert) turns TLS on ('' = plaintext)")
    # A pod of a StatefulSet is restarted whatever its exit code: under the controller a finished process
    # must stay up (a trainer serving its final status) until the controller scales the job down.
    hold_when_done: bool = opt(False, "when training has ended, keep running (a trainer keeps serving its final "
                               "status) until SIGTERM instead of exiting: a StatefulSet restarts any process that "
                               "exits")
    weights_dir: str = opt("", "a directory on a memory filesystem shared by a trainer and its players on one "
                           "machine: the trainer writes each version of the weights there once, and players that "
                           "have it read them from there rather than over gRPC ('' = off; a2c local makes one "
                           "under /dev/shm)")


@dataclass
class RunConfig:
    """What every trainer and player process of a run has: the run's name, its torch threads, the environment
    and the algorithm (`a2c local` hands its job, environment and algorithm to every player it starts)."""

    torch_threads: int = opt(1, "torch intra-op threads of the process (a2c local: of each trainer; its players "
                             "use 1)")
    job: str = opt("local", JOB_HELP, env="A2C_JOB")
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)


@dataclass
class TrainingConfig(RunConfig):
    """What every trainer of a run is told about training, whoever starts it: one group for `a2c trainer` and
    `a2c local`. Both configs are one by inheritance (a trainer's flags stay flat, as pods set them), and the
    launcher hands its own values to each trainer it starts (`local.plan`)."""

    players_per_trainer: int = opt(1, "players per trainer (P)", crd="players.replicasPerTrainer", minimum=1,
                                   maximum=256)
    checkpoint_interval: int = opt(100, "iterations between checkpoints (trainer 0)", crd="checkpoint.interval",
                                   minimum=1)
    round_timeout_s: float = opt(5.0, "seconds a round waits for its players before stepping without them",
                                 crd="trainers.roundTimeoutSeconds", above=0)
    backend: str = opt("auto", "torch.distributed backend of the trainers", choices=BACKENDS, crd="trainers.backend")
    device: str = opt("auto", "training device", choices=DEVICES)
    eval_interval: int = opt(100, "iterations between greedy evaluations by trainer 0 in a side process "
                             "(metrics.jsonl, learning curve; 0 disables)", crd="evaluation.interval", minimum=0)
    eval_episodes: int = opt(10, "episodes per periodic evaluation", crd="evaluation.episodes", minimum=1,
                             maximum=10_000)
    keep_best: bool = opt(True, "trainer 0 keeps <run-dir>/checkpoints/best.pt, the weights of the best periodic "
                          "evaluation so far (with --eval-interval > 0; `a2c eval RUN --best` plays it)")
    tensorboard: str = opt("", "directory for TensorBoard event files of trainer 0 ('' = off; view with "
                           "tensorboard --logdir DIR)")
    stop: StopConfig = field(default_factory=StopConfig)

    def check(self) -> None:
        """ValueError for values no trainer can start with."""
        check_evaluation(self.eval_interval, self.eval_episodes)


@dataclass
class TrainerConfig(ProcessConfig, TrainingConfig):
    rank: int = opt(-1, "this trainer's rank (-1: from the pod ordinal in the hostname)", env="RANK")
    world_size: int = opt(1, "number of trainers", env="WORLD_SIZE", crd="trainers.replicas", minimum=1, maximum=64)
    master_addr: str = opt("127.0.0.1", "address of trainer 0 for the DDP rendezvous", env="MASTER_ADDR")
    master_port: int = opt(29500, "port of the DDP rendezvous", env="MASTER_PORT")
    dist_timeout_s: float = opt(120.0, "process-group timeout: a lost peer ends the trainer after this",
                                crd="trainers.distTimeoutSeconds", above=0)
    host: str = opt("0.0.0.0", "address the gRPC server binds")
    port: int = opt(50051, "gRPC port (0 picks a free one)")
    max_message_mb: int = opt(64, "largest gRPC message accepted, MiB (chunks stay far below)")
    max_queue: int = opt(0, "rollouts queued at most (0: 4 per expected player); more get RESOURCE_EXHAUSTED")
    start_timeout_s: float = opt(60.0, "seconds the first round waits for players to connect")
    linger_s: float = opt(2.0, "seconds to keep serving after training ends, so players hear it")
    run_dir: str = opt("runs/latest", "directory for checkpoints and metrics.jsonl")
    keep_checkpoints: int = opt(3, "checkpoints kept on disk", crd="checkpoint.keep", minimum=1)

    def check(self) -> None:
        super().check()
        if self.dist_timeout_s <= max(self.round_timeout_s, self.start_timeout_s):
            raise ValueError("--dist-timeout-s must exceed --round-timeout-s and --start-timeout-s, or trainers "
                             "waiting for players would time out their peers")

    def resolved_rank(self) -> int:
        return self.rank if self.rank >= 0 else ordinal_from_hostname("RANK")


@dataclass
class PlayerConfig(ProcessConfig, RunConfig):
    player_index: int = opt(-1, "this player's index j (-1: from the pod ordinal in the hostname)")
    num_trainers: int = opt(1, "number of trainers N; player j uploads to trainer j mod N")
    trainer_address: str = opt(
        "127.0.0.1:50051",
        "trainer gRPC address; '{trainer}' is replaced by j mod N (e.g. job-trainer-{trainer}.svc:50051)",
    )
    connect_timeout_s: float = opt(300.0, "seconds to keep retrying an unreachable trainer before giving up")

    def resolved_index(self) -> int:
        return self.player_index if self.player_index >= 0 else ordinal_from_hostname("A2C_PLAYER_INDEX")

    def resolved_trainer_address(self) -> str:
        return self.trainer_address.replace("{trainer}", str(self.resolved_index() % self.num_trainers))


@dataclass
class LocalConfig(TrainingConfig):
    """`a2c local`: the training group, handed to every trainer, and how the launcher runs the processes."""

    trainers: int = opt(2, "number of trainer processes (N)")
    run_dir: str = same_as(TrainerConfig, "run_dir", "", "run directory (default: runs/<env>-<timestamp>)")
    progress: bool = opt(True, "show a progress bar")
    plot: bool = opt(True, "write learning_curve.png at the end")
    max_player_restarts: int = opt(3, "times a lost player process is restarted")
    max_trainer_restarts: int = opt(2, "times the trainer group is restarted from its checkpoint after a failure")
    pin_cores: bool = opt(True, "when the processes outnumber the cores, run each trainer and its players on one "
                          "core (they take turns at lag 0; a2c/cores.py)")
    shared_weights: bool = opt(True, "hand the players their weights through files in a fresh directory under "
                               "/dev/shm (--weights-dir of every trainer and player), not over gRPC: 8% less CPU a "
                               "step on Breakout (docs/atari.md)")
    # one machine rarely has one GPU per trainer (NCCL needs that): its trainers train on the CPU unless asked
    device: str = same_as(TrainingConfig, "device", "cpu", "trainers' device (NCCL needs one GPU per trainer)")


@dataclass(kw_only=True)
class ControllerConfig:
    """`a2c controller`: the operator's flags."""

    namespace: str = arg("", "watch only this namespace (default: all)")
    resync_s: float = arg(10.0, "seconds between full resyncs and status polls")
    metrics_port: int = arg(9090, "Prometheus /metrics port (-1 disables)")
    kubeconfig: str = arg("", "kubeconfig file (default: in-cluster, then ~/.kube/config)")
    tls_ca: str = arg("", "PEM CA bundle that verifies trainers of jobs with spec.tls")
    tls_cert: str = arg("", "PEM client certificate for trainers that require mutual TLS")
    tls_key: str = arg("", "PEM private key of --tls-cert")
    leader_election: bool = arg(True, "act only while holding a coordination.k8s.io Lease, so several replicas "
                                "are safe (default: on)", negatable=True)
    lease_name: str = arg("a2c-controller", "name of the leader-election Lease")
    lease_namespace: str = arg("", "namespace of the Lease (default: $POD_NAMESPACE, else --namespace, else default)")


@dataclass(kw_only=True)
class RenderConfig:
    """`a2c render JOB.yaml`."""

    job: str = arg(help="YAML file with one or more A2CJobs ('-' reads stdin)", positional=True)
    namespace: str = arg("", "namespace for jobs that name none (default: default)")


CHECKPOINT_HELP = "a checkpoint file (ckpt-*.pt) or a run directory (its newest)"


@dataclass(kw_only=True)
class EvalConfig:
    """`a2c eval CHECKPOINT`."""

    checkpoint: Path = arg(help=CHECKPOINT_HELP, positional=True)
    best: bool = arg(False, "of a run directory, play checkpoints/best.pt: the weights of the run's best periodic "
                     "evaluation (--keep-best), not its newest checkpoint", switch=True)
    episodes: int = arg(10, "episodes to play (default: 10)")
    seed: int = arg(0, "episode i is reset with seed + i (default: 0)")
    max_episode_steps: int = arg(0, "cut episodes at this many steps (default: 0, the environment's own time limit)")
    json: bool = arg(False, "print one JSON object on stdout (the human-readable line goes to stderr)", switch=True)
    video: Path | None = arg(None, "film episode 0 (same seed) as a GIF at this path")
    fps: float = arg(0.0, "GIF frame rate (default: the environment's render_fps)")


@dataclass(kw_only=True)
class ExportConfig:
    """`a2c export CHECKPOINT --out DIR`."""

    checkpoint: Path = arg(help=CHECKPOINT_HELP, positional=True)
    best: bool = arg(False, "of a run directory, export checkpoints/best.pt", switch=True)
    out: Path = arg(help="directory for policy.pt, policy.onnx and policy.json (created if missing)", required=True)
    format: str = arg("both", "which files to write besides policy.json (default: both)",
                      choices=("both", "torchscript", "onnx"))
    force: bool = arg(False, "replace policy files already in --out", switch=True)


def ordinal_from_hostname(what: str) -> int:
    """The StatefulSet pod ordinal: `<name>-<ordinal>` in the hostname."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    suffix = host.rsplit("-", 1)[-1]
    if "-" in host and suffix.isdigit():
        return int(suffix)
    raise ValueError(f"{what} is not set and the hostname {host!r} has no '-<ordinal>' suffix to derive it from")
