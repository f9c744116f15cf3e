"""kube.py: the merge patch that makes apply idempotent and lets removed fields go."""

from __future__ import annotations

from typing import Any

from a2c.controller import kube, patches


def test_merge_patch_nulls_removed_keys_and_replaces_lists() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2], "same": {"x": 1}}
    new = {"a": 2, "b": {"c": 2}, "l": [3], "same": {"x": 1}, "e": {"f": 1}}
    assert patches.merge_patch(old, new) == {"a": 2, "b": {"d": None}, "l": [3], "e": {"f": 1}}
    assert patches.merge_patch(new, new) == {}


def test_paths() -> None:
    assert kube.path("v1", "Pod", "ml", "p") == "/api/v1/namespaces/ml/pods/p"
    assert kube.path("apps/v1", "StatefulSet", "ml") == "/apis/apps/v1/namespaces/ml/statefulsets"
    assert kube.path("a2c.dev/v1alpha1", "A2CJob", None) == "/apis/a2c.dev/v1alpha1/a2cjobs"


def test_restore_patch_sets_back_only_what_we_render() -> None:
    want: dict[str, Any] = {
        "spec": {"replicas": 2, "template": {"env": [{"name": "A", "value": "1"}], "nodeSelector": {}},
                 "resources": {"limits": {"cpu": "0.5", "memory": "1Gi", "nvidia.com/gpu": 1}}},
        "metadata": {"labels": {"a2c.dev/job": "cp"}}}
    live: dict[str, Any] = {
        "spec": {"replicas": 2, "template": {"env": [{"name": "A", "value": "1", "added": "by the server"}]},
                 "resources": {"limits": {"cpu": "500m", "memory": "1024Mi", "nvidia.com/gpu": "1"}},
                 "revisionHistoryLimit": 10},
        "metadata": {"labels": {"a2c.dev/job": "cp", "theirs": "x"}, "uid": "u"}, "status": {"replicas": 2}}
    assert patches.restore_patch(want, live) is patches.SAME  # defaults, others' labels, empty {}, quantities: no drift
    live["spec"]["replicas"] = 5
    live["spec"]["template"]["env"][0]["value"] = "2"
    live["metadata"]["labels"]["a2c.dev/job"] = "x"
    patch = patches.restore_patch(want, live)
    assert patch == {"spec": {"replicas": 2, "template": {"env": [{"name": "A", "value": "1"}]}},
                     "metadata": {"labels": {"a2c.dev/job": "cp"}}}
    assert patches.changed_paths(patch) == ["spec.replicas", "spec.template.env", "metadata.labels.a2c.dev/job"]
    assert patches.restore_patch({"a": True}, {"a": 1}) == {"a": True}  # a boolean is not a number
    not_a_quantity = patches.restore_patch({"env": [{"value": "0.5"}]}, {"env": [{"value": "500m"}]})
    assert not_a_quantity != patches.SAME


def test_quantities_compare_by_value() -> None:
    assert patches.quantity("500m") == patches.quantity("0.5") == patches.quantity(0.5)
    assert patches.quantity("1Gi") == patches.quantity("1024Mi") == 2**30
    assert patches.quantity("1e3") == patches.quantity("1k")
    assert patches.quantity("2E") == 2 * 10**18 and patches.quantity("a2c") is None and patches.quantity(True) is None


def test_overlay_joins_two_merge_patches() -> None:
    assert patches.overlay({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3, "d": None}}) == \
        {"a": {"b": 1, "c": 3, "d": None}, "l": [1]}
