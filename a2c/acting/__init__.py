"""Acting: the player, which steps environments with the newest weights and uploads rollouts."""
