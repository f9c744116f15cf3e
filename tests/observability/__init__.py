"""Tests of the dashboards, alert rules and metrics against real promtool and Prometheus."""
