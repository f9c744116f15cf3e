#!/usr/bin/env bash
# End-to-end on kind: build the image, load it into the cluster, `helm install --wait`, wait until the
# default A2CJob has made progress, `helm test`, and dump everything useful when a step fails.
#
# The image goes into the nodes as an archive (`docker save` + `kind load image-archive`):
# `kind load docker-image` fails with Docker's containerd image store, the default since Docker 29.
#
# Needs docker, kind, kubectl and helm on PATH. Environment (all optional):
#   CLUSTER_NAME      kind cluster (created from deploy/kind/cluster.yaml if missing)  [a2c]
#   RELEASE           Helm release                                                      [a2c]
#   NAMESPACE         namespace                                                          [a2c]
#   IMAGE_TAG         tag of the image built and loaded (never "latest")                [0.1.0-kind]
#   TORCH_INDEX_URL   pip index for torch (a CPU-only wheel index keeps the image small)
#   MIN_ITERATIONS    training iterations the job must reach                            [5]
#   PROGRESS_TIMEOUT  seconds to wait for them                                           [900]
#   LOG_DIR           where logs are written on failure                                  [./kind-logs]
#   SKIP_BUILD=1      use an image already built under that tag
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-a2c}"
RELEASE="${RELEASE:-a2c}"
NAMESPACE="${NAMESPACE:-a2c}"
IMAGE_TAG="${IMAGE_TAG:-0.1.0-kind}"
IMAGE="a2c:${IMAGE_TAG}"
MIN_ITERATIONS="${MIN_ITERATIONS:-5}"
PROGRESS_TIMEOUT="${PROGRESS_TIMEOUT:-900}"
LOG_DIR="${LOG_DIR:-${ROOT}/kind-logs}"

log() { printf '[e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { log "missing tool: $tool"; exit 2; }
  done
}

dump_logs() {
  local rc=$?
  trap - EXIT
  if [[ $rc -eq 0 ]]; then
    return
  fi
  log "failed (exit $rc); writing diagnostics to ${LOG_DIR}"
  mkdir -p "$LOG_DIR"
  {
    helm status "$RELEASE" -n "$NAMESPACE" || true
    kubectl get nodes -o wide --show-labels || true
    kubectl -n "$NAMESPACE" get all,a2cjobs,networkpolicies,poddisruptionbudgets,configmaps -o wide || true
    kubectl -n "$NAMESPACE" describe a2cjobs || true
    kubectl -n "$NAMESPACE" describe pods || true
    kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp || true
  } >"${LOG_DIR}/cluster.txt" 2>&1
  local pod
  for pod in $(kubectl -n "$NAMESPACE" get pods -o name 2>/dev/null); do
    kubectl -n "$NAMESPACE" logs "$pod" --all-containers --timestamps >"${LOG_DIR}/${pod#pod/}.log" 2>&1 || true
    kubectl -n "$NAMESPACE" logs "$pod" --all-containers --timestamps --previous \
      >"${LOG_DIR}/${pod#pod/}.previous.log" 2>/dev/null || true
  done
  cat "${LOG_DIR}/cluster.txt" >&2
  tail -n 50 "${LOG_DIR}"/*.log >&2 || true
  exit "$rc"
}

# Saves the image to a temporary archive and loads it into every node of the cluster. A file, not a pipe:
# kind opens the archive once per node, concurrently.
load_image() {
  local dir rc=0
  dir="$(mktemp -d)"
  { docker save --output "${dir}/image.tar" "$IMAGE" \
      && kind load image-archive "${dir}/image.tar" --name "$CLUSTER_NAME"; } || rc=$?
  rm -rf "$dir"
  return "$rc"
}

# Prints the iteration the release's A2CJob reports (0 until it reports one); fails if it failed.
job_iteration() {
  local job phase iteration
  job="$(kubectl -n "$NAMESPACE" get a2cjobs -l "app.kubernetes.io/instance=${RELEASE}" -o name)"
  [[ -n "$job" ]] || { echo 0; return; }
  phase="$(kubectl -n "$NAMESPACE" get "$job" -o jsonpath='{.status.phase}')"
  if [[ "$phase" == "Failed" ]]; then
    log "$job failed: $(kubectl -n "$NAMESPACE" get "$job" -o jsonpath='{.status.message}')"
    return 1
  fi
  iteration="$(kubectl -n "$NAMESPACE" get "$job" -o jsonpath='{.status.iteration}')"
  echo "${iteration:-0}"
}

main() {
  require docker kind kubectl helm
  trap dump_logs EXIT

  if ! kind get clusters | grep -qx "$CLUSTER_NAME"; then
    log "creating kind cluster ${CLUSTER_NAME}"
    kind create cluster --name "$CLUSTER_NAME" --config "${ROOT}/deploy/kind/cluster.yaml" --wait 180s
  fi
  kubectl config use-context "kind-${CLUSTER_NAME}" >/dev/null

  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building ${IMAGE}"
    local build_args=()
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
      build_args+=(--build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL}")
    fi
    docker build "${build_args[@]}" -t "$IMAGE" "$ROOT"
  fi
  log "loading ${IMAGE} into ${CLUSTER_NAME}"
  load_image

  log "installing release ${RELEASE}"
  helm upgrade --install "$RELEASE" "${ROOT}/deploy/helm" \
    --namespace "$NAMESPACE" --create-namespace \
    --values "${ROOT}/deploy/kind/values.yaml" \
    --set "image.tag=${IMAGE_TAG}" \
    --wait --timeout 10m

  log "waiting for ${MIN_ITERATIONS} training iterations (at most ${PROGRESS_TIMEOUT} s)"
  local deadline=$((SECONDS + PROGRESS_TIMEOUT)) iteration=0
  while true; do
    iteration="$(job_iteration)"
    log "iteration ${iteration}"
    if ((iteration >= MIN_ITERATIONS)); then
      break
    fi
    if ((SECONDS >= deadline)); then
      log "no progress to ${MIN_ITERATIONS} iterations within ${PROGRESS_TIMEOUT} s"
      return 1
    fi
    sleep 10
  done

  log "helm test"
  helm test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout 10m
  kubectl -n "$NAMESPACE" get a2cjobs
  log "passed"
}

main "$@"
