#!/usr/bin/env bash
# Build the a2c image locally with podman (no Docker, no image registry): the base image is made by
# debootstrap from the Debian mirror apt already uses, imported and tagged as the Dockerfile's BASE_IMAGE,
# then `podman build --pull=never` builds the repository's Dockerfile on top of it.
#
# The base image is made once: it stays in podman's image store (rebuilt with REBUILD_BASE=1).
# pip inside the build sees pip's configuration as this machine has it: the effective settings
# (`pip config list`: files and PIP_* variables) go into a pip.conf mounted read-only, and every local
# path they name (wheel directories, constraints, certificates; the directory holding a file:// index, whose
# pages link to files beside it) is mounted read-only at the same place. Nothing of it ends up in the image: build-time mounts are not committed.
#
# Usage: deploy/image/build.sh [extra podman build arguments]
# Environment (all optional):
#   IMAGE          tag to build                                      [a2c:<version in pyproject.toml>]
#   SUITE          Debian release of the base image                  [bookworm]
#   REBUILD_BASE=1 make the base image again even if it exists
#   PYTHON         the python whose pip configuration is mounted     [python3]
# Prints the image's name on stdout (everything else goes to stderr).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SUITE="${SUITE:-bookworm}"
PYTHON="${PYTHON:-python3}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "${ROOT}/pyproject.toml" | head -n 1)"
IMAGE="${IMAGE:-a2c:${VERSION}}"
BASE_IMAGE="$(sed -n 's/^ARG BASE_IMAGE=//p' "${ROOT}/Dockerfile" | head -n 1)"
[ -n "$BASE_IMAGE" ] || { echo "no ARG BASE_IMAGE= in the Dockerfile" >&2; exit 2; }

log() { printf '[image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

for tool in podman debootstrap runc tar; do
  command -v "$tool" >/dev/null 2>&1 || { log "missing tool: $tool (apt-get install podman buildah runc debootstrap)"; exit 2; }
done

WORK="$(mktemp -d)"
# debootstrap mounts /proc (and more) inside its target while it runs: an interrupted run leaves them, so
# detach what is mounted under WORK first, and never let rm cross into another filesystem.
cleanup() {
  awk -v work="$WORK/" 'index($2, work) == 1 { print $2 }' /proc/mounts | sort -r | while IFS= read -r target; do
    umount -l "$target" || true
  done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# crun refuses hybrid cgroup layouts, so runc; podman's default rlimits exceed what a root without
# CAP_SYS_RESOURCE may set, so the hard limits this shell has.
export CONTAINERS_CONF="${WORK}/containers.conf"
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF

# The Debian mirror apt uses here (never written into the repository).
mirror() {
  # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders, not shell expansions
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
    | awk -v suite="$1" '$2 == suite { print $1; exit }'
}

if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
  MIRROR="$(mirror "$SUITE")"
  [ -n "$MIRROR" ] || { log "apt has no source for ${SUITE}: add one, or set SUITE"; exit 2; }
  log "base image ${BASE_IMAGE}: debootstrap ${SUITE} from ${MIRROR}"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "${WORK}/rootfs" "$MIRROR" >"${WORK}/debootstrap.log" 2>&1 \
    || { tail -n 30 "${WORK}/debootstrap.log" >&2; exit 1; }
  rm -rf "${WORK}/rootfs/var/cache/apt/archives/"*.deb "${WORK}/rootfs/var/lib/apt/lists/"*
  tar -C "${WORK}/rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "${WORK}/rootfs"
fi

# pip's effective configuration, later sources winning as pip reads them (files, then PIP_* variables).
"$PYTHON" - "${WORK}/pip.conf" "${WORK}/mounts" <<'PY'
import ast, os, subprocess, sys
from urllib.parse import urlparse
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
settings = {}
for line in out.stdout.splitlines():
    key, _, value = line.partition("=")
    section, _, name = key.rpartition(".")
    if section in ("global", "install", ":env:"):
        settings[name] = ast.literal_eval(value)
paths = set()
for key, value in settings.items():
    for word in value.split():
        path = os.path.normpath(urlparse(word).path if word.startswith("file:") else word)
        if key.endswith("index-url") and word.startswith("file:"):
            path = os.path.dirname(path)  # an index's pages link to files beside it (../../files/...)
        if path.startswith("/") and path != "/" and os.path.exists(path):
            paths.add(path)
with open(sys.argv[1], "w") as conf:
    conf.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
with open(sys.argv[2], "w") as mounts:
    mounts.write("".join(f"{p}\n" for p in sorted(paths)))
PY
VOLUMES=(--volume "${WORK}/pip.conf:/etc/pip.conf:ro")
while IFS= read -r path; do
  VOLUMES+=(--volume "${path}:${path}:ro")
done <"${WORK}/mounts"

# What the image was built from: the test node refuses an image whose source differs from the checkout's
# (tests/cluster/node_container.py computes the same digest).
SOURCE="$(cd "$ROOT" && find a2c protos pyproject.toml -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d ' ' -f 1)"

log "podman build ${IMAGE} (base ${BASE_IMAGE}, source ${SOURCE:0:12})"
podman build --pull=never --network host --tag "$IMAGE" --label "a2c.source-sha256=${SOURCE}" \
  "${VOLUMES[@]}" "$@" "$ROOT" >&2
echo "$IMAGE"
