"""The container runtime of the test node: `python node_launch.py <spec.json>` becomes one container's process.

Data flow: `node_pod` writes a spec (netns, hostname, root dir, mounts, argv, env, workdir) and starts this
script in a new session; it enters the pod's network namespace, takes private mount and UTS namespaces,
builds the container's root and execs the command, so the pid the agent holds is the container's.

The root is a tmpfs at `root` whose top-level entries are recursive binds of the host's (a fresh sysfs for
/sys, so /sys/class/net shows the pod's interfaces), with the pod's /etc/netns files bound over /etc/hosts and
/etc/resolv.conf (the same inodes the agent rewrites in place). A mount point missing from the host (e.g.
/checkpoints, /dev/termination-log, /var/run/secrets/...) is made without touching the host: the parent that
lacks it is shadowed by a tmpfs holding binds of every entry it had, and the missing part is created in that
tmpfs. Nothing propagates back (the mount namespace is private), and it all vanishes with the last process.

Stand-alone on purpose (stdlib only, no package imports): it runs before the container's environment exists.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def umount(target: str) -> None:
    _check(libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _replicate(src: str, dst: str) -> None:
    """Make `dst` show what `src` shows: a symlink copied, a directory or a file bound (with submounts)."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.mkdir(dst)
        mount(src, dst, None, MS_BIND | MS_REC)
    else:
        open(dst, "w").close()
        mount(src, dst, None, MS_BIND | MS_REC)


def _inside(root: str, path: str) -> str:
    """`path` as the container sees it, resolved to a host path under `root` (symlinks followed in the root)."""
    parts = [p for p in path.split("/") if p]
    out = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            out = os.path.dirname(out) if out != root else root
            continue
        candidate = os.path.join(out, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks in {path}")
            link = os.readlink(candidate)
            parts = [p for p in link.split("/") if p] + parts
            out = root if link.startswith("/") else out
            continue
        out = candidate
    return out


class Root:
    def __init__(self, root: str) -> None:
        self.root = root
        self.ours = {root}  # directories on our own tmpfs, where creating is free
        self.stage = os.path.join(root, ".a2c-stage")

    def build(self) -> None:
        mount("tmpfs", self.root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        os.mkdir(self.stage)
        for entry in sorted(os.listdir("/")):
            src, dst = "/" + entry, os.path.join(self.root, entry)
            if entry == "sys":
                os.mkdir(dst)
                mount("sysfs", dst, "sysfs", 0)
            else:
                _replicate(src, dst)
        nested = self.root + self.root  # the bind of our root's host ancestor copied our tmpfs too
        if os.path.ismount(nested):
            umount(nested)

    def ensure(self, path: str, is_dir: bool) -> str:
        """The host path of container path `path`, created (without touching the host) if missing."""
        path = "/" + "/".join(p for p in path.split("/") if p)
        target = _inside(self.root, path)
        if path == "/" or os.path.lexists(target):
            return target
        parent = self.ensure(os.path.dirname(path), True)
        target = os.path.join(parent, os.path.basename(path))
        if parent not in self.ours:
            self._shadow(parent)
        if is_dir:
            os.mkdir(target)
            self.ours.add(target)
        else:
            open(target, "w").close()
        return target

    def _shadow(self, directory: str) -> None:
        mount(directory, self.stage, None, MS_BIND | MS_REC)
        mode = os.stat(directory).st_mode & 0o7777
        mount("tmpfs", directory, "tmpfs", MS_NOSUID, f"mode={mode:o}")
        for entry in os.listdir(self.stage):
            _replicate(os.path.join(self.stage, entry), os.path.join(directory, entry))
        umount(self.stage)
        self.ours.add(directory)


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec: dict[str, Any] = json.load(f)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the agent gone (even killed): so is the container
    if os.getppid() != spec["parent"]:
        sys.exit(137)
    fd = os.open(spec["netns"], os.O_RDONLY)
    _check(libc.setns(fd, CLONE_NEWNET), "setns")
    os.close(fd)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    name = spec["hostname"].encode()
    _check(libc.sethostname(name, len(name)), "sethostname")
    root = Root(spec["root"])
    root.build()
    for etc in ("hosts", "resolv.conf"):
        mount(spec["etc"][etc], root.ensure("/etc/" + etc, False), None, MS_BIND)
    for m in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
        target = root.ensure(m["target"], os.path.isdir(m["source"]))
        mount(m["source"], target, None, MS_BIND | MS_REC)
        if m.get("readOnly"):
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for path in spec.get("image") or []:  # the image's files, where a volume (e.g. /tmp) covered them
        if os.path.isdir(path) and not os.path.exists(root.root + path):
            mount(path, root.ensure(path, True), None, MS_BIND | MS_REC)
    workdir = root.ensure(spec["workdir"], True)
    os.chroot(root.root)
    os.chdir(workdir[len(root.root):] or "/")
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        print(f"exec {argv[0]}: {exc}", file=sys.stderr)
        sys.exit(128)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except OSError as exc:
        print(f"container start failed: {exc}", file=sys.stderr)
        sys.exit(128)
