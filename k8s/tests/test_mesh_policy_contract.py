"""Linkerd 2.20's view of the Namespaces and the proxy admin-port policy
(contract_mesh_policy.py), on every overlay; each check shown failing on a broken copy.
Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'"""

import copy
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402
import contract_mesh_policy as mesh  # noqa: E402

RENDERED = {overlay: contract.render(f"k8s/overlays/{overlay}") for overlay in contract.OVERLAYS}


def analysis_metric(docs, name):
    template = contract.named(docs, "AnalysisTemplate", "linkerd-canary", "argoproj.io")
    return next(m for m in template["spec"]["metrics"] if m["name"] == name)


class TheOverlaysHold(unittest.TestCase):
    def test_every_overlay_passes_every_check(self):
        for overlay, docs in RENDERED.items():
            for check in mesh.CHECKS:
                with self.subTest(overlay=overlay, check=check.__name__):
                    self.assertEqual(check(docs), [])


class EachCheckCatchesItsMistake(unittest.TestCase):
    def broken(self, mutate):
        docs = copy.deepcopy(RENDERED["dev"])
        mutate(docs)
        return docs

    def assertCaught(self, problems, fragment):
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_a_beta_native_sidecar_key_on_the_namespace_is_caught(self):
        def beta(docs):
            annotations = contract.of_kind(docs, "Namespace")[0]["metadata"]["annotations"]
            annotations["config.beta.linkerd.io/proxy-enable-native-sidecar"] = annotations.pop(
                "config.linkerd.io/proxy-enable-native-sidecar")
        self.assertCaught(mesh.check_namespace_annotations(self.broken(beta)),
                          "config.beta.linkerd.io/proxy-enable-native-sidecar is not read")

    def test_a_server_on_the_tap_port_is_caught(self):
        def tap(docs):
            docs.append({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                         "metadata": {"name": "linkerd-tap"},
                         "spec": {"podSelector": {}, "port": 4190, "proxyProtocol": "HTTP/2"}})
        self.assertCaught(mesh.check_proxy_admin_policy(self.broken(tap)), "Server linkerd-tap on the tap port")

    def test_scrapers_on_the_whole_admin_port_are_caught(self):
        def whole_port(docs):
            policy = contract.named(docs, "AuthorizationPolicy", "linkerd-admin-metrics-from-scrapers")
            policy["spec"]["targetRef"] = {"group": "policy.linkerd.io", "kind": "Server", "name": "linkerd-admin"}
        self.assertCaught(mesh.check_proxy_admin_policy(self.broken(whole_port)), "opens the whole admin port")

    def test_a_route_wider_than_its_caller_needs_is_caught(self):
        def wider(docs):
            route = contract.named(docs, "HTTPRoute", "linkerd-admin-metrics", "policy.linkerd.io")
            route["spec"]["rules"][0]["matches"].append({"path": {"type": "Exact", "value": "/env.json"}})
        self.assertCaught(mesh.check_proxy_admin_policy(self.broken(wider)), "reach ['/env.json']")

    def broken_prod(self, mutate):
        docs = copy.deepcopy(RENDERED["prod"])
        mutate(docs)
        return docs

    def test_an_analysis_counting_probes_and_scrapes_is_caught(self):
        def every_route(docs):
            metric = analysis_metric(docs, "success-rate")
            query = metric["provider"]["prometheus"]["query"]
            metric["provider"]["prometheus"]["query"] = query.replace(
                'srv_name="{{args.app}}-http", route_name="{{args.app}}-api",', "")
        self.assertCaught(mesh.check_canary_analysis(self.broken_prod(every_route)), "counts every port")

    def test_an_analysis_on_the_probe_route_is_caught(self):
        def probes(docs):
            metric = analysis_metric(docs, "p99-latency-ms")
            metric["provider"]["prometheus"]["query"] = metric["provider"]["prometheus"]["query"].replace(
                '{{args.app}}-api', '{{args.app}}-probes')
        self.assertCaught(mesh.check_canary_analysis(self.broken_prod(probes)), "is not the API route")

    def test_no_traffic_passing_is_caught(self):
        def passes_empty(docs):
            analysis_metric(docs, "success-rate")["successCondition"] = "len(result) == 0 || result[0] >= 0.99"
        self.assertCaught(mesh.check_canary_analysis(self.broken_prod(passes_empty)), "is not inconclusive")


if __name__ == "__main__":
    unittest.main()
