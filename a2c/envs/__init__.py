"""Environments: gymnasium's vector envs (and EnvPool's) under one step contract, Atari preprocessing,
reward scaling."""
