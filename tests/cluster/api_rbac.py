"""RBAC as kube-apiserver's authorizer evaluates it, over the Roles and bindings in the store.

A request (user, groups, verb, apiGroup, resource[/subresource], namespace, name) is allowed when some
binding that names the user, one of its groups or its ServiceAccount grants a rule matching all of those.
RoleBindings grant in their namespace only (even when they point at a ClusterRole); ClusterRoleBindings
grant everywhere. Non-resource URLs (discovery) are allowed to every authenticated user, as the default
`system:discovery` binding does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Lookup = Callable[[str, str, str, str], "dict[str, Any] | None"]  # (plural, namespace, name, group) -> obj
Items = Callable[[str, str | None], "list[dict[str, Any]]"]  # (plural, namespace) -> objects


@dataclass(frozen=True)
class Attributes:
    user: str
    groups: tuple[str, ...]
    verb: str
    group: str
    resource: str  # "pods" or "a2cjobs/status"
    namespace: str
    name: str


def _subject_matches(subject: dict[str, Any], attrs: Attributes, binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == attrs.user
    if kind == "Group":
        return name in attrs.groups
    if kind == "ServiceAccount":
        return attrs.user == f"system:serviceaccount:{subject.get('namespace') or binding_ns}:{name}"
    return False


def _rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return bool(values) and ("*" in values or value in values)  # type: ignore[operator]
    if not has(rule.get("verbs"), attrs.verb) or rule.get("nonResourceURLs"):
        return False
    if not has(rule.get("apiGroups"), attrs.group):
        return False
    resources = rule.get("resources") or []
    main, _, sub = attrs.resource.partition("/")
    if not ("*" in resources or attrs.resource in resources or (sub and f"{main}/*" in resources)
            or (sub and f"*/{sub}" in resources)):
        return False
    names = rule.get("resourceNames")
    return not names or attrs.name in names


def allowed(attrs: Attributes, items: Items, lookup: Lookup) -> bool:
    bindings = [(b, "") for b in items("clusterrolebindings", None)]
    if attrs.namespace:
        bindings += [(b, attrs.namespace) for b in items("rolebindings", attrs.namespace)]
    for binding, ns in bindings:
        if not any(_subject_matches(s, attrs, ns) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            role = lookup("clusterroles", "", ref.get("name", ""), "rbac.authorization.k8s.io")
        elif ns:
            role = lookup("roles", ns, ref.get("name", ""), "rbac.authorization.k8s.io")
        else:
            role = None
        if role and any(_rule_allows(rule, attrs) for rule in role.get("rules") or []):
            return True
    return False


def forbidden_message(attrs: Attributes) -> str:
    main = attrs.resource.split("/")[0]
    qualified = f"{main}.{attrs.group}" if attrs.group else main
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (f'{subject} is forbidden: User "{attrs.user}" cannot {attrs.verb} resource "{attrs.resource}" in API group '
            f'"{attrs.group}" {scope}')


def groups_of(user: str) -> tuple[str, ...]:
    if user == "system:anonymous":
        return ("system:unauthenticated",)
    if user.startswith("system:serviceaccount:"):
        ns = user.split(":")[2]
        return ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated")
    return ("system:authenticated",)
