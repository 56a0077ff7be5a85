# shellcheck shell=bash
# The cluster and its add-ons, one function each, in the order `up` installs them. Each works
# on any cluster the context points at (docs/deploy.md calls them for a real one), except
# create_cluster, build_and_load_images and deploy_e2e, which are for the local kind cluster.
# Versions: scripts/cluster/charts.sh (manifests and charts) and tools.sh (binaries).

ADDONS="calico gateway-api linkerd metrics-server cert-manager gateway-fabric prometheus argo-rollouts"
GATEWAY_HOST=dev.meridian.example.com
GATEWAY_PORT=8443
CA_FILE=${STATE_DIR:-.}/meridian-local-ca.crt

h() { run "$HELM" --kube-context "$CONTEXT" "$@"; }

# kind with its own CNI off (kindnet's policy engine blocks the kubelet's probes under a default
# deny: docs/deploy.md, section 1), so Calico enforces the NetworkPolicies.
create_cluster() {
  step "kind cluster \"$CLUSTER_NAME\" ($KIND_NODE_IMAGE, no default CNI)"
  if [ "$PLAN" != 1 ] && "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    echo "  exists: reusing it (scripts/cluster.sh down removes it)"
    return 0
  fi
  # kind adds the context kind-$CLUSTER_NAME to the user's kubeconfig; every command names it.
  run "$KIND" create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config scripts/cluster/kind.yaml
}

install_calico() {
  step "Calico $CALICO_VERSION (enforces NetworkPolicy)"
  k apply --server-side -f "$CALICO_MANIFEST_URL"
  k rollout status -n kube-system daemonset/calico-node --timeout="${STEP_TIMEOUT}s"
  k wait --for=condition=Ready nodes --all --timeout="${STEP_TIMEOUT}s"
}

install_gateway_api() {
  step "Gateway API CRDs $GATEWAY_API_VERSION"
  k apply --server-side -f "$GATEWAY_API_STANDARD_INSTALL_URL"
  k wait --for=condition=Established crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io --timeout=60s
}

# The CNI plugin first (restricted Pod Security: no NET_ADMIN init container), then the
# control plane that relies on it, then viz (before the app: tap works on pods created later).
install_linkerd() {
  step "Linkerd $LINKERD_VERSION: CNI plugin, CRDs, control plane, viz"
  local l=("$LINKERD" --context "$CONTEXT")
  apply_from "${l[@]}" install-cni
  k rollout status -n linkerd-cni daemonset/linkerd-cni --timeout="${STEP_TIMEOUT}s"
  run "${l[@]}" check --pre --linkerd-cni-enabled
  apply_from "${l[@]}" install --crds
  apply_from "${l[@]}" install --linkerd-cni-enabled
  run "${l[@]}" check --wait "${STEP_TIMEOUT}s"
  apply_from "${l[@]}" viz install
  run "${l[@]}" viz check --wait "${STEP_TIMEOUT}s"
}

# What only a local kind cluster gets (the same functions install a real cluster's add-ons).
on_kind() { [[ $CONTEXT == kind-* ]]; }

install_metrics_server() {
  step "metrics-server (chart $METRICS_SERVER_CHART_VERSION): the HPAs' metrics"
  local local_only=()
  # kind's kubelets serve self-signed certificates; a real cluster's kubelets are verified.
  on_kind && local_only=(--set 'args={--kubelet-insecure-tls}')
  h upgrade --install metrics-server metrics-server --repo "$METRICS_SERVER_REPO" \
    --version "$METRICS_SERVER_CHART_VERSION" --namespace kube-system \
    ${local_only[@]+"${local_only[@]}"} --wait --timeout "${STEP_TIMEOUT}s"
  wait_until "the metrics API answers" kubectl --context "$CONTEXT" top nodes
}

install_cert_manager() {
  step "cert-manager $CERT_MANAGER_VERSION, with the Gateway API shim"
  h upgrade --install cert-manager "$CERT_MANAGER_CHART" --version "$CERT_MANAGER_VERSION" \
    --namespace cert-manager --create-namespace --set crds.enabled=true \
    --set config.apiVersion=controller.config.cert-manager.io/v1alpha1 \
    --set config.kind=ControllerConfiguration --set config.enableGatewayAPI=true \
    --wait --timeout "${STEP_TIMEOUT}s"
}

install_gateway_fabric() {
  step "NGINX Gateway Fabric $NGF_CHART_VERSION"
  local local_only=()
  # On kind the data plane's Service is a NodePort on a fixed port that kind publishes on
  # 127.0.0.1:8443 (scripts/cluster/kind.yaml); a real cluster keeps the LoadBalancer.
  on_kind && local_only=(--set nginx.service.type=NodePort
    --set-json 'nginx.service.nodePorts=[{"port":30443,"listenerPort":443}]')
  h upgrade --install ngf "$NGF_CHART" --version "$NGF_CHART_VERSION" \
    --namespace nginx-gateway --create-namespace ${local_only[@]+"${local_only[@]}"} \
    --wait --timeout "${STEP_TIMEOUT}s"
  wait_until "GatewayClass nginx accepted" kubectl --context "$CONTEXT" wait --for=condition=Accepted gatewayclass/nginx --timeout=5s
}

# A meshed Prometheus (the metrics ports admit only mesh identities). The release name is the
# `release` label the ServiceMonitors carry.
install_prometheus() {
  step "kube-prometheus-stack $KPS_CHART_VERSION, Prometheus meshed"
  local local_only=()
  # Grafana and Alertmanager stay off in the local cluster: the dashboards' queries are
  # asserted against Prometheus itself, and nothing there pages anyone.
  on_kind && local_only=(--set grafana.enabled=false --set alertmanager.enabled=false)
  h upgrade --install kube-prometheus-stack "$KPS_CHART" --version "$KPS_CHART_VERSION" \
    --namespace monitoring --create-namespace \
    --set 'prometheus.prometheusSpec.podMetadata.annotations.linkerd\.io/inject=enabled' \
    ${local_only[@]+"${local_only[@]}"} --wait --timeout "${STEP_TIMEOUT}s"
  k rollout status -n monitoring statefulset/prometheus-kube-prometheus-stack-prometheus --timeout="${STEP_TIMEOUT}s"
}

install_argo_rollouts() {
  step "Argo Rollouts $ARGO_ROLLOUTS_VERSION"
  apply_from kubectl --context "$CONTEXT" create namespace argo-rollouts --dry-run=client -o yaml
  k apply --server-side -n argo-rollouts -f "$ARGO_ROLLOUTS_INSTALL_URL"
  k rollout status -n argo-rollouts deployment/argo-rollouts --timeout="${STEP_TIMEOUT}s"
}

# Both images from the Dockerfile, tagged as the e2e overlay names them, into the nodes'
# containerd. podman: `kind load docker-image` asks a docker daemon, so go through an archive.
build_and_load_images() {
  local tag=$1 service
  step "Images: build from the Dockerfile and load into kind (tag $tag)"
  for service in items timezones; do
    run "$ENGINE" build --target "$service" -t "localhost/meridian-$service:$tag" \
      --build-arg "MERIDIAN_GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .
    load_image "localhost/meridian-$service:$tag"
  done
}

load_image() {
  if [ "$ENGINE" = podman ]; then
    run podman save --format docker-archive -o "$STATE_DIR/image.tar" "$1"
    run "$KIND" load image-archive "$STATE_DIR/image.tar" --name "$CLUSTER_NAME"
    run rm -f "$STATE_DIR/image.tar"
  else
    run "$KIND" load docker-image "$1" --name "$CLUSTER_NAME"
  fi
}

deploy_e2e() {
  step "meridian: k8s/cluster-e2e, then the e2e overlay (dev + local images, local CA, canary)"
  # The namespace first: k8s/cluster-e2e puts the rollouts plugin's Role in it.
  k apply --server-side -f k8s/overlays/dev/namespace.yaml
  k apply --server-side -k k8s/cluster-e2e
  k rollout restart -n argo-rollouts deployment/argo-rollouts
  k rollout status -n argo-rollouts deployment/argo-rollouts --timeout="${STEP_TIMEOUT}s"
  k apply --server-side -k k8s/overlays/e2e
  k rollout status -n "$NAMESPACE" deployment/postgres --timeout="${STEP_TIMEOUT}s"
  wait_until "Rollout timezones healthy" rollout_phase_is timezones Healthy
  wait_until "Rollout items healthy" rollout_phase_is items Healthy
  wait_until "Gateway meridian programmed" kubectl --context "$CONTEXT" wait -n "$NAMESPACE" --for=condition=Programmed gateway/meridian --timeout=5s
  wait_until "certificate meridian-tls issued" kubectl --context "$CONTEXT" wait -n "$NAMESPACE" --for=condition=Ready certificate/meridian-tls --timeout=5s
  fetch_local_ca
}

rollout_phase_is() {
  [ "$(kubectl --context "$CONTEXT" get rollout -n "$NAMESPACE" "$1" -o jsonpath='{.status.phase}')" = "$2" ]
}

# The local CA's certificate, which clients trust for the Gateway's TLS.
fetch_local_ca() {
  printf '+ kubectl --context %s get secret -n %s meridian-local-ca -o jsonpath={.data.ca\\.crt} | base64 -d > %s\n' "$CONTEXT" "$NAMESPACE" "$CA_FILE"
  [ "$PLAN" = 1 ] && return 0
  kubectl --context "$CONTEXT" get secret -n "$NAMESPACE" meridian-local-ca -o jsonpath='{.data.ca\.crt}' | base64 -d >"$CA_FILE"
}

# What the workflow uploads when a run fails: events, pod logs, linkerd check, viz stat.
diagnostics() {
  local dir=$1
  CONTEXT=kind-$CLUSTER_NAME
  ensure_tools
  mkdir -p "$dir"
  kubectl --context "$CONTEXT" get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
  kubectl --context "$CONTEXT" get all,gateway,httproute,rollout,analysisrun,certificate -A -o wide >"$dir/objects.txt" 2>&1 || true
  "$LINKERD" --context "$CONTEXT" check >"$dir/linkerd-check.txt" 2>&1 || true
  "$LINKERD" --context "$CONTEXT" viz stat deploy -n "$NAMESPACE" >"$dir/viz-stat.txt" 2>&1 || true
  "$LINKERD" --context "$CONTEXT" viz edges pod -n "$NAMESPACE" >"$dir/viz-edges.txt" 2>&1 || true
  "$KIND" export logs "$dir/kind-logs" --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
  local ns pod
  kubectl --context "$CONTEXT" get pods -A --no-headers 2>/dev/null | awk '{print $1, $2}' | while read -r ns pod; do
    kubectl --context "$CONTEXT" logs -n "$ns" "$pod" --all-containers --prefix --tail=500 >"$dir/logs-$ns-$pod.txt" 2>&1 || true
  done
  echo "diagnostics in $dir"
}
