"""What the tests share, one copy each: `procs` (free ports, `wait_for`, spawning `a2c` roles), `rollouts`
(the one rollout factory), `server` (a live trainer server and its fixture), `prometheus` (reading a metric
back). Fixtures are registered in tests/conftest.py."""
