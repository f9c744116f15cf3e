"""a2c/processes.py: children that die with their parent, and side processes out of a terminal's Ctrl-C and
at the lowest CPU priority. Real processes; waits poll with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from a2c import processes
from tests.support.procs import wait_for

ROOT = Path(__file__).resolve().parents[1]

# A parent that starts a grandchild calling `die_with_parent` (or not), prints its pid, and exits.
PARENT = r"""
import subprocess, sys
code = "from a2c import processes; import time\n" + ("processes.die_with_parent()\n" if sys.argv[1] == "1" else "") + \
    "print('ready', flush=True)\ntime.sleep(60)"
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("dies", [True, False], ids=["die_with_parent", "without"])
def test_a_child_dies_with_its_parent_only_when_it_asked_to(dies: bool) -> None:
    out = subprocess.run([sys.executable, "-c", PARENT, "1" if dies else "0"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[-1])
    try:
        if dies:
            wait_for(lambda: not _alive(pid), 10, "the orphaned child to end")
        else:
            assert _alive(pid), "without die_with_parent the child outlives its parent (the check is real)"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_side_process_runs_in_its_own_session_at_the_lowest_priority() -> None:
    code = ("from a2c import processes; import os, sys\nprocesses.become_side_process(19)\n"
            "print(os.getsid(0), os.nice(0), os.sched_getscheduler(0) == os.SCHED_IDLE, flush=True)\nsys.stdin.read()")
    proc = processes.start([sys.executable, "-c", code], text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        sid, nice, idle = proc.stdout.readline().split()
        assert int(sid) == proc.pid != os.getsid(0), "its own session: a terminal's Ctrl-C is not sent to it"
        assert int(nice) == 19 and idle == "True"
        proc.stdin.close()  # end of input ends it
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_runs_a_module_with_this_interpreter() -> None:
    assert processes.command("a2c.observe.curve", "--x") == [sys.executable, "-m", "a2c.observe.curve", "--x"]
