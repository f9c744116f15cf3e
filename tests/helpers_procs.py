"""Kept for imports from before tests/support/ (new code: `from tests.support.procs import ...`)."""

from tests.support.procs import free_port, wait_for

__all__ = ["free_port", "wait_for"]
