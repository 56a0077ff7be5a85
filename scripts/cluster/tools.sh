# shellcheck shell=bash
# shellcheck disable=SC2034  # sourced by scripts/cluster.sh, which reads these names
#
# Pinned upstream facts for scripts/cluster.sh: the versions it downloads, their sha256,
# and the kind node image. Assignments only, so sourcing it runs nothing.
#
# How these were read (2026-12-03), so the next bump can be checked the same way:
#   Upstream source came from git mirrors fetched with the session `fetch` tool:
#     github:kubernetes-sigs/kind, github:helm/helm, github:linkerd/linkerd2
#   and was read with plain git, e.g.
#     git --git-dir=$KIND tag --sort=-v:refname | head
#     git --git-dir=$KIND show v0.32.0:pkg/apis/config/defaults/image.go
#     git --git-dir=$L5D log -1 --format='%H %cd' edge-26.6.3 version-2.20
#     git --git-dir=$L5D diff --stat edge-26.6.3 version-2.20
#   Release assets are not in git: their sha256 come from the stored search corpora
#   (`find_string` on the asset URL or on a candidate digest, `read_file` on each hit) and
#   are kept only where two sources agree; each line below names them.
#   upstream-cli.json (next to this file) is the output of
#     scripts/cluster/read-upstream-cli.py > scripts/cluster/upstream-cli.json
#   which reads, with `git show TAG:PATH` on the same mirrors, every flag registration
#   (pflag *Var/*VarP/*P calls, linkerd's flag.New*Flag) inside the functions that build
#   each command; each flag carries its path:line at the pinned tag.
# Not found in any stored source, so deliberately absent (scripts/cluster.sh must not
# invent them): LINKERD_SHA256_<os>_<arch> for linkerd2-cli-edge-26.6.3-<os>-<arch>.

# kind: the newest release tag in kubernetes-sigs/kind. v0.33.0-alpha (bb8a702f, same day)
# only opens the next development cycle and is not a release.
# Source: tag v0.32.0 -> commit cda67ef8588f6bfdac5358233f2471cb2149ecaf ("version v0.32.0").
KIND_VERSION="v0.32.0"

# The release's own default node image (Kubernetes v1.36.1 >= Linkerd 2.20's minimum 1.31:
# linkerd2 version-2.20 pkg/k8s/api.go:30 minAPIVersion and
# charts/linkerd-control-plane/Chart.yaml:11 kubeVersion ">=1.31.0-0").
# Source: kubernetes-sigs/kind v0.32.0 (cda67ef8588f6bfdac5358233f2471cb2149ecaf)
#   pkg/apis/config/defaults/image.go:21
KIND_NODE_IMAGE="kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"

# sha256 of https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-<os>-<arch>.
# Two independent repositories pin the same four values:
#   C5C3/forge@2168f31ca0e789505d98437bfc19f76ab32ba241 hack/install-test-deps.sh:47-53
#   KonuTech/airflow-platform@9cdf4e570185a7f03954b38bdbfe72f1478a8a89 tools/k8s/install_kind.sh:60-63
# linux_amd64 is pinned by several more (index hits for kind v0.32.0 CI installers); one
# stored file (a node script, index id 61397179034) disagrees on linux_amd64 and
# darwin_amd64, and is outvoted.
KIND_SHA256_linux_amd64="50030de23cf40a18505f20426f6a8506bedf13c6e509244bd1fa9463721b0f54"
KIND_SHA256_linux_arm64="b92cd615e97585de8ddade28ed5cd7feb4248d717c233eea5b03c37298900f5d"
KIND_SHA256_darwin_amd64="295ac6d0d634c9819c9907df45e3017d1f13166bd13c3404c45e79f7faa47498"
KIND_SHA256_darwin_arm64="dca67911095a110c2b5c36e26df6cac860c602033e456c0db47be498cdef1ebb"

# helm: the newest v3 tag in helm/helm (v3.21.4 -> commit 813176c51bb5c181dbbd7901298ddcc104cd3417).
HELM_VERSION="v3.21.4"

# sha256 of https://get.helm.sh/helm-v3.21.4-<os>-<arch>.tar.gz, as listed under
# "Installation and Upgrading" in https://github.com/helm/helm/releases/tag/v3.21.4
# (stored copy in the code index, read_file id 71627682562, lines 29-33); the same four
# values are pinned in a second stored file (index id 68490142971), and linux amd64/arm64
# in nix/CI files of three more.
HELM_SHA256_linux_amd64="61f88ab166748cb19604d7884cb100ae9ccb13804ddeb98e08af167eacbb6a14"
HELM_SHA256_linux_arm64="b54c04b4e0b2540bbdc08c17a121dab70e9a2ed0de5705528fec68a5fd3b85a7"
HELM_SHA256_darwin_amd64="9173d05edf9592c6be1d0412ffafd935448dfc7a63c2bc732b8c67e55503e8a8"
HELM_SHA256_darwin_arm64="6e0bf5eb6daafc2b1ec34bb5ba04ef103f3afc16192fb19805c2924d7ea1033f"

# linkerd: open-source Linkerd ships edge releases only; the version-2.20 tag
# (eadc1acf79ad2e766afbdceadb77f1594296fd77) is edge-26.6.3
# (7977d505fc3d9ae7dddddd11779a82f813e405ac) plus one commit touching only go.mod/go.sum
# ("chore(deps): upgrade containerd (#15405)"), so edge-26.6.3's CLI is the 2.20 CLI.
# The next edge tag, edge-26.7.1, already carries post-2.20 changes (a breaking destination fix).
LINKERD_VERSION="edge-26.6.3"
