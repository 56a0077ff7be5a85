"""The flow matrix (flows.py) on every rendered overlay, by network-config-analyzer and by the
Linkerd evaluator; each shown failing on a broken copy (the first one is the text that blocked
the system's own flows); and the evaluator's rules, each on a small case of its own.
Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'   (needs nca and kubectl)"""

import copy
import pathlib
import shutil
import sys
import tempfile
import textwrap
import unittest

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flows  # noqa: E402
import linkerd_authz as authz  # noqa: E402

REPO = flows.REPO
RENDERED = {name: make() for name, make in flows.VARIANTS.items()}


def matrix(name, docs=None, issuers=None):
    rendered, namespace, default_issuers = RENDERED[name]
    return flows.Matrix(name, docs if docs is not None else copy.deepcopy(rendered), namespace,
                        issuers if issuers is not None else default_issuers)


def named(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


class TheMatrixHolds(unittest.TestCase):
    def test_every_overlay_meets_the_matrix(self):
        for name in flows.VARIANTS:
            with self.subTest(variant=name):
                self.assertEqual(matrix(name).check(), [])

    def test_the_matrix_covers_what_the_issue_lists(self):
        rows = {(f.src, f.dst, f.ports[0], f.allowed) for f in flows.FLOWS}
        for row in [("gateway", "items", 8080, True), ("items", "timezones", 8081, True),
                    ("items", "postgres", 5432, True), ("items", "database", 5432, True),
                    ("prometheus", "items", 9464, True), ("viz-prometheus", "timezones", 9465, True),
                    ("prometheus", "items", 4191, True), ("kubelet", "items", 8080, True),
                    ("items", "linkerd-identity", 8080, True), ("items", "kube-dns-clusterip", 53, True),
                    ("items", "node-local-dns", 53, True), ("ingress-nginx", "acme-solver", 8089, True),
                    ("timezones", "items", 8080, False), ("gateway", "timezones", 8081, False),
                    ("other-meshed", "items", 8080, False), ("other-plain", "timezones", 8081, False),
                    ("timezones", "postgres", 5432, False), ("timezones", "database", 5432, False)]:
            self.assertIn(row, rows)

    def test_the_command_line_checks_a_users_overlay(self):
        self.assertEqual(flows.main([str(REPO / "k8s/overlays/dev"), "meridian-dev", "dev", "--summary"]), 0)


def render_tree(edit):
    """k8s/, mesh/ and what they reference, copied and edited, then the dev overlay rendered:
    a broken commit as kustomize would render it."""
    scratch = pathlib.Path(tempfile.mkdtemp())
    try:
        for part in ("k8s", "mesh", "observability/grafana"):
            shutil.copytree(REPO / part, scratch / part)
        edit(scratch)
        return flows.kustomize(scratch / "k8s/overlays/dev")
    finally:
        shutil.rmtree(scratch)


class TheMatrixCatchesEachMistake(unittest.TestCase):
    def assertMismatch(self, problems, fragment):
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in:\n" + "\n".join(problems))

    def test_labels_in_selectors_rewrite_the_policies_peers(self):
        # The base kustomizations before issue 22: kustomize's selector field specs include
        # NetworkPolicy peers, so every from/to podSelector became the service's own name.
        def include_selectors(root):
            for service in ("items", "timezones"):
                path = root / f"k8s/base/{service}/kustomization.yaml"
                path.write_text(path.read_text().replace("includeTemplates: true", "includeSelectors: true"))
        problems = matrix("dev", render_tree(include_selectors)).check()
        self.assertMismatch(problems, "gateway -> items:8080/TCP: NetworkPolicy denies it")
        self.assertMismatch(problems, "items -> timezones:8081/TCP: NetworkPolicy denies it")
        self.assertMismatch(problems, "items -> postgres:5432/TCP: NetworkPolicy denies it")

    def test_dns_to_the_kube_dns_clusterip_refused(self):
        # Every DNS rule before issue 22: NodeLocal DNSCache's link-local address only.
        docs = copy.deepcopy(RENDERED["dev"][0])
        rule = named(docs, "NetworkPolicy", "dns")["spec"]["egress"][0]
        rule["to"] = [p for p in rule["to"] if p.get("ipBlock", {}).get("cidr") != f"{flows.KUBE_DNS_CLUSTER_IP}/32"]
        self.assertMismatch(matrix("dev", docs).check(), "items -> kube-dns-clusterip:53/UDP: NetworkPolicy denies it")

    def test_an_injected_legacy_ingress_solver(self):
        # docs/deploy.md before issue 22: an http01.ingress solver without the podTemplate.
        issuers = copy.deepcopy(RENDERED["legacy-ingress"][2])
        for issuer in issuers:
            for solver in issuer["spec"]["acme"]["solvers"]:
                solver["http01"]["ingress"].pop("podTemplate")
        problems = matrix("legacy-ingress", issuers=issuers).check()
        self.assertMismatch(problems, "ingress-nginx -> acme-solver:8089: Linkerd decides it (refused at Server (default)")

    def test_the_gateway_with_another_identity(self):
        docs = copy.deepcopy(RENDERED["prod"][0])
        named(docs, "MeshTLSAuthentication", "gateway-identity")["spec"]["identityRefs"][0]["name"] = "meridian-gateway"
        self.assertMismatch(matrix("prod", docs).check(),
                            "gateway -> items:8080 GET /v1/items: Linkerd refused at Server items-http, route items-api")

    def test_timezones_open_to_every_identity(self):
        docs = copy.deepcopy(RENDERED["dev"][0])
        named(docs, "MeshTLSAuthentication", "items-identity")["spec"] = {"identities": ["*"]}
        problems = matrix("dev", docs).check()
        self.assertMismatch(problems, "gateway -> timezones:8081 GET /v1/timezones: Linkerd admits it")
        self.assertMismatch(problems, "timezones -> postgres:5432: Linkerd admits it")

    def test_items_open_to_every_namespace(self):
        docs = copy.deepcopy(RENDERED["prod"][0])
        named(docs, "NetworkPolicy", "items")["spec"]["ingress"].append({"from": [{"namespaceSelector": {}}]})
        self.assertMismatch(matrix("prod", docs).check(), "other-plain -> items:8080/TCP: NetworkPolicy allows it")

    def test_a_probe_route_without_the_readiness_path(self):
        docs = copy.deepcopy(RENDERED["dev"][0])
        route = named(docs, "HTTPRoute", "items-probes")
        route["spec"]["rules"][0]["matches"] = [m for m in route["spec"]["rules"][0]["matches"]
                                                if m["path"]["value"] != "/readyz"]
        self.assertMismatch(matrix("dev", docs).check(), "kubelet -> items:8080 GET /readyz: Linkerd refused")

    def test_kubelet_probes_for_the_wrong_subnet(self):
        node_policy = flows.kubelet_probes_policy("meridian-dev")
        node_policy["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] = "192.168.0.0/16"
        rendered, namespace, issuers = RENDERED["dev"]
        problems = flows.Matrix("dev", copy.deepcopy(rendered), namespace, issuers, node_policy).check()
        self.assertMismatch(problems, "kubelet -> items:8080/TCP with components/kubelet-probes: NetworkPolicy denies it")

    def test_the_node_admitted_by_the_overlay_itself(self):
        # A node-subnet rule in the overlay would open the app ports to the node where the CNI
        # does not need it: the plain overlay must leave the node to the exemption.
        docs = copy.deepcopy(RENDERED["dev"][0])
        docs.append(flows.kubelet_probes_policy("meridian-dev"))
        self.assertMismatch(matrix("dev", docs).check(), "kubelet -> items:8080/TCP: NetworkPolicy allows it")

    def test_e2e_admitting_the_node_itself(self):
        # e2e's kind runs Calico, which exempts the node: a node rule in the overlay would open
        # the app ports to it, as in dev.
        docs = copy.deepcopy(RENDERED["e2e"][0])
        docs.append(flows.kubelet_probes_policy("meridian-dev"))
        self.assertMismatch(matrix("e2e", docs).check(), "kubelet -> items:8080/TCP: NetworkPolicy allows it")


class TheDocumentedSettings(unittest.TestCase):
    def test_the_kube_dns_clusterip_patch_in_deploy_md(self):
        # The patch docs/deploy.md gives for a cluster whose kube-dns ClusterIP is not kind's.
        text = (REPO / "docs/deploy.md").read_text()
        block = next(b for b in text.split("```yaml")[1:] if "name: dns" in b).split("```")[0]
        patches = yaml.safe_load(textwrap.dedent(block))["patches"]
        directory = pathlib.Path(tempfile.mkdtemp(prefix=".render-", dir=REPO / "k8s"))
        try:
            (directory / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": ["../overlays/dev"], "patches": patches}))
            docs = flows.kustomize(directory)
        finally:
            shutil.rmtree(directory)
        _, namespace, issuers = RENDERED["dev"]
        connectivity = flows.nca(flows.workloads_at_one_replica(docs) + flows.cluster_pods(namespace, issuers))
        items = flows.Pod(namespace, "items")
        self.assertTrue(connectivity.allows(items, flows.Address("10.100.0.10"), "UDP", 53))
        self.assertFalse(connectivity.allows(items, flows.Address(flows.KUBE_DNS_CLUSTER_IP), "UDP", 53))
        self.assertTrue(connectivity.allows(items, flows.Address(flows.NODE_LOCAL_DNS), "UDP", 53))


class NcaOutput(unittest.TestCase):
    def test_parsing(self):
        connectivity = flows.Connectivity.parse(
            "global: cluster has 6 unique endpoints\n"
            "a/x[Deployment] => b/y[StatefulSet] : {protocols:TCP,dst_ports:4143,4190-4191,9464}\n"
            "a/x[Deployment] => 169.254.20.10 : {protocols:TCP, UDP,dst_ports:53}\n"
            "0.0.0.0-172.17.255.255 => b/y[StatefulSet] : All connections\n")
        x, y = flows.Pod("a", "x"), flows.Pod("b", "y")
        self.assertTrue(connectivity.allows(x, y, "TCP", 4190))
        self.assertFalse(connectivity.allows(x, y, "TCP", 4192))
        self.assertTrue(connectivity.allows(x, flows.Address("169.254.20.10"), "UDP", 53))
        self.assertFalse(connectivity.allows(x, flows.Address("169.254.20.11"), "UDP", 53))
        self.assertTrue(connectivity.allows(flows.Address("172.17.0.1"), y, "SCTP", 1))
        self.assertFalse(connectivity.allows(flows.Address("172.18.0.1"), y, "TCP", 1))
        with self.assertRaises(ValueError):
            flows.Connectivity.parse("a/x[Deployment] => b/y[Deployment] : {something:else}")


def policy_docs(*extra):
    """A namespace with one HTTP Server on items' port, split into a probe route and an API
    route, as mesh/ does."""
    return [
        {"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server", "metadata": {"name": "web"},
         "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": "http", "proxyProtocol": "HTTP/1"}},
        {"apiVersion": "policy.linkerd.io/v1beta3", "kind": "HTTPRoute", "metadata": {"name": "probes"},
         "spec": {"parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
                  "rules": [{"matches": [{"path": {"type": "Exact", "value": "/healthz"}, "method": "GET"}]}]}},
        {"apiVersion": "policy.linkerd.io/v1beta3", "kind": "HTTPRoute", "metadata": {"name": "api"},
         "spec": {"parentRefs": [{"group": "policy.linkerd.io", "kind": "Server", "name": "web"}],
                  "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}]}]}},
        {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "MeshTLSAuthentication", "metadata": {"name": "caller"},
         "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "caller"}]}},
        {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "NetworkAuthentication", "metadata": {"name": "nodes"},
         "spec": {"networks": [{"cidr": "172.18.0.0/16", "except": ["172.18.9.0/24"]}]}},
        *extra]


def policy(name, target_kind, target, *refs):
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "AuthorizationPolicy", "metadata": {"name": name},
            "spec": {"targetRef": {"group": "policy.linkerd.io", "kind": target_kind, "name": target},
                     "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": k, "name": n}
                                                    for k, n in refs]}}


WEB = authz.pod_of({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
    "name": "web", "ports": [{"name": "http", "containerPort": 8080}],
    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}},
    "ns", {"linkerd.io/inject": "enabled", "config.linkerd.io/default-inbound-policy": "deny"})
CALLER = authz.Client("10.244.0.5", authz.identity("caller", "ns"))
STRANGER = authz.Client("10.244.0.6", authz.identity("default", "elsewhere"))
NODE = authz.Client("172.18.0.2")


class LinkerdRules(unittest.TestCase):
    def decide(self, docs, client, method, path, port=8080):
        return authz.Authorizer(docs, "ns").decide(WEB, port, client, method, path)

    def test_a_route_policy_admits_its_identity_only(self):
        docs = policy_docs(policy("api-from-caller", "HTTPRoute", "api", ("MeshTLSAuthentication", "caller")))
        self.assertEqual(self.decide(docs, CALLER, "GET", "/v1/items").authorization, "api-from-caller")
        self.assertFalse(self.decide(docs, STRANGER, "GET", "/v1/items").admitted)

    def test_a_path_on_no_route_is_refused_even_for_a_known_caller(self):
        docs = policy_docs(policy("api-from-caller", "HTTPRoute", "api", ("MeshTLSAuthentication", "caller")))
        decision = self.decide(docs, CALLER, "GET", "/admin/faults")
        self.assertFalse(decision.admitted)
        self.assertIn("404", decision.why)

    def test_a_server_policy_applies_to_every_route(self):
        # policy-test e2e_authorization_policy.rs targets_route; proxy authz.rs chains them.
        docs = policy_docs(policy("web-from-caller", "Server", "web", ("MeshTLSAuthentication", "caller")))
        self.assertEqual(self.decide(docs, CALLER, "GET", "/v1/items").route, "api")
        self.assertTrue(self.decide(docs, CALLER, "GET", "/v1/items").admitted)

    def test_routes_on_a_server_end_the_implicit_probe_authorization(self):
        self.assertFalse(self.decide(policy_docs(), NODE, "GET", "/healthz").admitted)
        docs = policy_docs(policy("probes-from-nodes", "HTTPRoute", "probes", ("NetworkAuthentication", "nodes")))
        self.assertTrue(self.decide(docs, NODE, "GET", "/healthz").admitted)
        self.assertFalse(self.decide(docs, authz.Client("172.18.9.9"), "GET", "/healthz").admitted)  # except

    def test_without_a_server_probes_pass_and_the_default_policy_decides_the_rest(self):
        docs = policy_docs()[3:]  # no Server, no routes
        self.assertEqual(self.decide(docs, NODE, "GET", "/healthz").route, "probe")
        self.assertFalse(self.decide(docs, NODE, "POST", "/healthz").admitted)
        self.assertFalse(self.decide(docs, CALLER, "GET", "/v1/items").admitted)  # deny

    def test_a_missing_authentication_drops_the_policy(self):
        docs = policy_docs(policy("api-from-ghost", "HTTPRoute", "api", ("MeshTLSAuthentication", "caller"),
                                  ("NetworkAuthentication", "missing")))
        self.assertFalse(self.decide(docs, CALLER, "GET", "/v1/items").admitted)

    def test_all_references_must_hold(self):
        docs = policy_docs(policy("api-from-caller-on-nodes", "HTTPRoute", "api",
                                  ("MeshTLSAuthentication", "caller"), ("NetworkAuthentication", "nodes")))
        self.assertFalse(self.decide(docs, CALLER, "GET", "/v1/items").admitted)  # pod address
        self.assertTrue(self.decide(docs, authz.Client("172.18.0.7", CALLER.identity), "GET", "/v1").admitted)

    def test_identity_patterns(self):
        self.assertTrue(authz.identity_matches(["*"], "a.b"))
        self.assertTrue(authz.identity_matches(["*.ns.serviceaccount.identity.linkerd.cluster.local"],
                                               CALLER.identity))
        self.assertFalse(authz.identity_matches(["*"], None))
        self.assertFalse(authz.identity_matches(["caller.ns"], CALLER.identity))

    def test_an_opaque_server_decides_per_connection(self):
        docs = policy_docs(policy("web-from-caller", "Server", "web", ("MeshTLSAuthentication", "caller")))
        docs[0]["spec"]["proxyProtocol"] = "opaque"
        self.assertTrue(self.decide(docs, CALLER, None, None).admitted)
        self.assertFalse(self.decide(docs, NODE, "GET", "/healthz").admitted)

    def test_two_servers_on_one_port_are_refused(self):
        docs = policy_docs()
        docs.append(copy.deepcopy(docs[0]))
        docs[-1]["metadata"]["name"] = "web-again"
        with self.assertRaises(ValueError):
            self.decide(docs, CALLER, "GET", "/v1")

    def test_tap_admits_only_linkerd_viz_tap(self):
        tap = authz.Client("10.244.0.9", authz.TAP_IDENTITY)
        self.assertTrue(self.decide(policy_docs(), tap, None, None, port=authz.TAP_PORT).admitted)
        self.assertFalse(self.decide(policy_docs(), CALLER, None, None, port=authz.TAP_PORT).admitted)


if __name__ == "__main__":
    unittest.main()
