"""The container runtime of the test node: a pod's container as a podman container of the built image.

Data flow: `node_pod.Container` asks `Engine.start(...)` for a running container when the node's runtime is
"container" (`A2C_TEST_RUNTIME=container`, or `Node(runtime=...)`); it gets back the attached `podman run`
process (its output is the container's log), signals go through `podman kill`, and `finish(...)` reads the
exit code, whether the kernel's OOM killer ended it, and any start error, then removes the container.

The container is what the kubelet would run, not what podman would by default: the pod's securityContext
(`--user`, `--group-add` fsGroup and supplementalGroups, `--read-only` without podman's tmpfs mounts,
`--cap-drop`/`--cap-add`, no-new-privileges, no passwd entry added), its resources (`--cpus`,
`--memory` with no swap beyond it, `--cpu-shares` from requests), its volumes as bind mounts, its env, the
image's ENTRYPOINT unless `command` is set, the pod's network namespace (`--network ns:...`) with the
node's kubelet-style /etc/hosts and resolv.conf (`--no-hosts`: podman's copy of the host's lacks the pod's
own name). Never podman's bridge network: netavark would turn on ip_forward and add iptables rules.

podman runs with runc (crun refuses hybrid cgroup layouts) and rlimits at this shell's hard limits (root
without CAP_SYS_RESOURCE cannot raise them): a containers.conf in the node's state dir, via CONTAINERS_CONF.
Every container carries the label `a2c.test-node=<run>`; `remove_all` and `sweep` go by it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.cluster.node_env import ConfigError, expand

Obj = dict[str, Any]
LABEL = "a2c.test-node"
SOURCE_LABEL = "a2c.source-sha256"  # set by deploy/image/build.sh
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIME_ENV = "A2C_TEST_RUNTIME"
RUNTIMES = ("process", "container")


def runtime_from_env() -> str:
    """The runtime named by A2C_TEST_RUNTIME ("process" when unset); anything else is an error, not a default."""
    value = os.environ.get(RUNTIME_ENV, "") or "process"
    if value not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={value!r}: expected one of {', '.join(RUNTIMES)}")
    return value


def containers_conf(path: str) -> str:
    """Write the containers.conf podman needs here; returns its path."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(32768, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    with open(path, "w") as f:
        f.write(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                '[engine]\nruntime = "runc"\n')
    return path


def podman_env(conf: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": conf}


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "1.5", "256Mi", "1G") as a number (cores or bytes)."""
    s = str(text).strip()
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    for suffix, factor in binary.items():
        if s.endswith(suffix):
            return float(s[:-2]) * factor
    if s and s[-1] in decimal:
        return float(s[:-1]) * decimal[s[-1]]
    return float(s)


@dataclass
class Ended:
    exit_code: int
    oom_killed: bool
    error: str  # the runtime's start error ("" when the command ran)


def security(pod_spec: Obj, container: Obj) -> Obj:
    """The effective security context: the container's fields over the pod's, as the kubelet merges them."""
    pod_sec = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    merged = {k: pod_sec[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile") if k in pod_sec}
    merged.update(own)
    merged["fsGroup"] = pod_sec.get("fsGroup")
    merged["supplementalGroups"] = pod_sec.get("supplementalGroups") or []
    return merged


class Engine:
    """podman for one node run: containers.conf, labels, image lookups."""

    def __init__(self, state_dir: str, run: str) -> None:
        self.run = run
        self.env = podman_env(containers_conf(os.path.join(state_dir, "containers.conf")))
        self._users: dict[str, str | None] = {}

    def podman(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env, timeout=timeout_s)

    def image_user(self, image: str) -> str | None:
        """The image's USER ("" when it has none), or None when the image is not in podman's store. An image
        deploy/image/build.sh made from other source than this checkout's is refused: its pods would run
        code the tests never read."""
        if image not in self._users:
            done = self.podman("image", "inspect", "--format",
                               f'{{{{.Config.User}}}} {{{{index .Labels "{SOURCE_LABEL}"}}}}', image)
            user, _, built_from = done.stdout.strip().partition(" ")
            if done.returncode == 0 and built_from not in ("", "<no value>") and built_from != source_digest():
                raise ImageMissing(f"{image} was built from other source than this checkout's (a2c/, protos/ or "
                                   "pyproject.toml changed since): run deploy/image/build.sh")
            self._users[image] = user if done.returncode == 0 else None
        return self._users[image]

    def argv(self, name: str, pod: Obj, spec: Obj, env: dict[str, str], *, netns: str, hostname: str,
             mounts: list[Obj], etc: dict[str, str], conmon_pidfile: str) -> list[str]:
        """The `podman run` command line for one container instance (raises ValueError for what the kubelet
        would refuse: a missing image, runAsNonRoot with a root user)."""
        image = spec.get("image") or ""
        user = self.image_user(image)
        if user is None:
            raise ImageMissing(f'container image "{image}" is not present with pull policy of Never '
                               "(build it: deploy/image/build.sh)")
        sec = security(pod["spec"], spec)
        uid = sec.get("runAsUser", user.split(":")[0] if user else "0")
        if sec.get("runAsNonRoot") and str(uid) in ("0", "root"):
            raise NonRoot("container has runAsNonRoot and image will run as root")
        if sec.get("runAsNonRoot") and not str(uid).isdigit():
            raise NonRoot(f"container has runAsNonRoot and image has non-numeric user ({uid}), "
                          "cannot verify user is non-root")
        out = ["run", "--name", name, "--label", f"{LABEL}={self.run}", "--pull=never",
               "--conmon-pidfile", conmon_pidfile,
               f"--network=ns:{netns}", "--hostname", hostname, "--no-hosts", "--passwd=false",
               "--log-driver=none", "--sig-proxy=false", "--pids-limit=-1", "--shm-size=64m"]
        if "runAsUser" in sec or "runAsGroup" in sec:
            group = sec.get("runAsGroup", user.split(":")[1] if ":" in (user or "") else "")
            out += ["--user", f"{uid}:{group}" if group != "" else str(uid)]
        for gid in ([sec["fsGroup"]] if sec.get("fsGroup") is not None else []) + list(sec["supplementalGroups"]):
            out += ["--group-add", str(gid)]
        if sec.get("privileged"):
            out.append("--privileged")
        if sec.get("readOnlyRootFilesystem"):
            out += ["--read-only", "--read-only-tmpfs=false"]
        caps = sec.get("capabilities") or {}
        out += [arg for cap in caps.get("drop") or [] for arg in ("--cap-drop", cap)]
        out += [arg for cap in caps.get("add") or [] for arg in ("--cap-add", cap)]
        if sec.get("allowPrivilegeEscalation") is False:
            out += ["--security-opt", "no-new-privileges"]
        if (sec.get("seccompProfile") or {}).get("type") == "Unconfined":
            out += ["--security-opt", "seccomp=unconfined"]
        resources = spec.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if "cpu" in limits:
            out.append(f"--cpus={quantity(limits['cpu']):g}")
        cpu_request = requests.get("cpu", limits.get("cpu"))
        if cpu_request is not None:  # the kubelet's cpu.shares: milli-cores x 1024 / 1000, at least 2
            out.append(f"--cpu-shares={max(2, int(quantity(cpu_request) * 1024))}")
        if "memory" in limits:
            memory = int(quantity(limits["memory"]))
            out += [f"--memory={memory}", f"--memory-swap={memory}"]  # the kubelet gives no swap
        for target, source in etc.items():
            out += ["--mount", f"type=bind,source={source},destination={target}"]
        for m in mounts:
            out += ["--mount", f"type=bind,source={m['source']},destination={m['target']}"
                    + (",ro=true" if m.get("readOnly") else "")]
        for key, value in env.items():
            out += ["--env", f"{key}={value}"]
        if spec.get("workingDir"):
            out += ["--workdir", spec["workingDir"]]
        command = [_expand(c, env) for c in spec.get("command") or []]
        if command:  # `command` replaces ENTRYPOINT (and the image's CMD with it); `args` replace CMD
            out += ["--entrypoint", json.dumps(command)]
        return out + [image] + [_expand(a, env) for a in spec.get("args") or []]

    def start(self, argv: list[str], log: Any, cwd: str) -> subprocess.Popen[bytes]:
        """`podman run` in `cwd`, the container's own folder: conmon writes a file `oom` into its working
        directory when the kernel kills the container for memory, which must not land in the caller's."""
        return subprocess.Popen(["podman", *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, start_new_session=True, cwd=cwd)

    def kill(self, name: str, sig: int, proc: subprocess.Popen[bytes] | None, conmon_pidfile: str) -> None:
        """Signal the container's process as runc would: straight to it (the child of its conmon), without
        podman, whose commands wait for its store's lock (held for minutes by a build); `podman kill` only when
        that process is not found, and the `podman run` itself while podman has not yet made the container."""
        pid = container_pid(conmon_pidfile)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                return
        done = self.podman("kill", "--signal", str(int(sig)), name, timeout_s=60)
        if done.returncode != 0 and proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def finish(self, name: str, podman_rc: int, kernel_log: KernelLog) -> Ended:
        """What ended the container (exit 128 when it never started, as the kubelet reports a StartError);
        then remove it."""
        done = self.podman("container", "inspect", "--format", "{{.ID}} {{json .State}}", name)
        self.podman("rm", "--force", "--time", "0", name)
        if done.returncode != 0:
            kernel_log.close()
            return Ended(128, False, f"podman run exited {podman_rc} without making a container")
        ident, state_json = done.stdout.split(" ", 1)
        state = json.loads(state_json)
        oom = kernel_log.oom_killed(ident)
        if str(state.get("StartedAt", "")).startswith("0001"):
            return Ended(128, False, f"the container did not start (podman run exited {podman_rc})")
        return Ended(int(state.get("ExitCode", podman_rc)), bool(state.get("OOMKilled")) or oom, "")

    def names(self, run: str | None = None) -> list[str]:
        label = f"{LABEL}={run}" if run else LABEL
        done = self.podman("ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}")
        return done.stdout.split()

    def remove_all(self) -> list[str]:
        names = self.names(self.run)
        if names:
            self.podman("rm", "--force", "--time", "0", *names, timeout_s=120)
        return names


class KernelLog:
    """The kernel's log from now on, to learn whether its OOM killer ended a container. podman's own OOMKilled
    is false on this machine's cgroup v1 layout (conmon misses the event), so the kernel's word is read too:
    `oom-kill:...,oom_memcg=/<parent>/libpod-<id>,...` names the container's cgroup."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    def oom_killed(self, container_id: str) -> bool:
        found = False
        while self.fd is not None:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten while we read: go on with the next
                continue
            if not record:
                break
            found |= record.split(";", 1)[-1].startswith("oom-kill:") and container_id in record
        self.close()
        return found

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ImageMissing(Exception):
    """The image is not in the store and nothing may pull it (the kubelet's ErrImageNeverPull)."""

    reason = "ErrImageNeverPull"


class NonRoot(ConfigError):
    """runAsNonRoot with a root (or unverifiable) user: CreateContainerConfigError."""


def source_digest(root: str = REPO) -> str:
    """What deploy/image/build.sh labels the image with: sha256 of `sha256sum` over the package's files."""
    paths = []
    for top in ("a2c", "protos", "pyproject.toml"):
        if os.path.isfile(os.path.join(root, top)):
            paths.append(top)
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            paths += [os.path.relpath(os.path.join(folder, f), root) for f in files if not f.endswith(".pyc")]
    lines = []
    for path in sorted(paths, key=os.fsencode):
        with open(os.path.join(root, path), "rb") as f:
            lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {path}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def container_pid(conmon_pidfile: str) -> int | None:
    """The container's first process: the one child of its conmon (a subreaper that runc's init is left to)."""
    try:
        with open(conmon_pidfile) as f:
            conmon = int(f.read().strip())
        with open(f"/proc/{conmon}/task/{conmon}/children") as f:
            children = f.read().split()
    except (OSError, ValueError):
        return None
    return int(children[0]) if len(children) == 1 else None


def _expand(text: str, env: dict[str, str]) -> str:
    return expand(text, env)


def own(directory: str, gid: int) -> None:
    """The kubelet's fsGroup ownership of a volume: every file and directory in group `gid`, group read-write
    (what the owner may do), directories setgid so new files join the group."""
    for path, dirs, files in os.walk(directory):
        for entry in [path, *(os.path.join(path, f) for f in files)]:
            if os.path.islink(entry):
                continue
            st = os.lstat(entry)
            os.chown(entry, -1, gid)
            mode = st.st_mode & 0o7777
            mode |= (mode & 0o600) >> 3
            if entry == path:
                mode |= 0o2000
            os.chmod(entry, mode)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(path, d))]


def sweep(is_dead: Any) -> list[str]:
    """Remove containers of node runs that are gone (`is_dead(run)`); returns their names."""
    try:
        done = subprocess.run(["podman", "ps", "--all", "--filter", f"label={LABEL}", "--format",
                               f'{{{{.Names}}}} {{{{index .Labels "{LABEL}"}}}}'],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gone = [line.split()[0] for line in done.stdout.splitlines() if len(line.split()) == 2
            and is_dead(line.split()[1])]
    if gone:
        subprocess.run(["podman", "rm", "--force", "--time", "0", *gone], capture_output=True, timeout=120)
    return gone
