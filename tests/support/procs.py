"""Real processes and sockets: a free port, one `wait_for` (poll with a deadline), and `a2c` roles spawned
the way a pod or a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from a2c.ports import free_port  # noqa: F401 - the tests' free ports are the launcher's (no repeats)

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, *,
             watch: Mapping[str, subprocess.Popen[Any]] | None = None, explain: Callable[[], str] | None = None,
             every_s: float = 0.1) -> T:
    """Poll `predicate` every `every_s` until it returns something truthy, and return that. Fail naming `what`
    after `timeout_s`, or at once when a process in `watch` exits first; `explain()` is added to the failure
    (the logs, say)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        for name, proc in (watch or {}).items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}"
                            + (f"\n{explain()}" if explain else ""))
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(every_s)


def spawn(*argv: str, env: Mapping[str, str] | None = None, log: Path | None = None, new_session: bool = False,
          cwd: Path | None = None) -> subprocess.Popen[str]:
    """`python -m a2c ARGV...`, with `env` laid over this process's environment; its output (stdout and
    stderr) goes to `log`, or to a pipe when there is none. `new_session`: its own process group (a2c local,
    whose children a test may signal together)."""
    out = log.open("w") if log is not None else subprocess.PIPE
    try:
        return subprocess.Popen([sys.executable, "-m", "a2c", *argv], env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=new_session, cwd=cwd)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]  # the child has its own copy


def kill(*procs: subprocess.Popen[Any]) -> None:
    """SIGKILL what is still running (its process group, if it has its own) and reap it: a test's cleanup."""
    for p in procs:
        if p.poll() is None:
            try:
                if os.getpgid(p.pid) == p.pid:
                    os.killpg(p.pid, signal.SIGKILL)
                else:
                    p.kill()
            except ProcessLookupError:
                pass
        if p.stdout is not None:
            p.communicate()  # closes the pipe
        else:
            p.wait()
