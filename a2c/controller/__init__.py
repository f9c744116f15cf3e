"""The A2CJob operator: one custom resource in, the pods of a training run out, status kept true.

Design note. The controller is split so that almost everything is pure and tested without a cluster:

    spec.py       A2CJob spec -> defaults filled in -> TrainerConfig / PlayerConfig (the CLI's contract)
    resources.py  job -> [ConfigMap, headless Service, trainer StatefulSet (+ checkpoint claim template),
                  player StatefulSet] (pure)
    status.py     (job, trainer pods, trainer 0's Status reply) -> new status + what to do (pure)
    probe.py      trainer 0's TrainerService.Status over gRPC (grpc only, never torch)
    kube.py       the few REST calls we make, through the official client's ApiClient
    handlers.py   reconcile one job: apply children, decide, act, write status, emit Events
    loop.py       level-triggered list/watch loop with a periodic resync (also the status poll)
    leader.py     leader election on a coordination.k8s.io Lease (the official client's)
    commands.py   `a2c controller` and `a2c render`

Why not kopf: kopf's handlers are edge-triggered on diffs and keep their own state in annotations; what
this job needs is one level-triggered reconcile (render, compare, act) run both on watch events and on
a timer that polls the trainers. A plain list/watch loop with the official client expresses that in
~150 lines, runs synchronously under test (`Reconciler.reconcile(namespace, name)`), and is driven by the
tests against a strict stand-in for kube-apiserver (tests/cluster/). Nothing under `a2c.controller` imports
torch (import-linter).
"""
