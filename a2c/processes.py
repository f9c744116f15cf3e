"""Our child processes: each dies with its parent, and a side process takes only CPU time nobody else wants.

Who uses it: `a2c local`'s trainers and players (`launch.local`) die with the launcher (`die_with_parent`);
trainer 0's periodic evaluator (`evaluation.periodic_eval`) and the learning-curve painter (`observe.curve`)
are side processes on two pipes, started as a fresh `python -m <module>` (`start`, in its own session, so
a terminal's Ctrl-C goes to the parent alone) or, for the evaluator, forked from a process that runs no
other thread (`Forked`: no interpreter start-up, no imports). `become_side_process` is what a side process
does first: die with its parent, leave SIGINT to it, and (nice > 0) run at the lowest CPU priority.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Literal, Protocol, overload

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send this process `sig` when its parent ends (even killed): never an orphan.
    Linux only; elsewhere nothing."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def become_side_process(nice: int) -> None:
    """Die with the parent, leave SIGINT to it, and (nice > 0) take only CPU time nobody else wants."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
        with contextlib.suppress(AttributeError, OSError):  # Linux: only CPU time no other process wants
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def command(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@overload
def start(argv: list[str], text: Literal[False] = False) -> subprocess.Popen[bytes]: ...


@overload
def start(argv: list[str], text: Literal[True]) -> subprocess.Popen[str]: ...


def start(argv: list[str], text: bool = False) -> subprocess.Popen[bytes] | subprocess.Popen[str]:
    """A side process in a fresh interpreter: `argv` (usually a `command`) with pipes on its stdin and stdout,
    in its own session (a terminal's Ctrl-C is the parent's, which then ends it). OSError if it cannot start."""
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=text, start_new_session=True)


class SideProcess(Protocol):
    """What a parent uses of its side process: a `subprocess.Popen` (from `start`), or a `Forked`."""

    pid: int
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def can_fork() -> bool:
    """Whether `Forked` is safe here now: the platform forks, and no other thread runs in this process (a fork
    copies every thread's memory but only the calling thread: a lock another thread held stays held)."""
    return threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


class Forked:
    """A side process forked from this one, running `target(reader, writer)` on two pipes to this process
    after `become_side_process(nice)`, with the part of Popen's interface a parent uses (`SideProcess`).
    Fork only where `can_fork()`. OSError if the fork fails."""

    def __init__(self, target: Callable[[IO[bytes], IO[bytes]], object], nice: int, name: str) -> None:
        to_child, from_child = os.pipe(), os.pipe()
        parent_ends = (to_child[1], from_child[0])
        self._process = multiprocessing.get_context("fork").Process(
            target=_forked, args=(target, nice, to_child[0], from_child[1], parent_ends, os.getpid()), name=name,
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
            raise subprocess.TimeoutExpired(f"{self._process.name} process {self.pid}", timeout or 0.0)
        return code

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


def _forked(target: Callable[[IO[bytes], IO[bytes]], object], nice: int, inp: int, out: int,
            parent_ends: tuple[int, int], parent: int) -> None:
    """Entry of a forked side process: the parent's memory, none of its threads, the parent's ends of the
    pipes closed (else this end never sees EOF)."""
    for fd in parent_ends:
        os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: terminate() ends this process
    become_side_process(nice)
    if os.getppid() != parent:  # the parent died before PR_SET_PDEATHSIG was set
        return
    with os.fdopen(inp, "rb") as reader, os.fdopen(out, "wb") as writer:
        target(reader, writer)
