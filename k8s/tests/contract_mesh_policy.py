"""What Linkerd 2.20 does with the Namespace annotations and the proxy admin-port policy, as
its own code decides it (each rule cites the upstream file). Each check returns a list of
problems, empty when the manifests hold; test_mesh_policy_contract.py runs them on every
overlay and shows each one failing on a broken copy.
"""

from __future__ import annotations

import math
import re

import contract

PROXY_ADMIN_PORT, PROXY_TAP_PORT = 4191, 4190
# The config.linkerd.io keys the 2.20 injector copies from a Namespace onto its pods:
# ProxyAnnotations in pkg/inject/inject.go (AppendNamespaceAnnotations reads only these, the
# two alpha keys below and linkerd.io/inject). A config.beta.linkerd.io key is never among them.
NAMESPACE_KEYS = {f"config.linkerd.io/{key}" for key in (
    "admin-port control-port enable-debug-sidecar enable-external-profiles image-pull-policy "
    "inbound-port outbound-port pod-inbound-ports proxy-cpu-limit proxy-cpu-request proxy-image "
    "proxy-admin-shutdown proxy-log-format proxy-log-level proxy-log-http-headers "
    "proxy-memory-limit proxy-memory-request proxy-ephemeral-storage-limit "
    "proxy-ephemeral-storage-request proxy-uid proxy-gid proxy-version "
    "proxy-require-identity-inbound-ports skip-inbound-ports opaque-ports skip-outbound-ports "
    "proxy-metrics-hostname-labels proxy-outbound-connect-timeout proxy-inbound-connect-timeout "
    "proxy-await default-inbound-policy skip-subnets access-log shutdown-grace-period "
    "proxy-outbound-discovery-cache-unused-timeout proxy-inbound-discovery-cache-unused-timeout "
    "proxy-disable-outbound-protocol-detect-timeout proxy-disable-inbound-protocol-detect-timeout "
    "proxy-enable-native-sidecar proxy-additional-env").split()} | {
    "config.alpha.linkerd.io/proxy-wait-before-exit-seconds",
    "config.alpha.linkerd.io/proxy-enable-native-sidecar",
    "linkerd.io/inject",
}
# What each caller may reach on the admin port (viz/cmd/allow-scrapes.go in 2.20 generates
# the same split): /env.json, /shutdown and the rest stay closed.
ADMIN_PATHS = {"MeshTLSAuthentication": {"/metrics"}, "NetworkAuthentication": {"/live", "/ready"}}


def check_namespace_annotations(docs) -> list[str]:
    """Every Linkerd annotation on a Namespace is one the injector reads there."""
    problems = []
    for namespace in contract.of_kind(docs, "Namespace"):
        for key in namespace["metadata"].get("annotations", {}):
            if "linkerd.io/" in key and key not in NAMESPACE_KEYS:
                problems.append(f"Namespace {namespace['metadata']['name']}: {key} is not read from a "
                                "Namespace by Linkerd 2.20's injector")
    return problems


def route_paths(route) -> set[str]:
    return {match.get("path", {}).get("value", "/") for rule in route["spec"].get("rules", [])
            for match in rule.get("matches", [{}])}


def check_proxy_admin_policy(docs) -> list[str]:
    """No Server on the tap port (the tap server checks its clients itself); every authorization
    on the admin port names a route, and each route opens only the paths its caller needs."""
    problems = []
    servers = {s["metadata"]["name"]: s for s in contract.of_kind(docs, "Server", "policy.linkerd.io")}
    admin = {name for name, s in servers.items() if s["spec"]["port"] in (PROXY_ADMIN_PORT, "linkerd-admin")}
    for name, server in servers.items():
        if server["spec"]["port"] in (PROXY_TAP_PORT, "linkerd-tap"):
            problems.append(f"Server {name} on the tap port: tap ignores it")
    routes = {r["metadata"]["name"]: r for r in contract.of_kind(docs, "HTTPRoute", "policy.linkerd.io")
              if any(p.get("kind") == "Server" and p["name"] in admin for p in r["spec"]["parentRefs"])}
    for policy in contract.of_kind(docs, "AuthorizationPolicy", "policy.linkerd.io"):
        target, name = policy["spec"]["targetRef"], policy["metadata"]["name"]
        if target["kind"] == "Server" and target["name"] in admin:
            problems.append(f"AuthorizationPolicy {name} opens the whole admin port (/env.json, /shutdown)")
        if target["kind"] != "HTTPRoute" or target["name"] not in routes:
            continue
        for ref in policy["spec"]["requiredAuthenticationRefs"]:
            allowed = ADMIN_PATHS.get(ref["kind"], set())
            extra = route_paths(routes[target["name"]]) - allowed
            if extra:
                problems.append(f"AuthorizationPolicy {name} lets {ref['kind']} {ref['name']} reach "
                                f"{sorted(extra)} on the admin port")
    return problems


def label_values(query: str, label: str) -> set[str]:
    return set(re.findall(label + r'="([^"]*)"', query))


def argo_condition(condition: str, result: list[float]) -> bool:
    """An Argo Rollouts success/failure condition (expr-lang) on a Prometheus result: `&&`,
    `||`, `len(result)`, `result[0]` and comparisons, as Python evaluates them (NaN compares
    false in both)."""
    python = condition.replace("&&", " and ").replace("||", " or ")
    return bool(eval(python, {"__builtins__": {}, "len": len}, {"result": result}))  # noqa: S307


def check_canary_analysis(docs) -> list[str]:
    """Each canary's analysis counts only its API traffic: every query selects, for the Rollout's
    app, the Server that serves the API and the route behind it (not the probe route, not the
    metrics port), both of which exist; and a measurement with no traffic (no series, or NaN)
    meets neither condition, so Argo Rollouts calls it inconclusive rather than a pass."""
    problems = []
    servers = {s["metadata"]["name"]: s for s in contract.of_kind(docs, "Server", "policy.linkerd.io")}
    routes = {r["metadata"]["name"]: r for r in contract.of_kind(docs, "HTTPRoute", "policy.linkerd.io")}
    for rollout in contract.of_kind(docs, "Rollout", "argoproj.io"):
        analysis = rollout["spec"]["strategy"].get("canary", {}).get("analysis")
        if not analysis:
            continue
        app = next(a["value"] for a in analysis["args"] if a["name"] == "app")
        for ref in analysis["templates"]:
            template = contract.named(docs, "AnalysisTemplate", ref["templateName"], "argoproj.io")
            for metric in template["spec"]["metrics"] if template else []:
                where = f"{rollout['metadata']['name']}/{metric['name']}"
                query = metric["provider"]["prometheus"]["query"].replace("{{args.app}}", app)
                selectors = re.findall(r"\{([^{}]*)\}", re.sub(r"\{\{\s*args\.[\w-]+\s*\}\}", "arg", query))
                server_names, route_names = label_values(query, "srv_name"), label_values(query, "route_name")
                if any("srv_name=" not in sel or "route_name=" not in sel for sel in selectors):
                    problems.append(f"{where}: the query counts every port and route (probes, scrapes)")
                for server in server_names:
                    if server not in servers or servers[server]["spec"]["port"] != "http":
                        problems.append(f"{where}: srv_name {server!r} is not the API's Server")
                for route in route_names:
                    parents = {p["name"] for p in routes.get(route, {"spec": {"parentRefs": []}})["spec"]["parentRefs"]}
                    paths = route_paths(routes[route]) if route in routes else set()
                    if not parents & server_names or paths & {"/healthz", "/readyz"}:
                        problems.append(f"{where}: route_name {route!r} is not the API route of {sorted(server_names)}")
                for result in ([], [math.nan]):
                    if any(argo_condition(metric.get(c, "false"), result)
                           for c in ("successCondition", "failureCondition")):
                        problems.append(f"{where}: a measurement with no traffic ({result}) is not inconclusive")
    return problems


CHECKS = [check_namespace_annotations, check_proxy_admin_policy, check_canary_analysis]
