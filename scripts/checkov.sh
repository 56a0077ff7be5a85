#!/usr/bin/env bash
# checkov over everything it understands here, in one run (so one SARIF file in CI): the
# rendered dev, prod and cluster manifests, the Dockerfile and the GitHub workflows. Fails on
# any failed check; the few skips are inline, each with its reason. Extra arguments go to
# checkov (the security workflow adds SARIF output).
# Usage: scripts/checkov.sh [CHECKOV_ARG...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
command -v checkov >/dev/null || pip_install checkov

stage=$(mktemp -d /tmp/meridian-checkov.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/k8s" "$stage/.github"
for target in overlays/dev overlays/prod cluster; do
  kubectl kustomize "k8s/$target" >"$stage/k8s/${target//\//-}.yaml"
done
cp Dockerfile "$stage/"
cp -r .github/workflows "$stage/.github/"
checkov -d "$stage" --framework kubernetes,dockerfile,github_actions --compact --quiet \
  --skip-download "$@"
