"""What a container is given before it runs: its environment, command line and volumes, as the kubelet builds them.

Data flow: `node_pod.PodRuntime` calls `volumes(...)` once per pod (host directories for emptyDir, PVCs,
ConfigMaps, Secrets, downwardAPI, projected sources) and `environment(...)` / `command(...)` at every container
start. ConfigMaps and Secrets come from `fetch(kind, namespace, name)` (a GET); a missing one that is not
optional raises `ConfigError`, which the container reports as CreateContainerConfigError and retries.

Environment order, later wins: the image's ENV (the repo's Dockerfile: venv bin first on PATH, HOME=/tmp,
PYTHONUNBUFFERED=1, ...), the service-account variables, `envFrom` in order, `env` in order. `$(VAR)` in env
values expands to variables defined before it (not the image's); in command and args to the final container
environment; `$$` escapes; an unknown reference stays as written.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Fetch = Callable[[str, str, str], "Obj | None"]
ENTRYPOINT = ["a2c"]
WORKDIR = "/tmp"
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")
_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """A ConfigMap, Secret or key the container needs is missing (CreateContainerConfigError)."""


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.cache
def _checkout_path() -> dict[str, str]:
    """PYTHONPATH=<this checkout> where the venv's `a2c` is another checkout's (a git worktree sharing the main
    tree's venv, whose editable install points at the main tree): the "image" runs the code under test."""
    found = subprocess.run([sys.executable, "-c", "import a2c; print(a2c.__file__)"], cwd="/", capture_output=True,
                           text=True, check=False).stdout.strip()
    return {} if os.path.realpath(found).startswith(os.path.realpath(REPO) + "/") else {"PYTHONPATH": REPO}


def image_env() -> dict[str, str]:
    venv_bin = os.path.dirname(sys.executable)
    return {"PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib",
            **_checkout_path()}


def expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def _data(obj: Obj, kind: str) -> dict[str, bytes]:
    out = {k: v.encode() for k, v in (obj.get("data") or {}).items()} if kind == "configmaps" else \
        {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    if kind == "secrets":
        out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return out


def _source(fetch: Fetch, kind: str, ns: str, ref: Obj) -> dict[str, bytes] | None:
    obj = fetch(kind, ns, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{kind[:-1]} "{ref.get("name")}" not found')
    return _data(obj, kind)


def field(pod: Obj, path: str, node_name: str) -> str:
    meta, status = pod["metadata"], pod.get("status") or {}
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": node_name, "status.podIP": status.get("podIP"),
              "status.hostIP": status.get("hostIP"), "spec.serviceAccountName": pod["spec"].get(
                  "serviceAccountName", "default")}
    if path in simple:
        return str(simple[path] or "")
    m = _FIELD.fullmatch(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"unsupported fieldPath {path}")


def environment(pod: Obj, container: Obj, fetch: Fetch, node_name: str, base: dict[str, str]) -> dict[str, str]:
    """The container's own environment (the image's ENV goes under it at exec); `base`: KUBERNETES_SERVICE_*."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            if key in source:
                data = _source(fetch, kind, ns, source[key]) or {}
                prefix = source.get("prefix", "")
                env.update({prefix + k: v.decode() for k, v in data.items() if _ENV_NAME.match(prefix + k)})
    for var in container.get("env") or []:
        if "valueFrom" not in var:
            env[var["name"]] = expand(var.get("value", ""), env)
            continue
        ref = var["valueFrom"]
        if "fieldRef" in ref:
            env[var["name"]] = field(pod, ref["fieldRef"]["fieldPath"], node_name)
        elif "resourceFieldRef" in ref:
            env[var["name"]] = _resource(container, ref["resourceFieldRef"])
        else:
            kind, sel = ("configmaps", ref["configMapKeyRef"]) if "configMapKeyRef" in ref else \
                ("secrets", ref["secretKeyRef"])
            found = _source(fetch, kind, ns, sel)
            if found is None:
                continue
            if sel["key"] not in found:
                if sel.get("optional"):
                    continue
                raise ConfigError(f'couldn\'t find key {sel["key"]} in {kind[:-1]} {ns}/{sel["name"]}')
            env[var["name"]] = found[sel["key"]].decode()
    return env


def _resource(container: Obj, ref: Obj) -> str:
    """limits/requests from the spec; a missing limit is the node's capacity (cores, bytes), as the kubelet has it."""
    section, _, name = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(name)
    if value is None:
        return str(os.cpu_count() or 1) if name == "cpu" else str(os.sysconf("SC_PAGE_SIZE") * os.sysconf(
            "SC_PHYS_PAGES"))
    return str(value)


def command(container: Obj, env: dict[str, str]) -> list[str]:
    """ENTRYPOINT `a2c`: `command` replaces it, `args` replace CMD; both with $(VAR) expanded."""
    cmd = [expand(c, env) for c in container.get("command") or []] or list(ENTRYPOINT)
    return cmd + [expand(a, env) for a in container.get("args") or []]


def _write_items(directory: str, data: dict[str, bytes], items: list[Obj] | None, mode: int) -> None:
    chosen = [(i["key"], i["path"], i.get("mode", mode)) for i in items] if items else \
        [(k, k, mode) for k in data]
    for key, rel, file_mode in chosen:
        if key not in data:
            raise ConfigError(f"configmap/secret key {key} not found")
        target = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data[key])
        os.chmod(target, file_mode)


def volume(vol: Obj, pod: Obj, directory: str, fetch: Fetch, node_name: str,
           token: Callable[[int | None], str] | None = None) -> None:
    """Fill `directory` with a configMap, secret, downwardAPI or projected volume's files."""
    ns = pod["metadata"]["namespace"]
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    os.chmod(directory, 0o755)
    sources: list[tuple[str, Obj]] = []
    if "projected" in vol:
        mode = vol["projected"].get("defaultMode", 0o644)
        for src in vol["projected"].get("sources") or []:
            sources += [(k, {**v, "defaultMode": v.get("defaultMode", mode)}) for k, v in src.items()]
    else:
        sources = [(k, vol[k]) for k in ("configMap", "secret", "downwardAPI") if k in vol]
    for kind, src in sources:
        mode = src.get("defaultMode", 0o644)
        if kind in ("configMap", "secret"):
            ref = {"name": src.get("name") or src.get("secretName", ""), "optional": src.get("optional")}
            data = _source(fetch, "configmaps" if kind == "configMap" else "secrets", ns, ref)
            if data is not None:
                _write_items(directory, data, src.get("items"), mode)
        elif kind == "downwardAPI":
            for item in src.get("items") or []:
                value = field(pod, item["fieldRef"]["fieldPath"], node_name) if "fieldRef" in item else ""
                _write_items(directory, {"v": value.encode()}, [{"key": "v", "path": item["path"],
                                                                  "mode": item.get("mode", mode)}], mode)
        elif kind == "serviceAccountToken" and token is not None:
            _write_items(directory, {"t": token(src.get("expirationSeconds")).encode()},
                         [{"key": "t", "path": src["path"]}], mode)
        else:
            raise ConfigError(f"unsupported volume source {kind}")
