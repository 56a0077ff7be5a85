"""Unit tests for validate_custom_resources.py, run against the real pinned CRDs in shared/crds."""
import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate_custom_resources as vcr  # noqa: E402

SCRIPT = Path(vcr.__file__).resolve()
SHARED_CRDS = vcr.REPO_ROOT.parent / "shared" / "crds"

SERVER = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: orders-http, namespace: meridian}
spec:
  podSelector: {matchLabels: {app: orders}}
  port: http
  proxyProtocol: HTTP/2
"""
GATEWAY_HTTPROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders, namespace: meridian}
spec:
  parentRefs: [{name: orders, kind: Service, group: core, port: 8080}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /orders}}]
      backendRefs: [{name: orders, port: 8080}]
      timeouts: {request: 5s}
"""
SERVICE_MONITOR = """
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: orders, namespace: meridian, labels: {release: prometheus}}
spec:
  selector: {matchLabels: {app: orders}}
  namespaceSelector: {matchNames: [meridian]}
  endpoints: [{port: metrics, path: /metrics, interval: 30s}]
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders}
spec: {selector: {matchLabels: {app: orders}}, template: {metadata: {labels: {app: orders}}, spec: {containers: [{name: orders, image: orders:1}]}}}
"""


def docs(text):
    return list(yaml.safe_load_all(text))


@unittest.skipUnless(SHARED_CRDS.is_dir(), f"CRD directory {SHARED_CRDS} not present")
class ValidateDocumentsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env = {k: v for k, v in os.environ.items() if k != "MERIDIAN_CRDS_DIR"}
        with mock.patch.dict(os.environ, env, clear=True):  # exercise the default lookup
            crds_dir = vcr.resolve_crds_dir()
        assert crds_dir == SHARED_CRDS, crds_dir
        cls.schemas = vcr.load_crd_schemas(crds_dir)

    def check(self, text):
        results = vcr.validate_documents(docs(text), self.schemas)
        self.assertEqual(len(results), 1, results)
        return results[0]

    def assert_ok(self, text):
        result = self.check(text)
        self.assertEqual(result.status, "ok", result.errors)

    def assert_fail(self, text, expected_fragment):
        result = self.check(text)
        self.assertEqual(result.status, "fail")
        self.assertIn(expected_fragment, " ".join(result.errors))

    def test_linkerd_server_valid(self):
        self.assert_ok(SERVER)

    def test_linkerd_server_misspelled_field_fails(self):
        # Kubernetes would prune `podSelectr` silently; we must reject it.
        self.assert_fail(SERVER.replace("podSelector", "podSelectr"), "podSelectr")

    def test_linkerd_server_port_accepts_int_or_string(self):
        self.assert_ok(SERVER.replace("port: http", "port: 8080"))
        self.assert_fail(SERVER.replace("port: http", "port: [8080]"), "$.spec.port")

    def test_preserve_unknown_fields_allows_any_labels(self):
        self.assert_ok(SERVER.replace("app: orders", "anything.example/key: v"))

    def test_gateway_httproute_valid(self):
        self.assert_ok(GATEWAY_HTTPROUTE)

    def test_gateway_httproute_bad_enum_fails(self):
        self.assert_fail(GATEWAY_HTTPROUTE.replace("PathPrefix", "Prefix"), "$.spec.rules[0].matches[0].path.type")

    def test_cert_manager_cluster_issuer_wrong_type_fails(self):
        issuer = """
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: letsencrypt}
spec:
  acme:
    server: https://acme-v02.api.letsencrypt.org/directory
    privateKeySecretRef: {name: letsencrypt-key}
    skipTLSVerify: "yes"
    solvers: [{http01: {ingress: {ingressClassName: nginx}}}]
"""
        self.assert_ok(issuer.replace('"yes"', "false"))
        self.assert_fail(issuer, "$.spec.acme.skipTLSVerify")

    def test_unknown_group_fails(self):
        self.assert_fail("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "no CRD schema for group example.com")

    def test_known_group_unknown_kind_fails(self):
        self.assert_fail("apiVersion: policy.linkerd.io/v1alpha1\nkind: Nope\nmetadata: {name: n}\n", "unknown kind/version")

    def test_core_deployment_is_skipped(self):
        self.assertEqual(self.check(DEPLOYMENT).status, "core")

    def test_service_monitor_valid(self):
        self.assert_ok(SERVICE_MONITOR)

    def test_go_regex_with_inline_flag_is_usable(self):
        # PrometheusRule uses the RE2 pattern `^(?i)(abort|warn)?$`, which Python cannot compile as is.
        rule = """
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: orders}
spec:
  groups:
    - name: orders
      partial_response_strategy: WARN
      rules:
        - alert: OrdersDown
          expr: up{job="orders"} == 0
          for: 5m
"""
        self.assert_ok(rule)
        self.assert_fail(rule.replace("WARN", "ignore"), "$.spec.groups[0].partial_response_strategy")

    def test_list_items_and_empty_documents(self):
        listing = {"apiVersion": "v1", "kind": "List", "items": docs(SERVER) + docs(DEPLOYMENT)}
        results = vcr.validate_documents([None, listing, {}], self.schemas)
        self.assertEqual([r.status for r in results], ["ok", "core"])

    def test_pinned_urls_cover_every_crd_file(self):
        files = {p.relative_to(SHARED_CRDS).as_posix() for p in SHARED_CRDS.rglob("*") if p.is_file()}
        self.assertEqual(files - {"SOURCES.md"}, set(vcr.PINNED_CRD_URLS))
        for url in vcr.PINNED_CRD_URLS.values():
            self.assertRegex(url, r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/.+\.yaml$")

    def test_cli_exit_codes(self):
        def run(*args, stdin=""):
            return subprocess.run([sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True, text=True)

        ok = run("-", stdin=SERVER + "---\n" + DEPLOYMENT)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        self.assertIn("ok   Server/orders-http (policy.linkerd.io/v1beta3)", ok.stdout)
        self.assertIn("custom resources: 1 valid, 0 invalid, 1 core skipped", ok.stdout)
        bad = run("-", stdin=SERVER.replace("podSelector", "podSelectr"))
        self.assertEqual(bad.returncode, 1, bad.stdout + bad.stderr)
        self.assertIn("FAIL Server/orders-http:", bad.stdout)
        self.assertEqual(run("/nonexistent/manifest.yaml").returncode, 2)
        self.assertEqual(run().returncode, 2)


class DownloadTest(unittest.TestCase):
    """The real download cannot run offline; check its wiring with a fake urlopen."""

    def test_downloads_missing_files_and_strips_linkerd_templates(self):
        template = b"metadata:\n  labels:\n    helm.sh/chart: {{ .Chart.Name }}\nspec:\n  group: x\n"
        fake = mock.MagicMock()
        fake.return_value.__enter__.return_value.read.return_value = template
        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(vcr.urllib.request, "urlopen", fake):
            vcr.download_pinned_crds(Path(tmp))
            self.assertEqual(fake.call_count, len(vcr.PINNED_CRD_URLS))
            server = (Path(tmp) / "linkerd/server.yaml").read_text()
            self.assertNotIn("{{", server)
            self.assertIn(vcr.PINNED_CRD_URLS["linkerd/server.yaml"], server)
            vcr.download_pinned_crds(Path(tmp))  # everything cached: no second fetch
            self.assertEqual(fake.call_count, len(vcr.PINNED_CRD_URLS))

    def test_failed_download_names_url(self):
        error = vcr.urllib.error.URLError("no route")
        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(vcr.urllib.request, "urlopen", side_effect=error):
            with self.assertRaisesRegex(vcr.UsageError, "raw.githubusercontent.com/linkerd/linkerd2/"):
                vcr.download_pinned_crds(Path(tmp))


class HelmStripTest(unittest.TestCase):
    def test_strips_template_lines_in_metadata_only(self):
        template = "metadata:\n  annotations:\n    {{ include \"x\" . }}\n  labels:\n    a: {{ .b }}\nspec:\n  d: '{{ keep }}'\n"
        stripped = vcr.strip_helm_metadata_lines(template)
        self.assertEqual(stripped, "metadata:\n  annotations:\n  labels:\nspec:\n  d: '{{ keep }}'\n")
        self.assertEqual(yaml.safe_load(stripped)["spec"], {"d": "{{ keep }}"})


if __name__ == "__main__":
    unittest.main()
