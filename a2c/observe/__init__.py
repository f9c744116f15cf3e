"""Observation: Prometheus metrics, the run's journal (metrics.jsonl) and the learning-curve picture."""
