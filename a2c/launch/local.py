"""`a2c local`: the embedded default. The cluster's topology on one machine: N trainer processes (DDP over
gloo on 127.0.0.1) and N*P player processes talking gRPC on loopback, started and watched by this
launcher, which plays the controller's part. The weights go to the players through files in a directory under
/dev/shm the launcher makes and removes (`shared_weights_dir`; --shared-weights false: over gRPC, as between pods).

Data flow: launcher -> processes (forked, each running `trainer.run` / `player.run`, logs in
<run_dir>/logs; every trainer gets this run's `config.TrainingConfig` as it is) -> trainer 0 writes
metrics.jsonl -> launcher's progress bar (`supervisor`) -> learning_curve.png (`curve`).
A lost player is restarted (up to --max-player-restarts); a failed trainer ends the run with its log
shown; Ctrl-C stops every child. Children die with the launcher (PR_SET_PDEATHSIG), never orphaned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2c import config, cores, imports, processes
from a2c.launch import supervisor
from a2c.observe import curve, journal
from a2c.ports import free_port

log = logging.getLogger(__name__)


def _child(role: str, cfg: Any, log_path: str, core: int | None = None) -> None:
    """Entry of a child process: own log file, die with the parent, its core (if pinned), run the role."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the launcher's (`supervisor`): the role installs its own
    processes.die_with_parent()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    logging.basicConfig(level=logging.INFO, force=True, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {role}: %(message)s")
    from a2c.acting import player  # the launcher imported them before the fork: nothing to import here
    from a2c.learning import trainer

    run = trainer.run if role.startswith("trainer") else player.run
    if core is not None:
        cores.pin(core)
        logging.getLogger(role).info("%s runs on core %d", role, core)
    code = 1
    try:
        code = run(cfg)
    except BaseException:
        logging.getLogger(role).exception("%s failed", role)
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


@dataclass
class Child:
    name: str
    role: str
    cfg: Any
    log_path: Path
    metrics_port: int
    core: int | None = None  # the core it is pinned to (a2c/cores.py), None: any
    process: Any = None
    restarts: int = 0

    def start(self, ctx: Any) -> None:
        self.process = ctx.Process(target=_child, args=(self.name, self.cfg, str(self.log_path), self.core),
                                   name=self.name, daemon=False)
        self.process.start()

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def plan(cfg: config.LocalConfig, run_dir: Path, weights_dir: str = "") -> list[Child]:
    """The trainer and player processes of this run, with their configs and free ports (and `weights_dir`, the
    directory the trainers hand their players the weights through: `shared_weights_dir`)."""
    n, p = cfg.trainers, cfg.players_per_trainer
    master_port = free_port()
    grpc_ports = [free_port() for _ in range(n)]
    logs = run_dir / "logs"
    # the training group as the user gave it, to every trainer (the rest is where each one runs)
    training = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(config.TrainingConfig)}
    allowed = cores.allowed()

    def core(role: str, index: int) -> int | None:
        return cores.assign(role, index, n, p, allowed) if cfg.pin_cores else None

    children = []
    for rank in range(n):
        tc = config.TrainerConfig(
            **training, rank=rank, world_size=n, master_addr="127.0.0.1", master_port=master_port,
            host="127.0.0.1", port=grpc_ports[rank], metrics_port=free_port(), run_dir=str(run_dir), linger_s=5.0,
            weights_dir=weights_dir,
        )
        children.append(Child(f"trainer-{rank}", "trainer", tc, logs / f"trainer-{rank}.log", tc.metrics_port,
                              core("trainer", rank)))
    for j in range(n * p):
        pc = config.PlayerConfig(
            player_index=j, num_trainers=n, trainer_address=f"127.0.0.1:{grpc_ports[j % n]}",
            metrics_port=free_port(), job=cfg.job, env=cfg.env, algo=cfg.algo, weights_dir=weights_dir,
        )
        children.append(Child(f"player-{j}", "player", pc, logs / f"player-{j}.log", pc.metrics_port,
                              core("player", j)))
    return children


SHM = Path("/dev/shm")


def shared_weights_dir(cfg: config.LocalConfig) -> str:
    """A fresh directory on the machine's memory filesystem for the weights (--shared-weights; the caller removes
    it), or "" where there is none to write to: then they go over gRPC, as between pods. Directories that a
    launcher no longer alive left behind (killed with SIGKILL) are removed first."""
    if not cfg.shared_weights or not SHM.is_dir() or not os.access(SHM, os.W_OK):
        return ""
    for old in SHM.glob("a2c-weights-*-*"):
        owner = old.name.split("-")[2]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"a2c-weights-{os.getpid()}-", dir=SHM)


def write_targets(run_dir: Path, children: list[Child], job: str) -> Path:
    """A Prometheus file_sd targets file, so a local Prometheus can scrape this run."""
    targets = [{"targets": [f"127.0.0.1:{c.metrics_port}"],
                "labels": {"a2c_job": job, "role": c.role, "rank": c.name.rsplit("-", 1)[1]}} for c in children]
    path = run_dir / "prometheus_targets.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets, indent=1))
    os.replace(tmp, path)
    return path


def write_pids(run_dir: Path, children: list[Child]) -> None:
    """<run_dir>/processes.json: name -> pid of every child (for people and tests that kill one)."""
    path = run_dir / "processes.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({c.name: c.process.pid for c in children if c.process is not None}, indent=1))
    os.replace(tmp, path)


def _link_latest(run_dir: Path) -> None:
    """runs/latest -> this run (what deploy/prometheus/prometheus.yml reads its targets from)."""
    link = run_dir.parent / "latest"
    if link.exists() and not link.is_symlink():
        return  # a real directory of that name is the user's: leave it alone
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def default_run_dir(cfg: config.LocalConfig) -> Path:
    return Path("runs") / f"{cfg.env.env_id.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"


def check(cfg: config.LocalConfig) -> str | None:
    """Why this run cannot start (said before any process starts), or None."""
    try:
        cfg.check()
    except ValueError as exc:
        return str(exc)
    if cfg.tensorboard:
        try:
            journal.require_tensorboard()
        except journal.TensorBoardMissing as exc:
            return str(exc)
    return None


def run(cfg: config.LocalConfig) -> int:
    problem = check(cfg)
    if problem is not None:
        print(f"a2c local: {problem}", file=sys.stderr)
        return 2
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    if not cfg.run_dir:
        _link_latest(run_dir)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    # the picture's process imports matplotlib while this one imports torch (a2c/observe/curve.py)
    painter = curve.Painter() if cfg.plot else None
    try:
        return _run(cfg, run_dir, painter)
    finally:
        if painter is not None:
            painter.close()


def _best_line(run_dir: Path) -> str:
    """Where the run's best-evaluated weights are (--keep-best), or "" when there are none."""
    from a2c.model import checkpoint  # torch: imported by now (`_run`)

    path = checkpoint.best_path(run_dir)
    if not path.exists():
        return ""
    try:
        state = checkpoint.load(path)
        score, version = float(state["eval"]["mean_return"]), int(state["version"])
    except Exception as exc:  # noqa: BLE001 - a torn file must not fail a finished run
        return f"best checkpoint: {path} does not load ({exc})"
    return (f"best checkpoint: {path} (greedy return {score:.1f} at iteration {version:,}; "
            f"play it with: a2c eval {run_dir} --best)")


def _run(cfg: config.LocalConfig, run_dir: Path, painter: curve.Painter | None) -> int:
    with imports.without_gc():  # once here, inherited by every forked child: torch, and torch._dynamo (learner)
        from a2c.acting import player  # noqa: F401
    weights_dir = shared_weights_dir(cfg)
    try:
        return _supervised(cfg, run_dir, painter, plan(cfg, run_dir, weights_dir))
    finally:
        if weights_dir:
            shutil.rmtree(weights_dir, ignore_errors=True)


def _supervised(cfg: config.LocalConfig, run_dir: Path, painter: curve.Painter | None, children: list[Child]) -> int:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    start = time.monotonic()
    for c in sorted(children, key=lambda c: c.role != "trainer"):  # trainers first: players connect at once
        c.start(ctx)
    write_targets(run_dir, children, cfg.job)
    write_pids(run_dir, children)
    def restart_player(child: Child) -> None:
        child.start(ctx)
        write_pids(run_dir, children)

    def restart_trainers() -> None:
        """The gang rule: all trainers go, all come back on a fresh rendezvous port, resuming from rank 0's
        newest checkpoint; players keep their gRPC addresses and re-sync their weights."""
        trainers = [c for c in children if c.role == "trainer"]
        supervisor.stop_all(trainers, grace_s=5.0)
        port = free_port()
        for t in trainers:
            t.cfg = dataclasses.replace(t.cfg, master_port=port)
            t.restarts += 1
            t.start(ctx)
        write_pids(run_dir, children)

    outcome = supervisor.supervise(cfg, run_dir, children, restart_player, restart_trainers, start)
    best = _best_line(run_dir)
    if best:
        print(best)
    if painter is not None and (run_dir / journal.FILE).exists():
        title = f"a2c {cfg.env.env_id}: {cfg.trainers} trainer(s) x {cfg.players_per_trainer} player(s) each"
        png = painter.plot(run_dir / journal.FILE, run_dir / "learning_curve.png", cfg.stop.target_return, title)
        print(f"learning curve: {png}")
    if cfg.tensorboard:
        print(f"TensorBoard event files: {cfg.tensorboard} (view them with: tensorboard --logdir {cfg.tensorboard})")
    return outcome

