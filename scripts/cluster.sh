#!/usr/bin/env bash
# The whole system on a local Kubernetes cluster: kind with Calico (a CNI that enforces
# NetworkPolicy), Linkerd 2.20 with its CNI plugin and viz, NGINX Gateway Fabric, cert-manager
# with a local CA, metrics-server, Argo Rollouts, kube-prometheus-stack, and meridian's e2e
# overlay built from this checkout. `test` then asserts the mission on it.
#
# Usage: scripts/cluster.sh up | test | down | diagnostics DIR
#        scripts/cluster.sh install ADDON...       add-ons into the current kubectl context
#                                                  (docs/deploy.md uses these on real clusters)
#        scripts/cluster.sh plan [up|test|down|install ADDON...]   prints the commands, runs nothing
# Needs: docker (or podman: kind's podman provider), kubectl >= 1.31, curl, python3. kind, helm,
# the linkerd CLI and k6 are downloaded into a cache, pinned by version and sha256.
# Settings (environment): CLUSTER_NAME (meridian), CONTAINER_ENGINE (docker|podman: which one
# builds the images and runs the nodes; default: docker if its daemon answers, else podman),
# KUBE_CONTEXT (for `install`: the context to install into; default: the current one),
# STEP_TIMEOUT (seconds each wait may take, 600).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster/tools.sh
source scripts/cluster/charts.sh
source scripts/cluster/steps.sh
source scripts/cluster/install.sh
source scripts/cluster/mission.sh

usage() {
  sed -n '7,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local command=${1:-}
  [ $# -gt 0 ] && shift
  case $command in
    plan)
      PLAN=1
      local what=${1:-up}
      [ $# -gt 0 ] && shift
      case $what in up | test | down) "cmd_$what" ;; install) cmd_install "$@" ;; *) usage ;; esac
      ;;
    up | test | down) "cmd_$command" ;;
    install) cmd_install "$@" ;;
    diagnostics) [ $# = 1 ] || usage; diagnostics "$1" ;;
    *) usage ;;
  esac
}

cmd_install() {
  [ $# -ge 1 ] || usage
  local addon
  for addon in "$@"; do
    declare -F "install_${addon//-/_}" >/dev/null || die "unknown add-on: $addon (one of: $ADDONS)"
  done
  if [ -z "${KUBE_CONTEXT:-}" ] && [ "$PLAN" = 1 ]; then
    CONTEXT=CURRENT-CONTEXT
  else
    CONTEXT=${KUBE_CONTEXT:-$(kubectl config current-context)}
  fi
  ensure_tools
  for addon in "$@"; do "install_${addon//-/_}"; done
}

cmd_up() {
  CONTEXT=kind-$CLUSTER_NAME
  ensure_tools
  create_cluster
  local addon
  for addon in $ADDONS; do "install_${addon//-/_}"; done
  build_and_load_images e2e
  deploy_e2e
  echo
  echo "Up: https://$GATEWAY_HOST:$GATEWAY_PORT (CA: $CA_FILE); scripts/cluster.sh test asserts the mission."
}

cmd_test() {
  CONTEXT=kind-$CLUSTER_NAME
  ensure_tools
  ensure_k6
  fetch_local_ca
  assert_gateway_crud
  assert_mtls
  assert_default_deny
  assert_hpa_follows_load
  assert_canary_promoted
  assert_faulty_canary_aborted
  assert_drain_fails_nothing
  assert_degraded_mode
  assert_observability
  echo
  echo "All $ASSERTIONS assertions held."
}

cmd_down() {
  ensure_tools
  run "$KIND" delete cluster --name "$CLUSTER_NAME"
  run rm -rf "$STATE_DIR"
}

# Any command that fails names its step and prints what explains it (steps.sh: fail).
trap 'fail "exit $? from: $BASH_COMMAND"' ERR
main "$@"
