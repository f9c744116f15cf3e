"""The alert rules, checked and unit-tested by the real promtool (Debian's `prometheus` package; CI installs it)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import yaml

from tests.observability import promql

ALERTS = {"A2CTrainingStalled", "A2CReturnCollapsed", "A2CRolloutsRefused", "A2CTrainerDown",
          "A2CControllerReconcileErrors"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's `prometheus` package (.ci/run does)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=promql.ROOT)


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(promql.RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(promql.RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alerts_exist_with_severity_and_summary() -> None:
    rules = {r["alert"]: r for r in promql.rules()}
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    cases: list[dict[str, Any]] = yaml.safe_load(promql.RULE_TESTS.read_text())["tests"]
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS


def test_a_broken_expectation_makes_promtool_fail(tmp_path: Any) -> None:
    """The unit tests can fail: the same cases with one expected label changed are reported as failing."""
    text = promql.RULE_TESTS.read_text().replace("severity: critical", "severity: info", 1)
    text = text.replace("../../helm/files/alert-rules.yaml", str(promql.RULES))
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(text)
    done = promtool("test", "rules", str(broken))
    assert done.returncode != 0
    assert "A2CTrainerDown" in done.stdout + done.stderr


def test_the_example_local_prometheus_config_is_valid_and_loads_the_rules() -> None:
    config = promql.ROOT / "deploy" / "prometheus" / "prometheus.yml"
    done = promtool("check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
