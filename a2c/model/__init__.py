"""The model: the actor-critic, its observation normaliser, exploration noise, optimiser, weight snapshots and
checkpoints."""
