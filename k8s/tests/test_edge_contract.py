"""The edge drops x-request-timeout-ms from outside requests (contract_edge.py): the real
renders pass (dev, prod, and prod with the legacy Ingress beside the edge), the Gateway API text
the case rule rests on is the upstream CRD's, and each check fails on a broken copy, including a
kustomize render of the edge route with its filter patched out.
Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'"""

import copy
import pathlib
import shutil
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402
import contract_edge as edge  # noqa: E402
import validate_custom_resources  # noqa: E402


def render_variant(base: str, extra: str) -> list[dict]:
    """A throwaway kustomization under k8s/ on top of `base` (relative to k8s/), rendered."""
    variant = pathlib.Path(tempfile.mkdtemp(prefix=".render-edge.", dir=contract.REPO / "k8s"))
    try:
        (variant / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [../{base}]\n{extra}")
        return contract.render(f"k8s/{variant.name}")
    finally:
        shutil.rmtree(variant)


OVERLAYS = {overlay: contract.render(f"k8s/overlays/{overlay}") for overlay in contract.OVERLAYS}
# prod with components/legacy-ingress beside the edge, as k8s/tests/check.sh renders it.
LEGACY = render_variant("overlays/prod", "namespace: meridian-prod\ncomponents: [../components/legacy-ingress]\n")
VALUES = edge.ingress_nginx_values()


def route(docs, name):
    return contract.named(docs, "HTTPRoute", name, "gateway.networking.k8s.io")


class TheManifestsHold(unittest.TestCase):
    def test_every_gateway_route_drops_the_header_and_the_mesh_routes_keep_it(self):
        for name, docs in [*OVERLAYS.items(), ("prod+legacy-ingress", LEGACY)]:
            with self.subTest(render=name):
                self.assertEqual(edge.check_gateway_routes(docs), [])
                # Not vacuous: the Gateway's API route is there and sends to a service.
                api = route(docs, "items")
                self.assertEqual(edge.parent_kinds(api), {"Gateway"})
                self.assertTrue(api["spec"]["rules"][0]["backendRefs"])

    def test_the_legacy_ingress_and_its_controller_values(self):
        self.assertEqual([i["metadata"]["name"] for i in contract.of_kind(LEGACY, "Ingress")], ["items"])
        self.assertEqual(edge.check_ingresses(LEGACY, VALUES), [])

    def test_the_controller_setting_and_the_edge_are_documented(self):
        self.assertEqual(edge.check_documented(edge.documentation()), [])

    def test_the_gateway_api_says_removed_header_names_are_case_insensitive(self):
        """The case rule of same_header() is the upstream text of Gateway API v1.2.1's CRD."""
        crd_file = validate_custom_resources.resolve_crds_dir() / "gateway-api/httproute.yaml"
        crd = yaml.load(crd_file.read_text(), Loader=validate_custom_resources.YAML_LOADER)
        v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        filters = v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]["items"][
            "properties"]["filters"]
        remove = filters["items"]["properties"]["requestHeaderModifier"]["properties"]["remove"]
        self.assertIn("header\nnames are case-insensitive", remove["description"])
        self.assertIn("self.filter(f, f.type == 'RequestHeaderModifier').size() <= 1",
                      [v["rule"] for v in filters["x-kubernetes-validations"]])


class EachCheckCatchesItsMistake(unittest.TestCase):
    def broken(self, mutate, docs=None):
        docs = copy.deepcopy(OVERLAYS["prod"] if docs is None else docs)
        mutate(docs)
        return docs

    def assertCaught(self, problems, fragment):
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_the_edge_route_rendered_without_its_filter_is_caught(self):
        """The manifest itself mutated: kustomize renders dev with the filter patched out."""
        docs = render_variant("overlays/dev", (
            "patches:\n  - target: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: items}\n"
            "    patch: |-\n      - op: remove\n        path: /spec/rules/0/filters\n"))
        self.assertNotIn("filters", route(docs, "items")["spec"]["rules"][0])
        self.assertCaught(edge.check_gateway_routes(docs),
                          "HTTPRoute items rule 0: an outside request's x-request-timeout-ms reaches ['items']")

    def test_a_look_alike_name_is_caught_and_another_case_is_not(self):
        def renamed(name):
            def mutate(docs):
                route(docs, "items")["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["remove"] = [name]
            return mutate
        self.assertCaught(edge.check_gateway_routes(self.broken(renamed("x-request-timeout"))),
                          "reaches ['items-canary', 'items-stable']")
        self.assertEqual(edge.check_gateway_routes(self.broken(renamed("X-Request-Timeout-Ms"))), [])

    def test_a_second_header_modifier_is_caught(self):
        def twice(docs):
            filters = route(docs, "items")["spec"]["rules"][0]["filters"]
            filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["x-debug"]}})
        self.assertCaught(edge.check_gateway_routes(self.broken(twice)), "more than one RequestHeaderModifier")

    def test_a_backend_filter_setting_the_header_is_caught(self):
        def sets(docs):
            route(docs, "items")["spec"]["rules"][0]["backendRefs"][0]["filters"] = [
                {"type": "RequestHeaderModifier",
                 "requestHeaderModifier": {"set": [{"name": "X-Request-Timeout-MS", "value": "0"}]}}]
        self.assertCaught(edge.check_gateway_routes(self.broken(sets)), "sets x-request-timeout-ms on outside requests")

    def test_a_new_gateway_route_without_the_filter_is_caught(self):
        def admin(docs):
            docs.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                         "metadata": {"name": "admin"},
                         "spec": {"parentRefs": [{"name": "meridian", "sectionName": "https"}],
                                  "rules": [{"backendRefs": [{"name": "timezones", "port": 8081}]}]}})
        self.assertCaught(edge.check_gateway_routes(self.broken(admin)),
                          "HTTPRoute admin rule 0: an outside request's x-request-timeout-ms reaches ['timezones']")

    def test_a_mesh_route_dropping_the_header_is_caught(self):
        def mesh_drops(docs):
            route(docs, "timezones-mesh")["spec"]["rules"][0]["filters"] = [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["x-request-timeout-ms"]}}]
        self.assertCaught(edge.check_gateway_routes(self.broken(mesh_drops)),
                          "HTTPRoute timezones-mesh rule 0: drops x-request-timeout-ms between meshed callers")

    def test_a_snippet_on_the_ingress_is_caught(self):
        def snippet(docs):
            contract.named(docs, "Ingress", "items")["metadata"]["annotations"][
                "nginx.ingress.kubernetes.io/configuration-snippet"] = 'proxy_set_header x-request-timeout-ms "";'
        self.assertCaught(edge.check_ingresses(self.broken(snippet, LEGACY), VALUES),
                          "configuration-snippet is refused by ingress-nginx's defaults")

    def test_another_ingress_class_is_caught(self):
        def traefik(docs):
            contract.named(docs, "Ingress", "items")["spec"]["ingressClassName"] = "traefik"
        self.assertCaught(edge.check_ingresses(self.broken(traefik, LEGACY), VALUES), "class 'traefik'")

    def test_controller_values_that_keep_the_header_are_caught(self):
        values = copy.deepcopy(VALUES)
        del values["controller"]["proxySetHeaders"]
        self.assertCaught(edge.check_ingresses(LEGACY, values), "controller.proxySetHeaders does not drop")
        values["controller"]["proxySetHeaders"] = {"X-Request-Timeout-Ms": "5000"}
        self.assertCaught(edge.check_ingresses(LEGACY, values), "sets X-Request-Timeout-Ms to '5000'")
        # Without an Ingress the controller's values do not matter.
        self.assertEqual(edge.check_ingresses(OVERLAYS["prod"], values), [])

    def test_an_undocumented_setting_is_caught(self):
        texts = edge.documentation()
        texts["docs/resilience.md"] = texts["docs/resilience.md"].replace("controller.proxySetHeaders", "the values")
        self.assertCaught(edge.check_documented(texts), "docs/resilience.md does not mention 'controller.proxySetHeaders'")


if __name__ == "__main__":
    unittest.main()
