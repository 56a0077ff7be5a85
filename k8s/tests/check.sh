#!/usr/bin/env bash
# Proves the Kubernetes and Linkerd manifests offline (no cluster here): every overlay and
# component renders; core kinds pass kubernetes-validate --strict for the oldest and newest
# Kubernetes we target; every custom resource validates against its upstream CRD schema
# (unknown kinds fail); checkov and yamllint are clean; the contract tests tie the manifests
# to the code and the binaries. The podman run of the dev Deployments is in
# scripts/container-test.sh, where the images are.
# Usage: k8s/tests/check.sh   (after cargo build: the contract tests start the binaries)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/common.sh

for tool in kubernetes-validate yamllint checkov; do
  command -v "$tool" >/dev/null || pip_install kubernetes-validate yamllint checkov
done
# network-config-analyzer, what the rendered NetworkPolicies allow (k8s/tests/flows.py), in a
# virtualenv of its own: its pinned dependencies would pull checkov back to a 2022 release.
# Only its command is used (NCA), so the venv's python3 stays off PATH.
NCA="$TOOLS_DIR/nca/bin/nca"
"$NCA" --version 2>/dev/null | grep -qx 'NCA version 2.1.0' || {
  python3 -m venv "$TOOLS_DIR/nca"
  "$TOOLS_DIR/nca/bin/python" -m pip install --quiet --disable-pip-version-check network-config-analyzer==2.1.0
}
export NCA
python3 -c 'import jsonschema, yaml' 2>/dev/null || pip_install jsonschema pyyaml
# promtool parses the canary analysis queries (test_analysis_queries.py).
command -v promtool >/dev/null || apt_install prometheus

rendered=$(mktemp -d /tmp/meridian-k8s.XXXXXX)
variants=()
trap 'rm -rf "$rendered" "${variants[@]}"' EXIT
# Components render only inside a kustomization: each optional one in a variant of its own.
# Usage: variant NAME BASE COMPONENT [NAMESPACE]; its directory is appended to `variants`.
variant() {
  local dir
  dir=$(mktemp -d -p k8s ".render-$1.XXXXXX")
  variants+=("$dir")
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    [ -z "${4:-}" ] || echo "namespace: $4"
    echo "resources: [../$2]"
    echo "components: [../$3]"
  } >"$dir/kustomization.yaml"
}
variant legacy-ingress overlays/prod components/legacy-ingress meridian-prod
variant legacy-ingress-issuers cluster components/legacy-ingress-issuers
variant kubelet-probes overlays/dev components/kubelet-probes meridian-dev

step "kubectl kustomize: every overlay and component renders"
for target in overlays/dev overlays/e2e overlays/prod cluster cluster-e2e gitops "${variants[@]#k8s/}"; do
  name=${target//\//-}; name=${name#.render-}; name=${name%%.*}
  kubectl kustomize "k8s/$target" >"$rendered/$name.yaml"
  printf '  %-15s %3d objects\n' "$name" "$(grep -c '^kind:' "$rendered/$name.yaml")"
done
grep -q '^kind: Ingress$' "$rendered/legacy-ingress.yaml"

step "kubernetes-validate --strict (core kinds; Kubernetes 1.31 and 1.34)"
for version in 1.31.0 1.34.0; do
  for file in "$rendered"/*.yaml; do
    # It only warns about kinds it has no schema for: those are the custom resources below.
    status=0
    kubernetes-validate -k "$version" --strict --quiet "$file" >"$rendered/kv.out" 2>&1 || status=$?
    if [ "$status" != 0 ] || grep -qv '^WARN' "$rendered/kv.out"; then
      echo "kubernetes-validate failed on $file:"; cat "$rendered/kv.out"; exit 1
    fi
  done
  echo "  $version: core kinds valid"
done

step "Custom resources against the upstream CRD schemas"
python3 k8s/tests/validate_custom_resources.py "$rendered"/*.yaml | tail -n 1

step "checkov (kubernetes) and yamllint"
checkov -d "$rendered" --framework kubernetes --compact --quiet --skip-download
yamllint -s -f parsable -c .yamllint.yaml k8s mesh observability/prometheus observability/alertmanager compose.yaml
echo "  yamllint: clean"

step "The flow matrix on the rendered overlays: network-config-analyzer, then Linkerd's authorization (k8s/tests/flows.py)"
python3 k8s/tests/flows.py --summary

step "Contract tests: manifests against the code and the binaries"
python3 -m unittest discover -s k8s/tests -p 'test_*.py' 2>&1 | tail -n 3

step "HPA settings: the prod overlay's are the ones derived from the benchmark (docs/scaling.md)"
python3 load-tests/capacity.py --check
