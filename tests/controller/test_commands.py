"""commands.py: `a2c render` prints valid objects, `a2c controller` is wired, and neither pulls in torch."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import kubernetes_validate
import yaml

from a2c import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def a2c(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "a2c", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_render_cartpole_prints_valid_objects() -> None:
    out = a2c("render", "examples/cartpole.yaml")
    assert out.returncode == 0, out.stderr
    objs = list(yaml.safe_load_all(out.stdout))
    assert [o["kind"] for o in objs] == ["ConfigMap", "Service", "StatefulSet", "StatefulSet"]
    for obj in objs:
        for version in ("1.28", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)
    assert {o["metadata"]["namespace"] for o in objs} == {"default"}


def test_render_refuses_what_is_not_an_a2cjob() -> None:
    out = a2c("render", "-", stdin="apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    assert out.returncode == 2 and "not an A2CJob" in out.stderr


def test_commands_are_registered_with_the_cli() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["controller", "--namespace", "ml", "--resync-s", "5"])
    assert (args.namespace, args.resync_s) == ("ml", 5.0) and callable(args.func)
    assert callable(parser.parse_args(["render", "job.yaml"]).func)


def test_the_controller_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from a2c import cli\n"
        "from a2c.controller import commands, handlers, kube, loop, probe, resources, spec, status\n"
        "cli.build_parser().parse_args(['controller'])\n"
        "commands.render_file(open('examples/cartpole.yaml').read())\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
