"""`a2c` as a container's first process: a SIGTERM before its role has a handler ends it, as it ends any other
process. PID 1 of a PID namespace gets no signal it has no handler for (the image runs `a2c` with no init)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a2c import cli

ROOT = Path(__file__).resolve().parents[1]
# PID 1 of a new PID namespace: (with the call) the handler a2c's main installs first; then a long set-up
SCRIPT = """
import sys, time
from a2c import cli
if sys.argv[1] == "main":
    cli.exit_on_sigterm_as_pid_1()
print("up", flush=True)
time.sleep(30)
"""


def _pid_1(mode: str) -> tuple[subprocess.Popen[str], int]:
    """A python as PID 1 of its own PID namespace, and its pid as this machine sees it."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", SCRIPT, mode],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        (child,) = f.read().split()
    return proc, int(child)


def _ended_within(proc: subprocess.Popen[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["main", "without"])
def test_sigterm_ends_a2c_as_pid_1_before_its_role_has_a_handler(mode: str) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a PID namespace)")
    proc, pid = _pid_1(mode)
    try:
        os.kill(pid, signal.SIGTERM)
        ended = _ended_within(proc, 3.0)
        if mode == "main":
            assert ended, "a2c as PID 1 ignored SIGTERM"
            assert proc.returncode == 128 + signal.SIGTERM, proc.returncode
        else:  # what the kernel does without it: the reason for it
            assert not ended, "PID 1 without a handler ended at SIGTERM: the kernel no longer drops it"
    finally:
        proc.kill()
        proc.wait()


def test_main_installs_the_handler_only_as_pid_1(monkeypatch: pytest.MonkeyPatch) -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        cli.exit_on_sigterm_as_pid_1()
        assert signal.getsignal(signal.SIGTERM) is before, "not PID 1: the default action stays"
        monkeypatch.setattr(os, "getpid", lambda: 1)
        with pytest.raises(SystemExit):
            cli.main(["--help"])
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        with pytest.raises(SystemExit) as info:
            handler(signal.SIGTERM, None)
        assert info.value.code == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
