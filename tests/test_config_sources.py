"""One source of configuration (issue 25): the A2CJob's training fields in the CRD, the chart's
values.schema.json and values.yaml are what tools/gen_config.py writes from a2c/config.py, and an edit in
config.py that is not regenerated fails here."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from a2c import config, flags
from a2c.controller import spec as jobspec

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _gen() -> ModuleType:
    loaded = importlib.util.spec_from_file_location("gen_config", ROOT / "tools" / "gen_config.py")
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    sys.modules["gen_config"] = module
    loaded.loader.exec_module(module)
    return module


gen = _gen()


def test_generated_files_are_up_to_date() -> None:
    diff = gen.stale(gen.render())
    assert not diff, "out of date with a2c/config.py: run python tools/gen_config.py\n" + "".join(diff[:60])


def test_check_exits_1_with_a_diff_when_a_default_changes(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A default edited in config.py (here gamma, in memory) makes every generated file stale."""
    assert gen.main(["--check"]) == 0
    gamma = config.AlgoConfig.__dataclass_fields__["gamma"]
    monkeypatch.setattr(gamma, "default", 0.95)
    assert gen.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert "run python tools/gen_config.py" in err
    for name in ("a2cjob-crd.yaml", "values.yaml"):
        assert f"{name} (from a2c/config.py)" in out, name
    assert "+    gamma: 0.95" in out and "+                    default: 0.95" in out


def test_check_names_a_new_bound_in_both_schemas(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    n_steps = config.AlgoConfig.__dataclass_fields__["n_steps"]
    monkeypatch.setattr(n_steps, "metadata", {**n_steps.metadata, "maximum": 512})
    assert gen.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "values.schema.json (from a2c/config.py)" in out and "a2cjob-crd.yaml (from a2c/config.py)" in out


CRD = yaml.safe_load((ROOT / "deploy/helm/files/a2cjob-crd.yaml").read_text())
SPEC = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


@pytest.mark.parametrize("path", list(jobspec.JOB_FIELDS))
def test_every_job_field_is_in_the_crd_with_the_config_default(path: str) -> None:
    f, kind = jobspec.JOB_FIELDS[path]
    block, key = path.split(".")
    node: dict[str, Any] = SPEC[block]["properties"][key]
    assert node["default"] == jobspec.to_spec(f, kind, f.default)
    assert node["default"] == jobspec.defaults()[block][key]
    assert jobspec.from_spec(f, kind, node["default"]) == f.default
    assert node.get("enum") == (list(f.metadata["choices"]) if "choices" in f.metadata else None)


def test_vectorization_is_an_a2cjob_field_that_reaches_trainers_and_players() -> None:
    spec = jobspec.with_defaults({"environment": {"vectorization": "async"}})
    assert jobspec.player_config("cp", "ml", spec).env.vectorization == "async"
    assert jobspec.trainer_config("cp", "ml", spec).env.vectorization == "async"
    default = config.EnvConfig.__dataclass_fields__["vectorization"].default
    assert SPEC["environment"]["properties"]["vectorization"]["default"] == default == "auto"
    values = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
    assert values["job"]["environment"]["vectorization"] == default


def test_the_chart_job_is_the_config_defaults_but_for_chart_values() -> None:
    values = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())["job"]
    for path, (f, kind) in jobspec.JOB_FIELDS.items():
        block, key = path.split(".")
        expected = gen.CHART_VALUES[path][0] if path in gen.CHART_VALUES else jobspec.to_spec(f, kind, f.default)
        assert values[block][key] == expected, path


def test_every_config_field_of_the_job_roles_is_read_or_set_by_the_controller() -> None:
    """No knob of a trainer or player that the A2CJob could mean is left out silently: each leaf is a job
    field (crd metadata) or one the controller sets itself, or keeps at its default, on purpose."""
    controller_set = {"rank", "master_addr", "master_port", "port", "metrics_port", "run_dir", "device",
                      "hold_when_done", "job", "tls_cert", "tls_key", "tls_ca", "player_index", "num_trainers",
                      "trainer_address"}
    left_default = {"torch_threads", "keep_best", "tensorboard", "host", "max_message_mb", "max_queue",
                    "start_timeout_s", "linger_s", "connect_timeout_s",
                    "weights_dir"}  # pods share no /dev/shm: the weights go over gRPC
    for cls in (config.TrainerConfig, config.PlayerConfig):
        for f in flags.leaves(cls):
            assert "crd" in f.metadata or f.name in controller_set | left_default, (cls.__name__, f.name)
    assert all(dataclasses.is_dataclass(t) is False for _, t in jobspec.JOB_FIELDS.values())
