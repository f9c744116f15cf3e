"""kube.py: the merge patch that makes apply idempotent and lets removed fields go."""

from __future__ import annotations

from a2c.controller import kube


def test_merge_patch_nulls_removed_keys_and_replaces_lists() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2], "same": {"x": 1}}
    new = {"a": 2, "b": {"c": 2}, "l": [3], "same": {"x": 1}, "e": {"f": 1}}
    assert kube.merge_patch(old, new) == {"a": 2, "b": {"d": None}, "l": [3], "e": {"f": 1}}
    assert kube.merge_patch(new, new) == {}


def test_paths() -> None:
    assert kube.path("v1", "Pod", "ml", "p") == "/api/v1/namespaces/ml/pods/p"
    assert kube.path("apps/v1", "StatefulSet", "ml") == "/apis/apps/v1/namespaces/ml/statefulsets"
    assert kube.path("a2c.dev/v1alpha1", "A2CJob", None) == "/apis/a2c.dev/v1alpha1/a2cjobs"
