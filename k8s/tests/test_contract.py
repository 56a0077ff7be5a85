"""The manifests' contract with the code (contract.py), on every overlay; each check shown to
fail on a copy with one typo; and the dev Deployments' settings, probes and scrape path tried
against the real binaries on 127.0.0.1.
Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'   (after cargo build)"""

import copy
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402

RENDERED = {overlay: contract.render(f"k8s/overlays/{overlay}") for overlay in contract.OVERLAYS}


class ManifestsKeepTheirContract(unittest.TestCase):
    def test_every_overlay_passes_every_check(self):
        for overlay, docs in RENDERED.items():
            for check in contract.CHECKS:
                with self.subTest(overlay=overlay, check=check.__name__):
                    self.assertEqual(check(docs), [])

    def test_the_prometheus_rule_is_generated_from_the_rules_file(self):
        script = contract.REPO / "k8s/cluster/render-prometheusrule.py"
        result = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)


def broken(mutate, overlay="dev"):
    """An overlay's render with one mistake in it."""
    docs = copy.deepcopy(RENDERED[overlay])
    mutate(docs)
    return docs


def deployment(docs, name):
    return contract.named(docs, "Deployment", name)


def container(docs, name):
    return deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]


def configmap(docs, service):
    return contract.named(docs, "ConfigMap", container(docs, service)["envFrom"][0]["configMapRef"]["name"])


class EachCheckCatchesATypo(unittest.TestCase):
    def assertCaught(self, check, mutate, fragment, overlay="dev"):
        problems = check(broken(mutate, overlay))
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_rollout_mistakes_are_caught(self):
        def rollout(docs, name="items"):
            return contract.named(docs, "Rollout", name, "argoproj.io")

        def plugin(docs, name="items"):
            return rollout(docs, name)["spec"]["strategy"]["canary"]["trafficRouting"]["plugins"][
                "argoproj-labs/gatewayAPI"]

        cases = [
            (lambda d: rollout(d)["spec"]["workloadRef"].update(name="itemz"), "takes pods from a missing"),
            (lambda d: rollout(d)["spec"]["strategy"]["canary"].update(canaryService="items-canry"),
             "canaryService 'items-canry' does not exist"),
            (lambda d: plugin(d).update(namespace="meridian-dev"), "edits routes in namespace 'meridian-dev'"),
            (lambda d: plugin(d)["httpRoutes"].append({"name": "items-mesh2"}), "missing HTTPRoute items-mesh2"),
            (lambda d: contract.named(d, "HTTPRoute", "items", "gateway.networking.k8s.io")["spec"]["rules"][0][
                "backendRefs"][1].update(name="items-stable"), "not Rollout items's stable and canary"),
            (lambda d: rollout(d, "timezones")["spec"]["strategy"]["canary"]["analysis"]["templates"][0].update(
                templateName="linkerd"), "missing AnalysisTemplate linkerd"),
            (lambda d: contract.named(d, "HTTPRoute", "timezones-mesh", "gateway.networking.k8s.io")["metadata"][
                "annotations"].update({"retry.linkerd.io/limit": "5"}), "retry/timeout annotations"),
        ]
        for mutate, fragment in cases:
            with self.subTest(fragment=fragment):
                self.assertCaught(contract.check_rollouts, mutate, fragment, overlay="prod")
        self.assertCaught(contract.check_references,
                          lambda d: contract.named(d, "HTTPRoute", "timezones-mesh", "gateway.networking.k8s.io")[
                              "spec"]["parentRefs"][0].update(port=80), "attaches to a missing Service timezones:80",
                          overlay="prod")

    def test_a_renamed_container_port(self):
        def rename(docs):
            container(docs, "items")["ports"][1]["name"] = "metric"
        self.assertCaught(contract.check_selectors, rename, "targets port 'metrics'")
        self.assertCaught(contract.check_selectors, rename, "Server items-metrics names port")

    def test_a_selector_that_matches_no_pod(self):
        def typo(docs):
            contract.named(docs, "PodDisruptionBudget", "timezones")["spec"]["selector"]["matchLabels"][
                "app.kubernetes.io/name"] = "timezone"
        self.assertCaught(contract.check_selectors, typo, "PodDisruptionBudget timezones selects no pods")

    def test_a_missing_service_account(self):
        def typo(docs):
            deployment(docs, "items")["spec"]["template"]["spec"]["serviceAccountName"] = "item"
        self.assertCaught(contract.check_references, typo, "ServiceAccount 'item'")

    def test_an_identity_nobody_has(self):
        def typo(docs):
            contract.named(docs, "MeshTLSAuthentication", "items-identity")["spec"]["identityRefs"][0]["name"] = "itmes"
        self.assertCaught(contract.check_references, typo, "ServiceAccount 'itmes'")

    def test_an_hpa_on_a_missing_container(self):
        def typo(docs):
            contract.named(docs, "HorizontalPodAutoscaler", "items")["spec"]["metrics"][0][
                "containerResource"]["container"] = "app"
        self.assertCaught(contract.check_references, typo, "measures container 'app'")

    def test_a_route_to_a_wrong_port(self):
        def typo(docs):
            contract.named(docs, "HTTPRoute", "items", "gateway.networking.k8s.io")["spec"]["rules"][0][
                "backendRefs"][0]["port"] = 8081
        self.assertCaught(contract.check_references, typo, "missing items:8081")

    def test_log_shipping_from_a_container_that_does_not_exist(self):
        config = (contract.REPO / "observability/alloy/config.alloy").read_text()
        broken_config = re.sub(r'("__meta_kubernetes_pod_container_name"\]\s*regex\s*=\s*)"[^"]*"', r'\1"app"', config)
        self.assertNotEqual(broken_config, config)
        with tempfile.NamedTemporaryFile("w", suffix=".alloy") as f:
            f.write(broken_config)
            f.flush()
            problems = contract.check_log_shipping(RENDERED["dev"], pathlib.Path(f.name))
        self.assertIn("Alloy's container rule 'app' drops container 'items'", problems)

    def test_a_setting_the_binary_does_not_read(self):
        def typo(docs):
            configmap(docs, "items")["data"]["GRETING"] = "hi"
        self.assertCaught(contract.check_settings, typo, "GRETING is set but the binary never reads it")

    def test_a_bind_address_on_another_port(self):
        def typo(docs):
            configmap(docs, "timezones")["data"]["BIND_ADDR"] = "0.0.0.0:8080"
        self.assertCaught(contract.check_settings, typo, "BIND_ADDR=0.0.0.0:8080 is not the 'http'")

    def test_a_secret_file_outside_its_secret(self):
        def typo(docs):
            container(docs, "items")["env"][0]["value"] = "/var/run/secrets/meridian/api-key"
        self.assertCaught(contract.check_settings, typo, "has no key 'api-key'")

    def test_a_file_setting_the_image_also_sets(self):
        def unblanked(docs):
            env = container(docs, "items")["env"]
            env[:] = [e for e in env if e["name"] != "DATABASE_URL"]
        self.assertCaught(contract.check_settings, unblanked, "DATABASE_URL_FILE is set while the image sets DATABASE_URL")

    def test_a_drain_longer_than_the_grace_period(self):
        def slow(docs):
            configmap(docs, "items")["data"]["SHUTDOWN_GRACE_MS"] = "40000"
        self.assertCaught(contract.check_settings, slow, "does not fit terminationGracePeriodSeconds")

    def test_a_timezones_url_without_a_service(self):
        def typo(docs):
            configmap(docs, "items")["data"]["TIMEZONES_URL"] = "http://timezone:8081"
        self.assertCaught(contract.check_settings, typo, "TIMEZONES_URL=http://timezone:8081")

    def test_two_retry_layers(self):
        def both(docs):
            del configmap(docs, "items")["data"]["TIMEZONES_RETRIES"]
        self.assertCaught(contract.check_mesh, both, "retries timezones itself")

    def test_a_probe_the_mesh_would_refuse(self):
        def moved(docs):
            container(docs, "timezones")["readinessProbe"]["httpGet"]["path"] = "/ready"
        self.assertCaught(contract.check_mesh, moved, "probe path /ready")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class TheBinariesServeWhatTheManifestsSay(unittest.TestCase):
    """Both binaries started with the dev Deployments' settings and secret files (listening on
    127.0.0.1 instead of 0.0.0.0, SQLite instead of the in-cluster PostgreSQL, the timezones
    Service replaced by its address here)."""

    @classmethod
    def setUpClass(cls):
        docs = RENDERED["dev"]
        bin_dir = pathlib.Path(os.environ.get("MERIDIAN_BIN_DIR",
                                              contract.REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "debug"))
        cls.scratch = tempfile.TemporaryDirectory()
        cls.processes, cls.logs, cls.ports = [], [], {}
        for service in ["timezones", "items"]:
            env, ports = cls.settings_here(docs, service)
            if service == "items":
                env["TIMEZONES_URL"] = f"http://127.0.0.1:{cls.ports['timezones']['http']}"
            binary = bin_dir / service
            if not binary.exists():
                raise FileNotFoundError(f"{binary} is not built: run cargo build first")
            log = open(pathlib.Path(cls.scratch.name) / f"{service}.log", "w")
            cls.logs.append(log)
            cls.processes.append(subprocess.Popen([binary], env=env, stdout=log, stderr=log))
            cls.ports[service] = ports
            for _ in range(100):
                try:
                    if get(f"http://127.0.0.1:{ports['http']}/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.1)

    @classmethod
    def settings_here(cls, docs, service):
        env = {"PATH": os.environ.get("PATH", "")} | contract.service_env(docs, service)
        ports = {}
        for key, name in (("BIND_ADDR", "http"), ("METRICS_ADDR", "metrics")):
            ports[name] = free_port()
            env[key] = f"127.0.0.1:{ports[name]}"
        for key, path in list(env.items()):
            if key.endswith("_FILE"):
                secret_name, filename = contract.secret_behind(docs, service, path)
                value = contract.decoded_secret(docs, secret_name)[filename]
                if key == "DATABASE_URL_FILE":
                    value = f"sqlite://{cls.scratch.name}/items.db"
                local = pathlib.Path(cls.scratch.name) / f"{service}-{filename}"
                local.write_text(value)
                env[key] = str(local)
        return env, ports

    @classmethod
    def tearDownClass(cls):
        for process in cls.processes:
            process.terminate()
            process.wait(timeout=30)
        for log in cls.logs:
            log.close()
        cls.scratch.cleanup()

    def test_probe_paths_answer_200(self):
        for service in contract.SERVICES:
            for path in contract.probe_paths(RENDERED["dev"], service):
                with self.subTest(service=service, path=path):
                    self.assertEqual(get(f"http://127.0.0.1:{self.ports[service]['http']}{path}")[0], 200)

    def test_the_scrape_path_serves_metrics(self):
        for monitor in contract.of_kind(RENDERED["dev"], "ServiceMonitor"):
            service = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
            for endpoint in monitor["spec"]["endpoints"]:
                status, body = get(f"http://127.0.0.1:{self.ports[service][endpoint['port']]}{endpoint['path']}")
                self.assertEqual(status, 200)
                self.assertIn("build_info", body)

    def test_the_settings_and_secret_files_take_effect(self):
        status, body = get(f"http://127.0.0.1:{self.ports['items']['http']}/v1/greeting?tz=Asia/Tokyo")
        self.assertEqual(status, 200, body)
        greeting = json.loads(body)
        self.assertIn("(dev)", json.dumps(greeting), "GREETING from the dev ConfigMap")
        self.assertIn('"source": "timezones"', json.dumps(greeting), "items → timezones hop")

    def test_key_ids_come_from_the_deployments_secret(self):
        # Without API_KEY_ID_SECRET each replica draws its own and names one key differently.
        for service, log in zip(["timezones", "items"], self.logs):
            with self.subTest(service=service):
                text = pathlib.Path(log.name).read_text()
                self.assertIn("API keys loaded", text)
                self.assertNotIn("API_KEY_ID_SECRET is not set", text)

    def test_the_public_route_covers_the_whole_api(self):
        status, body = get(f"http://127.0.0.1:{self.ports['items']['http']}/openapi.json")
        self.assertEqual(status, 200)
        route = contract.named(RENDERED["dev"], "HTTPRoute", "items", "gateway.networking.k8s.io")
        matches = [m["path"] for rule in route["spec"]["rules"] for m in rule["matches"]]

        def routed(path):
            return any(path == m["value"] if m["type"] == "Exact" else
                       path == m["value"] or path.startswith(m["value"].rstrip("/") + "/") for m in matches)
        internal = {"/healthz", "/readyz"}
        for path in json.loads(body)["paths"]:
            if path not in internal and not path.startswith("/admin/"):
                self.assertTrue(routed(path), f"{path} is served but not routed by the Gateway")
        self.assertTrue(routed("/openapi.json") and routed("/docs"))


if __name__ == "__main__":
    unittest.main()
