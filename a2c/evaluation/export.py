"""Export: a checkpoint to a standalone greedy policy, TorchScript and ONNX, for serving without a2c.

Data flow: trainer 0 -> `checkpoint.save` -> `evaluate.load` (the same checkpoint or run directory `a2c eval`
plays) -> `Greedy`, the agent's actor alone -> `policy.pt` (TorchScript, loads with bare torch) and
`policy.onnx` (runs with onnxruntime), with `policy.json` beside them saying what goes in and comes out.

What the files compute is what `a2c eval` plays: observations in a batch [B, *obs_shape] of the observation
space's dtype (float32 vectors; uint8 frames for pixel policies, scaled by 1/255 inside, as NatureCNN does),
through the observation normaliser when the run had one (its statistics are constants of the file), to
`Agent.greedy`'s action: the argmax as int64 for Discrete actions, the Gaussian mean (gSDE's too: its noise
is exploration only) clipped to the Box bounds as float32, as evaluation clips it before `env.step`. The
environment's own wrappers (Atari's frame skip, grey scale, resize and stack) stay outside: a server feeds
the frames the environment of `env_id` returns.

Exporters: TorchScript by `torch.jit.trace` (the policy has no data-dependent branch, so the trace is the
whole graph). ONNX by torch's TorchScript-based exporter (`dynamo=False`), which needs only the `onnx`
package; the torch.export-based one would add onnxscript and onnx-ir for the same graph. Both are
deprecated in torch 2.13 but present; the parity tests say when that changes. Every file is written under a
temporary name, checked against the agent on sampled observations (the ONNX file with onnxruntime when it is
installed), and only then renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from a2c import config, flags
from a2c.envs import vector as env
from a2c.evaluation import evaluate

if TYPE_CHECKING:
    import torch

    from a2c.model import agent

FILES = {"torchscript": "policy.pt", "onnx": "policy.onnx", "sidecar": "policy.json"}
OPSET = 17  # onnxruntime >= 1.14 runs it; nothing in the policy needs a newer operator
FORMAT = 1  # of policy.json


class ExportError(Exception):
    """Bad input for `a2c export` (missing or unusable checkpoint, missing exporter, files in the way): exit 2."""


def greedy_module(model: agent.Agent, action_space: gym.Space) -> torch.nn.Module:
    """The agent's greedy actor as a module of its own: obs -> the action `a2c eval` plays (see the docstring)."""
    import torch

    class Greedy(torch.nn.Module):
        low: torch.Tensor
        high: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.norm = model.obs_norm if model.obs_norm is not None else torch.nn.Identity()
            self.features, self.actor, self.discrete = model.actor_features, model.actor, model.discrete
            if not self.discrete:
                box = action_space
                assert isinstance(box, gym.spaces.Box)
                self.register_buffer("low", torch.as_tensor(box.low, dtype=torch.float32).reshape(-1))
                self.register_buffer("high", torch.as_tensor(box.high, dtype=torch.float32).reshape(-1))

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            params = self.actor(self.features(self.norm(obs)))
            if self.discrete:
                return params.argmax(-1)
            return torch.minimum(torch.maximum(params, self.low), self.high)

    return Greedy().eval()


def played(model: agent.Agent, action_space: gym.Space, obs: np.ndarray) -> np.ndarray:
    """The actions `a2c eval` takes for a batch of observations: `Agent.greedy`, clipped to Box bounds."""
    actions = model.greedy(obs)
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low.reshape(-1), action_space.high.reshape(-1)).astype(np.float32)
    return actions


def sample_observations(obs_space: gym.Space, count: int = 32, seed: int = 0) -> np.ndarray:
    """`count` observations drawn from the space (seeded), as a batch of its dtype."""
    obs_space.seed(seed)
    return np.stack([np.asarray(obs_space.sample(), dtype=obs_space.dtype) for _ in range(count)])


def sidecar(loaded: evaluate.Loaded, obs_space: gym.Space, action_space: gym.Space,
            written: dict[str, str]) -> dict[str, Any]:
    """What a server needs to know about the files: shapes, dtypes, the action space, and where they came from."""
    action: dict[str, Any]
    if isinstance(action_space, gym.spaces.Discrete):
        action = {"type": "discrete", "n": int(action_space.n), "dtype": "int64", "shape": []}
    else:
        assert isinstance(action_space, gym.spaces.Box)
        action = {"type": "box", "dtype": "float32", "shape": [int(np.prod(action_space.shape))],
                  "env_shape": list(action_space.shape), "low": action_space.low.reshape(-1).tolist(),
                  "high": action_space.high.reshape(-1).tolist(), "clipped": True}
    return {"format": FORMAT, "env_id": loaded.env_cfg.env_id, "env_kwargs": loaded.env_cfg.kwargs(),
            "checkpoint": loaded.path.name, "version": loaded.version, "env_steps": loaded.env_steps,
            "input": {"name": "obs", "shape": ["batch", *map(int, obs_space.shape or ())],
                      "dtype": str(np.dtype(obs_space.dtype))},
            "output": {"name": "action", "batch_first": True, **action},
            # uint8 frames [C, H, W] go through NatureCNN (agent.make_extractor's rule), scaled by 1/255 inside
            "pixels": len(obs_space.shape or ()) == 3 and np.dtype(obs_space.dtype) == np.uint8,
            "files": written, "onnx_opset": OPSET if "onnx" in written else None}


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    # torch 2.13 marks torch.jit.trace and the TorchScript-based ONNX exporter deprecated; both still work,
    # and the parity tests fail the day they stop: the warnings say nothing a user of `a2c export` can act on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _write_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    import torch

    with _quiet_deprecation(), torch.no_grad():
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


def _write_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    import torch

    try:
        import onnx  # noqa: F401 - the exporter needs it; a clear message beats its own
    except ModuleNotFoundError:
        raise ExportError("ONNX export needs the onnx package: pip install 'a2c[export]' "
                          "(or --format torchscript)") from None
    with _quiet_deprecation(), torch.no_grad():
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["obs"], output_names=["action"],
                          dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}})


def _check(name: str, got: np.ndarray, want: np.ndarray, discrete: bool) -> None:
    if got.shape != want.shape or (np.any(got != want) if discrete else not np.allclose(got, want, atol=1e-5)):
        raise ExportError(f"the exported {name} file does not act as the checkpoint does on sampled observations "
                          f"(first actions {got[:4].tolist()} vs {want[:4].tolist()}); nothing written")


def _verify(paths: dict[str, Path], model: agent.Agent, action_space: gym.Space, obs: np.ndarray) -> list[str]:
    """Run each written file on `obs` and compare with `played`; the formats checked."""
    import torch

    want, discrete = played(model, action_space, obs), model.discrete
    checked = []
    if "torchscript" in paths:
        with _quiet_deprecation(), torch.no_grad():
            got = torch.jit.load(str(paths["torchscript"])).eval()(torch.from_numpy(obs)).numpy()
        _check("TorchScript", got, want, discrete)
        checked.append("torchscript")
    if "onnx" in paths:
        try:
            import onnxruntime
        except ModuleNotFoundError:
            return checked  # the sidecar says the ONNX file was not run here
        session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        _check("ONNX", session.run(["action"], {"obs": obs})[0], want, discrete)
        checked.append("onnx")
    return checked


def export(loaded: evaluate.Loaded, out: Path, formats: tuple[str, ...] = ("torchscript", "onnx"),
           force: bool = False) -> dict[str, Any]:
    """Write the policy files of `formats` and policy.json into `out`; the sidecar written. Files that exist
    are an ExportError unless `force`."""
    import torch

    out = Path(out)
    finals = {k: out / FILES[k] for k in (*formats, "sidecar")}
    taken = [out / name for name in FILES.values() if (out / name).exists()]
    if taken and not force:
        raise ExportError(f"{', '.join(map(str, taken))} already exist(s); --force replaces them")
    obs_space, action_space = env.spaces(loaded.env_cfg)
    module = greedy_module(loaded.agent, action_space)
    obs = sample_observations(obs_space)
    example = torch.from_numpy(obs[:2])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        temps = {k: Path(tmp) / FILES[k] for k in formats}
        if "torchscript" in temps:
            _write_torchscript(module, example, temps["torchscript"])
        if "onnx" in temps:
            _write_onnx(module, example, temps["onnx"])
        checked = _verify(temps, loaded.agent, action_space, obs)
        info = sidecar(loaded, obs_space, action_space, {k: FILES[k] for k in formats})
        info["verified"] = checked
        temps["sidecar"] = Path(tmp) / FILES["sidecar"]
        temps["sidecar"].write_text(json.dumps(info, indent=2) + "\n")
        for key, tmp_path in temps.items():  # same directory: each rename is atomic
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, finals[key])
    for stale in set(taken) - set(finals.values()):  # --force: no file of an earlier export beside this one's
        stale.unlink()
    return info


# --- `a2c export` -------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `a2c export` to the CLI (called by `cli._register_optional`)."""
    help_text = "write a checkpoint's greedy policy as TorchScript (policy.pt) and ONNX (policy.onnx) for serving"
    p = sub.add_parser("export", help=help_text, description=help_text)
    flags.add_arguments(p, config.ExportConfig)
    p.set_defaults(func=main)


def main(ns: argparse.Namespace) -> int:
    args = flags.from_namespace(config.ExportConfig, ns)
    try:
        loaded = evaluate.load(evaluate.best_of(args.checkpoint) if args.best else args.checkpoint)
        formats = ("torchscript", "onnx") if args.format == "both" else (args.format,)
        info = export(loaded, args.out, formats, args.force)
    except (ExportError, evaluate.EvalError) as exc:
        print(f"a2c export: {exc}", file=sys.stderr)
        return 2
    files = ", ".join(str(Path(args.out) / name) for name in info["files"].values())
    print(f"{env.describe(loaded.env_cfg)} {loaded.path.name} (version {loaded.version}) -> {files}, "
          f"{Path(args.out) / FILES['sidecar']}; checked against the checkpoint: {', '.join(info['verified'])}")
    return 0
