# Versions of the add-ons scripts/cluster.sh puts into a kind cluster. Sourced, not run:
# assignments only. Each pin names the upstream source it was read from (repository, tag,
# commit, path:line), so a bump starts by re-reading the same places at the new tag.
# What the script may set in each chart, with the values.yaml line it was found on, is in
# upstream-charts.json beside this file.

# Calico's plain manifest, applied with kubectl (no operator, no chart): the 3.31 line was
# built and tested against Kubernetes 1.33 (projectcalico/calico v3.31.7,
# 94bd1d5b0e04459d4d1c83653e0335a9201248b8, metadata.mk:8 K8S_VERSION=v1.33.13), and its
# nightly e2e float over the three newest Kubernetes minors (maintainer, projectcalico
# discussion #11717); the docs table that names 1.31-1.34 exactly was not in a stored source.
# manifests/calico.yaml exists at the tag. Its CALICO_IPV4POOL_CIDR is commented out
# (calico.yaml:7236-7240), so calico-node takes the pool from kubeadm-config's podSubnet
# (node/pkg/lifecycle/startup/startup.go:183-186, 934-950, regexp at :1395; RBAC for that read
# at calico.yaml:6779-6784) and falls back to 192.168.0.0/16 (startup.go:57, 984-986). kind runs
# kubeadm with podSubnet 10.244.0.0/16 unless told otherwise (kubernetes-sigs/kind v0.32.0,
# cda67ef8588f6bfdac5358233f2471cb2149ecaf, pkg/apis/config/v1alpha4/default.go:52), so the
# kind config should say disableDefaultCNI: true and podSubnet: 192.168.0.0/16, as Calico's own
# kind configs do (hack/test/kind/kind-single.config:7-8): detection and fallback then agree.
CALICO_VERSION=v3.31.7
CALICO_MANIFEST_URL="https://raw.githubusercontent.com/projectcalico/calico/${CALICO_VERSION}/manifests/calico.yaml"
CALICO_POD_SUBNET=192.168.0.0/16

# Chosen in docs/deploy.md (NGF 2.6 needs it; Linkerd 2.20 accepts v1.2.1-v1.5.1). Tag v1.5.1 =
# kubernetes-sigs/gateway-api e7677b70ae75d14a4448fba94870e7deea6cf0ad. The release asset is
# named by hack/build-install-yaml.sh:20 (CHANNELS=(standard experimental)) and :36
# (release/${CHANNEL}-install.yaml), run by `make build-install-yaml` (Makefile:87-89) and
# attached to the GitHub release (RELEASE.md:124-125). NGF v2.6.7 pins the same version in
# config/crd/gateway-api/standard/kustomization.yaml:4 and README.md:72.
GATEWAY_API_VERSION=v1.5.1
GATEWAY_API_STANDARD_INSTALL_URL="https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml"

# nginx/nginx-gateway-fabric v2.6.7 (5e34a17a8f7787e90f41d1af91258a556f0795b4), the newest 2.6
# tag: charts/nginx-gateway-fabric/Chart.yaml:5 version 2.6.7, :7 kubeVersion >= 1.31.0-0;
# published as OCI (charts/nginx-gateway-fabric/README.md:60, :114).
NGF_CHART_VERSION=2.6.7
NGF_CHART=oci://ghcr.io/nginx/charts/nginx-gateway-fabric

# cert-manager/cert-manager v1.21.1 (24e33194fb39488eff2bbf10c6dc640f407cad44); the release tool
# stamps the tag into the chart version (deploy/charts/cert-manager/Chart.yaml:24-25), and the
# chart's README documents the OCI reference (deploy/charts/cert-manager/README.template.md:23-28).
CERT_MANAGER_VERSION=v1.21.1
CERT_MANAGER_CHART=oci://quay.io/jetstack/charts/cert-manager

# kubernetes-sigs/metrics-server tag metrics-server-helm-chart-3.13.1
# (842dcc8c42f22cc19f10c7d5f2d32a9f4b6013b0): charts/metrics-server/Chart.yaml:5 version 3.13.1,
# :6 appVersion 0.8.1 (the newest chart tag, also the chart on the mirror's master); repository
# from charts/metrics-server/README.md:10.
METRICS_SERVER_CHART_VERSION=3.13.1
METRICS_SERVER_REPO=https://kubernetes-sigs.github.io/metrics-server/

# No argo-rollouts chart with appVersion v1.9.1 exists in the stored argoproj/argo-helm (newest:
# tag argo-rollouts-2.41.0, 8796aeaa82428f96c3a20293f75a1a805f99d32b, Chart.yaml:2 appVersion
# v1.9.0, :5 version 2.41.0), so no chart version is pinned here. The CRD schemas the manifests
# are validated against are v1.9.1's (shared/crds/SOURCES.md), and docs/deploy.md applies
# v1.9.1's install.yaml: argoproj/argo-rollouts v1.9.1
# (b6bd3bcf8f60d717a98763d26acc983db7f97cb0), manifests/install.yaml. That file carries an empty
# ConfigMap argo-rollouts-config (install.yaml:18708-18715) which k8s/cluster/argo-rollouts.yaml
# fills with the plugin, so apply install.yaml first and k8s/cluster after it, every time.
ARGO_ROLLOUTS_VERSION=v1.9.1
ARGO_ROLLOUTS_INSTALL_URL="https://github.com/argoproj/argo-rollouts/releases/download/${ARGO_ROLLOUTS_VERSION}/install.yaml"

# As k8s/cluster/argo-rollouts.yaml pins them (trafficRouterPlugins location). That file gives
# no sha256, and none was found in a stored source, so none is pinned here.
ROLLOUTS_GATEWAYAPI_PLUGIN_VERSION=v0.15.0
ROLLOUTS_GATEWAYAPI_PLUGIN_URL="https://github.com/argoproj-labs/rollouts-plugin-trafficrouter-gatewayapi/releases/download/${ROLLOUTS_GATEWAYAPI_PLUGIN_VERSION}/gatewayapi-plugin-linux-amd64"

# prometheus-community/helm-charts tag kube-prometheus-stack-88.3.0
# (54199b5bd7cdc3e6f27457791d744dd2761d378e): charts/kube-prometheus-stack/Chart.yaml:31 version
# 88.3.0, :33 appVersion v0.93.0, the newest chart on prometheus-operator v0.93.0, whose CRDs
# shared/crds holds (88.4.0 moves to v0.93.1). OCI reference from its README.md:18, :26.
KPS_CHART_VERSION=88.3.0
KPS_CHART=oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack
