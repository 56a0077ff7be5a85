"""Linkerd 2.20's inbound authorization, decided the way its policy controller and proxy decide it,
over rendered manifests: for a request (or, on an opaque port, a connection) from a client to a
meshed pod's port, which Server, route and AuthorizationPolicy admit it, or why nothing does.

Every rule cites the upstream code: linkerd/linkerd2 tag version-2.20 (policy-controller/, paths
below relative to it) and linkerd/linkerd2-proxy release/v2.359.0, the proxy that release ships
(.proxy-version). flows.py runs this over the same flow list network-config-analyzer checks, so
the two layers are held to one matrix.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IDENTITY_DOMAIN = "serviceaccount.identity.linkerd.cluster.local"
# The tap server admits only the identity linkerd-viz's tap injector names in
# LINKERD2_PROXY_TAP_SVC_NAME, whatever a Server says (proxy linkerd/app/src/tap.rs).
TAP_PORT, TAP_IDENTITY = 4190, f"tap.linkerd-viz.{IDENTITY_DOMAIN}"
# What the injector adds to every meshed pod (charts/partials/templates/_proxy.tpl): ports
# linkerd-proxy 4143 and linkerd-admin 4191, probes GET /live and /ready on 4191.
PROXY_PORTS = {"linkerd-proxy": 4143, "linkerd-admin": 4191}
PROXY_PROBES = {(4191, "/live"), (4191, "/ready")}
# policyController.probeNetworks and the default of the default policy (values.yaml).
PROBE_NETWORKS = ["0.0.0.0/0", "::/0"]
CLUSTER_NETWORKS = ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]
CLUSTER_DEFAULT_POLICY = "all-unauthenticated"


@dataclass(frozen=True)
class Client:
    """Who connects: a mesh identity (None when unmeshed) and an address."""
    ip: str
    identity: str | None = None


@dataclass(frozen=True)
class Decision:
    admitted: bool
    server: str | None  # None: the pod's default server (no Server selects the port)
    route: str | None  # None on opaque ports
    authorization: str | None  # the AuthorizationPolicy, or a built-in ("default:deny", "probe", "tap")
    why: str

    def __str__(self):
        where = f"Server {self.server or '(default)'}" + (f", route {self.route}" if self.route else "")
        return f"{'admitted' if self.admitted else 'refused'} at {where}: {self.why}"


@dataclass
class Pod:
    namespace: str
    labels: dict
    annotations: dict
    ports: dict  # container port name -> number, the proxy's included when meshed
    probes: set  # (port, path) of every httpGet probe, the proxy's included when meshed
    meshed: bool
    default_policy: str


def identity(service_account: str, namespace: str) -> str:
    return f"{service_account}.{namespace}.{IDENTITY_DOMAIN}"


def of_kind(docs, kind, group):
    return [d for d in docs if d["kind"] == kind and d["apiVersion"].split("/")[0] == group]


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions)."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def pod_of(template: dict, namespace: str, namespace_annotations: dict) -> Pod:
    """A pod as the injector leaves it. Injection follows the pod's linkerd.io/inject, else its
    namespace's (pkg/inject/inject.go); the default policy is the pod's annotation, else the
    namespace's, which the injector copies onto the pod (AppendNamespaceAnnotations), else the
    cluster's (index.rs, PolicyIndex::default_inbound_server)."""
    metadata, spec = template["metadata"], template["spec"]
    annotations = metadata.get("annotations", {})
    inject = annotations.get("linkerd.io/inject", namespace_annotations.get("linkerd.io/inject"))
    # The control plane's pods carry their proxy in their own templates, with the label the
    # policy controller indexes meshed pods by (runtime/src/args.rs: linkerd.io/control-plane-ns).
    meshed = inject == "enabled" or "linkerd.io/control-plane-ns" in metadata.get("labels", {})
    ports, probes = {}, set()
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        ports.update(named)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get:
                port = get["port"] if isinstance(get["port"], int) else named[get["port"]]
                probes.add((port, get.get("path", "/")))
    if meshed:
        ports.update(PROXY_PORTS)
        probes |= PROXY_PROBES
    policy = annotations.get("config.linkerd.io/default-inbound-policy",
                             namespace_annotations.get("config.linkerd.io/default-inbound-policy",
                                                       CLUSTER_DEFAULT_POLICY))
    return Pod(namespace, metadata.get("labels", {}), annotations, ports, probes, meshed, policy)


def in_networks(ip: str, networks: list) -> bool:
    """NetworkAuthentication entries: the address is in `cidr` and in none of its `except`
    (proxy linkerd/app/inbound/src/policy.rs, Network::contains)."""
    address = ipaddress.ip_address(ip)
    for network in networks:
        entry = network if isinstance(network, dict) else {"cidr": network}
        cidr = ipaddress.ip_network(entry["cidr"])
        if address.version == cidr.version and address in cidr and not any(
                address in ipaddress.ip_network(e) for e in entry.get("except", [])
                if ipaddress.ip_network(e).version == address.version):
            return True
    return False


def identity_matches(patterns: list[str], client_identity: str | None) -> bool:
    """MeshTLSAuthentication identities: "*" is any identity, "*.a.b" a suffix, anything else
    exact (core/src/identity_match.rs; proxy authz.rs uses ends_with)."""
    if client_identity is None:
        return False
    for pattern in patterns:
        if pattern == "*" or (pattern.startswith("*.") and client_identity.endswith(pattern[1:])):
            return True
        if pattern == client_identity:
            return True
    return False


class Authorizer:
    """The policy resources of one rendered namespace."""

    def __init__(self, docs: list[dict], namespace: str):
        self.namespace = namespace
        self.servers = of_kind(docs, "Server", "policy.linkerd.io")
        self.routes = of_kind(docs, "HTTPRoute", "policy.linkerd.io")
        self.policies = of_kind(docs, "AuthorizationPolicy", "policy.linkerd.io")
        self.authentications = {(d["kind"], d["metadata"]["name"]): d for d in docs
                                if d["kind"] in ("MeshTLSAuthentication", "NetworkAuthentication")}

    # -- which Server ---------------------------------------------------------------------

    def server_for(self, pod: Pod, port: int) -> dict | None:
        """The Server whose podSelector matches the pod and whose port is that number or the name
        of one of its container ports (index.rs, Pod::reindex_servers and select_ports;
        workload.rs, pod_tcp_ports_by_name). Two on one port: the oldest wins there; manifests
        that rely on creation order are refused here."""
        if pod.namespace != self.namespace:
            return None  # Servers are indexed per namespace
        matching = [s for s in self.servers if selects(s["spec"].get("podSelector", {}), pod.labels)
                    and (s["spec"]["port"] == port or pod.ports.get(s["spec"]["port"]) == port)]
        if len(matching) > 1:
            names = sorted(s["metadata"]["name"] for s in matching)
            raise ValueError(f"Servers {names} all select port {port}: only the oldest applies")
        return matching[0] if matching else None

    # -- which authorizations ------------------------------------------------------------------

    def server_policies(self, server: dict) -> list[dict]:
        """Policies that apply to every route of a Server: those targeting the Server and those
        targeting the Namespace (index.rs, PolicyIndex::client_authzs)."""
        name = server["metadata"]["name"]
        return [p for p in self.policies
                if (p["spec"]["targetRef"]["kind"] == "Server" and p["spec"]["targetRef"]["name"] == name)
                or p["spec"]["targetRef"]["kind"] == "Namespace"]

    def route_policies(self, route: dict) -> list[dict]:
        name = route["metadata"]["name"]
        return [p for p in self.policies if p["spec"]["targetRef"]["kind"] == "HTTPRoute"
                and p["spec"]["targetRef"].get("group") == "policy.linkerd.io"
                and p["spec"]["targetRef"]["name"] == name]

    def admits(self, policy: dict, client: Client) -> bool:
        """Every requiredAuthenticationRef must hold (index.rs, PolicyIndex::policy_client_authz):
        an identity ref requires mTLS with a matching identity; a NetworkAuthentication the client's
        address; no identity ref means unauthenticated clients pass. A reference to a missing
        authentication drops the whole policy ("Illegal AuthorizationPolicy; ignoring")."""
        for ref in policy["spec"].get("requiredAuthenticationRefs", []):
            kind = ref["kind"]
            if kind == "ServiceAccount":
                sa = identity(ref["name"], ref.get("namespace", self.namespace))
                if client.identity != sa:
                    return False
                continue
            auth = self.authentications.get((kind, ref["name"]))
            if auth is None:
                return False
            if kind == "NetworkAuthentication":
                if not in_networks(client.ip, auth["spec"]["networks"]):
                    return False
                continue
            patterns = list(auth["spec"].get("identities", []))
            for identity_ref in auth["spec"].get("identityRefs", []):
                ns = identity_ref.get("namespace", auth["metadata"].get("namespace", self.namespace))
                if identity_ref["kind"] == "ServiceAccount":
                    patterns.append(identity(identity_ref["name"], ns))
                elif identity_ref["kind"] == "Namespace":
                    patterns.append(f"*.{identity_ref['name']}.{IDENTITY_DOMAIN}")
            if not identity_matches(patterns, client.identity):
                return False
        return True

    @staticmethod
    def access_policy_admits(policy: str, client: Client) -> bool:
        """A default policy (defaults.rs): the Server's accessPolicy, or the pod's default."""
        if policy in ("all-unauthenticated", "audit"):
            return True
        if policy == "all-authenticated":
            return client.identity is not None
        if policy == "cluster-unauthenticated":
            return in_networks(client.ip, CLUSTER_NETWORKS)
        if policy == "cluster-authenticated":
            return client.identity is not None and in_networks(client.ip, CLUSTER_NETWORKS)
        return False  # deny

    # -- routes ---------------------------------------------------------------------------

    @staticmethod
    def match_score(match: dict, method: str, path: str):
        """How well one HTTPRoute match fits, or None: matched path length, then header and
        query-param counts, then whether a method is set (proxy linkerd/http/route/src/
        http/match.rs). A prefix matches whole path segments; no path means prefix "/"."""
        if "method" in match and match["method"] != method:
            return None
        if match.get("headers") or match.get("queryParams"):
            raise ValueError("header and query matches are not modelled here")
        kind = match.get("path", {}).get("type", "PathPrefix")
        value = match.get("path", {}).get("value", "/")
        if kind == "Exact":
            matched = path == value
        elif kind == "PathPrefix":
            prefix = value.rstrip("/")
            matched = path == prefix or path.startswith(prefix + "/") or value == "/"
        else:
            raise ValueError(f"path match {kind} is not modelled here")
        return (len(value), 0, 0, "method" in match) if matched else None

    def route_for(self, server: dict, method: str, path: str):
        """The accepted routes whose parent is the Server; the best match wins (proxy
        linkerd/http/route/src/lib.rs, find). Returns (route, all routes)."""
        name = server["metadata"]["name"]
        routes = [r for r in self.routes if any(
            p.get("kind") == "Server" and p["name"] == name for p in r["spec"].get("parentRefs", []))]
        best, best_score = None, None
        for route in routes:
            for rule in route["spec"].get("rules", [{}]):
                for match in rule.get("matches") or [{}]:
                    score = self.match_score(match, method, path)
                    if score is None:
                        continue
                    if best_score is None or score > best_score:
                        best, best_score = route, score
                    elif score == best_score and route is not best:
                        raise ValueError(f"routes {best['metadata']['name']} and {route['metadata']['name']} "
                                         f"tie for {method} {path}: creation order would decide")
        return best, routes

    # -- the decision ---------------------------------------------------------------------------

    def decide(self, pod: Pod, port: int, client: Client, method: str | None = None,
               path: str | None = None) -> Decision:
        if not pod.meshed:
            return Decision(True, None, None, None, "the pod has no proxy: Linkerd decides nothing")
        if port == TAP_PORT:
            ok = client.identity == TAP_IDENTITY
            return Decision(ok, None, None, "tap", f"the tap server admits only {TAP_IDENTITY}")
        server = self.server_for(pod, port)
        probe = method == "GET" and (port, path) in pod.probes
        if server is None:
            # The default server: the default policy's authorization on route "default", plus an
            # unauthenticated route per probe path from probeNetworks (index.rs,
            # ClusterInfo::default_inbound_http_routes), whatever the default policy is.
            if probe and in_networks(client.ip, PROBE_NETWORKS):
                return Decision(True, None, "probe", "probe", f"{path} is a probe of this port")
            ok = self.access_policy_admits(pod.default_policy, client)
            return Decision(ok, None, "default", f"default:{pod.default_policy}",
                            f"no Server: the default policy {pod.default_policy} decides")
        name = server["metadata"]["name"]
        access = server["spec"].get("accessPolicy", "deny")
        server_level = self.server_policies(server)
        if server["spec"].get("proxyProtocol") in ("opaque", "TLS"):
            # Per connection: routes do not apply (grpc/src/inbound.rs to_server; proxy tcp.rs).
            for policy in server_level:
                if self.admits(policy, client):
                    return Decision(True, name, None, policy["metadata"]["name"], "the connection is admitted")
            ok = self.access_policy_admits(access, client)
            return Decision(ok, name, None, f"accessPolicy:{access}",
                            "no AuthorizationPolicy on this opaque Server admits the client")
        route, routes = self.route_for(server, method, path)
        if not routes:
            # A Server without routes gets route "default" and the probe routes (index.rs,
            # PolicyIndex::http_routes falls back to the defaults).
            if probe and in_networks(client.ip, PROBE_NETWORKS):
                return Decision(True, name, "probe", "probe", f"{path} is a probe of this port")
            route_name, route_level = "default", []
        elif route is None:
            return Decision(False, name, None, None, f"no route matches {method} {path} (404)")
        else:
            route_name, route_level = route["metadata"]["name"], self.route_policies(route)
        # A route's authorizations are its own and the Server's and Namespace's (proxy
        # server-policy authz.rs mk_authorizations chains the parent's).
        for policy in route_level + server_level:
            if self.admits(policy, client):
                return Decision(True, name, route_name, policy["metadata"]["name"], "the request is admitted")
        if self.access_policy_admits(access, client):
            return Decision(True, name, route_name, f"accessPolicy:{access}", "the Server's accessPolicy")
        who = client.identity or f"unauthenticated {client.ip}"
        return Decision(False, name, route_name, None, f"no AuthorizationPolicy admits {who} (403)")
