"""Every flag `a2c local`, `a2c trainer` and `a2c player` had before the knobs were declared once (issue 25)
still exists, with the same default, environment variable and choices, as `--help` shows them."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from a2c import cli

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
        'precision': 'fp32',  # added since (issue 24: bf16 for pixels)
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
        'precision': 'fp32',  # added since (issue 24: bf16 for pixels)
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
        'precision': 'fp32',  # added since (issue 24: bf16 for pixels)
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
    'precision': ('fp32', 'bf16'),  # added since (issue 24)
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
