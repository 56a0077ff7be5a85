"""cert-manager's view of the issuers, the Gateway and the legacy Ingress
(contract_certificates.py): the real renders pass, including prod with the legacy Ingress
beside the edge, and each check fails on a broken copy.
Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'"""

import copy
import pathlib
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402
import contract_certificates as certs  # noqa: E402


def render_legacy_variant():
    """prod with components/legacy-ingress beside the edge, as k8s/tests/check.sh renders it."""
    variant = pathlib.Path(tempfile.mkdtemp(prefix=".render-legacy-ingress.", dir=contract.REPO / "k8s"))
    try:
        (variant / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: meridian-prod\n"
            "resources: [../overlays/prod]\ncomponents: [../components/legacy-ingress]\n")
        return contract.render(f"k8s/{variant.name}")
    finally:
        shutil.rmtree(variant)


OVERLAYS = {overlay: contract.render(f"k8s/overlays/{overlay}") for overlay in contract.OVERLAYS}
LEGACY = render_legacy_variant()
CLUSTER = contract.render("k8s/cluster")


class TheManifestsHold(unittest.TestCase):
    def test_overlays_and_the_legacy_variant(self):
        for name, docs in [*OVERLAYS.items(), ("prod+legacy-ingress", LEGACY)]:
            for check in (certs.check_certificate_owners, certs.check_solver_reachable):
                with self.subTest(render=name, check=check.__name__):
                    self.assertEqual(check(docs), [])

    def test_issuers_attach_to_each_environments_gateway(self):
        self.assertEqual(certs.check_issuer_parent_refs(CLUSTER, OVERLAYS), [])


class EachCheckCatchesItsMistake(unittest.TestCase):
    def assertCaught(self, problems, fragment):
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_two_shims_for_one_secret_are_caught(self):
        docs = copy.deepcopy(LEGACY)
        ingress = contract.named(docs, "Ingress", "items")
        ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] = "letsencrypt-staging"
        self.assertCaught(certs.check_certificate_owners(docs), "Secret meridian-tls is requested by Gateway")

    def test_an_ingress_secret_nobody_issues_is_caught(self):
        docs = copy.deepcopy(LEGACY)
        contract.named(docs, "Ingress", "items")["spec"]["tls"][0]["secretName"] = "legacy-tls"
        self.assertCaught(certs.check_certificate_owners(docs), "nothing asks cert-manager for")

    def test_ingress_nginx_cut_off_from_the_solver_is_caught(self):
        docs = [d for d in copy.deepcopy(LEGACY)
                if d["metadata"]["name"] != "acme-http01-solver-from-ingress-nginx"]
        self.assertCaught(certs.check_solver_reachable(docs), "ingress-nginx reach the HTTP-01 solver")

    def test_the_gateway_cut_off_from_the_solver_is_caught(self):
        docs = [d for d in copy.deepcopy(OVERLAYS["dev"]) if d["metadata"]["name"] != "acme-http01-solver"]
        self.assertCaught(certs.check_solver_reachable(docs), "Gateway meridian reach the HTTP-01 solver")

    def test_parent_refs_to_both_environments_are_caught(self):
        docs = copy.deepcopy(CLUSTER)
        issuer = contract.named(docs, "ClusterIssuer", "letsencrypt-prod", "cert-manager.io")
        refs = issuer["spec"]["acme"]["solvers"][0]["http01"]["gatewayHTTPRoute"]["parentRefs"]
        refs[:] = [dict(refs[0], namespace=ns) for ns in ("meridian-dev", "meridian-prod")]
        self.assertCaught(certs.check_issuer_parent_refs(docs, OVERLAYS), "not one namespace-local Gateway")

    def test_a_missing_listener_is_caught(self):
        docs = copy.deepcopy(CLUSTER)
        issuer = contract.named(docs, "ClusterIssuer", "letsencrypt-staging", "cert-manager.io")
        issuer["spec"]["acme"]["solvers"][0]["http01"]["gatewayHTTPRoute"]["parentRefs"][0]["sectionName"] = "web"
        self.assertCaught(certs.check_issuer_parent_refs(docs, OVERLAYS), "has no meridian/web")


if __name__ == "__main__":
    unittest.main()
