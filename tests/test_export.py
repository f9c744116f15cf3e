"""export: `a2c export` writes TorchScript and ONNX files that, run where a2c cannot be imported, act exactly
as `a2c eval` plays the checkpoint; bad input is refused with a clear message and leaves nothing behind."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import cli, config
from a2c.envs import vector as env
from a2c.evaluation import evaluate, export
from a2c.model import agent, checkpoint

# Serving as a user would: onnxruntime and bare torch only. A finder first on sys.meta_path refuses every a2c
# import (the package is installed in this venv, so without it `import a2c` would work), and the script
# reports the a2c modules it ended up with: none.
NO_A2C = r"""
import importlib.abc, sys

class NoA2C(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "a2c" or name.startswith("a2c."):
            raise ModuleNotFoundError(f"{name} is not importable when serving")
        return None

sys.meta_path.insert(0, NoA2C())
"""
SERVE = NO_A2C + r"""
import json
import numpy as np, onnxruntime, torch

results = {}
for folder in sys.argv[1:]:
    info = json.load(open(f"{folder}/policy.json"))
    obs = np.load(f"{folder}/obs.npy")
    assert str(obs.dtype) == info["input"]["dtype"], (obs.dtype, info["input"])
    session = onnxruntime.InferenceSession(f"{folder}/policy.onnx", providers=["CPUExecutionProvider"])
    onnx_actions = session.run([info["output"]["name"]], {info["input"]["name"]: obs})[0]
    policy = torch.jit.load(f"{folder}/policy.pt")
    with torch.no_grad():
        ts_actions = policy(torch.from_numpy(obs)).numpy()
    results[folder] = {"onnx": onnx_actions.tolist(), "torchscript": ts_actions.tolist(),
                       "dtypes": [str(onnx_actions.dtype), str(ts_actions.dtype)]}
try:
    import a2c  # noqa: F401
    blocked = False
except ModuleNotFoundError:
    blocked = True
results["a2c_blocked"] = blocked
results["a2c_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "a2c")
print(json.dumps(results))
"""

CASES: dict[str, tuple[config.EnvConfig, config.AlgoConfig]] = {
    "cartpole": (config.EnvConfig(env_id="CartPole-v1"), config.AlgoConfig()),
    "pendulum": (config.EnvConfig(env_id="Pendulum-v1"), config.AlgoConfig(normalize_obs=True)),
    "pendulum-gsde": (config.EnvConfig(env_id="Pendulum-v1"), config.AlgoConfig(use_sde=True)),
    "breakout": (config.EnvConfig(env_id="ALE/Breakout-v5"), config.AlgoConfig()),
    # trained at bf16: exported (and evaluated) as the fp32 weights the checkpoint holds
    "breakout-bf16": (config.EnvConfig(env_id="ALE/Breakout-v5"), config.AlgoConfig(precision="bf16")),
}


def save_checkpoint(run_dir: Path, env_cfg: config.EnvConfig, algo: config.AlgoConfig, version: int = 5) -> Path:
    """An untrained agent in trainer._checkpoint's format. The Pendulum one gets observation statistics far from
    the defaults and a policy mean wide enough that some actions fall outside the ±2 bounds."""
    torch.manual_seed(0)
    model = agent.Agent(*env.spaces(env_cfg), algo)
    if model.obs_norm is not None:
        model.obs_norm.update(torch.randn(256, 3, dtype=torch.float64) * torch.tensor([0.3, 0.3, 4.0]) + 0.5)
    if not model.discrete:
        with torch.no_grad():
            actor = model.actor
            assert isinstance(actor, torch.nn.Linear)
            actor.weight.mul_(400.0)
    state = {"model": model.state_dict(), "optimizer": {}, "progress": {"env_steps": 321},
             "config": {"env": dataclasses.asdict(env_cfg), "algo": dataclasses.asdict(algo)}}
    return checkpoint.save(run_dir, version, state)


def observations(env_cfg: config.EnvConfig, steps: int = 24, seed: int = 1) -> np.ndarray:
    """Observations the environment really returns (random actions from reset(seed)), then some drawn from
    its observation space: a batch of the space's dtype."""
    e = evaluate.make_env(env_cfg)
    try:
        e.action_space.seed(seed)
        obs, _ = e.reset(seed=seed)
        seen = [obs]
        for _ in range(steps):
            obs, _, terminated, truncated, _ = e.step(e.action_space.sample())
            seen.append(obs)
            if terminated or truncated:
                obs, _ = e.reset()
        space = e.observation_space
    finally:
        e.close()
    space.seed(seed)
    seen += [space.sample() for _ in range(8)]
    return np.stack([np.asarray(o, dtype=space.dtype) for o in seen])


def eval_actions(loaded: evaluate.Loaded, obs: np.ndarray) -> np.ndarray:
    """What `a2c eval` plays for each observation, one at a time, as its episode loop does (`evaluate._greedy`)."""
    _, action_space = env.spaces(loaded.env_cfg)
    return np.stack([np.asarray(evaluate._greedy(loaded.agent, o, action_space)) for o in obs])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each case's checkpoint exported with `a2c export`, then served once by SERVE in a subprocess."""
    root = tmp_path_factory.mktemp("export")
    folders = {}
    for name, (env_cfg, algo) in CASES.items():
        save_checkpoint(root / name, env_cfg, algo)
        out = root / name / "policy"
        assert cli.main(["export", str(root / name), "--out", str(out)]) == 0
        np.save(out / "obs.npy", observations(env_cfg))
        folders[name] = out
    served = subprocess.run([sys.executable, "-I", "-c", SERVE, *map(str, folders.values())], cwd=root,
                            capture_output=True, text=True, timeout=240)
    assert served.returncode == 0, served.stderr
    results = json.loads(served.stdout)
    assert results.pop("a2c_blocked") is True and results.pop("a2c_modules") == []
    return {name: (root / name, folders[name], results[str(folders[name])]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_exported_files_act_as_a2c_eval_without_a2c(exported: dict[str, Any], name: str) -> None:
    """ONNX (onnxruntime) and TorchScript (bare torch), in a process that cannot import a2c, give the actions
    `a2c eval` plays on the same observations: exactly for discrete actions, to float precision for Box."""
    run_dir, out, served = exported[name]
    loaded = evaluate.load(run_dir)
    obs = np.load(out / "obs.npy")
    want = eval_actions(loaded, obs)
    deterministic = loaded.agent.act(obs, deterministic=True)[0]
    for kind in ("onnx", "torchscript"):
        got = np.asarray(served[kind])
        if loaded.agent.discrete:
            assert served["dtypes"] == ["int64", "int64"]
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, deterministic)
        else:
            assert served["dtypes"] == ["float32", "float32"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            # act(deterministic=True) is the unclipped mean; where it is inside the bounds it is the action
            inside = np.abs(deterministic) < 2.0
            np.testing.assert_allclose(got[inside], deterministic[inside], rtol=1e-5, atol=1e-5)
    if not loaded.agent.discrete:
        assert 0 < int((np.abs(want) == 2.0).sum()) < want.size, "both clipped and unclipped actions are checked"
    if name == "breakout":
        assert obs.dtype == np.uint8 and obs.shape[1:] == (4, 84, 84)
        assert len(set(want.tolist())) > 1, "the observations tell the actions apart"


def test_the_observation_statistics_are_inside_the_files(exported: dict[str, Any]) -> None:
    """The Pendulum checkpoint's normaliser statistics change what it plays, and the files play the checkpoint's."""
    run_dir, out, served = exported["pendulum"]
    loaded = evaluate.load(run_dir)
    obs = np.load(out / "obs.npy")
    with_stats = eval_actions(loaded, obs)
    assert loaded.agent.obs_norm is not None
    loaded.agent.obs_norm.mean.zero_()
    loaded.agent.obs_norm.var.fill_(1.0)
    without = eval_actions(loaded, obs)
    assert not np.allclose(with_stats, without, atol=1e-3)
    np.testing.assert_allclose(np.asarray(served["onnx"]), with_stats, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cartpole", "pendulum", "breakout"])
def test_sidecar_says_what_goes_in_and_comes_out(exported: dict[str, Any], name: str) -> None:
    run_dir, out, _ = exported[name]
    info = json.loads((out / "policy.json").read_text())
    env_cfg = CASES[name][0]
    obs_space, action_space = env.spaces(env_cfg)
    assert info["env_id"] == env_cfg.env_id and info["version"] == 5 and info["env_steps"] == 321
    assert info["checkpoint"] == "ckpt-000000005.pt"
    assert info["input"] == {"name": "obs", "shape": ["batch", *(obs_space.shape or ())], "dtype": str(obs_space.dtype)}
    assert info["files"] == {"torchscript": "policy.pt", "onnx": "policy.onnx"}
    assert info["verified"] == ["torchscript", "onnx"] and info["pixels"] == (name == "breakout")
    if isinstance(action_space, gym.spaces.Discrete):
        assert info["output"]["type"] == "discrete" and info["output"]["n"] == action_space.n
    else:
        assert info["output"]["type"] == "box" and info["output"]["low"] == [-2.0]
        assert info["output"]["high"] == [2.0] and info["output"]["clipped"] is True
    assert sorted(os.listdir(out)) == ["obs.npy", "policy.json", "policy.onnx", "policy.pt"], "no temporary left"


# --- bad input ------------------------------------------------------------------------------------------


def run_export(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_export(capsys, str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert code == 2 and "a2c export:" in err and "no such checkpoint file or run directory" in err
    assert not (tmp_path / "out").exists()
    code, _, err = run_export(capsys, str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "a run directory without checkpoints" in err


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint.path_for(tmp_path, 3)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint at all")
    code, _, err = run_export(capsys, str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and f"a2c export: {path} is not a readable a2c checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_existing_files_are_kept_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(tmp_path, *CASES["cartpole"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "policy.onnx").write_bytes(b"an earlier export")
    code, _, err = run_export(capsys, str(tmp_path), "--out", str(out), "--format", "torchscript")
    assert code == 2 and "already exist" in err and "--force" in err
    assert sorted(os.listdir(out)) == ["policy.onnx"] and (out / "policy.onnx").read_bytes() == b"an earlier export"
    code, stdout, _ = run_export(capsys, str(tmp_path), "--out", str(out), "--format", "torchscript", "--force")
    assert code == 0 and "checked against the checkpoint: torchscript" in stdout
    assert sorted(os.listdir(out)) == ["policy.json", "policy.pt"], "the stale ONNX file of another export is gone"


def test_onnx_without_the_onnx_package_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, *CASES["cartpole"])
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ModuleNotFoundError
    code, _, err = run_export(capsys, str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "pip install 'a2c[export]'" in err
    assert os.listdir(tmp_path / "out") == [], "the TorchScript file written before is not kept either"


def test_a_file_that_acts_otherwise_is_not_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before the rename catches an export that does not reproduce the checkpoint's actions."""
    save_checkpoint(tmp_path, *CASES["cartpole"])
    real = export.greedy_module

    def flipped(model: agent.Agent, action_space: gym.Space) -> torch.nn.Module:
        module = real(model, action_space)
        actor = module.actor
        assert isinstance(actor, torch.nn.Linear)
        module.actor = torch.nn.Linear(actor.in_features, actor.out_features)  # other weights
        return module

    monkeypatch.setattr(export, "greedy_module", flipped)
    code, _, err = run_export(capsys, str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "does not act as the checkpoint does" in err
    assert os.listdir(tmp_path / "out") == []


def serving_snippet() -> str:
    """The Python block of docs/export.md's "Serving it" section."""
    text = (Path(__file__).parent.parent / "docs" / "export.md").read_text()
    section = text.split("## Serving it", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_the_documented_serving_code_scores_what_a2c_eval_does(exported: dict[str, Any], name: str) -> None:
    """docs/export.md's ten lines, run where a2c cannot be imported, print the return of `a2c eval`'s episode 0."""
    run_dir, out, _ = exported[name]
    snippet = serving_snippet()
    assert len(snippet.strip().splitlines()) <= 12
    served = subprocess.run([sys.executable, "-I", "-c", NO_A2C + snippet], cwd=out.parent, capture_output=True,
                            text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    loaded = evaluate.load(run_dir)
    want = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=1, seed=0).returns[0]
    assert float(served.stdout.strip().splitlines()[-1]) == pytest.approx(want, rel=1e-5)
