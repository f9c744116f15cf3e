"""`a2c controller` (the operator) and `a2c render JOB.yaml` (the children a job would get, as YAML).

Data flow: `a2c.cli` imports this module and calls `register(subparsers)`; each command's function gets
the parsed arguments. `render` is pure (`resources.render` over every A2CJob in the file); `controller`
loads the cluster credentials, serves metrics and runs `loop.Loop` until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

import yaml

from a2c import config, flags
from a2c.controller import resources
from a2c.controller import spec as jobspec
from a2c.observe import metrics

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("controller", help="run the operator that turns A2CJobs into pods",
                       description="Watch A2CJobs and keep their children and status true.")
    flags.add_arguments(p, config.ControllerConfig)
    p.set_defaults(func=lambda args: run_controller(flags.from_namespace(config.ControllerConfig, args)))
    r = sub.add_parser("render", help="print the Kubernetes objects an A2CJob would get",
                       description="Print, as a YAML stream, the children of every A2CJob in the file.")
    flags.add_arguments(r, config.RenderConfig)
    r.set_defaults(func=lambda args: run_render(flags.from_namespace(config.RenderConfig, args)))


def render_file(text: str, namespace: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc.get("apiVersion") != jobspec.API_VERSION or doc.get("kind") != jobspec.KIND:
            found = f"{doc.get('apiVersion')}/{doc.get('kind')}"
            raise ValueError(f"not an {jobspec.KIND} ({jobspec.API_VERSION}): {found}")
        doc.setdefault("metadata", {}).setdefault("namespace", namespace or "default")
        # as the controller renders it when it first sees the job: a job created suspended gets its children at zero
        out.extend(resources.render(doc, stopped=jobspec.run_policy(jobspec.with_defaults(doc.get("spec"))).suspend))
    return out


def run_render(args: config.RenderConfig) -> int:
    try:
        if args.job == "-":
            text = sys.stdin.read()
        else:
            with open(args.job, encoding="utf-8") as f:
                text = f.read()
        objects = render_file(text, args.namespace)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"a2c render: {exc}", file=sys.stderr)
        return 2
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


def run_controller(args: config.ControllerConfig) -> int:
    from kubernetes import config as kubeconfig

    from a2c.controller import handlers, kube, leader, loop
    from a2c.service import tls

    try:
        credentials = tls.channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    except tls.TLSError as exc:
        print(f"a2c controller: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        kubeconfig.load_kube_config(args.kubeconfig)
    else:
        try:
            kubeconfig.load_incluster_config()
        except kubeconfig.ConfigException:
            kubeconfig.load_kube_config()
    runner = loop.Loop(handlers.Reconciler(kube.Kube(), tls=credentials), args.namespace or None, args.resync_s)
    election = leader.Election(args.lease_name, args.lease_namespace or os.environ.get("POD_NAMESPACE")
                               or args.namespace or "default") if args.leader_election else None
    stuck_after_s = max(60.0, 6 * args.resync_s)

    def health() -> str:
        if election is not None and not election.leading:
            return ""  # a standby replica is healthy while it waits for the lease
        return "" if runner.healthy(stuck_after_s) else f"reconcile loop stuck for over {stuck_after_s:.0f} s"

    logging.getLogger("leaderelection").setLevel(logging.WARNING)  # it logs every renewal (2 s) at INFO
    metrics.bind("all", "controller", 0)
    metrics.serve(args.metrics_port, checks={"/healthz": health})
    signal.signal(signal.SIGTERM, lambda *_: runner.shutdown())
    log.info("a2c controller: watching %s", args.namespace or "all namespaces")
    try:
        if election is None:
            runner.run()
            return 0
        return election.run(runner.run, runner.shutdown, runner.stop)
    except KeyboardInterrupt:
        runner.shutdown()
    return 0
