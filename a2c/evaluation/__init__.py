"""Evaluation: playing a trained policy greedily, beside training and after it, and exporting it."""
