"""Periodic evaluation beside training: trainer 0 hands weight snapshots to a side process that plays them.

(`evaluate` is the evaluation itself, greedy episodes of one agent, and `a2c eval`; this module runs it
every --eval-interval iterations in the evaluator process, so that training never waits for it.)

Data flow: trainer 0, every --eval-interval iterations -> `Evaluator.submit` (the snapshot it just
published: numpy tensors, version, env steps; never blocks) -> this class's thread -> pipe -> the
side process `python -m a2c.evaluation.periodic_eval` (`serve`: `evaluate.evaluate`, greedy, fixed seed) -> pipe ->
the thread -> `on_result` (trainer 0's `recorder` writes the eval row and the a2c_eval_* metrics), and
with --keep-best `checkpoint.Best` (best.pt: the weights of the best evaluation so far).

Why a process, not a thread: an evaluation is pure Python stepping (the GIL would slow the trainer's loop).
The trainer forks it (`Evaluator.fork`) before it starts any thread (gRPC, metrics, the process group: a fork
copies threads in whatever state they are), so it starts with torch already imported; a fresh interpreter's
imports took ~1.4 s of CPU, which at the lowest priority on busy cores ran only once a short run had ended,
and delayed that end (README). Where the trainer cannot fork (other threads already run), and for every
replacement after a death, `subprocess.Popen` execs a fresh interpreter (no preexec_fn). Either way it runs
with 1 torch thread at the lowest CPU priority (nice 19, and SCHED_IDLE on Linux), so it only takes CPU
time the training leaves idle; when `a2c local` pinned its trainer to one core it gets the cores the trainer
had before (`cores.release`), so it runs wherever a core idles.

Newest wins: one evaluation is in flight at a time, and while it runs only the newest submitted
snapshot waits; an older waiting one is dropped (counted in `skipped`). A side process that dies, or
an evaluation that raises, records nothing: it is logged, counted in `failures`, and the process is
started afresh for the next snapshot, up to `max_failures` times; after that evaluation stops for the
run and training goes on. Messages on the pipes are pickles (our own process, our own pipe).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

import numpy as np
import torch

from a2c import config, cores
from a2c.envs import vector as env
from a2c.evaluation import evaluate
from a2c.model import agent, checkpoint, weights

log = logging.getLogger(__name__)

COMMAND = [sys.executable, "-m", "a2c.evaluation.periodic_eval"]
NICE = 19
LOG_FORMAT = "%(asctime)s %(levelname)s evaluator: %(message)s"


class SideProcess(Protocol):
    """What the Evaluator uses of its side process: a `subprocess.Popen`, or a `Forked`."""

    pid: int
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class Forked:
    """The side process forked from this one (`serve` on two pipes), with the part of Popen's interface the
    Evaluator uses. Fork only a process that runs no other thread (`Evaluator.fork` checks)."""

    def __init__(self) -> None:
        to_child, from_child = os.pipe(), os.pipe()
        parent_ends = (to_child[1], from_child[0])
        self._process = multiprocessing.get_context("fork").Process(
            target=_forked, args=(to_child[0], from_child[1], parent_ends, os.getpid()), name="evaluator",
            daemon=True)  # an interpreter that exits with it still alive ends it rather than wait for it
        try:
            self._process.start()
        finally:
            os.close(to_child[0])
            os.close(from_child[1])
        self.pid: int = self._process.pid or 0
        self.stdin: IO[bytes] | None = os.fdopen(to_child[1], "wb")
        self.stdout: IO[bytes] | None = os.fdopen(from_child[0], "rb")

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"evaluator process {self.pid}", timeout or 0.0)
        return code

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


@dataclass
class Request:
    """One snapshot to evaluate, with where training was when it was taken."""

    version: int
    env_steps: int
    time_s: float
    tensors: dict[str, np.ndarray]


@dataclass
class Outcome:
    """The evaluation of one snapshot (`Request` less the tensors)."""

    version: int
    env_steps: int
    time_s: float
    seed: int
    seconds: float
    result: evaluate.Result


def send(stream: IO[bytes], message: Any) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message; EOFError when the other end has gone."""
    return pickle.load(stream)


class Evaluator:
    """Trainer 0's handle on the side process (see the module docstring)."""

    def __init__(self, env_cfg: config.EnvConfig, algo: config.AlgoConfig, episodes: int, seed: int,
                 on_result: Callable[[Outcome], object], on_failure: Callable[[str], object] | None = None,
                 command: list[str] | None = None, max_failures: int = 3,
                 best: checkpoint.Best | None = None) -> None:
        config.check_evaluation(episodes=episodes)
        self.best = best  # offered every result: keeps the best-evaluated weights (--keep-best)
        self.env_cfg, self.algo, self.episodes, self.seed = env_cfg, algo, episodes, seed
        self.on_result, self.on_failure = on_result, on_failure
        self.command = list(command or COMMAND)
        self.max_failures = max_failures
        self.submitted = self.skipped = self.failures = self.evaluated = 0
        self.in_flight: int | None = None  # the version being evaluated now
        self._cond = threading.Condition()
        self._pending: Request | None = None
        self._closed = False
        self._gave_up = False
        self._proc: SideProcess | None = None
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """False once evaluation has stopped for this run (closed, or too many failures)."""
        return not (self._closed or self._gave_up)

    @property
    def process(self) -> SideProcess | None:
        """The side process while one runs (forked or started before the first snapshot, replaced after a
        death)."""
        return self._proc

    def submit(self, version: int, env_steps: int, time_s: float, tensors: dict[str, np.ndarray]) -> bool:
        """Queue this snapshot for evaluation and return at once; True if it replaced one still waiting."""
        with self._cond:
            if not self.alive:
                return False
            self.submitted += 1
            replaced = self._pending is not None
            self.skipped += replaced
            self._pending = Request(version, env_steps, time_s, tensors)
            self._start_thread()
            self._cond.notify()
            return replaced

    def fork(self) -> bool:
        """Fork the side process now, from this process, instead of starting a fresh interpreter at `warm_up`:
        call it before this process starts any thread. True if forked; False, and nothing done, when another
        thread already runs here (its copy in the child could hold a lock forever), the platform cannot
        fork, or the side process exists already."""
        with self._cond:
            if (not self.alive or self._proc is not None or self._thread is not None
                    or threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods()):
                return False
            try:
                self._proc = self._set_up(Forked(), "forked")
            except OSError as exc:
                log.warning("could not fork the evaluator process (%s): it will be started afresh", exc)
                self._proc = None
                return False
            return True

    def warm_up(self) -> None:
        """Start the side process now, before the first snapshot, so that its start-up (imports, the
        environment) overlaps training instead of delaying the first evaluation and the end of a short run."""
        with self._cond:
            if self.alive:
                self._start_thread()

    def _start_thread(self) -> None:
        """The thread that starts the side process and feeds it (once; the caller holds the condition)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="evaluator", daemon=True)
            self._thread.start()

    def drain(self, timeout_s: float) -> bool:
        """Wait, up to timeout_s, until the snapshot being evaluated and one still waiting have been
        evaluated (a finished run keeps its last evaluation); True when nothing is left to evaluate."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.alive and (self._pending is not None or self.in_flight is not None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._pending is None and self.in_flight is None

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop evaluating: an evaluation in flight is abandoned, the side process ended; log the tally."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify()
        proc = self._proc
        if proc is not None:  # wakes the thread if it waits for a reply
            with contextlib.suppress(OSError):
                proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if proc is not None:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        log.info("periodic evaluation: %d snapshots submitted, %d evaluated, %d skipped (evaluator busy), "
                 "%d failed", self.submitted, self.evaluated, self.skipped, self.failures)

    # --- the thread -------------------------------------------------------------------------------------
    def _next(self) -> Request | None:
        with self._cond:
            while self._pending is None and self.alive:
                self._cond.wait()
            request, self._pending = self._pending, None
            if not self.alive or request is None:
                return None
            self.in_flight = request.version
            return request

    def _start(self) -> SideProcess:
        proc = subprocess.Popen([*self.command, "--nice", str(NICE)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, start_new_session=True)
        return self._set_up(proc, "a fresh interpreter")

    def _set_up(self, proc: SideProcess, how: str) -> SideProcess:
        assert proc.stdin is not None
        cores.release(proc.pid)  # not the core of a pinned trainer: any the trainer had before (a2c/cores.py)
        send(proc.stdin, {"env": self.env_cfg, "algo": self.algo})
        log.info("evaluator process %d started (%s)", proc.pid, how)
        return proc

    def _loop(self) -> None:
        try:
            self._serve_requests()
        finally:
            proc, self._proc = self._proc, None
            if proc is not None:  # closed or given up: end the side process (close() may miss one started late)
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # type: ignore[union-attr]
                with contextlib.suppress(OSError):
                    proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)

    def _serve_requests(self) -> None:
        if self._proc is None and self.alive:  # warm_up(): the process before the first request
            try:
                self._proc = self._start()
            except OSError as exc:
                self._failed(f"evaluator process could not start ({exc})", restart=False)
        while True:
            with self._cond:
                self.in_flight = None
                self._cond.notify_all()  # a drain() may wait for this
            request = self._next()
            if request is None:
                break
            try:
                if self._proc is None:
                    self._proc = self._start()
                proc = self._proc
                assert proc.stdin is not None and proc.stdout is not None
                send(proc.stdin, {"version": request.version, "tensors": request.tensors,
                                  "episodes": self.episodes, "seed": self.seed})
                reply = receive(proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
                if not self.alive:
                    break  # closed under us: not a failure
                self._failed(f"evaluator process died ({self._exit_status()}; {type(exc).__name__}: {exc})",
                             restart=True)
                continue
            if "error" in reply:
                self._failed(f"evaluation of version {request.version} failed: {reply['error']}", restart=False)
                continue
            self.evaluated += 1
            result = evaluate.Result(returns=list(reply["returns"]), lengths=list(reply["lengths"]))
            outcome = Outcome(request.version, request.env_steps, request.time_s, self.seed,
                              float(reply["seconds"]), result)
            if self.best is not None:
                try:
                    self.best.offer(request.version, request.env_steps, {**result.summary(), "seed": self.seed},
                                    request.tensors)
                except Exception:  # a full disk must not end evaluation, nor training
                    log.exception("keeping version %d as the best checkpoint failed", request.version)
            try:
                self.on_result(outcome)
            except Exception:
                log.exception("recording the evaluation of version %d failed", request.version)

    def _exit_status(self) -> str:
        proc = self._proc
        if proc is None:
            return "not started"
        try:
            code = proc.wait(2.0)
        except subprocess.TimeoutExpired:
            return "still running, but its pipe broke"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _failed(self, why: str, restart: bool) -> None:
        self.failures += 1
        if restart and self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(2.0)
            self._proc = None
        if self.failures > self.max_failures:
            with self._cond:
                self._gave_up = True
            log.error("%s; %d failures, no more periodic evaluation in this run (training goes on)",
                      why, self.failures)
        else:
            log.warning("%s; %s (failure %d of %d allowed)", why,
                        "restarting it for the next snapshot" if restart else "evaluating the next snapshot",
                        self.failures, self.max_failures)
        if self.on_failure is not None:
            try:
                self.on_failure(why)
            except Exception:
                log.exception("recording an evaluator failure failed")


# --- the side process -----------------------------------------------------------------------------------


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    """The side process's loop: one config message, then snapshot in -> evaluation out, until EOF."""
    torch.set_num_threads(1)
    try:
        setup = receive(inp)
    except EOFError:
        return 0
    env_cfg, algo = setup["env"], setup["algo"]
    obs_space, action_space = env.spaces(env_cfg)
    model = agent.Agent(obs_space, action_space, algo)
    model.eval()
    while True:
        try:
            request = receive(inp)
        except EOFError:
            return 0
        started = time.perf_counter()
        reply: dict[str, Any] = {"version": request["version"]}
        try:
            agent.load_snapshot(model, weights.WeightSnapshot(request["version"], request["tensors"]))
            result = evaluate.evaluate(model, env_cfg, int(request["episodes"]), int(request["seed"]))
            reply.update(returns=result.returns, lengths=result.lengths)
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the trainer, which goes on
            log.exception("evaluating version %d failed", request["version"])
            reply["error"] = f"{type(exc).__name__}: {exc}"
        reply["seconds"] = time.perf_counter() - started
        send(out, reply)


def _become_side_process(nice: int) -> None:
    """Die with the trainer, leave SIGINT to it, and (nice > 0) take only CPU time nobody else wants."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the trainer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when this process ends
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
        with contextlib.suppress(AttributeError, OSError):  # Linux: only CPU time no other process wants
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _forked(inp: int, out: int, parent_ends: tuple[int, int], parent: int) -> None:
    """Entry of the forked side process: the trainer's memory, none of its threads, its ends of the pipes
    closed (else this end never sees EOF)."""
    for fd in parent_ends:
        os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the trainer's handler: terminate() ends this process
    _become_side_process(NICE)
    if os.getppid() != parent:  # the trainer died before PR_SET_PDEATHSIG was set
        return
    logging.basicConfig(level=logging.INFO, force=True, stream=sys.stderr, format=LOG_FORMAT)
    with os.fdopen(inp, "rb") as reader, os.fdopen(out, "wb") as writer:
        serve(reader, writer)


def main(argv: list[str] | None = None) -> int:
    """`python -m a2c.evaluation.periodic_eval [--nice N]`: messages on stdin/stdout, logs on stderr (the trainer's
    log)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _become_side_process(int(args[args.index("--nice") + 1]) if "--nice" in args else 0)
    # The pipe to the trainer gets a private descriptor; stray prints of libraries go to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
