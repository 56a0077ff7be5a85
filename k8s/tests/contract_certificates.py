"""What cert-manager (1.21) does with the issuers, the Gateway and the legacy Ingress, as its
own code decides it. Each check returns a list of problems, empty when the manifests hold;
test_certificates_contract.py runs them on the real renders and shows each failing on a
broken copy.
"""

from __future__ import annotations

import contract

ISSUER_ANNOTATIONS = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")
SOLVER_LABEL = ("acme.cert-manager.io/http01-solver", "true")  # pkg/issuer/acme/http/pod.go
SOLVER_PORT = 8089  # acmeSolverListenPort, pkg/issuer/acme/http/http.go


def issuer_of(doc) -> str | None:
    annotations = doc["metadata"].get("annotations", {})
    return next((annotations[a] for a in ISSUER_ANNOTATIONS if a in annotations), None)


def requested_secrets(docs) -> dict[str, list[str]]:
    """Secret name → the shims asking cert-manager for it. The gateway-shim makes a Certificate
    for each certificateRef of an annotated Gateway's TLS listeners, the ingress-shim one for
    each tls[].secretName of an annotated Ingress (pkg/controller/certificate-shim), each
    Certificate named after its Secret."""
    owners: dict[str, list[str]] = {}
    for gateway in contract.of_kind(docs, "Gateway", "gateway.networking.k8s.io"):
        if issuer_of(gateway):
            for listener in gateway["spec"]["listeners"]:
                for ref in listener.get("tls", {}).get("certificateRefs", []):
                    owners.setdefault(ref["name"], []).append(
                        f"Gateway {gateway['metadata']['name']} ({issuer_of(gateway)})")
    for ingress in contract.of_kind(docs, "Ingress"):
        if issuer_of(ingress):
            for tls in ingress["spec"].get("tls", []):
                owners.setdefault(tls["secretName"], []).append(
                    f"Ingress {ingress['metadata']['name']} ({issuer_of(ingress)})")
    return owners


def check_certificate_owners(docs) -> list[str]:
    """One shim per TLS Secret, and every Secret an Ingress serves is issued by someone. With two,
    the first to create the Certificate keeps it and the other is refused (sync.go: "refusing to
    update non-owned certificate resource"), so which issuer signs depends on sync order."""
    owners = requested_secrets(docs)
    problems = [f"Secret {name} is requested by {' and '.join(by)}" for name, by in owners.items() if len(by) > 1]
    for ingress in contract.of_kind(docs, "Ingress"):
        for tls in ingress["spec"].get("tls", []):
            if tls["secretName"] not in owners:
                problems.append(f"Ingress {ingress['metadata']['name']} serves Secret {tls['secretName']}, "
                                "which nothing asks cert-manager for")
    return problems


def admits_solver(docs, peer_matches) -> bool:
    for policy in contract.of_kind(docs, "NetworkPolicy"):
        labels = {SOLVER_LABEL[0]: SOLVER_LABEL[1]}
        if not contract.selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p.get("port") == SOLVER_PORT for p in rule.get("ports", [])) and \
                    any(peer_matches(peer) for peer in rule.get("from", [])):
                return True
    return False


def check_solver_reachable(docs) -> list[str]:
    """Under default deny, whatever relays Let's Encrypt's HTTP-01 request reaches the solver pod
    on 8089: the Gateway's data plane for a Gateway, ingress-nginx's pods for an nginx Ingress."""
    problems = []
    for gateway in contract.of_kind(docs, "Gateway", "gateway.networking.k8s.io"):
        name = gateway["metadata"]["name"]
        if not admits_solver(docs, lambda peer: peer.get("podSelector", {}).get("matchLabels", {}).get(
                "gateway.networking.k8s.io/gateway-name") == name):
            problems.append(f"no NetworkPolicy lets Gateway {name} reach the HTTP-01 solver on {SOLVER_PORT}")
    if any(i["spec"].get("ingressClassName") == "nginx" for i in contract.of_kind(docs, "Ingress")):
        if not admits_solver(docs, lambda peer: peer.get("namespaceSelector", {}).get("matchLabels", {}).get(
                "kubernetes.io/metadata.name") == "ingress-nginx"):
            problems.append(f"no NetworkPolicy lets ingress-nginx reach the HTTP-01 solver on {SOLVER_PORT}")
    return problems


def check_issuer_parent_refs(cluster_docs, overlays: dict[str, list[dict]]) -> list[str]:
    """Each ClusterIssuer's HTTP-01 route attaches to exactly the Gateway of the namespace the
    challenge is in: cert-manager copies parentRefs unchanged into a route it creates in the
    Certificate's namespace (pkg/issuer/acme/http/httproute.go), so a ref naming another
    namespace is a cross-namespace attachment that Gateway refuses. One ref, no namespace, to a
    Gateway and listener that each overlay using the issuer has."""
    problems = []
    for issuer in contract.of_kind(cluster_docs, "ClusterIssuer", "cert-manager.io"):
        name = issuer["metadata"]["name"]
        for solver in issuer["spec"].get("acme", {}).get("solvers", []):
            refs = solver.get("http01", {}).get("gatewayHTTPRoute", {}).get("parentRefs")
            if refs is None:
                continue
            if len(refs) != 1 or "namespace" in refs[0]:
                problems.append(f"ClusterIssuer {name}: parentRefs {refs} are not one namespace-local Gateway")
                continue
            for overlay, docs in overlays.items():
                for gateway in contract.of_kind(docs, "Gateway", "gateway.networking.k8s.io"):
                    if issuer_of(gateway) != name:
                        continue
                    listeners = {l["name"] for l in gateway["spec"]["listeners"]}
                    if gateway["metadata"]["name"] != refs[0]["name"] or refs[0].get("sectionName") not in listeners:
                        problems.append(f"ClusterIssuer {name}: {overlay}'s Gateway has no "
                                        f"{refs[0]['name']}/{refs[0].get('sectionName')} to attach to")
    return problems
