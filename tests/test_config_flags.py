"""Every flag `a2c local`, `a2c trainer` and `a2c player` had before the knobs were declared once (issue 25)
still exists, with the same default, environment variable and choices, as `--help` shows them."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from a2c import cli, flags

# field name -> default, per role, as of commit 0f78644 (generated from that commit's config.py), and the flags
# added since, marked
TODAY = {
    'local': {
        'players_per_trainer': 1,
        'checkpoint_interval': 100,
        'round_timeout_s': 5.0,
        'backend': 'auto',
        'device': 'cpu',
        'eval_interval': 100,
        'eval_episodes': 10,
        'keep_best': True,
        'tensorboard': '',
        'torch_threads': 1,
        'job': 'local',
        'trainers': 2,
        'run_dir': '',
        'progress': True,
        'plot': True,
        'max_player_restarts': 3,
        'max_trainer_restarts': 2,
        'pin_cores': True,
        'shared_weights': True,  # added since (issue 24)
        'env_id': 'CartPole-v1',
        'env_kwargs': '{}',
        'num_envs': 64,
        'seed': 0,
        'vectorization': 'auto',
        'lr': 0.004,
        'lr_schedule': 'linear',
        'gamma': 0.99,
        'gae_lambda': 1.0,
        'n_steps': 8,
        'ent_coef': 0.0,
        'vf_coef': 0.5,
        'max_grad_norm': 0.5,
        'optimizer': 'rmsprop',
        'rms_alpha': 0.99,
        'optim_eps': 1e-05,
        'precision': 'auto',  # added since (issue 24: bf16 for pixels; auto: bf16 on a CPU with native bf16)
        'max_policy_lag': 0,
        'hidden_sizes': '64,64',
        'activation': 'tanh',
        'shared_extractor': False,
        'log_std_init': 0.0,
        'use_sde': False,
        'sde_sample_freq': -1,
        'normalize_obs': False,
        'normalize_reward': True,
        'target_return': 475.0,
        'return_window': 100,
        'max_env_steps': 2000000,
    },
    'trainer': {
        'players_per_trainer': 1,
        'checkpoint_interval': 100,
        'round_timeout_s': 5.0,
        'backend': 'auto',
        'device': 'auto',
        'eval_interval': 100,
        'eval_episodes': 10,
        'keep_best': True,
        'tensorboard': '',
        'torch_threads': 1,
        'job': 'local',
        'metrics_port': 9090,
        'tls_cert': '',
        'tls_key': '',
        'tls_ca': '',
        'hold_when_done': False,
        'weights_dir': '',  # added since (issue 24: weights through /dev/shm)
        'rank': -1,
        'world_size': 1,
        'master_addr': '127.0.0.1',
        'master_port': 29500,
        'dist_timeout_s': 120.0,
        'host': '0.0.0.0',
        'port': 50051,
        'max_message_mb': 64,
        'max_queue': 0,
        'start_timeout_s': 60.0,
        'linger_s': 2.0,
        'run_dir': 'runs/latest',
        'keep_checkpoints': 3,
        'env_id': 'CartPole-v1',
        'env_kwargs': '{}',
        'num_envs': 64,
        'seed': 0,
        'vectorization': 'auto',
        'lr': 0.004,
        'lr_schedule': 'linear',
        'gamma': 0.99,
        'gae_lambda': 1.0,
        'n_steps': 8,
        'ent_coef': 0.0,
        'vf_coef': 0.5,
        'max_grad_norm': 0.5,
        'optimizer': 'rmsprop',
        'rms_alpha': 0.99,
        'optim_eps': 1e-05,
        'precision': 'auto',  # added since (issue 24: bf16 for pixels; auto: bf16 on a CPU with native bf16)
        'max_policy_lag': 0,
        'hidden_sizes': '64,64',
        'activation': 'tanh',
        'shared_extractor': False,
        'log_std_init': 0.0,
        'use_sde': False,
        'sde_sample_freq': -1,
        'normalize_obs': False,
        'normalize_reward': True,
        'target_return': 475.0,
        'return_window': 100,
        'max_env_steps': 2000000,
    },
    'player': {
        'metrics_port': 9090,
        'tls_cert': '',
        'tls_key': '',
        'tls_ca': '',
        'hold_when_done': False,
        'weights_dir': '',  # added since (issue 24: weights through /dev/shm)
        'player_index': -1,
        'num_trainers': 1,
        'trainer_address': '127.0.0.1:50051',
        'connect_timeout_s': 300.0,
        'torch_threads': 1,
        'job': 'local',
        'env_id': 'CartPole-v1',
        'env_kwargs': '{}',
        'num_envs': 64,
        'seed': 0,
        'vectorization': 'auto',
        'lr': 0.004,
        'lr_schedule': 'linear',
        'gamma': 0.99,
        'gae_lambda': 1.0,
        'n_steps': 8,
        'ent_coef': 0.0,
        'vf_coef': 0.5,
        'max_grad_norm': 0.5,
        'optimizer': 'rmsprop',
        'rms_alpha': 0.99,
        'optim_eps': 1e-05,
        'precision': 'auto',  # added since (issue 24: bf16 for pixels; auto: bf16 on a CPU with native bf16)
        'max_policy_lag': 0,
        'hidden_sizes': '64,64',
        'activation': 'tanh',
        'shared_extractor': False,
        'log_std_init': 0.0,
        'use_sde': False,
        'sde_sample_freq': -1,
        'normalize_obs': False,
        'normalize_reward': True,
    },
}
ENV = {'master_addr': 'MASTER_ADDR', 'master_port': 'MASTER_PORT', 'rank': 'RANK', 'world_size': 'WORLD_SIZE'}
CHOICES = {
    'activation': ('tanh', 'relu'),
    'backend': ('auto', 'gloo', 'nccl'),
    'device': ('auto', 'cpu', 'cuda'),
    'lr_schedule': ('constant', 'linear'),
    'optimizer': ('rmsprop', 'rmsprop_tf', 'adam'),
    'precision': ('auto', 'fp32', 'bf16'),  # added since (issue 24)
    'vectorization': ('auto', 'sync', 'async', 'envpool'),
}


def _actions(role: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: action for action in sub.choices[role]._actions for opt in action.option_strings}


@pytest.mark.parametrize("role", list(TODAY))
def test_every_flag_of_today_still_exists(role: str) -> None:
    actions = _actions(role)
    for name, default in TODAY[role].items():
        flag = "--" + name.replace("_", "-")
        assert flag in actions, (role, flag)
        action: Any = actions[flag]
        env = ENV.get(name, "A2C_" + name.upper())
        assert action.help.endswith(f"(default: {default!r}; env {env})"), (role, flag, action.help)
        assert action.choices == CHOICES.get(name), (role, flag)
    assert set(actions) - {"-h", "--help"} == {"--" + n.replace("_", "-") for n in TODAY[role]}, role


@pytest.mark.parametrize("role", list(TODAY))
def test_a_value_outside_a_flags_bounds_is_refused_by_name_and_its_bounds_are_taken(
        role: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The bounds a knob declares (its A2CJob field's, `config`) hold on the command line too: `--lr -1` is a
    usage error naming the flag, not a trainer crashing and being restarted."""
    parser = cli.build_parser()
    bounded = [f for f in flags.leaves(cli.ROLES[role][0]) if {"minimum", "maximum", "above"} & set(f.metadata)]
    assert len(bounded) >= 10, [f.name for f in bounded]
    for f in bounded:
        flag = "--" + f.name.replace("_", "-")
        step = 1 if isinstance(f.default, int) and not isinstance(f.default, bool) else 0.5
        cases = []
        if "minimum" in f.metadata:
            cases += [(f.metadata["minimum"] - step, False), (f.metadata["minimum"], True)]
        if "maximum" in f.metadata:
            cases += [(f.metadata["maximum"] + step, False), (f.metadata["maximum"], True)]
        if "above" in f.metadata:
            cases += [(f.metadata["above"], False)]
        assert flags.out_of_bounds(f, f.default) is None, (f.name, f.default)  # the default is inside
        for value, inside in cases:
            if inside:
                assert getattr(parser.parse_args([role, f"{flag}={value}"]), f.name) == value
                continue
            with pytest.raises(SystemExit) as exit_:
                parser.parse_args([role, f"{flag}={value}"])
            assert exit_.value.code == 2
            assert f"argument {flag}: must be" in capsys.readouterr().err, (flag, value)


def test_an_environment_variable_outside_its_bounds_is_refused_by_name() -> None:
    ns = cli.build_parser().parse_args(["local"])
    with pytest.raises(ValueError, match=r"A2C_LR='-1': must be greater than 0"):
        flags.from_namespace(cli.ROLES["local"][0], ns, {"A2C_LR": "-1"})
    assert flags.from_namespace(cli.ROLES["local"][0], ns, {"A2C_LR": "0.5"}).algo.lr == 0.5
