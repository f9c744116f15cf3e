"""The kubelet of the test node for one pod: sandbox, volumes, containers as processes, probes, status.

Data flow: `node.Node` makes a `PodRuntime` for each pod it sees and calls `start()`; a thread sets up the
sandbox (network namespace from `netns`, volumes from `node_env`), runs the init containers one after the
other, then one `Container` thread per container. Each start writes a spec for `node_launch.py` and runs it in
a new session; its exit is recorded (exit code, reason, message) and the restart policy decides, with an
exponential back-off (`Settings.backoff_s`). A prober thread per running container runs its startup,
liveness and readiness probes (times scaled by `Settings.probe_scale`). `status()` renders the pod's
`.status` from all that; the node writes it through `/status` when it changes. `terminate()` is the
deletion path: SIGTERM to every container's process group, SIGKILL after the grace period, then the
sandbox goes (namespace, emptyDirs, logs stay until the node stops).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from tests.cluster import netns, node_container, node_env, node_probe

log = logging.getLogger(__name__)
Obj = dict[str, Any]
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_launch.py")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def image_paths() -> list[str]:
    """What the "image" is made of on this machine: the virtual environment, the Python it was made from, and
    this checkout (an editable install imports `a2c` from it). A pod's volume may cover one of them (a checkout
    under /tmp, where every pod mounts an emptyDir): the launcher binds these back in, as an image's files are
    in every container whatever is mounted beside them."""
    paths = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, REPO)})
    return [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Settings:
    node_name: str
    pods_dir: str
    backoff_s: tuple[float, float] = (0.2, 2.0)
    backoff_reset_s: float = 10.0
    probe_scale: float = 0.1
    grace_cap_s: float = 3.0
    runtime: str = "process"  # or "container": podman containers of the pod's image (node_container)
    engine: node_container.Engine | None = None


class Host(Protocol):
    """What a pod needs from its node."""

    settings: Settings

    def fetch(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def sandbox(self, runtime: PodRuntime) -> netns.PodNet: ...
    def claim_dir(self, namespace: str, claim: str) -> str | None: ...
    def service_account(self, runtime: PodRuntime) -> tuple[str, dict[str, str]]: ...
    def wake(self) -> None: ...


class PodRuntime:
    def __init__(self, host: Host, pod: Obj) -> None:
        self.host, self.pod = host, pod
        meta = pod["metadata"]
        self.namespace, self.name = meta.get("namespace") or "default", meta["name"]
        self.uid = meta.get("uid") or f"{self.namespace}.{self.name}"
        self.dir = os.path.join(host.settings.pods_dir, self.uid)
        self.net: netns.PodNet | None = None
        self.mount_dirs: dict[str, str] = {}  # volume name -> host directory
        self.sa: tuple[str, dict[str, str]] | None = None
        self.started_at = now()
        self.setup_error = ""
        self.stopping = threading.Event()
        self.finished = threading.Event()  # every process gone and the sandbox removed
        self.initialized = False
        self.init_failed = False
        self.init_containers = [Container(self, c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(self, c) for c in pod["spec"]["containers"]]
        self.conditions: dict[str, tuple[str, str]] = {}
        self.written: Obj | None = None
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    @property
    def hostname(self) -> str:
        return str(self.pod["spec"].get("hostname") or self.name)[:63]

    def start(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._setup()
                break
            except node_env.ConfigError as exc:
                self.setup_error = str(exc)
                self.host.wake()
                self.stopping.wait(0.5)
            except Exception as exc:
                log.exception("pod %s/%s: sandbox", self.namespace, self.name)
                self.setup_error = f"sandbox: {exc}"
                self.host.wake()
                self.stopping.wait(1.0)
        self.setup_error = ""
        for c in self.init_containers:
            if self.stopping.is_set():
                return
            c.run()
            if c.exit_code != 0:
                self.init_failed = True
                self.host.wake()
                return
        self.initialized = True
        self.host.wake()
        threads = [threading.Thread(target=c.run, name=f"{self.name}/{c.name}", daemon=True) for c in self.containers]
        for t in threads:
            t.start()

    def _setup(self) -> None:
        if self.net is None:
            self.net = self.host.sandbox(self)
            self.host.wake()
        settings, pod = self.host.settings, self.pod
        for vol in pod["spec"].get("volumes") or []:
            name = vol["name"]
            if name in self.mount_dirs:
                continue
            directory = os.path.join(self.dir, "volumes", name)
            if "emptyDir" in vol:
                os.makedirs(directory, exist_ok=True)
                os.chmod(directory, 0o777)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                found = self.host.claim_dir(self.namespace, claim)
                if found is None:
                    raise node_env.ConfigError(f'persistentvolumeclaim "{claim}" not found')
                directory = found
            elif "hostPath" in vol:
                directory = vol["hostPath"]["path"]
                if vol["hostPath"].get("type") == "DirectoryOrCreate":
                    os.makedirs(directory, exist_ok=True)
            else:
                node_env.volume(vol, self._pod_with_ip(), directory, self.host.fetch, settings.node_name)
            self.mount_dirs[name] = directory
        if self.sa is None and pod["spec"].get("automountServiceAccountToken", True) is not False:
            self.sa = self.host.service_account(self)
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        if fs_group is not None:  # the kubelet's volume ownership: group fsGroup, group-writable, setgid dirs
            owned = [d for v in pod["spec"].get("volumes") or [] if "hostPath" not in v
                     for d in [self.mount_dirs[v["name"]]]]
            for directory in owned + ([self.sa[0]] if self.sa else []):
                node_container.own(directory, int(fs_group))

    def _pod_with_ip(self) -> Obj:
        ip = self.net.ip if self.net else ""
        return {**self.pod, "status": {**(self.pod.get("status") or {}), "podIP": ip}}

    def mounts(self, container: Container) -> list[Obj]:
        out = []
        for m in container.spec.get("volumeMounts") or []:
            source = self.mount_dirs[m["name"]]
            if m.get("subPath"):
                source = os.path.join(source, m["subPath"])
                if not os.path.exists(source):
                    os.makedirs(source)
            out.append({"source": source, "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
        if self.sa and all(m["target"] != SA_PATH for m in out):
            out.append({"source": self.sa[0], "target": SA_PATH, "readOnly": True})
        out.append({"source": container.term_file,
                    "target": container.spec.get("terminationMessagePath", "/dev/termination-log")})
        return out

    # status

    def ready(self) -> bool:
        return self.initialized and all(c.ready for c in self.containers)

    def phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if not self.initialized:
            return "Pending"
        if all(c.done for c in self.containers):
            return "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        if any(c.proc is not None or c.restart_count or c.done for c in self.containers):
            return "Running"
        return "Pending"

    def _condition(self, kind: str, ok: bool) -> Obj:
        status = "True" if ok else "False"
        if self.conditions.get(kind, ("", ""))[0] != status:
            self.conditions[kind] = (status, now())
        return {"type": kind, "status": status, "lastProbeTime": None,
                "lastTransitionTime": self.conditions[kind][1]}

    def status(self) -> Obj:
        ready = self.ready()
        out: Obj = {
            "phase": self.phase(), "hostIP": self.host_ip(), "startTime": self.started_at, "qosClass": "BestEffort",
            "conditions": [self._condition("PodScheduled", True), self._condition("Initialized", self.initialized),
                           self._condition("ContainersReady", ready), self._condition("Ready", ready)],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.net:
            out["podIP"] = self.net.ip
            out["podIPs"] = [{"ip": self.net.ip}]
        if self.init_containers:
            out["initContainerStatuses"] = [c.status() for c in self.init_containers]
        return out

    def host_ip(self) -> str:
        return self.net.ip.rsplit(".", 1)[0] + ".1" if self.net else ""

    # deletion

    def grace_s(self) -> float:
        grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return min(float(grace), self.host.settings.grace_cap_s)

    def terminate(self, grace_s: float | None = None) -> None:
        """SIGTERM every container, SIGKILL what is left after the grace period; then the sandbox goes."""
        self.stopping.set()
        grace = self.grace_s() if grace_s is None else grace_s
        running = [c for c in self.init_containers + self.containers if c.proc is not None]
        for c in running:
            c.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in running:
            if not c.exited.wait(max(0.0, deadline - time.monotonic())):
                c.signal(signal.SIGKILL)
        for c in running:
            c.exited.wait(5)
        self._thread.join(5)


class Container:
    def __init__(self, pod: PodRuntime, spec: Obj, init: bool = False) -> None:
        self.pod, self.spec, self.init = pod, spec, init
        self.name = spec["name"]
        self.dir = os.path.join(pod.dir, "init" if init else "containers", self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.term_file = os.path.join(self.dir, "termination-log")
        self.log_file = os.path.join(self.dir, "current.log")
        self.previous_log = os.path.join(self.dir, "previous.log")
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "PodInitializing" if init else "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.done = False
        self.exit_code: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.exited = threading.Event()
        self.instance = 0
        self.engine = pod.host.settings.engine

    @property
    def conmon_pidfile(self) -> str:
        return os.path.join(self.dir, f"conmon-{self.instance}.pid")

    @property
    def container_name(self) -> str:
        """The podman name of the current instance (container runtime)."""
        return f"a2c-{self.pod.uid}-{self.name}-{self.instance}"

    def signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and self.engine is not None:
            self.engine.kill(self.container_name, sig, proc, self.conmon_pidfile)
        elif proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def exec_argv(self, command: list[str]) -> tuple[list[str], dict[str, str] | None] | None:
        """How to run `command` inside the running instance (an exec probe), with the environment to run it in."""
        proc = self.proc
        if proc is None:
            return None
        if self.engine is not None:
            return ["podman", "exec", self.container_name, *command], self.engine.env
        return ["nsenter", "-t", str(proc.pid), "-m", "-n", "-u", "-r", "-w", "--", *command], None

    def status(self) -> Obj:
        out: Obj = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
                    "ready": self.ready, "restartCount": self.restart_count, "started": self.started,
                    "state": self.state, "lastState": self.last_state}
        if "running" in self.state or "terminated" in self.state:
            out["containerID"] = f"a2c://{self.pod.uid}-{self.name}-{self.instance}"
        return out

    def _should_restart(self, code: int) -> bool:
        policy = self.pod.pod["spec"].get("restartPolicy", "Always")
        if self.init:
            return code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    def run(self) -> None:
        settings = self.pod.host.settings
        delay = settings.backoff_s[0]
        while not self.pod.stopping.is_set():
            try:
                ran_s, code = self._run_once()
            except Exception as exc:  # a missing ConfigMap/Secret/key, or a spec this node cannot run
                reason = getattr(exc, "reason", None) or ("CreateContainerConfigError" if isinstance(
                    exc, node_env.ConfigError) else "CreateContainerError")
                if reason == "CreateContainerError":
                    log.warning("%s/%s: %s", self.pod.name, self.name, exc, exc_info=True)
                self.state = {"waiting": {"reason": reason, "message": str(exc)}}
                self.pod.host.wake()
                self.pod.stopping.wait(delay)
                continue
            if self.pod.stopping.is_set() or not self._should_restart(code):
                self.done = True
                self.pod.host.wake()
                return
            if ran_s > settings.backoff_reset_s:
                delay = settings.backoff_s[0]
            self.last_state = self.state
            self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                f"back-off {delay:.1f}s restarting failed container={self.name} pod={self.pod.name}")}}
            self.pod.host.wake()
            if self.pod.stopping.wait(delay):
                self.state, self.last_state = self.last_state, {}
                break
            delay = min(2 * delay, settings.backoff_s[1])
            self.restart_count += 1

    def _run_once(self) -> tuple[float, int]:
        pod = self.pod
        assert pod.net is not None
        base = pod.sa[1] if pod.sa else {}
        env = node_env.environment(pod._pod_with_ip(), self.spec, pod.host.fetch, pod.host.settings.node_name, base)
        if os.path.exists(self.log_file):
            os.replace(self.log_file, self.previous_log)
        open(self.term_file, "w").close()
        os.chmod(self.term_file, 0o666)  # as the kubelet makes it: a non-root container writes it
        if self.engine is not None:
            return self._run_container(env)
        argv = node_env.command(self.spec, env)
        root = os.path.join(self.dir, "root")
        os.makedirs(root, exist_ok=True)
        spec = {"parent": os.getpid(), "netns": f"/run/netns/{pod.net.netns}", "hostname": pod.hostname,
                "root": root, "etc": {"hosts": pod.net.hosts_path,
                                      "resolv.conf": f"{netns.NETNS_DIR}/{pod.net.netns}/resolv.conf"},
                "mounts": pod.mounts(self), "workdir": self.spec.get("workingDir") or node_env.WORKDIR,
                "argv": argv, "env": {**node_env.image_env(), **env}, "image": image_paths()}
        spec_file = os.path.join(self.dir, "spec.json")
        with open(spec_file, "w") as f:
            json.dump(spec, f)
        self.exited.clear()
        self.instance += 1
        with open(self.log_file, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, LAUNCHER, spec_file], stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd="/")
        began = self._now_running()
        code = self.proc.wait()
        return self._ended(began, code if code >= 0 else 128 - code)

    def _now_running(self) -> float:
        """The instance has started: its state, started/ready as no probe has yet said otherwise, its prober."""
        began = time.monotonic()
        self.state = {"running": {"startedAt": now()}}
        self.started = "startupProbe" not in self.spec
        self.ready = self.started and "readinessProbe" not in self.spec and not self.init
        self.pod.host.wake()
        if not self.init:
            node_probe.Prober(self, self.instance).start()
        return began

    def _ended(self, began: float, code: int, reason: str = "", message: str = "") -> tuple[float, int]:
        self.exit_code = code
        self.ready = False
        self.state = {"terminated": self._terminated(self.exit_code, reason, message)}
        self.proc = None
        self.exited.set()
        self.pod.host.wake()
        return time.monotonic() - began, self.exit_code

    def _run_container(self, env: dict[str, str]) -> tuple[float, int]:
        """One instance as a podman container (node_container): the same life as a process, seen through podman."""
        pod, engine = self.pod, self.engine
        assert pod.net is not None and engine is not None
        self.exited.clear()
        self.instance += 1
        argv = engine.argv(self.container_name, pod.pod, self.spec, env, netns=f"/run/netns/{pod.net.netns}",
                           hostname=pod.hostname, mounts=pod.mounts(self),
                           etc={"/etc/hosts": pod.net.hosts_path,
                                "/etc/resolv.conf": f"{netns.NETNS_DIR}/{pod.net.netns}/resolv.conf"},
                           conmon_pidfile=self.conmon_pidfile)
        kernel_log = node_container.KernelLog()
        with open(self.log_file, "ab") as logf:
            self.proc = engine.start(argv, logf, cwd=os.path.dirname(self.conmon_pidfile))
        began = self._now_running()
        rc = self.proc.wait()
        ended = engine.finish(self.container_name, rc, kernel_log)
        if ended.error:  # the runtime's reason is the last thing podman wrote
            return self._ended(began, ended.exit_code, "StartError", _read_tail(self.log_file, 2048, 5) or ended.error)
        return self._ended(began, ended.exit_code, "OOMKilled" if ended.oom_killed else "")

    def _terminated(self, code: int, reason: str = "", message: str = "") -> Obj:
        started = self.state.get("running", {}).get("startedAt", now())
        reason = reason or ("Completed" if code == 0 else "Error")
        out: Obj = {"exitCode": code, "reason": reason, "startedAt": started,
                    "finishedAt": now(), "containerID": f"a2c://{self.pod.uid}-{self.name}-{self.instance}"}
        if code > 128:
            out["signal"] = code - 128
        message = _read_tail(self.term_file, 4096, None) or message
        if not message and code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = _read_tail(self.log_file, 2048, 80)
        if message:
            out["message"] = message
        return out


def _read_tail(path: str, max_bytes: int, max_lines: int | None) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    if max_lines is not None:
        data = "\n".join(data.splitlines()[-max_lines:])
    return data


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
