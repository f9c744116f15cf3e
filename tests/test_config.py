"""config + cli: flags win over environment variables, which win over defaults; to_flags round-trips."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2c import cli, config, flags


def trainer(argv: list[str], environ: dict[str, str] | None = None) -> config.TrainerConfig:
    role, cfg = cli.parse_role(["trainer", *argv], environ or {})
    assert role == "trainer" and isinstance(cfg, config.TrainerConfig)
    return cfg


def test_defaults_without_flags_or_environment() -> None:
    assert trainer([]) == config.TrainerConfig()
    role, cfg = cli.parse_role(["player"], {})
    assert role == "player" and cfg == config.PlayerConfig()
    role, cfg = cli.parse_role(["local"], {})
    assert role == "local" and cfg == config.LocalConfig()


def test_environment_variables_over_defaults() -> None:
    cfg = trainer([], {
        "RANK": "2", "WORLD_SIZE": "4", "MASTER_ADDR": "job-trainer-0.job-trainer", "MASTER_PORT": "29600",
        "A2C_PORT": "6000", "A2C_GAMMA": "0.95", "A2C_ENV_ID": "Acrobot-v1", "A2C_SHARED_EXTRACTOR": "yes",
        "A2C_TARGET_RETURN": "-100.5", "A2C_ENV_KWARGS": '{"max_episode_steps": 5}',
    })
    assert (cfg.rank, cfg.world_size, cfg.master_addr, cfg.master_port) == (2, 4, "job-trainer-0.job-trainer", 29600)
    assert cfg.port == 6000 and cfg.algo.gamma == 0.95 and cfg.env.env_id == "Acrobot-v1"
    assert cfg.algo.shared_extractor is True and cfg.stop.target_return == -100.5
    assert cfg.env.kwargs() == {"max_episode_steps": 5}


def test_flags_over_environment_variables() -> None:
    environ = {"RANK": "2", "A2C_PORT": "6000", "A2C_LR": "0.5", "A2C_SHARED_EXTRACTOR": "true"}
    cfg = trainer(["--rank", "1", "--port", "7000", "--lr", "0.25", "--shared-extractor", "off"], environ)
    assert (cfg.rank, cfg.port, cfg.algo.lr, cfg.algo.shared_extractor) == (1, 7000, 0.25, False)


def test_empty_environment_variable_means_unset() -> None:
    assert trainer([], {"A2C_PORT": "", "RANK": ""}) == config.TrainerConfig()


def test_other_roles_ignore_trainer_variables() -> None:
    _, cfg = cli.parse_role(["player"], {"RANK": "3", "A2C_PLAYER_INDEX": "5", "A2C_NUM_ENVS": "2"})
    assert isinstance(cfg, config.PlayerConfig)
    assert cfg.player_index == 5 and cfg.env.num_envs == 2


@pytest.mark.parametrize(("name", "value", "message"), [
    ("A2C_PORT", "abc", r"environment variable A2C_PORT='abc': invalid literal for int"),
    ("RANK", "1.5", r"environment variable RANK='1.5'"),
    ("A2C_GAMMA", "high", r"environment variable A2C_GAMMA='high'"),
    ("A2C_SHARED_EXTRACTOR", "maybe", r"A2C_SHARED_EXTRACTOR='maybe': expected a boolean, got 'maybe'"),
])
def test_bad_environment_value_is_a_clear_value_error(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        trainer([], {name: value})


def test_environment_value_outside_the_choices_is_refused() -> None:
    with pytest.raises(ValueError, match="A2C_OPTIMIZER"):
        trainer([], {"A2C_OPTIMIZER": "sgd"})


def test_bad_flags_exit_like_argparse() -> None:
    with pytest.raises(SystemExit):
        trainer(["--optimizer", "sgd"])
    with pytest.raises(SystemExit):
        trainer(["--port", "x"])
    with pytest.raises(SystemExit):
        trainer(["--no-such-flag", "1"])


def test_main_reports_a_bad_environment_value_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("A2C_NUM_ENVS", "many")
    assert cli.main(["player"]) == 2
    assert "a2c player: environment variable A2C_NUM_ENVS='many'" in capsys.readouterr().err


def test_main_turns_the_garbage_collector_back_on_whichever_way_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`main` imports the role's module with the collector off (start-up time); a process left without it
    would never free a reference cycle again."""
    monkeypatch.setenv("A2C_NUM_ENVS", "many")
    assert cli.main(["player"]) == 2 and gc.isenabled(), "refused before the import"
    monkeypatch.delenv("A2C_NUM_ENVS")
    message = tmp_path / "termination-log"
    message.write_text("")  # the kubelet creates it
    monkeypatch.setenv("A2C_TERMINATION_MESSAGE_PATH", str(message))
    assert cli.main(["player", "--player-index", "0", "--env-id", "NoSuchEnvironment-v0", "--metrics-port", "-1"]) == 3
    assert gc.isenabled() and "NoSuchEnvironment" in message.read_text(), "the role imported and run"
    with pytest.raises(SystemExit):
        cli.main(["trainer", "--no-such-flag"])
    assert gc.isenabled(), "argparse's exit"
    capsys.readouterr()


def test_help_names_the_environment_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["trainer", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "env RANK" in help_text and "env A2C_PORT" in help_text and "default: 50051" in help_text


def _non_defaults() -> list[object]:
    return [
        config.TrainerConfig(
            rank=1, world_size=3, master_addr="10.0.0.1", master_port=1234, port=0, metrics_port=-1,
            players_per_trainer=2, run_dir="/tmp/run dir", checkpoint_interval=7, keep_checkpoints=1,
            round_timeout_s=0.5, backend="gloo", device="cpu", max_queue=9, linger_s=0.0,
            env=config.EnvConfig(env_id="Pendulum-v1", env_kwargs='{"g": 9.81, "render_mode": null}', num_envs=3,
                                 seed=42),
            algo=config.AlgoConfig(lr=1e-4, gamma=0.9, gae_lambda=0.95, n_steps=5, ent_coef=0.01, optimizer="adam",
                                   max_policy_lag=2, hidden_sizes="128,64", activation="relu", shared_extractor=True),
            stop=config.StopConfig(target_return=-200.0, return_window=10, max_env_steps=1000),
        ),
        config.PlayerConfig(player_index=5, num_trainers=2, trainer_address="job-trainer-{trainer}.svc:50051",
                            connect_timeout_s=1.5, torch_threads=2),
        config.LocalConfig(trainers=1, progress=False, plot=False, run_dir="runs/x",
                           env=config.EnvConfig(num_envs=1), stop=config.StopConfig(target_return=100.0)),
    ]


ROLE_OF = {config.TrainerConfig: "trainer", config.PlayerConfig: "player", config.LocalConfig: "local"}


@pytest.mark.parametrize("cfg", _non_defaults(), ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("skip_defaults", [True, False])
def test_to_flags_round_trips_through_the_parser(cfg: object, skip_defaults: bool) -> None:
    rendered = flags.to_flags(cfg, skip_defaults=skip_defaults)
    role, back = cli.parse_role([ROLE_OF[type(cfg)], *rendered], {"RANK": "7", "A2C_PORT": "1"})
    assert back == cfg  # flags win over the environment
    if skip_defaults:
        assert "--num-envs" not in flags.to_flags(config.TrainerConfig())
        assert flags.to_flags(config.PlayerConfig()) == []


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**40), st.floats(-1e4, 1e4, allow_nan=False).map(lambda x: round(x, 3)),
       st.booleans(), st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="-"),
                              min_size=1, max_size=20))
def test_to_flags_round_trip_property(seed: int, target: float, shared: bool, run_dir: str) -> None:
    cfg = config.TrainerConfig(run_dir=run_dir, env=config.EnvConfig(seed=seed),
                               algo=config.AlgoConfig(shared_extractor=shared),
                               stop=config.StopConfig(target_return=target))
    assert trainer(flags.to_flags(cfg)) == cfg


def test_to_flags_round_trips_negative_scientific_floats() -> None:
    cfg = config.TrainerConfig(stop=config.StopConfig(target_return=-1e-05))
    assert trainer(flags.to_flags(cfg)) == cfg


def test_every_field_has_help_and_a_flag() -> None:
    for cls in (config.TrainerConfig, config.PlayerConfig, config.LocalConfig):
        for f in flags.leaves(cls):
            assert f.metadata.get("help"), f.name
    # every leaf has a flag (its dest is the field name)
    ns = cli.build_parser().parse_args(["trainer"])
    assert {f.name for f in flags.leaves(config.TrainerConfig)} <= set(vars(ns))
    rank = next(f for f in dataclasses.fields(config.TrainerConfig) if f.name == "rank")
    assert rank.metadata["env"] == "RANK" and flags.env_name(rank) == "RANK"


def test_nested_groups_are_found_by_their_types() -> None:
    """Every leaf of every group, and no group itself, whatever the groups are called."""
    names = {f.name for f in flags.leaves(config.TrainerConfig)}
    for group in (config.EnvConfig, config.AlgoConfig, config.StopConfig):
        assert {f.name for f in dataclasses.fields(group)} <= names
    assert not {"env", "algo", "stop"} & names
    algo = {f.name for f in dataclasses.fields(config.AlgoConfig)}
    assert {f.name for f in flags.leaves(config.PlayerConfig)} >= algo


def test_every_knob_is_a_field_with_its_variable() -> None:
    """The metrics' a2c_job label and the torch threads come from flags or variables like every other knob."""
    cfg = trainer([], {"A2C_JOB": "cartpole-1", "A2C_TORCH_THREADS": "4"})
    assert (cfg.job, cfg.torch_threads) == ("cartpole-1", 4)
    assert (trainer(["--job", "x", "--torch-threads", "2"], {"A2C_JOB": "y"}).job, config.TrainerConfig().job) == (
        "x", "local")
    _, player = cli.parse_role(["player"], {"A2C_JOB": "cartpole-1", "A2C_TORCH_THREADS": "3"})
    assert isinstance(player, config.PlayerConfig) and (player.job, player.torch_threads) == ("cartpole-1", 3)
    _, local = cli.parse_role(["local"], {"A2C_JOB": "laptop", "A2C_TORCH_THREADS": "2"})
    assert isinstance(local, config.LocalConfig) and (local.job, local.torch_threads) == ("laptop", 2)


def test_trainer_and_local_share_one_training_group() -> None:
    """Declared once: the same fields, defaults and help in both (a local run's trainers default to the CPU)."""
    shared = dataclasses.fields(config.TrainingConfig)
    for cls in (config.TrainerConfig, config.LocalConfig):
        mine = {f.name: f for f in dataclasses.fields(cls)}
        for f in shared:
            if (cls, f.name) != (config.LocalConfig, "device"):
                assert mine[f.name] is f, (cls.__name__, f.name)
    assert (config.TrainerConfig().device, config.LocalConfig().device) == ("auto", "cpu")


@pytest.mark.parametrize("cls", [config.TrainerConfig, config.LocalConfig])
@pytest.mark.parametrize(("interval", "episodes"), [(-1, 10), (100, 0)])
def test_one_check_of_the_evaluation_flags(cls: type, interval: int, episodes: int) -> None:
    message = f"--eval-interval must be >= 0 and --eval-episodes >= 1, got {interval} and {episodes}"
    with pytest.raises(ValueError, match=message):
        cls(eval_interval=interval, eval_episodes=episodes).check()
    with pytest.raises(ValueError, match=message):
        config.check_evaluation(interval, episodes)
    cls(eval_interval=0).check()  # 0 turns evaluation off


def test_trainer_timeouts_are_checked() -> None:
    with pytest.raises(ValueError, match="--dist-timeout-s must exceed"):
        config.TrainerConfig(dist_timeout_s=60.0).check()


def test_ordinal_from_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "myjob-trainer-3")
    assert config.ordinal_from_hostname("RANK") == 3
    assert config.TrainerConfig().resolved_rank() == 3
    assert config.TrainerConfig(rank=0).resolved_rank() == 0
    monkeypatch.setenv("HOSTNAME", "myjob-player-12")
    player = config.PlayerConfig(num_trainers=5, trainer_address="myjob-trainer-{trainer}.myjob-trainer:50051")
    assert player.resolved_index() == 12
    assert player.resolved_trainer_address() == "myjob-trainer-2.myjob-trainer:50051"


@pytest.mark.parametrize("host", ["laptop", "myjob-trainer-x", "trainer3", "myjob-trainer-"])
def test_ordinal_from_hostname_error(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("HOSTNAME", host)
    with pytest.raises(ValueError, match=rf"RANK is not set and the hostname '{host}' has no '-<ordinal>' suffix"):
        config.ordinal_from_hostname("RANK")
    with pytest.raises(ValueError, match="A2C_PLAYER_INDEX is not set"):
        config.PlayerConfig().resolved_index()


def test_env_kwargs_and_hidden_sizes() -> None:
    assert config.EnvConfig().kwargs() == {}
    with pytest.raises(ValueError, match="--env-kwargs must be a JSON object"):
        config.EnvConfig(env_kwargs='"x"').kwargs()
    assert config.AlgoConfig(hidden_sizes="64, 32,").hidden() == (64, 32)
    assert config.AlgoConfig(hidden_sizes="").hidden() == ()


def _command(argv: list[str], cls: type) -> object:
    return flags.from_namespace(cls, cli.build_parser().parse_args(argv), environ={"A2C_SEED": "7"})


def test_commands_parse_into_their_configs_without_environment_variables() -> None:
    """`a2c controller`, `render`, `eval` and `export` go through the same dataclasses as the roles, with
    argparse's own flag shapes (positional, --x/--no-x, switches, required) and no environment fallback."""
    assert _command(["controller"], config.ControllerConfig) == config.ControllerConfig()
    ctl = _command(["controller", "--no-leader-election", "--resync-s", "2.5"], config.ControllerConfig)
    assert ctl == config.ControllerConfig(leader_election=False, resync_s=2.5)
    assert _command(["render", "job.yaml"], config.RenderConfig) == config.RenderConfig(job="job.yaml")
    ev = _command(["eval", "run", "--best", "--video", "a.gif", "--episodes", "3"], config.EvalConfig)
    assert ev == config.EvalConfig(checkpoint=Path("run"), best=True, video=Path("a.gif"), episodes=3, seed=0)
    ex = _command(["export", "run", "--out", "o", "--format", "onnx"], config.ExportConfig)
    assert ex == config.ExportConfig(checkpoint=Path("run"), out=Path("o"), format="onnx")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["export", "run"])  # --out is required


def test_each_role_knob_is_declared_once() -> None:
    """A knob two roles share is one `opt(...)` in config.py, inherited (RunConfig, TrainingConfig,
    ProcessConfig) or given a role's own default with `same_as` (its flag, variable and choices stay one)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(config))
    declared: dict[str, int] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "opt"):
            declared[node.target.id] = declared.get(node.target.id, 0) + 1
    assert {name: n for name, n in declared.items() if n > 1} == {}
    for name in ("job", "torch_threads", "env", "algo"):
        assert config.PlayerConfig.__dataclass_fields__[name] is config.TrainerConfig.__dataclass_fields__[name]
    for name, base in (("run_dir", config.TrainerConfig), ("device", config.TrainingConfig)):
        mine = config.LocalConfig.__dataclass_fields__[name].metadata
        theirs = base.__dataclass_fields__[name].metadata  # type: ignore[attr-defined]
        assert {k: v for k, v in mine.items() if k != "help"} == {k: v for k, v in theirs.items() if k != "help"}
