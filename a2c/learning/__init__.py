"""Learning: the trainer, which turns rollouts into one synchronous A2C update across the DDP group."""
