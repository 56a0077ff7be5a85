"""Contract checks between the rendered manifests and the code: every name, port, path, key
and reference a manifest uses must exist on the other side. Each check returns a list of
problems (empty when the contract holds); test_contract.py runs them on every overlay and
proves each one fails on a broken copy.
"""

from __future__ import annotations

import base64
import pathlib
import re
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "e2e", "prod"]
SERVICES = ["items", "timezones"]
# Names that exist outside these manifests, each for a stated reason.
EXTERNAL_SERVICE_ACCOUNTS = {
    # NGINX Gateway Fabric creates it for the Gateway "meridian" of GatewayClass "nginx".
    "meridian-nginx",
}
EXTERNAL_POD_LABELS = {
    # NGINX Gateway Fabric labels the Gateway's data plane pods with it.
    ("gateway.networking.k8s.io/gateway-name", "meridian"),
    # cert-manager labels its temporary HTTP-01 solver pods with it.
    ("acme.cert-manager.io/http01-solver", "true"),
}
# Ports of the injected Linkerd proxy (tap, admin), on every meshed pod.
PROXY_PORTS = {4190, 4191}
# A setting is read by an `Env` method, or by a helper that takes `env` first.
ENV_READERS = r"(?:\.(?:get|string_or|parse_or|millis_or|secret|optional_secret)\(|\(env,)\s*\"([A-Z][A-Z0-9_]+)\""
SECRET_READERS = r"\.(?:secret|optional_secret)\(\s*\"([A-Z][A-Z0-9_]+)\""


def render(path: str) -> list[dict]:
    """`kubectl kustomize` of a directory under the repo, as a list of objects."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / path)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def settings_read_by(service: str) -> set[str]:
    """Every environment variable the service's binary reads (its crate and the platform's),
    including NAME_FILE for each secret."""
    sources = [*(REPO / "services" / service / "src").rglob("*.rs"),
               *(REPO / "services/platform/src").rglob("*.rs")]
    # A file's unit tests (its `#[cfg(test)]` module, last by convention) read made-up names.
    text = "\n".join(p.read_text().split("#[cfg(test)]")[0] for p in sources)
    keys = set(re.findall(ENV_READERS, text))
    return keys | {f"{key}_FILE" for key in re.findall(SECRET_READERS, text)}


def of_kind(docs, kind, api_group=None):
    return [d for d in docs if d["kind"] == kind
            and (api_group is None or d["apiVersion"].startswith(api_group))]


def named(docs, kind, name, api_group=None):
    return next((d for d in of_kind(docs, kind, api_group) if d["metadata"]["name"] == name), None)


def pod_specs(docs):
    """(workload, pod template) for every Deployment and StatefulSet."""
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    if selector == {}:
        return True  # an empty selector selects every pod
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    return all(labels.get(k) == v for k, v in match.items())


def is_external(selector) -> bool:
    return any(selector.get("matchLabels", {}).get(k) == v for k, v in EXTERNAL_POD_LABELS)


def pods_selected(docs, selector):
    return [tpl for _, tpl in pod_specs(docs) if selects(selector, tpl["metadata"].get("labels", {}))]


def port_names(template) -> dict[str, int]:
    return {p["name"]: p["containerPort"]
            for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p}


def configmap_data(docs, ref_name):
    cm = named(docs, "ConfigMap", ref_name)
    return cm.get("data", {}) if cm else None


# --- checks ---------------------------------------------------------------------------------

def check_selectors(docs) -> list[str]:
    """Services, PDBs, NetworkPolicies, ServiceMonitors and Linkerd Servers select real pods, on
    ports those pods have."""
    problems = []
    for svc in of_kind(docs, "Service"):
        pods = pods_selected(docs, svc["spec"].get("selector"))
        name = svc["metadata"]["name"]
        if not pods:
            problems.append(f"Service {name} selects no pods")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if pods and isinstance(target, str) and target not in port_names(pods[0]):
                problems.append(f"Service {name} targets port {target!r}, which its pods lack")
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        if not pods_selected(docs, pdb["spec"].get("selector")):
            problems.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
    for policy in of_kind(docs, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        pods = pods_selected(docs, selector)
        if selector and not pods and not is_external(selector):
            problems.append(f"NetworkPolicy {policy['metadata']['name']} selects no pods")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str) and pods and port["port"] not in port_names(pods[0]):
                    problems.append(f"NetworkPolicy {policy['metadata']['name']} names port "
                                    f"{port['port']!r}, which its pods lack")
    for monitor in of_kind(docs, "ServiceMonitor"):
        services = [s for s in of_kind(docs, "Service")
                    if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
        if not services:
            problems.append(f"ServiceMonitor {monitor['metadata']['name']} selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            if services and endpoint["port"] not in [p["name"] for p in services[0]["spec"]["ports"]]:
                problems.append(f"ServiceMonitor {monitor['metadata']['name']} scrapes port "
                                f"{endpoint['port']!r}, which the Service lacks")
    for server in of_kind(docs, "Server", "policy.linkerd.io"):
        selector, port = server["spec"]["podSelector"], server["spec"]["port"]
        if is_external(selector) or port in PROXY_PORTS:
            continue
        pods = pods_selected(docs, selector)
        name = server["metadata"]["name"]
        if not pods:
            problems.append(f"Server {name} selects no pods")
        elif port not in port_names(pods[0]):
            problems.append(f"Server {name} names port {server['spec']['port']!r}, which its pods lack")
    return problems


def check_references(docs) -> list[str]:
    """Every object another object names exists: ServiceAccounts, ConfigMaps, Secrets, HPA
    targets and containers, route parents and backends, policy targets and authentications."""
    problems = []
    accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    secrets = {s["metadata"]["name"] for s in of_kind(docs, "Secret")} | {
        s["spec"]["template"]["metadata"]["name"] for s in of_kind(docs, "SealedSecret")}
    for workload, tpl in pod_specs(docs):
        wname = workload["metadata"]["name"]
        if tpl["spec"].get("serviceAccountName", "default") not in accounts:
            problems.append(f"{wname} runs as ServiceAccount {tpl['spec'].get('serviceAccountName')!r}, "
                            "which does not exist")
        for c in tpl["spec"]["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source and not named(docs, "ConfigMap", source["configMapRef"]["name"]):
                    problems.append(f"{wname} reads ConfigMap {source['configMapRef']['name']!r}, which does not exist")
        for volume in tpl["spec"].get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                problems.append(f"{wname} mounts Secret {volume['secret']['secretName']!r}, which does not exist")
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = named(docs, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        if target and "workloadRef" in target.get("spec", {}):
            # A Rollout that takes its pod template from a Deployment.
            target = named(docs, target["spec"]["workloadRef"]["kind"], target["spec"]["workloadRef"]["name"])
        if not target:
            problems.append(f"HPA {hpa['metadata']['name']} scales a missing {hpa['spec']['scaleTargetRef']['name']}")
            continue
        containers = [c["name"] for c in target["spec"]["template"]["spec"]["containers"]]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "ContainerResource" and metric["containerResource"]["container"] not in containers:
                problems.append(f"HPA {hpa['metadata']['name']} measures container "
                                f"{metric['containerResource']['container']!r}, which does not exist")
    for route in of_kind(docs, "HTTPRoute", "gateway.networking.k8s.io"):
        for parent in route["spec"]["parentRefs"]:
            if parent.get("kind") == "Service":
                # A mesh route (Linkerd's outbound routing for callers of that Service).
                svc = named(docs, "Service", parent["name"])
                if not svc or parent.get("port") not in [p["port"] for p in svc["spec"]["ports"]]:
                    problems.append(f"HTTPRoute {route['metadata']['name']} attaches to a missing "
                                    f"Service {parent['name']}:{parent.get('port')}")
                continue
            gateway = named(docs, "Gateway", parent["name"])
            listeners = [l["name"] for l in gateway["spec"]["listeners"]] if gateway else []
            if not gateway or parent.get("sectionName", listeners[0]) not in listeners:
                problems.append(f"HTTPRoute {route['metadata']['name']} attaches to a missing "
                                f"{parent['name']}/{parent.get('sectionName')}")
        for rule in route["spec"]["rules"]:
            for backend in rule.get("backendRefs", []):
                svc = named(docs, "Service", backend["name"])
                if not svc or backend["port"] not in [p["port"] for p in svc["spec"]["ports"]]:
                    problems.append(f"HTTPRoute {route['metadata']['name']} sends to a missing "
                                    f"{backend['name']}:{backend['port']}")
    for route in of_kind(docs, "HTTPRoute", "policy.linkerd.io"):
        for parent in route["spec"]["parentRefs"]:
            if not named(docs, parent["kind"], parent["name"], "policy.linkerd.io"):
                problems.append(f"HTTPRoute {route['metadata']['name']} attaches to a missing {parent['name']}")
    for policy in of_kind(docs, "AuthorizationPolicy", "policy.linkerd.io"):
        ref = policy["spec"]["targetRef"]
        if not named(docs, ref["kind"], ref["name"], ref.get("group", "policy.linkerd.io")):
            problems.append(f"AuthorizationPolicy {policy['metadata']['name']} targets a missing {ref['name']}")
        for auth in policy["spec"]["requiredAuthenticationRefs"]:
            if not named(docs, auth["kind"], auth["name"], "policy.linkerd.io"):
                problems.append(f"AuthorizationPolicy {policy['metadata']['name']} requires a missing {auth['name']}")
    for auth in of_kind(docs, "MeshTLSAuthentication", "policy.linkerd.io"):
        for ref in auth["spec"].get("identityRefs", []):
            if ref["kind"] == "ServiceAccount" and ref["name"] not in accounts | EXTERNAL_SERVICE_ACCOUNTS:
                problems.append(f"MeshTLSAuthentication {auth['metadata']['name']} names ServiceAccount "
                                f"{ref['name']!r}, which does not exist")
    return problems


def app_container(docs, service):
    deployment = named(docs, "Deployment", service)
    return deployment, next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == service)


def service_env(docs, service) -> dict[str, str]:
    """What the service's container sees: its ConfigMaps, then its env entries."""
    _, container = app_container(docs, service)
    env = {}
    for source in container.get("envFrom", []):
        env.update(configmap_data(docs, source["configMapRef"]["name"]) or {})
    env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return env


def check_settings(docs) -> list[str]:
    """Env keys are ones the binary reads; ports in BIND_ADDR/METRICS_ADDR are the container's;
    secret files lie in a mounted Secret that has that key; the drain fits the grace period;
    TIMEZONES_URL names the timezones Service."""
    problems = []
    for service in SERVICES:
        deployment, container = app_container(docs, service)
        env = service_env(docs, service)
        for key in sorted(set(env) - settings_read_by(service)):
            problems.append(f"{service}: {key} is set but the binary never reads it")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for key, port_name in (("BIND_ADDR", "http"), ("METRICS_ADDR", "metrics")):
            if not env.get(key, "").endswith(f":{ports.get(port_name)}"):
                problems.append(f"{service}: {key}={env.get(key)} is not the {port_name!r} container port")
        for key, path in env.items():
            if not key.endswith("_FILE"):
                continue
            source = secret_behind(docs, service, path)
            if not source:
                problems.append(f"{service}: {key}={path} is not in a mounted Secret")
                continue
            secret_name, filename = source
            secret = secret_keys(docs, secret_name)
            if secret is not None and filename not in secret:
                problems.append(f"{service}: {key}={path} but Secret {secret_name} has no key {filename!r}")
        for key in image_env(service):
            if f"{key}_FILE" in env and env.get(key) != "":
                problems.append(f"{service}: {key}_FILE is set while the image sets {key}: blank {key}")
        drain = (int(env.get("DRAIN_DELAY_MS", 0)) + int(env.get("SHUTDOWN_GRACE_MS", 20000))) / 1000
        grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if drain >= grace:
            problems.append(f"{service}: drain + grace ({drain:g} s) does not fit terminationGracePeriodSeconds ({grace})")
    url = service_env(docs, "items").get("TIMEZONES_URL", "")
    host_port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
    svc = named(docs, "Service", host_port.group(1)) if host_port else None
    if not svc or int(host_port.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
        problems.append(f"items: TIMEZONES_URL={url} is not a Service port")
    return problems


def secret_behind(docs, service, path) -> tuple[str, str] | None:
    """(Secret name, key) of the file `path` in the service's container, if a Secret volume
    is mounted on its directory."""
    deployment, container = app_container(docs, service)
    directory, filename = path.rsplit("/", 1)
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    volume = volumes.get(mounts.get(directory, ""))
    return (volume["secret"]["secretName"], filename) if volume and "secret" in volume else None


def image_env(service) -> set[str]:
    """The variables the Dockerfile's stage for the service sets with ENV."""
    stage, keys = None, set()
    for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1]
        elif stage == service and line.startswith("ENV "):
            keys |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", line))
    return keys


def secret_keys(docs, name) -> set[str] | None:
    secret = named(docs, "Secret", name)
    if secret:
        return set(secret.get("data", {})) | set(secret.get("stringData", {}))
    sealed = next((s for s in of_kind(docs, "SealedSecret")
                   if s["spec"]["template"]["metadata"]["name"] == name), None)
    return set(sealed["spec"]["encryptedData"]) if sealed else None


def check_mesh(docs) -> list[str]:
    """One retry layer: the mesh retries timezones and the app does not; no ServiceProfile
    overrides the annotations; every API and metrics port is covered by a Server."""
    problems = []
    annotations = named(docs, "Service", "timezones")["metadata"].get("annotations", {})
    if "retry.linkerd.io/http" not in annotations:
        problems.append("timezones Service has no retry.linkerd.io/http annotation")
    if service_env(docs, "items").get("TIMEZONES_RETRIES") != "0":
        problems.append("items retries timezones itself although the mesh does (TIMEZONES_RETRIES != 0)")
    if of_kind(docs, "ServiceProfile"):
        problems.append("a ServiceProfile would override the retry and timeout annotations")
    covered = {(s["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name"), s["spec"]["port"])
               for s in of_kind(docs, "Server", "policy.linkerd.io")}
    for service in SERVICES:
        for port in ("http", "metrics"):
            if (service, port) not in covered:
                problems.append(f"no Linkerd Server for {service}'s {port} port")
        # With routes on the Server, only paths on the kubelet's route can be probed.
        route = named(docs, "HTTPRoute", f"{service}-probes", "policy.linkerd.io")
        allowed = {m["path"]["value"] for rule in (route or {"spec": {"rules": []}})["spec"]["rules"]
                   for m in rule["matches"]}
        for path in probe_paths(docs, service):
            if path not in allowed:
                problems.append(f"{service}: probe path {path} is not on the {service}-probes route")
    return problems


def probe_paths(docs, service) -> set[str]:
    _, container = app_container(docs, service)
    return {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
            if "httpGet" in container.get(p, {})}


def decoded_secret(docs, name) -> dict[str, str]:
    secret = named(docs, "Secret", name)
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def check_rollouts(docs) -> list[str]:
    """Argo Rollouts canaries: the Deployment, Services, routes and analysis a Rollout names
    exist; the plugin edits routes in the Rollout's own namespace; the routes it edits send to
    exactly its stable and canary Services; and each Service's route carries the Service's
    Linkerd retry and timeout annotations (a route's own settings replace the Service's)."""
    problems = []
    for rollout in of_kind(docs, "Rollout", "argoproj.io"):
        name, spec = rollout["metadata"]["name"], rollout["spec"]
        canary = spec["strategy"]["canary"]
        ref = spec["workloadRef"]
        if not named(docs, ref["kind"], ref["name"]):
            problems.append(f"Rollout {name} takes pods from a missing {ref['kind']} {ref['name']}")
        for role in ("stableService", "canaryService"):
            if not named(docs, "Service", canary[role]):
                problems.append(f"Rollout {name} {role} {canary[role]!r} does not exist")
        plugin = canary["trafficRouting"]["plugins"]["argoproj-labs/gatewayAPI"]
        if plugin.get("namespace") != rollout["metadata"].get("namespace"):
            problems.append(f"Rollout {name} edits routes in namespace {plugin.get('namespace')!r}, "
                            f"not its own {rollout['metadata'].get('namespace')!r}")
        for ref in plugin["httpRoutes"]:
            route = named(docs, "HTTPRoute", ref["name"], "gateway.networking.k8s.io")
            if not route:
                problems.append(f"Rollout {name} edits a missing HTTPRoute {ref['name']}")
                continue
            backends = {b["name"] for rule in route["spec"]["rules"] for b in rule.get("backendRefs", [])}
            if backends != {canary["stableService"], canary["canaryService"]}:
                problems.append(f"HTTPRoute {ref['name']} sends to {sorted(backends)}, not Rollout {name}'s "
                                "stable and canary Services")
        for template in canary.get("analysis", {}).get("templates", []):
            if not named(docs, "AnalysisTemplate", template["templateName"], "argoproj.io"):
                problems.append(f"Rollout {name} runs a missing AnalysisTemplate {template['templateName']}")
    for route in of_kind(docs, "HTTPRoute", "gateway.networking.k8s.io"):
        for parent in route["spec"]["parentRefs"]:
            svc = named(docs, "Service", parent["name"]) if parent.get("kind") == "Service" else None
            if not svc:
                continue
            linkerd = lambda meta: {k: v for k, v in meta.get("annotations", {}).items()  # noqa: E731
                                    if k.startswith(("retry.linkerd.io/", "timeout.linkerd.io/"))}
            if linkerd(svc["metadata"]) != linkerd(route["metadata"]):
                problems.append(f"HTTPRoute {route['metadata']['name']} has retry/timeout annotations "
                                f"{linkerd(route['metadata'])}, Service {svc['metadata']['name']} has "
                                f"{linkerd(svc['metadata'])}")
    return problems


def alloy_keeps(config: str, source_label: str) -> str:
    """The regex of the Alloy `keep` rule on `source_label` (Alloy cannot run here, but the rules
    it applies can be held to the manifests)."""
    for rule in re.findall(r"rule \{(.*?)\}", config, re.S):
        if f'"{source_label}"' in rule and re.search(r'action\s*=\s*"keep"', rule):
            return re.search(r'regex\s*=\s*"([^"]*)"', rule).group(1)
    raise ValueError(f"no keep rule on {source_label}")


def check_log_shipping(docs, config_path=REPO / "observability/alloy/config.alloy") -> list[str]:
    """Alloy ships each service's app container, and not the Linkerd proxy, from this namespace."""
    config = config_path.read_text()
    namespaces = re.search(r"names\s*=\s*\[([^\]]*)\]", config).group(1)
    keep_app = alloy_keeps(config, "__meta_kubernetes_pod_label_app_kubernetes_io_name")
    keep_container = alloy_keeps(config, "__meta_kubernetes_pod_container_name")
    problems = []
    for service in SERVICES:
        deployment, container = app_container(docs, service)
        namespace = deployment["metadata"].get("namespace")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if f'"{namespace}"' not in namespaces:
            problems.append(f"Alloy does not watch namespace {namespace!r}")
        if not re.fullmatch(keep_app, labels.get("app.kubernetes.io/name", "")):
            problems.append(f"Alloy's app label rule {keep_app!r} drops {service}'s pods")
        if not re.fullmatch(keep_container, container["name"]):
            problems.append(f"Alloy's container rule {keep_container!r} drops container {container['name']!r}")
    if re.fullmatch(keep_container, "linkerd-proxy"):
        problems.append("Alloy ships the linkerd-proxy container's logs too")
    return problems


CHECKS = [check_selectors, check_references, check_settings, check_mesh, check_rollouts, check_log_shipping]
