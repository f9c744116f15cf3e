"""Which image each job needs (docs/images.md): the extras a job's header names exist in pyproject.toml
and are enough to make its environment.

"Enough" is checked for real: the environment is made in a fresh interpreter in which every installed
distribution outside the package's base requirements and the named extras (and what they require) is
hidden, so a LunarLander job that forgot `box2d` fails here as it would in its pod.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import chartlib

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest brings tomli on 3.10
    import tomli as tomllib

ROOT = chartlib.ROOT
IMAGES_DOC = ROOT / "docs" / "images.md"
# Every file that describes a job: the examples and the chart's values files that choose an environment.
JOBS = sorted((ROOT / "examples").glob("*.yaml")) + [chartlib.CHART / "ci" / "gpu-values.yaml"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def image_line(path: Path) -> str:
    """The `# Image: ...` line of a job file's header comment."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("# Image:")]
    assert len(lines) == 1, f"{path.name}: say which image it needs in one '# Image:' header line"
    return lines[0]


def named_extras(path: Path) -> set[str]:
    found = re.search(r"EXTRAS=([a-z0-9_,-]+)", image_line(path))
    return set(found.group(1).split(",")) if found else set()


def job_of(path: Path) -> tuple[str, str]:
    """(environment id, image tag) of an A2CJob manifest or of chart values."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    if doc.get("kind") == "A2CJob":
        return doc["spec"]["environment"]["id"], doc["spec"]["image"].rpartition(":")[2]
    defaults = chartlib.values_file(chartlib.CHART / "values.yaml")
    env_id = doc.get("job", {}).get("environment", {}).get("id", defaults["job"]["environment"]["id"])
    return env_id, str(doc.get("image", {}).get("tag") or "")


def allowed_distributions(extras: set[str]) -> set[str]:
    """The distributions `pip install '.[extras]'` brings: the package's requirements and those of the named
    extras, and theirs in turn (as installed here), markers evaluated."""
    todo = [(Requirement(r), "") for r in PYPROJECT["dependencies"]]
    todo += [(Requirement(r), extra) for extra in extras for r in PYPROJECT["optional-dependencies"][extra]]
    seen: set[tuple[str, frozenset[str]]] = set()
    out: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        out.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for sub in requires:
            todo += [(Requirement(sub), e) for e in ("", *req.extras)]
    return out


def hidden_modules(extras: set[str]) -> list[str]:
    """Top-level modules that only distributions outside `extras` provide."""
    allowed = allowed_distributions(extras)
    return sorted(module for module, dists in metadata.packages_distributions().items()
                  if not any(canonicalize_name(d) in allowed for d in dists))


MAKE = """
import importlib.abc, json, sys
hidden = set(json.loads(sys.argv[1]))

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the image's extras)", name=name)
        return None

sys.meta_path.insert(0, Hide())
import gymnasium
env = gymnasium.make(sys.argv[2])
env.reset(seed=0)
env.close()
print("made", sys.argv[2])
"""


def make_with(env_id: str, extras: set[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MAKE, json.dumps(hidden_modules(extras)), env_id],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_names_its_image_and_the_docs_agree(path: Path) -> None:
    _env_id, tag = job_of(path)
    line = image_line(path)
    assert f"a2c:{tag}" in line, (path.name, tag, line)
    assert named_extras(path) <= set(PYPROJECT["optional-dependencies"]) - {"dev", "bench"}, line
    docs = IMAGES_DOC.read_text()
    row = next((r for r in docs.splitlines() if path.relative_to(ROOT).as_posix() in r), "")
    assert f"a2c:{tag}" in row, f"docs/images.md has no row giving {path.name} the image a2c:{tag}"


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_named_extras_are_enough_to_make_the_environment(path: Path) -> None:
    env_id, _tag = job_of(path)
    proc = make_with(env_id, named_extras(path))
    needs = named_extras(path) or "the base package"
    assert proc.returncode == 0, f"{path.name}: {env_id} needs more than {needs}:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize(("env_id", "extra"), [("LunarLander-v3", "box2d"), ("HalfCheetah-v5", "mujoco")])
def test_hiding_is_not_vacuous(env_id: str, extra: str) -> None:
    """Without its extra the environment cannot be made; with it, it can."""
    without = make_with(env_id, set())
    assert without.returncode != 0 and "not in the image's extras" in without.stderr, without.stdout + without.stderr
    assert make_with(env_id, {extra}).returncode == 0


def test_box2d_extra_is_gymnasiums_and_the_lunarlander_jobs_name_it() -> None:
    (req,) = [Requirement(r) for r in PYPROJECT["optional-dependencies"]["box2d"]]
    assert (req.name, req.extras) == ("gymnasium", {"box2d"})
    for path in (ROOT / "examples" / "lunarlander-gpu.yaml", chartlib.CHART / "ci" / "gpu-values.yaml"):
        assert named_extras(path) == {"box2d"}, path.name
