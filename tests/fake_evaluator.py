"""Stand-ins for `python -m a2c.evaluation.evaluator_process` that speak its pipe protocol
(a2c/evaluation/protocol.py) but misbehave on purpose.

    python -m tests.fake_evaluator gate MARKER        answers a snapshot only once MARKER exists (returns = [version])
    python -m tests.fake_evaluator crash              dies (exit 3) on every snapshot
    python -m tests.fake_evaluator crash-once MARKER  dies on its first snapshot unless MARKER exists (creates it)

No torch import: these start in a fraction of a second. `--nice N` (what the trainer adds) is ignored.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

GATE_DEADLINE_S = 600.0  # a gate never opened: give up (exit 4) rather than outlive the test run


def main() -> int:
    mode, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    pickle.load(inp)  # the set-up message
    while True:
        try:
            request = pickle.load(inp)
        except EOFError:
            return 0
        if mode == "crash" or (mode == "crash-once" and not Path(arg).exists()):
            if mode == "crash-once":
                Path(arg).touch()
            os._exit(3)
        if mode == "gate":
            deadline = time.monotonic() + GATE_DEADLINE_S
            while not Path(arg).exists():  # poll with a deadline: the test opens the gate when it is ready
                if time.monotonic() > deadline:
                    os._exit(4)
                time.sleep(0.01)
        reply = {"version": request["version"], "returns": [float(request["version"])], "lengths": [1],
                 "seconds": 0.0}
        pickle.dump(reply, out)
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
