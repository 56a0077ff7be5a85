"""The mesh dashboard (grafana/dashboards/meridian-mesh.json) against a real Prometheus that
scrapes Linkerd proxies looking the way dev's and prod's pods look to it.

dev's pods belong to a ReplicaSet owned by a Deployment; prod's to a ReplicaSet owned by an
Argo Rollout. Linkerd 2.20's proxy injector labels a pod with its owner as the controller's
GetOwnerKindAndName resolves it (controller/k8s/metadata_api.go): a ReplicaSet's owner counts
only if isValidRSParent (controller/k8s/k8s.go) accepts its kind (Job, StatefulSet, DaemonSet,
Deployment), so dev's pods get `linkerd.io/proxy-deployment: items` and prod's get
`linkerd.io/proxy-replicaset: items-<hash>` (pkg/inject/inject.go, populateMeta). The
destination controller labels endpoints the same way (pkg/k8s/labels.go, GetPodLabels), so a
proxy calling timezones labels its series `dst_deployment` in dev and `dst_replicaset` in prod;
`dst_serviceaccount` it sets from the pod's service account, which both share.

Here every "pod" is a path on a small HTTP server in this process serving what a proxy's
/metrics serves, and Prometheus scrapes each one as a target carrying that pod's Kubernetes
metadata (the __meta_kubernetes_* labels the pod role of kubernetes_sd gives), relabelled by
the prometheus-operator's PodMonitor defaults followed by the relabelings of
k8s/components/monitoring/podmonitor-linkerd-proxy.yaml, read from that file. kube-state-metrics'
HPA series come from one more path. Three Prometheus servers scrape them: one per environment
with only its pods, and one with both, as the cluster's does. Every target of every panel must,
for each of meridian-dev and meridian-prod in $namespace, return at least one finite value with
every label its legend names on that environment's server and on the shared one, and on the
shared one return nothing for a namespace with no pods (the panel follows $namespace and never
shows the other environment's traffic).

Needs `prometheus` on PATH (observability/verify.sh installs it). Listens on 127.0.0.1 only.
MESH_DASHBOARD=path and MESH_PODMONITOR=path test other copies of the two files (for example
HEAD's). Run: python3 -m unittest discover -s observability -p 'test_*.py'
"""
import http.server
import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DASHBOARD = Path(os.environ.get("MESH_DASHBOARD", ROOT / "grafana" / "dashboards" / "meridian-mesh.json"))
PODMONITOR = Path(os.environ.get("MESH_PODMONITOR",
                                 REPO / "k8s" / "components" / "monitoring" / "podmonitor-linkerd-proxy.yaml"))
ENVIRONMENTS = ("meridian-dev", "meridian-prod")
NO_PODS = "meridian-none"  # a namespace nothing runs in
PORTS = {"items": 8080, "timezones": 8081}
LATENCY_BUCKETS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000,
                   4000, 5000, 10000, 20000, 30000, 40000, 50000, "+Inf")


class Pod:
    """One meshed pod as the injector and the controllers leave it."""

    def __init__(self, namespace, app, owner, replicas_hash):
        self.namespace, self.app = namespace, app
        self.name = f"{app}-{replicas_hash}-x7k2p"
        self.ip = f"10.{1 if namespace.endswith('dev') else 2}.0.{1 if app == 'items' else 2}"
        self.labels = {
            # The Deployment's template labels (k8s/base, the overlays); prod's Rollout takes its
            # template from the Deployment (workloadRef), so it carries the same.
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/part-of": "meridian",
            "app.kubernetes.io/instance": namespace,
            # What the proxy injector adds (pkg/inject/inject.go: populateMeta, Pod case).
            "linkerd.io/control-plane-ns": "linkerd",
            "linkerd.io/workload-ns": namespace,
        }
        if owner == "deployment":
            # ReplicaSet -> Deployment: a valid RS parent, the Deployment is the owner.
            self.labels["pod-template-hash"] = replicas_hash
            self.labels["linkerd.io/proxy-deployment"] = app
            self.owner_labels = {"deployment": app}
        else:
            # ReplicaSet -> Rollout: not a valid RS parent, the ReplicaSet is the owner.
            self.labels["rollouts-pod-template-hash"] = replicas_hash
            self.labels["linkerd.io/proxy-replicaset"] = f"{app}-{replicas_hash}"
            self.owner_labels = {"replicaset": f"{app}-{replicas_hash}"}
        self.path = f"/pods/{namespace}/{self.name}/metrics"

    def endpoint_labels(self, service):
        """The dst_* labels a client's proxy puts on calls to this pod: the destination
        controller's endpoint metric labels (watcher/port_publisher.go metricLabels: service and
        namespace; pkg/k8s/labels.go GetPodLabels: pod, owner, serviceaccount, control_plane_ns,
        pod_template_hash) with the proxy's dst_ prefix."""
        labels = {"service": service, "namespace": self.namespace, "pod": self.name,
                  **self.owner_labels, "serviceaccount": self.app, "control_plane_ns": "linkerd",
                  "zone": "", "zone_locality": "unknown"}
        if "pod-template-hash" in self.labels:
            labels["pod_template_hash"] = self.labels["pod-template-hash"]
        return {f"dst_{k}": v for k, v in labels.items()}

    def identity(self):
        return f"{self.app}.{self.namespace}.serviceaccount.identity.linkerd.cluster.local"


def cluster():
    """(pods, each pod's callees): items calls timezones in each environment; in prod through the
    timezones-mesh HTTPRoute, whose backend is timezones-stable (k8s/components/canary)."""
    dev = [Pod("meridian-dev", app, "deployment", h) for app, h in (("items", "5d9c7b8f4"), ("timezones", "7b6c5d4e9"))]
    prod = [Pod("meridian-prod", app, "rollout", h) for app, h in (("items", "6f7d9c8b5"), ("timezones", "59c8d7f6b"))]
    calls = {dev[0].path: (dev[1], "timezones"), prod[0].path: (prod[1], "timezones-stable")}
    return dev + prod, calls


def series(name, labels, value):
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{body}}} {value:.3f}"


def proxy_metrics(pod, callee, elapsed):
    """A proxy's request_total, response_total and response_latency_ms after `elapsed` seconds of
    steady traffic: inbound on the app's port (95% success, mTLS from meshed callers, plain
    from the kubelet), and, for items, outbound to timezones."""
    lines = ["# TYPE request_total counter", "# TYPE response_total counter",
             "# TYPE response_latency_ms histogram"]
    port = PORTS[pod.app]

    def traffic(base, rps):
        lines.append(series("request_total", base, rps * elapsed))
        for status, classification, share in (("200", "success", 0.95), ("503", "failure", 0.05)):
            response = {**base, "status_code": status, "classification": classification,
                        "grpc_status": "", "error": ""}
            lines.append(series("response_total", response, rps * share * elapsed))
            latency = {**base, "status_code": status}
            for le in LATENCY_BUCKETS:  # a third under 10 ms, all under 100 ms
                below = 1.0 if le == "+Inf" or le >= 100 else (1 / 3 if le >= 10 else 0.0)
                lines.append(series("response_latency_ms_bucket", {**latency, "le": str(le)},
                                    rps * share * below * elapsed))
            lines.append(series("response_latency_ms_count", latency, rps * share * elapsed))
            lines.append(series("response_latency_ms_sum", latency, rps * share * 20 * elapsed))

    inbound = {"direction": "inbound", "target_addr": f"{pod.ip}:{port}", "target_ip": pod.ip,
               "target_port": str(port), "srv_group": "policy.linkerd.io", "srv_kind": "server",
               "srv_name": f"{pod.app}-http", "srv_port": str(port), "route_group": "",
               "route_kind": "default", "route_name": f"{pod.app}-api"}
    caller = "items" if pod.app == "timezones" else "meridian-gateway"
    traffic({**inbound, "tls": "true",
             "client_id": f"{caller}.{pod.namespace}.serviceaccount.identity.linkerd.cluster.local"}, 20)
    traffic({**inbound, "tls": "no_identity", "no_tls_reason": "no_tls_from_remote",
             "route_name": f"{pod.app}-probes"}, 1)
    if callee:
        target, service = callee
        outbound = {"direction": "outbound",
                    "authority": f"timezones.{pod.namespace}.svc.cluster.local:{PORTS['timezones']}",
                    "target_addr": f"{target.ip}:{PORTS['timezones']}", "target_ip": target.ip,
                    "target_port": str(PORTS["timezones"]), "tls": "true",
                    "server_id": target.identity(), **target.endpoint_labels(service)}
        traffic(outbound, 20)
    return lines


def hpa_metrics(pods):
    """kube-state-metrics' HPA series (kube-prometheus-stack scrapes it with honorLabels)."""
    lines = ["# TYPE kube_horizontalpodautoscaler_status_current_replicas gauge",
             "# TYPE kube_horizontalpodautoscaler_spec_max_replicas gauge"]
    for pod in pods:
        labels = {"namespace": pod.namespace, "horizontalpodautoscaler": pod.app}
        current, most = (1, 3) if pod.namespace.endswith("dev") else (3, 6)
        lines.append(series("kube_horizontalpodautoscaler_status_current_replicas", labels, current))
        lines.append(series("kube_horizontalpodautoscaler_spec_max_replicas", labels, most))
    return lines


def meta_label(name):
    """A Kubernetes label's name as kubernetes_sd exposes it (__meta_kubernetes_pod_label_...)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def snake(key):
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def podmonitor_scrape_config(podmonitor, pods, address):
    """The scrape job the prometheus-operator generates from the PodMonitor, with static targets
    standing in for kubernetes_sd's pod role: its own relabelings (keep the endpoint's port;
    namespace, container, pod, job, endpoint) and then the PodMonitor's, converted from the
    CRD's camelCase."""
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    name = podmonitor["metadata"]["name"]
    relabel = [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
         "regex": endpoint["port"]},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "job",
         "replacement": f"$1/{name}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    for rule in endpoint.get("relabelings", []):
        converted = {snake(k): v for k, v in rule.items()}
        if "action" in converted:
            converted["action"] = converted["action"].lower()
        relabel.append(converted)
    targets = []
    for pod in pods:
        labels = {"__metrics_path__": pod.path, "__meta_kubernetes_namespace": pod.namespace,
                  "__meta_kubernetes_pod_name": pod.name,
                  "__meta_kubernetes_pod_container_name": "linkerd-proxy",
                  "__meta_kubernetes_pod_container_port_name": "linkerd-admin",
                  **{meta_label(k): v for k, v in pod.labels.items()}}
        targets.append({"targets": [address], "labels": labels})
    return {"job_name": name, "metrics_path": endpoint.get("path", "/metrics"),
            "scrape_interval": "1s", "static_configs": targets, "relabel_configs": relabel}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def panel_targets(dashboard):
    for panel in dashboard["panels"]:
        if panel.get("datasource", {}).get("type") != "prometheus":
            continue
        for target in panel.get("targets", []):
            yield f"{panel['title']} [{target['refId']}]", target["expr"], target.get("legendFormat", "")


def for_namespace(expr, namespace):
    for variable, value in (("$__rate_interval", "1m"), ("${namespace}", namespace), ("$namespace", namespace)):
        expr = expr.replace(variable, value)
    return expr


class Prometheus:
    """A real Prometheus on 127.0.0.1 scraping some of the pods (and the HPA series) every second."""

    def __init__(self, scratch, name, pods, address, podmonitor):
        self.pods = pods
        namespaces = {pod.namespace for pod in pods}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                podmonitor_scrape_config(podmonitor, pods, address),
                {"job_name": "kube-state-metrics", "honor_labels": True,
                 "metrics_path": "/kube-state-metrics/metrics",
                 "params": {"namespace": sorted(namespaces)},
                 "static_configs": [{"targets": [address]}]},
            ],
        }
        self.dir = Path(scratch) / name
        self.dir.mkdir()
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(self.dir / "prometheus.log", "w")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'tsdb'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_for_samples(self, timeout=45):
        """Until every target is up and has at least 3 scrapes (rate() needs 2)."""
        targets, deadline, last = len(self.pods) + 1, time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                last = self.query("count(count_over_time(up[1m]) >= 3 and up == 1)")
                if last["data"]["result"] and int(float(last["data"]["result"][0]["value"][1])) >= targets:
                    return
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{targets} targets with 3 scrapes not reached in {timeout}s (last: {last}); "
                           f"log: {(self.dir / 'prometheus.log').read_text()[-2000:]}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()

    def query(self, expr):
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            return json.load(urllib.request.urlopen(url, timeout=10))
        except urllib.error.HTTPError as e:
            return json.load(e)


class MeshDashboardBothEnvironments(unittest.TestCase):
    """Three Prometheus servers: one per environment, holding only that environment's pods (what
    the dashboard can show for it, with nothing else to fall back on), and one holding both, as
    the cluster's does (meridian-dev and meridian-prod share one cluster and one Prometheus)."""

    @classmethod
    def setUpClass(cls):
        if shutil.which("prometheus") is None:
            raise RuntimeError("prometheus is not on PATH (observability/verify.sh installs it)")
        cls.pods, calls = cluster()
        started = time.monotonic()
        pages = {pod.path: pod for pod in cls.pods}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                elapsed = 60 + time.monotonic() - started
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/kube-state-metrics/metrics":
                    wanted = urllib.parse.parse_qs(url.query).get("namespace", [])
                    lines = hpa_metrics([p for p in cls.pods if p.namespace in wanted])
                elif url.path in pages:
                    lines = proxy_metrics(pages[url.path], calls.get(url.path), elapsed)
                else:
                    self.send_error(404)
                    return
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{cls.server.server_address[1]}"
        podmonitor = yaml.safe_load(PODMONITOR.read_text())
        cls.scratch = tempfile.mkdtemp(prefix="meridian-mesh.")
        cls.servers = {}
        try:
            cls.servers["shared"] = Prometheus(cls.scratch, "shared", cls.pods, address, podmonitor)
            for namespace in ENVIRONMENTS:
                alone = [p for p in cls.pods if p.namespace == namespace]
                cls.servers[namespace] = Prometheus(cls.scratch, namespace, alone, address, podmonitor)
            for server in cls.servers.values():
                server.wait_for_samples()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for server in cls.servers.values():
            server.stop()
        cls.server.shutdown()
        cls.server.server_close()
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def test_the_series_carry_the_labels_their_pods_have(self):
        """The fixture is what the task says it is: dev's proxy series have `deployment`,
        prod's have `replicaset` and no `deployment`; both have `app` from the PodMonitor."""
        def values(label, namespace):
            result = self.servers["shared"].query(
                f'count by ({label}) (request_total{{namespace="{namespace}"}})')
            return sorted(s["metric"].get(label, "") for s in result["data"]["result"])
        self.assertEqual(values("deployment", "meridian-dev"), ["items", "timezones"])
        self.assertEqual(values("deployment", "meridian-prod"), [""])
        self.assertEqual(values("replicaset", "meridian-prod"), ["items-6f7d9c8b5", "timezones-59c8d7f6b"])
        self.assertEqual(values("dst_deployment", "meridian-prod"), [""])
        self.assertEqual(values("dst_serviceaccount", "meridian-prod"), ["", "timezones"])
        for namespace in ENVIRONMENTS:
            self.assertEqual(values("app", namespace), ["items", "timezones"], namespace)

    def shows(self, server, namespace, where, raw, legend):
        """None if the panel target shows this namespace's data on this server, else why not."""
        answer = self.servers[server].query(for_namespace(raw, namespace))
        if answer.get("status") != "success":
            return answer.get("error")
        result = answer["data"]["result"]
        values = [float(s["value"][1]) for s in result]
        if not result:
            return "no data"
        if not all(math.isfinite(v) for v in values):
            return f"not a number: {values}"
        legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)
        unnamed = [s["metric"] for s in result if any(not s["metric"].get(l) for l in legend_labels)]
        if unnamed:
            return f"legend {legend!r} has no {'/'.join(legend_labels)} for {unnamed}"
        return None

    def test_every_panel_shows_both_environments_and_only_the_chosen_one(self):
        dashboard = json.loads(DASHBOARD.read_text())
        problems, shown = [], 0
        for where, raw, legend in panel_targets(dashboard):
            for namespace in ENVIRONMENTS:
                for server, view in ((namespace, f"{namespace} alone"),
                                     ("shared", f"shared, $namespace={namespace}")):
                    why = self.shows(server, namespace, where, raw, legend)
                    if why:
                        problems.append(f"{view}: {where}: {why}")
                    else:
                        shown += 1
            leaked = self.servers["shared"].query(for_namespace(raw, NO_PODS))["data"]["result"]
            if leaked:
                problems.append(f"shared, $namespace={NO_PODS} (no pods): {where}: shows data, so it "
                                f"ignores $namespace: {[s['metric'] for s in leaked]}")
        if problems:
            self.fail(f"\n{DASHBOARD}: {shown} (panel target, view) pairs show data; "
                      f"{len(problems)} problems:\n" + "\n".join(problems))
        self.assertGreater(shown, 0)


if __name__ == "__main__":
    unittest.main()
