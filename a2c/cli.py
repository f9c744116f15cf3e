"""The `a2c` command: builds a config from flags (environment variables as fallback) and calls a role's run().

    a2c local       the embedded default: trainers and players as processes on this machine
    a2c trainer     one trainer (a pod of the trainer StatefulSet)
    a2c player      one player (a pod of the player StatefulSet)
    a2c controller  the operator that turns A2CJobs into pods
    a2c render      print the Kubernetes objects an A2CJob would get
    a2c eval        play a checkpoint greedily; --video films one episode
    a2c export      write a checkpoint's greedy policy as TorchScript and ONNX, for serving without a2c

Role modules are imported only when their command runs, so `a2c controller` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from a2c import config, flags, imports

ROLES: dict[str, tuple[type, str, str]] = {
    "local": (config.LocalConfig, "a2c.launch.local", "train on this machine: N trainers and N*P players as processes"),
    "trainer": (config.TrainerConfig, "a2c.learning.trainer", "run one trainer (gRPC server + DDP rank)"),
    "player": (config.PlayerConfig, "a2c.acting.player", "run one player (vectorized environments, uploads rollouts)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI; the controller's and chart's tests parse rendered commands with it."""
    parser = argparse.ArgumentParser(prog="a2c", description="Distributed Advantage Actor-Critic, Kubernetes-native.")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (cls, _module, help_text) in ROLES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        flags.add_arguments(p, cls)
    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Commands from other packages of ours (controller: `controller`, `render`; evaluation: `eval`; `export`)."""
    for module in ("a2c.controller.commands", "a2c.evaluation.evaluate", "a2c.evaluation.export"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise
            continue
        mod.register(sub)


def parse_role(argv: Sequence[str], environ: dict[str, str] | None = None) -> tuple[str, object]:
    """Parse `a2c <role> ...` into (role, config) exactly as `main` would (for tests and the controller)."""
    args = build_parser().parse_args(list(argv))
    cls = ROLES[args.command][0]
    return args.command, flags.from_namespace(cls, args, environ)


def exit_on_sigterm_as_pid_1() -> None:
    """As a container's first process (PID 1 of its PID namespace: the image's ENTRYPOINT is `a2c`, with no init),
    exit at SIGTERM as its default action would (128 + 15). The kernel drops a signal PID 1 has no handler for,
    and a role installs its own only after its imports and set-up (seconds: torch, the environment, the model):
    a trainer restarted by the kubelet just as its pod was deleted ignored the SIGTERM and held its pod, and the
    pod's name the new trainer group needs, until its 65 s grace ended."""
    if os.getpid() == 1:
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def main(argv: Sequence[str] | None = None) -> int:
    exit_on_sigterm_as_pid_1()
    with imports.without_gc():  # a trainer's or player's module imports torch (`a2c local` in its run; imports.py)
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if args.command in ROLES:
            cls, module, _ = ROLES[args.command]
            try:
                cfg: object = flags.from_namespace(cls, args)
            except ValueError as exc:
                print(f"a2c {args.command}: {exc}", file=sys.stderr)
                return 2
            run: Callable[[object], int] = importlib.import_module(module).run
    if args.command in ROLES:
        code = int(run(cfg) or 0)
        if args.command == "local":
            # Tearing down an interpreter that imported torch._dynamo takes over a second; the children
            # are gone and every file is closed, so skip it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    func: Callable[[argparse.Namespace], int] = args.func
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
