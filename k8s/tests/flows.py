#!/usr/bin/env python3
"""The flow matrix: every flow meridian needs and every flow it must refuse, each with its port,
checked on the RENDERED overlays by two engines over one list:

1. NetworkPolicy: network-config-analyzer (the `nca` command) computes what the rendered
   policies allow between the overlay's workloads (at one replica, prod's Rollout-run
   Deployments included) and the pods a cluster adds around them (cluster-pods.yaml, each as its
   upstream code labels it), plus addresses: the node (the kubelet), NodeLocal DNSCache in both
   of its modes, the managed database, the internet.
2. Linkerd: linkerd_authz.py decides, as Linkerd 2.20's policy controller and proxy do, which
   Server, route and AuthorizationPolicy admit each flow's request, or shows that none does.

Usage: k8s/tests/flows.py                        the matrix of dev, e2e, prod and prod + legacy ingress
       k8s/tests/flows.py DIR NAMESPACE [NAME]   your own overlay (a kustomize directory)
Exit 1 when any flow differs from the matrix. test_flows.py runs it and shows it failing on
broken copies (among them the selector rewrite that once blocked every flow of the system).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import linkerd_authz  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
CLUSTER_PODS = REPO / "k8s/tests/cluster-pods.yaml"

# Addresses outside any pod. The node is a kind node on its Docker network; the other settings
# (k8s/base/networkpolicy-dns.yaml, k8s/components/kubelet-probes) are documented in deploy.md.
NODE = "172.18.0.2"
NODE_LOCAL_DNS = "169.254.20.10"
KUBE_DNS_CLUSTER_IP = "10.96.0.10"
DATABASE = "10.20.30.40"  # prod's managed PostgreSQL, outside the cluster
INTERNET = "203.0.113.7"
APP = "APP_NAMESPACE"  # replaced by the overlay's namespace
PROXY_INBOUND = 4143  # where a meshed client's proxy connects (Linkerd 2.20 transport-header mode)


@dataclass(frozen=True)
class Pod:
    namespace: str
    workload: str


@dataclass(frozen=True)
class Address:
    ip: str


ENDPOINTS = {
    "gateway": Pod(APP, "meridian-nginx"),
    "items": Pod(APP, "items"),
    "timezones": Pod(APP, "timezones"),
    "postgres": Pod(APP, "postgres"),
    "acme-solver": Pod(APP, "cm-acme-http-solver"),
    "prometheus": Pod("monitoring", "prometheus-kube-prometheus-stack-prometheus"),
    "viz-prometheus": Pod("linkerd-viz", "prometheus"),
    "viz-tap": Pod("linkerd-viz", "tap"),
    "linkerd-identity": Pod("linkerd", "linkerd-identity"),
    "linkerd-destination": Pod("linkerd", "linkerd-destination"),
    "kube-dns": Pod("kube-system", "coredns"),
    "ngf-control-plane": Pod("nginx-gateway", "ngf-nginx-gateway-fabric"),
    "ingress-nginx": Pod("ingress-nginx", "ingress-nginx-controller"),
    "otel-collector": Pod("observability", "otel-collector"),
    "other-meshed": Pod("other-team", "meshed-client"),
    "other-plain": Pod("other-team", "plain-client"),
    "kubelet": Address(NODE),
    "node-local-dns": Address(NODE_LOCAL_DNS),
    "kube-dns-clusterip": Address(KUBE_DNS_CLUSTER_IP),
    "database": Address(DATABASE),
    "internet": Address(INTERNET),
}
MESHED_APP_PODS = ["gateway", "items", "timezones", "postgres"]
SCRAPERS = ["prometheus", "viz-prometheus"]

# Variants: name -> (kustomize directory or None for a generated one, namespace, has dev's db).
# e2e is dev on a kind cluster (k8s/overlays/e2e): dev's rows, its workloads run by Rollouts.
ALL = frozenset({"dev", "e2e", "prod", "legacy-ingress"})
DEV, PROD = frozenset({"dev", "e2e"}), frozenset({"prod", "legacy-ingress"})
LEGACY = frozenset({"legacy-ingress"})
# Overlays made for a CNI that does not exempt the node (kindnet) would include
# k8s/components/kubelet-probes and be named here; none does (e2e's kind runs Calico).
NODE_ADMITTED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Flow:
    """One row of the matrix. `ports` are the destination's ports (TCP unless `protocol`);
    meshed pod to meshed pod the packets go to the proxy's 4143 instead, which is checked too.
    `request` is the HTTP request Linkerd authorizes (None: a connection). `mesh` is what
    Linkerd must decide: "Server/route/AuthorizationPolicy", "refused", or None where no proxy
    of ours decides (an unmeshed or outside destination)."""
    src: str
    dst: str
    ports: tuple
    allowed: bool
    why: str
    variants: frozenset = ALL
    protocol: str = "TCP"
    request: tuple | None = None
    mesh: str | None = None
    # The kubelet's flows: the NetworkPolicy API exempts a pod's own node, which no policy
    # expresses; where a CNI ignores that, components/kubelet-probes admits the node's subnet.
    node_exempt: bool = False


def _flows() -> list[Flow]:
    flows = [
        # --- allowed ------------------------------------------------------------------------------
        Flow("internet", "gateway", (80,), True, "the public entry point (and the redirect to HTTPS)",
             request=("GET", "/v1/items"), mesh="gateway-http/default/gateway-http-from-internet"),
        Flow("internet", "gateway", (443,), True, "the public entry point (TLS ends in NGINX)",
             mesh="gateway-https/-/gateway-https-from-internet"),
        Flow("gateway", "items", (8080,), True, "the Gateway routes the API to items",
             request=("GET", "/v1/items"), mesh="items-http/items-api/items-api-from-gateway"),
        Flow("items", "timezones", (8081,), True, "items calls timezones",
             request=("GET", "/v1/timezones/Asia/Tokyo"), mesh="timezones-http/timezones-api/timezones-api-from-items"),
        Flow("items", "postgres", (5432,), True, "items' database (dev's StatefulSet)", DEV,
             mesh="postgres/-/postgres-from-items"),
        Flow("items", "database", (5432,), True, "items' database (prod's, outside the cluster)", PROD),
        Flow("gateway", "acme-solver", (8089,), True, "ACME HTTP-01 challenges through the Gateway"),
        Flow("gateway", "ngf-control-plane", (8443,), True, "the data plane's agent connection"),
        Flow("ingress-nginx", "items", (8080,), True, "the legacy Ingress routes the API to items", LEGACY,
             request=("GET", "/v1/items"), mesh="items-http/items-api/items-api-from-ingress-nginx"),
        Flow("ingress-nginx", "acme-solver", (8089,), True, "ACME HTTP-01 through the legacy Ingress", LEGACY),
        Flow("items", "otel-collector", (4317, 4318), True, "traces (OTLP gRPC, HTTP)"),
        Flow("timezones", "otel-collector", (4317, 4318), True, "traces (OTLP gRPC, HTTP)"),
    ]
    for scraper in SCRAPERS:
        flows += [
            Flow(scraper, "items", (9464,), True, "scrapes items' metrics",
                 request=("GET", "/metrics"), mesh="items-metrics/default/items-metrics-from-scrapers"),
            Flow(scraper, "timezones", (9465,), True, "scrapes timezones' metrics",
                 request=("GET", "/metrics"), mesh="timezones-metrics/default/timezones-metrics-from-scrapers"),
        ]
        for pod in MESHED_APP_PODS:
            flows.append(Flow(scraper, pod, (4191,), True, "scrapes the proxy's metrics",
                              DEV if pod == "postgres" else ALL, request=("GET", "/metrics"),
                              mesh="linkerd-admin/linkerd-admin-metrics/linkerd-admin-metrics-from-scrapers"))
    for pod in MESHED_APP_PODS:
        variants = DEV if pod == "postgres" else ALL
        flows.append(Flow("viz-tap", pod, (4190,), True, "linkerd viz tap", variants, mesh="*/*/tap"))
        flows.append(Flow("kubelet", pod, (4191,), True, "probes the proxy", variants,
                          request=("GET", "/ready"), node_exempt=True,
                          mesh="linkerd-admin/linkerd-admin-probes/linkerd-admin-probes-from-kubelet"))
        for control_plane, port in (("linkerd-identity", 8080), ("linkerd-destination", 8086),
                                    ("linkerd-destination", 8090)):
            flows.append(Flow(pod, control_plane, (port,), True, "the proxy's identity, destination, policy",
                              variants, mesh="(default)/default/default:all-unauthenticated"))
    flows += [
        Flow("kubelet", "items", (8080,), True, "probes items", request=("GET", "/readyz"), node_exempt=True,
             mesh="items-http/items-probes/items-probes-from-kubelet"),
        Flow("kubelet", "timezones", (8081,), True, "probes timezones", request=("GET", "/healthz"),
             node_exempt=True, mesh="timezones-http/timezones-probes/timezones-probes-from-kubelet"),
        Flow("kubelet", "gateway", (8081,), True, "probes NGINX", request=("GET", "/readyz"),
             node_exempt=True, mesh="(default)/probe/probe"),
    ]
    for pod in MESHED_APP_PODS:
        variants = DEV if pod == "postgres" else ALL
        for protocol in ("UDP", "TCP"):
            for resolver in ("kube-dns", "node-local-dns", "kube-dns-clusterip"):
                flows.append(Flow(pod, resolver, (53,), True, f"DNS over {protocol}", variants, protocol))

    # --- refused ------------------------------------------------------------------------------
    api = {"items": (8080, ("GET", "/v1/items")), "timezones": (8081, ("GET", "/v1/timezones")),
           "postgres": (5432, None)}
    outsiders = {
        "items": ["timezones", "postgres", "prometheus", "viz-prometheus", "ingress-nginx", "other-meshed",
                  "other-plain", "internet"],
        "timezones": ["gateway", "postgres", "prometheus", "viz-prometheus", "ingress-nginx", "other-meshed",
                      "other-plain", "internet"],
        "postgres": ["gateway", "timezones", "prometheus", "ingress-nginx", "other-meshed", "other-plain",
                     "internet"],
    }
    for dst, sources in outsiders.items():
        port, request = api[dst]
        for src in sources:
            variants = DEV if "postgres" in (src, dst) else ALL
            if src == "ingress-nginx" and dst == "items":
                variants = frozenset({"dev", "e2e", "prod"})
            flows.append(Flow(src, dst, (port,), False, f"only {'the edge' if dst == 'items' else 'items'} "
                              f"may call {dst}", variants, request=request, mesh="refused",
                              node_exempt=src == "kubelet"))
    flows += [
        Flow("timezones", "database", (5432,), False, "only items reaches the database", PROD),
        Flow("gateway", "database", (5432,), False, "only items reaches the database", PROD),
        Flow("items", "internet", (443,), False, "no egress to the internet"),
        Flow("timezones", "internet", (443,), False, "no egress to the internet"),
        Flow("other-meshed", "items", (9464,), False, "only the scrapers read metrics",
             request=("GET", "/metrics"), mesh="refused"),
        Flow("other-plain", "items", (4191,), False, "only the scrapers read the proxy",
             request=("GET", "/metrics"), mesh="refused"),
        Flow("other-meshed", "acme-solver", (8089,), False, "only the edge reaches the solver"),
        Flow("kubelet", "items", (9464,), False, "the node probes, it does not scrape", node_exempt=True,
             request=("GET", "/metrics"), mesh="refused"),
        # The API shares its port with the probes: NetworkPolicy cannot tell /v1 from /readyz
        # (where it admits the node at all), Linkerd's probe route can.
        Flow("kubelet", "items", (8080,), True, "the node reaches the probes' port; only Linkerd tells the "
             "API from the probes", node_exempt=True, request=("GET", "/v1/items"), mesh="refused"),
    ]
    return flows


FLOWS = _flows()


# --- rendering ---------------------------------------------------------------------------------

def kustomize(directory: pathlib.Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], check=True, capture_output=True,
                         text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _variant(components: list[str], base: str, namespace: str) -> list[dict]:
    """An overlay with extra components, rendered from a directory inside k8s/ (kustomize
    refuses paths that climb out of a kustomization's root)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix=".render-", dir=REPO / "k8s"))
    try:
        rel = lambda p: "../" + p  # noqa: E731
        (directory / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": namespace, "resources": [rel(base)], "components": [rel(c) for c in components]}))
        return kustomize(directory)
    finally:
        shutil.rmtree(directory)


def cluster_issuers(legacy: bool) -> list[dict]:
    """k8s/cluster's ClusterIssuers; for the legacy Ingress in place of the edge, with the
    solver patch docs/deploy.md tells users to add there."""
    if not legacy:
        return [d for d in kustomize(REPO / "k8s/cluster") if d["kind"] == "ClusterIssuer"]
    directory = pathlib.Path(tempfile.mkdtemp(prefix=".render-", dir=REPO / "k8s"))
    try:
        (directory / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["../cluster"],
            "components": ["../components/legacy-ingress-issuers"]}))
        return [d for d in kustomize(directory) if d["kind"] == "ClusterIssuer"]
    finally:
        shutil.rmtree(directory)


VARIANTS = {
    "dev": lambda: (kustomize(REPO / "k8s/overlays/dev"), "meridian-dev", cluster_issuers(False)),
    # e2e's certificate comes from its own CA (k8s/components/local-issuer), so no ACME solver
    # ever runs there; the solver rows still check the edge's policies it keeps from dev, with
    # the solver pod as k8s/cluster's issuers would make it.
    "e2e": lambda: (kustomize(REPO / "k8s/overlays/e2e"), "meridian-dev", cluster_issuers(False)),
    "prod": lambda: (kustomize(REPO / "k8s/overlays/prod"), "meridian-prod", cluster_issuers(False)),
    "legacy-ingress": lambda: (_variant(["components/legacy-ingress"], "overlays/prod", "meridian-prod"),
                               "meridian-prod", cluster_issuers(True)),
}


def kubelet_probes_policy(namespace: str) -> dict:
    """components/kubelet-probes' NetworkPolicy in the overlay's namespace, for a CNI that does
    not exempt the node."""
    policy = yaml.safe_load((REPO / "k8s/components/kubelet-probes/networkpolicy.yaml").read_text())
    policy["metadata"]["namespace"] = namespace
    return policy


def cluster_pods(namespace: str, issuers: list[dict]) -> list[dict]:
    """cluster-pods.yaml in the overlay's namespace, the solver's metadata merged with the
    ClusterIssuers' HTTP-01 podTemplate as cert-manager merges it (pkg/issuer/acme/http/pod.go,
    mergePodObjectMetaWithPodTemplate: the template's labels and annotations copied over)."""
    docs = [d for d in yaml.safe_load_all(CLUSTER_PODS.read_text().replace(APP, namespace)) if d]
    templates = [s["http01"].get("gatewayHTTPRoute", s["http01"].get("ingress", {})).get("podTemplate", {})
                 for issuer in issuers for s in issuer["spec"]["acme"]["solvers"] if "http01" in s]
    metas = [t.get("metadata", {}) for t in templates]
    if any(m != metas[0] for m in metas):
        raise ValueError("the ClusterIssuers give their solvers different pod metadata")
    solver = next(d for d in docs if d["metadata"]["name"] == "cm-acme-http-solver")
    template_meta = solver["spec"]["template"]["metadata"]
    for key in ("labels", "annotations"):
        template_meta.setdefault(key, {}).update((metas[0] if metas else {}).get(key, {}))
    return docs


def workloads_at_one_replica(docs: list[dict]) -> list[dict]:
    """The analyzer counts a workload's pods from its replicas: prod's Deployments are at 0
    (their Rollouts run the pods from the same template)."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            d = copy.deepcopy(d)
            d["spec"]["replicas"] = 1
        out.append(d)
    return out


# --- network-config-analyzer ---------------------------------------------------------------

LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conn>.+)$")
CONNECTION = re.compile(r"\{protocols:(?P<protocols>[A-Z, ]+?)(?:,dst_ports:(?P<ports>[0-9,\-]+))?\}")


@dataclass
class Connectivity:
    """nca's connectivity map: (source, destination) -> {protocol: set of ports or None=all}."""
    pairs: dict = field(default_factory=dict)

    @staticmethod
    def parse(text: str) -> "Connectivity":
        result = Connectivity()
        for line in text.splitlines():
            match = LINE.match(line.strip())
            if not match:
                continue
            conn, allowed = match["conn"], {}
            if conn == "All connections":
                allowed = {p: None for p in ("TCP", "UDP", "SCTP")}
            else:
                for part in CONNECTION.finditer(conn):
                    ports = None
                    if part["ports"]:
                        ports = set()
                        for piece in part["ports"].split(","):
                            low, _, high = piece.partition("-")
                            ports |= set(range(int(low), int(high or low) + 1))
                    for protocol in part["protocols"].replace(" ", "").split(","):
                        allowed[protocol] = ports
                if not allowed:
                    raise ValueError(f"unparsed nca connection: {line}")
            result.pairs.setdefault((match["src"], match["dst"]), []).append(allowed)
        return result

    @staticmethod
    def _is(endpoint: str, peer) -> bool:
        if isinstance(peer, Pod):
            return re.fullmatch(rf"{re.escape(peer.namespace)}/{re.escape(peer.workload)}\[\w+\]", endpoint) is not None
        if "/" in endpoint or "[" in endpoint:
            return False
        low, _, high = endpoint.partition("-")
        address = ipaddress.ip_address(peer.ip)
        try:
            return ipaddress.ip_address(low) <= address <= ipaddress.ip_address(high or low)
        except ValueError:
            return False

    def allows(self, src, dst, protocol: str, port: int) -> bool:
        for (s, d), conns in self.pairs.items():
            if self._is(s, src) and self._is(d, dst):
                for allowed in conns:
                    if protocol in allowed and (allowed[protocol] is None or port in allowed[protocol]):
                        return True
        return False


def nca(docs: list[dict]) -> Connectivity:
    # NCA, else nca on PATH, else the virtualenv k8s/tests/check.sh installs it in.
    tools = pathlib.Path(os.environ.get("MERIDIAN_TOOLS_DIR", pathlib.Path.home() / ".cache/meridian/tools"))
    command = os.environ.get("NCA") or shutil.which("nca") or str(tools / "nca/bin/nca")
    if shutil.which(command) is None:
        raise SystemExit(f"{command}: network-config-analyzer is needed (pip install network-config-analyzer==2.1.0; "
                         "k8s/tests/check.sh installs it in a virtualenv and sets NCA)")
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        run = subprocess.run([command, "--connectivity", str(path), "--resource_list", str(path),
                              "--output_format", "txt_no_fw_rules"], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"nca failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
        return Connectivity.parse(run.stdout)


# --- the matrix ------------------------------------------------------------------------------------

def resolve(name: str, namespace: str):
    peer = ENDPOINTS[name]
    return Pod(namespace, peer.workload) if isinstance(peer, Pod) and peer.namespace == APP else peer


POD_IPS = {}


def pod_ip(peer) -> str:
    """A stable made-up pod address in kind's pod range, for Linkerd's network checks."""
    if isinstance(peer, Address):
        return peer.ip
    return POD_IPS.setdefault(peer, f"10.244.{len(POD_IPS) // 250}.{len(POD_IPS) % 250 + 2}")


class Matrix:
    """One variant: its rendered documents, the cluster around them, and both engines' views."""

    def __init__(self, name: str, docs: list[dict], namespace: str, issuers: list[dict],
                 node_policy: dict | None = None):
        self.name, self.docs, self.namespace = name, docs, namespace
        self.cluster = cluster_pods(namespace, issuers)
        analyzed = workloads_at_one_replica(docs) + self.cluster
        self.plain = nca(analyzed)
        # An overlay for kindnet (e2e) carries components/kubelet-probes itself: its own map must
        # admit the node to the probe ports and nothing else. Every other overlay leaves the node
        # to the exemption, and is checked with the component added as well.
        self.admits_node = name in NODE_ADMITTED
        self.kubelet_probes = self.plain if self.admits_node else \
            nca(analyzed + [node_policy or kubelet_probes_policy(namespace)])
        self.authorizer = linkerd_authz.Authorizer(docs, namespace)
        namespaces = {d["metadata"]["name"]: d["metadata"].get("annotations", {})
                      for d in docs if d["kind"] == "Namespace"}
        self.pods = {}
        for d in workloads_at_one_replica(docs) + self.cluster:
            if d["kind"] in ("Deployment", "StatefulSet"):
                ns = d["metadata"].get("namespace", namespace)
                self.pods[Pod(ns, d["metadata"]["name"])] = (
                    linkerd_authz.pod_of(d["spec"]["template"], ns, namespaces.get(ns, {})),
                    d["spec"]["template"]["spec"].get("serviceAccountName", "default"))

    def meshed(self, peer) -> bool:
        return isinstance(peer, Pod) and peer in self.pods and self.pods[peer][0].meshed

    def check_network(self, flow: Flow) -> list[str]:
        src, dst = resolve(flow.src, self.namespace), resolve(flow.dst, self.namespace)
        ports = list(flow.ports)
        # A meshed client's proxy sends to the server proxy's 4143, naming the port in a
        # transport header (Linkerd 2.20 outboundTransportMode transport-header; controller/api/
        # destination/endpoint_translator.go createWeightedAddr), except to a pod's own proxy
        # ports (isMetaPort) and for a proxy's own calls to the control plane.
        direct = flow.ports[0] in linkerd_authz.PROXY_PORTS.values() or flow.ports[0] == linkerd_authz.TAP_PORT \
            or flow.dst in ("linkerd-identity", "linkerd-destination")
        if self.meshed(dst) and flow.protocol == "TCP" and not direct:
            if flow.allowed and self.meshed(src):
                ports.append(PROXY_INBOUND)
            elif not flow.allowed and flow.src not in SCRAPERS:
                # The scrapers' namespaces may use 4143, which carries their metrics scrapes.
                ports.append(PROXY_INBOUND)
        problems = []
        maps = [("", self.plain, flow.allowed and (self.admits_node or not flow.node_exempt))]
        if flow.node_exempt and not self.admits_node:
            maps.append((" with components/kubelet-probes", self.kubelet_probes, flow.allowed))
        for label, connectivity, expected in maps:
            for port in ports:
                seen = connectivity.allows(src, dst, flow.protocol, port)
                if seen != expected:
                    problems.append(f"{flow.src} -> {flow.dst}:{port}/{flow.protocol}{label}: NetworkPolicy "
                                    f"{'allows' if seen else 'denies'} it, the matrix says "
                                    f"{'allowed' if expected else 'denied'} ({flow.why})")
        return problems

    def decide(self, flow: Flow):
        """Linkerd's decision on the flow's first port, or None where no proxy decides."""
        src, dst = resolve(flow.src, self.namespace), resolve(flow.dst, self.namespace)
        if not self.meshed(dst):
            return None
        pod, _ = self.pods[dst]
        client_identity = None
        if self.meshed(src):
            client_identity = linkerd_authz.identity(self.pods[src][1], src.namespace)
        client = linkerd_authz.Client(pod_ip(src), client_identity)
        method, path = flow.request or (None, None)
        # Our policy lives in the overlay's namespace; a pod elsewhere has only its defaults.
        authorizer = self.authorizer if dst.namespace == self.namespace else linkerd_authz.Authorizer([], dst.namespace)
        return authorizer.decide(pod, flow.ports[0], client, method, path)

    def check_mesh(self, flow: Flow) -> list[str]:
        where = f"{flow.src} -> {flow.dst}:{flow.ports[0]}" + (f" {' '.join(flow.request)}" if flow.request else "")
        decision = self.decide(flow)
        if decision is None:
            return [] if flow.mesh is None else [f"{where}: no proxy decides it; the matrix expects {flow.mesh}"]
        if len(flow.ports) > 1:
            return [f"{where}: a meshed destination's flow names one port per row"]
        if flow.mesh is None:
            return [f"{where}: Linkerd decides it ({decision}); the matrix names no Server or policy"]
        if flow.mesh == "refused":
            return [f"{where}: Linkerd admits it ({decision}); the matrix refuses it"] if decision.admitted else []
        seen = (decision.server or "(default)", decision.route or "-", decision.authorization)
        expected = flow.mesh.split("/")
        if not decision.admitted or any(e not in ("*", s) for e, s in zip(expected, seen)):
            return [f"{where}: Linkerd {decision}; the matrix expects {flow.mesh}"]
        return []

    def check(self) -> list[str]:
        problems = []
        for flow in FLOWS:
            if self.name not in flow.variants:
                continue
            problems += self.check_network(flow)
            problems += self.check_mesh(flow)
        return problems

    def rows(self):
        """(flow, NetworkPolicy verdict, Linkerd verdict) for printing."""
        for flow in FLOWS:
            if self.name not in flow.variants:
                continue
            decision = self.decide(flow)
            mesh = "no proxy" if decision is None else (
                f"{decision.server or '(default)'} / {decision.route or '-'} / {decision.authorization}"
                if decision.admitted else "refused: " + decision.why)
            yield flow, mesh


def main(argv: list[str]) -> int:
    summary = "--summary" in argv
    argv = [a for a in argv if a != "--summary"]
    if len(argv) >= 2:
        directory, namespace = pathlib.Path(argv[0]).resolve(), argv[1]
        name = argv[2] if len(argv) > 2 else "prod"
        if name not in VARIANTS:
            raise SystemExit(f"the third argument names which rows apply: one of {sorted(VARIANTS)}")
        variants = {name: lambda: (kustomize(directory), namespace, cluster_issuers(name == "legacy-ingress"))}
    else:
        variants = VARIANTS
    failed = False
    for name, make in variants.items():
        matrix = Matrix(name, *make())
        problems = matrix.check()
        flows = [f for f in FLOWS if name in f.variants]
        print(f"{name} ({matrix.namespace}): {len(flows)} flows, {sum(f.allowed for f in flows)} allowed by "
              f"NetworkPolicy, {sum(not f.allowed for f in flows)} denied; {len(problems)} differ from the matrix")
        if not summary:
            print(f"  {'from':>20}    {'to':<20} {'port':<10} {'NetworkPolicy':<14} Linkerd")
            for flow, mesh in matrix.rows():
                ports = ",".join(map(str, flow.ports)) + ("/UDP" if flow.protocol == "UDP" else "")
                network = ("allowed" if flow.allowed else "denied") + ("*" if flow.node_exempt else "")
                print(f"  {flow.src:>20} -> {flow.dst:<20} {ports:<10} {network:<14} {mesh}")
        for problem in problems:
            print(f"  MISMATCH {problem}")
        failed |= bool(problems)
    if not summary:
        print("* from the node. The NetworkPolicy API exempts a pod's own node, so where the CNI keeps that\n"
              "  exemption the node reaches every port and Linkerd alone decides; the verdicts above are\n"
              "  k8s/components/kubelet-probes', for a CNI that lacks it (checked with and without it).")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
