"""How a role that can never run says why: exit code 3 and a message the kubelet puts in the pod's status.

Data flow: `trainer.run` / `player.run` build their environment and model first; if that fails (an unknown
environment id, a missing extra such as box2d, bad kwargs) the error is deterministic, so restarting the pod
cannot help. They call `cannot_start`, which writes the message to the container's termination-message file
(Kubernetes mounts /dev/termination-log; nothing is written where it does not exist, e.g. `a2c local`) and
returns `EXIT_CANNOT_START`. The controller reads exit code and message from the trainer pods'
`containerStatuses` and ends the job Failed instead of restarting the gang (`controller.status`).
"""

from __future__ import annotations

import logging
import os

EXIT_CANNOT_START = 3
MESSAGE_PATH = "/dev/termination-log"  # the kubelet's default terminationMessagePath
MAX_MESSAGE = 4096  # the kubelet keeps at most 4 KiB of it


def cannot_start(role: str, exc: BaseException, path: str | None = None) -> int:
    """Log why `role` cannot start, leave the termination message, return the exit code to exit with."""
    message = f"{role} cannot start: {type(exc).__name__}: {exc}"
    logging.getLogger(f"a2c.{role}").error("%s", message)
    target = path or os.environ.get("A2C_TERMINATION_MESSAGE_PATH", MESSAGE_PATH)
    if os.path.exists(target):
        try:
            with open(target, "w", encoding="utf-8") as f:
                f.write(message[:MAX_MESSAGE])
        except OSError as err:  # read-only or not ours: the log (FallbackToLogsOnError) still says it
            logging.getLogger(f"a2c.{role}").warning("could not write %s: %s", target, err)
    return EXIT_CANNOT_START
