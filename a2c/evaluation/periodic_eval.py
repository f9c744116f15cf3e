"""Periodic evaluation beside training: trainer 0 hands weight snapshots to a side process that plays them.

(`evaluate` is the evaluation itself, greedy episodes of one agent, and `a2c eval`; this module runs it
every --eval-interval iterations in the evaluator process, so that training never waits for it.)

Data flow: trainer 0, every --eval-interval iterations -> `Evaluator.submit` (the snapshot it just
published: numpy tensors, version, env steps; never blocks) -> `newest_wins` -> this class's thread ->
pipe (`protocol`) -> the evaluator process (`evaluator_process.serve`: `evaluate.evaluate`, greedy, fixed
seed) -> pipe -> the thread -> `on_result` (trainer 0's `recorder` writes the eval row and the a2c_eval_*
metrics), and with --keep-best `checkpoint.Best` (best.pt: the weights of the best evaluation so far).

Why a process, not a thread: an evaluation is pure Python stepping (the GIL would slow the trainer's loop).
The trainer forks it (`Evaluator.fork`, `processes.Forked`) before it starts any thread (gRPC, metrics, the
process group: a fork copies threads in whatever state they are), so it starts with torch already imported;
a fresh interpreter's imports took ~1.4 s of CPU, which at the lowest priority on busy cores ran only once a
short run had ended, and delayed that end (README). Where the trainer cannot fork (other threads already
run), and for every replacement after a death, `processes.start` execs a fresh interpreter, `python -m
a2c.evaluation.evaluator_process` (no preexec_fn). Either way it runs with 1 torch thread at the lowest CPU
priority (nice 19, and SCHED_IDLE on Linux), so it only takes CPU time the training leaves idle; when `a2c
local` pinned its trainer to one core it gets the cores the trainer had before (`cores.release`), so it
runs wherever a core idles.

Newest wins (`newest_wins`): while one evaluation runs only the newest submitted snapshot waits. A side
process that dies, or an evaluation that raises, records nothing (`failures`: the policy of restarts and
of giving up, after which training goes on without evaluation).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from a2c import config, cores, processes
from a2c.evaluation import evaluate, evaluator_process, failures, newest_wins, protocol
from a2c.model import checkpoint

log = logging.getLogger(__name__)

COMMAND = processes.command(evaluator_process.MODULE)
NICE = 19


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


class Evaluator:
    """Trainer 0's handle on the side process (see the module docstring)."""

    def __init__(self, env_cfg: config.EnvConfig, algo: config.AlgoConfig, episodes: int, seed: int,
                 on_result: Callable[[Outcome], object], on_failure: Callable[[str], object] | None = None,
                 command: list[str] | None = None, max_failures: int = 3,
                 best: checkpoint.Best | None = None) -> None:
        config.check_evaluation(episodes=episodes)
        self.best = best  # offered every result: keeps the best-evaluated weights (--keep-best)
        self.env_cfg, self.algo, self.episodes, self.seed = env_cfg, algo, episodes, seed
        self.on_result = on_result
        self.command = list(command or COMMAND)
        self.evaluated = 0
        self._queue: newest_wins.NewestWins[Request] = newest_wins.NewestWins()
        self._failures = failures.Failures(max_failures, lambda: self._queue.stop(discard=False), on_failure)
        self._lock = threading.Lock()  # the side process's and the thread's start
        self._proc: processes.SideProcess | None = None
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """False once evaluation has stopped for this run (closed, or too many failures)."""
        return not self._queue.stopped

    @property
    def process(self) -> processes.SideProcess | None:
        """The side process while one runs (forked or started before the first snapshot, replaced after a
        death)."""
        return self._proc

    @property
    def in_flight(self) -> int | None:
        """The version being evaluated now."""
        return self._queue.in_flight

    @property
    def submitted(self) -> int:
        return self._queue.submitted

    @property
    def skipped(self) -> int:
        return self._queue.skipped

    @property
    def failures(self) -> int:
        return self._failures.count

    def submit(self, version: int, env_steps: int, time_s: float, tensors: dict[str, np.ndarray]) -> bool:
        """Queue this snapshot for evaluation and return at once; True if it replaced one still waiting."""
        replaced = self._queue.put(Request(version, env_steps, time_s, tensors))
        if self.alive:
            self._start_thread()
        return replaced

    def fork(self) -> bool:
        """Fork the side process now, from this process, instead of starting a fresh interpreter at `warm_up`:
        call it before this process starts any thread. True if forked; False, and nothing done, when another
        thread already runs here (`processes.can_fork`), or the side process exists already."""
        with self._lock:
            if not self.alive or self._proc is not None or self._thread is not None or not processes.can_fork():
                return False
            try:
                self._proc = self._set_up(processes.Forked(evaluator_process.forked, NICE, "evaluator"), "forked")
            except OSError as exc:
                log.warning("could not fork the evaluator process (%s): it will be started afresh", exc)
                self._proc = None
                return False
            return True

    def warm_up(self) -> None:
        """Start the side process now, before the first snapshot, so that its start-up (imports, the
        environment) overlaps training instead of delaying the first evaluation and the end of a short run."""
        if self.alive:
            self._start_thread()

    def _start_thread(self) -> None:
        """The thread that starts the side process and feeds it (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="evaluator", daemon=True)
                self._thread.start()

    def drain(self, timeout_s: float) -> bool:
        """Wait, up to timeout_s, until the snapshot being evaluated and one still waiting have been
        evaluated (a finished run keeps its last evaluation); True when nothing is left to evaluate."""
        return self._queue.drain(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop evaluating: an evaluation in flight is abandoned, the side process ended; log the tally."""
        self._queue.stop(discard=True)
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
    def _start(self) -> processes.SideProcess:
        return self._set_up(processes.start([*self.command, "--nice", str(NICE)]), "a fresh interpreter")

    def _set_up(self, proc: processes.SideProcess, how: str) -> processes.SideProcess:
        assert proc.stdin is not None
        cores.release(proc.pid)  # not the core of a pinned trainer: any the trainer had before (a2c/cores.py)
        protocol.send(proc.stdin, protocol.setup(self.env_cfg, self.algo))
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
                self._failures.record(f"evaluator process could not start ({exc})", restart=False)
        while (request := self._queue.take()) is not None:
            try:
                if self._proc is None:
                    self._proc = self._start()
                proc = self._proc
                assert proc.stdin is not None and proc.stdout is not None
                protocol.send(proc.stdin, protocol.request(request.version, request.tensors, self.episodes,
                                                           self.seed))
                reply = protocol.receive(proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
                if not self.alive:
                    break  # closed under us: not a failure
                why = f"evaluator process died ({self._exit_status()}; {type(exc).__name__}: {exc})"
                self._end_for_restart()
                self._failures.record(why, restart=True)
                continue
            if "error" in reply:
                self._failures.record(f"evaluation of version {request.version} failed: {reply['error']}",
                                      restart=False)
                continue
            self._record(request, float(reply["seconds"]), protocol.result(reply))

    def _record(self, request: Request, seconds: float, result: evaluate.Result) -> None:
        """An evaluation done: offered to --keep-best's keeper, then to `on_result`; neither may end evaluation."""
        self.evaluated += 1
        if self.best is not None:
            try:
                self.best.offer(request.version, request.env_steps, {**result.summary(), "seed": self.seed},
                                request.tensors)
            except Exception:  # a full disk must not end evaluation, nor training
                log.exception("keeping version %d as the best checkpoint failed", request.version)
        try:
            self.on_result(Outcome(request.version, request.env_steps, request.time_s, self.seed, seconds, result))
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

    def _end_for_restart(self) -> None:
        """A side process whose pipe broke: killed, and started afresh for the next snapshot."""
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(2.0)
            self._proc = None
