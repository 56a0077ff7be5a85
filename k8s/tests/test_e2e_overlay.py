"""The e2e overlay (k8s/overlays/e2e) is dev changed only where a local kind cluster needs it:
both are rendered and every difference between them must be in ALLOWED, with its reason; any
other difference fails. k8s/cluster-e2e gives its canaries the plugin's rights where they need
them and carries no ACME issuer. Each check is shown failing on a broken copy.
Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'   (needs kubectl)"""

import copy
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402
import contract_delivery as delivery  # noqa: E402

DEV = contract.render("k8s/overlays/dev")
E2E = contract.render("k8s/overlays/e2e")
CLUSTER_E2E = contract.render("k8s/cluster-e2e")
PROD = contract.render("k8s/overlays/prod")

CANARY = "k8s/components/canary: prod's Rollouts run the pods"
# Per app service (items, timezones): (kind, JSON pointer) -> why e2e differs from dev there.
PER_SERVICE = {
    ("Deployment", "/spec/template/spec/containers/0/image"):
        "kind loads the runner's build into the node; there is no registry digest",
    ("Deployment", "/spec/template/spec/containers/0/imagePullPolicy"):
        "Always would try to pull the kind-loaded image and fail",
    ("Deployment", "/metadata/annotations/checkov.io~1skip1"): "checkov's digest check, skipped for that image",
    ("Deployment", "/metadata/annotations/checkov.io~1skip2"): "checkov's Always check, skipped for that image",
    ("Deployment", "/spec/replicas"): CANARY + " (the Deployment keeps the template at 0)",
    ("HorizontalPodAutoscaler", "/spec/scaleTargetRef/apiVersion"): CANARY + " (the HPA scales it)",
    ("HorizontalPodAutoscaler", "/spec/scaleTargetRef/kind"): CANARY + " (the HPA scales it)",
    ("Rollout", ""): CANARY,
    ("Service", "-stable"): CANARY,
    ("Service", "-canary"): CANARY,
}
# (kind, name, JSON pointer) -> why e2e differs from dev there. A pointer names the value that
# changed, or "" for an object only e2e has.
ALLOWED = {
    **{(kind, service, path): why for (kind, path), why in PER_SERVICE.items() if kind != "Service"
       for service in ("items", "timezones")},
    **{("Service", service + suffix, ""): why for (kind, suffix), why in PER_SERVICE.items() if kind == "Service"
       for service in ("items", "timezones")},
    ("StatefulSet", "postgres", "/spec/template/spec/containers/0/image"):
        "dev's postgres digest is a placeholder; the node pulls compose.yaml's tag",
    ("StatefulSet", "postgres", "/metadata/annotations/checkov.io~1skip2"):
        "checkov's digest check, skipped for that tag",
    ("HTTPRoute", "items", "/spec/rules/0/backendRefs"): CANARY + " (the edge route splits stable/canary)",
    ("HTTPRoute", "timezones-mesh", ""): CANARY + " (the mesh route splits timezones)",
    ("AnalysisTemplate", "linkerd-canary", ""): CANARY + " (the analysis on Linkerd's metrics)",
    ("Gateway", "meridian", "/metadata/annotations/cert-manager.io~1cluster-issuer"):
        "no ACME locally: Let's Encrypt's ClusterIssuer is replaced",
    ("Gateway", "meridian", "/metadata/annotations/cert-manager.io~1issuer"):
        "the Gateway's certificate comes from the local CA (k8s/components/local-issuer)",
    ("Issuer", "meridian-selfsigned", ""): "k8s/components/local-issuer: signs the CA",
    ("Certificate", "meridian-local-ca", ""): "k8s/components/local-issuer: the CA curl --cacert trusts",
    ("Issuer", "meridian-local-ca", ""): "k8s/components/local-issuer: signs meridian-tls",
}

# The canary objects e2e adds are prod's, but for these (kind, JSON pointer): the namespace and
# its instance label, the namespace whose routes the plugin edits, and prod's 3 replicas (the
# HPA sizes e2e's Rollouts, from 1).
AS_PROD_BUT = {
    ("*", "/metadata/namespace"), ("*", "/metadata/labels/app.kubernetes.io~1instance"),
    ("Rollout", "/spec/strategy/canary/trafficRouting/plugins/argoproj-labs~1gatewayAPI/namespace"),
    ("Rollout", "/spec/replicas"),
    # Two 2-minute steps instead of prod's 17 minutes: the analysis still takes its measurements.
    ("Rollout", "/spec/strategy/canary/steps"),
}


def pointer(path):
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def value_differences(before, after, path=()):
    """JSON pointers where two values differ: a changed scalar, a key only one side has (each
    leaf of a map added or removed whole), or a list whose length changed (the whole list)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            b, a = before.get(key), after.get(key)
            if isinstance(b, dict) or isinstance(a, dict):
                out += value_differences({} if b is None else b, {} if a is None else a, path + (key,))
            elif key not in before or key not in after:
                out.append(pointer(path + (key,)))
            else:
                out += value_differences(b, a, path + (key,))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in value_differences(b, a, path + (i,))]
    return [] if before == after else [pointer(path)]


def key(doc):
    return (doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else "", doc["kind"],
            doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


def differences(dev, e2e):
    """(kind, name, pointer) for every difference from dev to e2e; objects only dev has are
    named with pointer "-" (e2e removes nothing)."""
    dev_objects, e2e_objects = {key(d): d for d in dev}, {key(d): d for d in e2e}
    out = []
    for k in sorted(set(dev_objects) | set(e2e_objects)):
        _, kind, _, name = k
        if k not in e2e_objects:
            out.append((kind, name, "-"))
        elif k not in dev_objects:
            out.append((kind, name, ""))
        else:
            out += [(kind, name, p) for p in value_differences(dev_objects[k], e2e_objects[k])]
    return out


def unexplained(dev, e2e):
    return [d for d in differences(dev, e2e) if d not in ALLOWED]


def unlike_prod(prod, e2e):
    """Where the objects e2e adds for the canary differ from prod's, beyond AS_PROD_BUT."""
    out = []
    for kind, name, path in ALLOWED:
        if path or not ALLOWED[(kind, name, path)].startswith(CANARY):
            continue
        ours, theirs = contract.named(e2e, kind, name), contract.named(prod, kind, name)
        if theirs is None:
            out.append((kind, name, "not in prod"))
            continue
        out += [(kind, name, p) for p in value_differences(theirs, ours)
                if ("*", p) not in AS_PROD_BUT and (kind, p) not in AS_PROD_BUT]
    return out


class TheE2eOverlayIsDevWhereItCan(unittest.TestCase):
    def test_every_difference_from_dev_is_allowed_with_its_reason(self):
        problems = unexplained(DEV, E2E)
        self.assertEqual(problems, [], "e2e differs from dev where ALLOWED gives no reason:\n"
                         + "\n".join(f"  {kind} {name} {path or '(added)'}" for kind, name, path in problems))

    def test_every_allowed_difference_is_there(self):
        # An entry nothing needs any more is a reason the overlay no longer has.
        self.assertEqual(sorted(set(ALLOWED) - set(differences(DEV, E2E))), [])

    def test_the_app_images_are_the_kind_loaded_ones(self):
        for service in ("items", "timezones"):
            container = contract.app_container(E2E, service)[1]
            self.assertEqual(container["image"], f"localhost/meridian-{service}:e2e")
            self.assertIn(container["imagePullPolicy"], ("IfNotPresent", "Never"))

    def test_the_gateway_certificate_comes_from_an_issuer_the_overlay_has(self):
        annotations = contract.named(E2E, "Gateway", "meridian")["metadata"]["annotations"]
        self.assertNotIn("cert-manager.io/cluster-issuer", annotations)
        issuer = contract.named(E2E, "Issuer", annotations["cert-manager.io/issuer"], "cert-manager.io")
        ca = contract.named(E2E, "Certificate", "meridian-local-ca", "cert-manager.io")
        self.assertEqual(issuer["spec"]["ca"]["secretName"], ca["spec"]["secretName"])
        self.assertTrue(ca["spec"]["isCA"])

    def test_the_canary_is_prods(self):
        self.assertEqual(unlike_prod(PROD, E2E), [])

    def test_the_rollouts_edit_routes_in_their_own_namespace(self):
        for rollout in contract.of_kind(E2E, "Rollout", "argoproj.io"):
            self.assertEqual(delivery.gateway_plugin(rollout)["namespace"], rollout["metadata"]["namespace"])
        self.assertEqual(delivery.check_workload_ref_deployments(E2E), [])


def minutes(duration: str) -> float:
    value, unit = float(duration[:-1]), duration[-1]
    return value * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def analysis_verdict_in_time(docs) -> list[str]:
    """The canary's steps must outlast the time the analysis needs to fail a bad canary (its
    initial delay, then failureLimit + 1 failed measurements), or a faulty canary is promoted
    before its verdict; scripts/cluster.sh test asserts the abort."""
    template = contract.named(docs, "AnalysisTemplate", "linkerd-canary", "argoproj.io")
    problems = []
    for rollout in (d for d in docs if d["kind"] == "Rollout"):
        pauses = sum(minutes(step["pause"]["duration"]) for step in rollout["spec"]["strategy"]["canary"]["steps"]
                     if "pause" in step)
        for metric in template["spec"]["metrics"]:
            verdict = minutes(metric["initialDelay"]) + minutes(metric["interval"]) * metric["failureLimit"]
            if pauses <= verdict:
                problems.append(f"Rollout {rollout['metadata']['name']}: steps pause {pauses:g} min, "
                                f"{metric['name']} fails a bad canary only at {verdict:g} min")
    return problems


class TheCanaryIsJudgedBeforeItEnds(unittest.TestCase):
    def test_the_steps_outlast_the_analysis_verdict(self):
        self.assertEqual(analysis_verdict_in_time(E2E), [])

    def test_steps_too_short_are_caught(self):
        e2e = copy.deepcopy(E2E)
        contract.named(e2e, "Rollout", "items", "argoproj.io")["spec"]["strategy"]["canary"]["steps"] = [
            {"setWeight": 50}, {"pause": {"duration": "2m"}}]
        self.assertTrue(analysis_verdict_in_time(e2e))


class TheClusterPiecesFitE2e(unittest.TestCase):
    def test_the_plugin_has_its_rights_in_meridian_dev_only(self):
        self.assertEqual(delivery.check_rollouts_plugin(CLUSTER_E2E, E2E), [])

    def test_no_acme_issuer(self):
        self.assertEqual(contract.of_kind(CLUSTER_E2E, "ClusterIssuer", "cert-manager.io"), [])


class EachCheckCatchesItsMistake(unittest.TestCase):
    def test_an_unrelated_change_is_caught(self):
        e2e = copy.deepcopy(E2E)
        contract.named(e2e, "HorizontalPodAutoscaler", "items")["spec"]["maxReplicas"] = 5
        self.assertIn(("HorizontalPodAutoscaler", "items", "/spec/maxReplicas"), unexplained(DEV, e2e))

    def test_a_removed_or_added_object_is_caught(self):
        e2e = [d for d in copy.deepcopy(E2E) if d["kind"] != "PodDisruptionBudget"]
        e2e.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra", "namespace": "meridian-dev"}})
        problems = unexplained(DEV, e2e)
        self.assertIn(("PodDisruptionBudget", "items", "-"), problems)
        self.assertIn(("ConfigMap", "extra", ""), problems)

    def test_a_lost_difference_is_caught(self):
        # e2e left on dev's placeholder digest: nothing in the cluster would pull.
        e2e = copy.deepcopy(E2E)
        contract.app_container(e2e, "items")[1]["image"] = contract.app_container(DEV, "items")[1]["image"]
        self.assertIn(("Deployment", "items", "/spec/template/spec/containers/0/image"),
                      sorted(set(ALLOWED) - set(differences(DEV, e2e))))

    def test_a_canary_unlike_prods_is_caught(self):
        e2e = copy.deepcopy(E2E)
        contract.named(e2e, "Rollout", "items", "argoproj.io")["spec"]["strategy"]["canary"]["stableService"] = "items"
        self.assertIn(("Rollout", "items", "/spec/strategy/canary/stableService"), unlike_prod(PROD, e2e))

    def test_the_prod_role_is_caught(self):
        problems = delivery.check_rollouts_plugin(contract.render("k8s/cluster"), E2E)
        self.assertIn("the plugin needs ['get', 'update'] on gateway.networking.k8s.io/httproutes in namespace "
                      "meridian-dev", problems)

    def test_a_rollout_editing_prod_routes_is_caught(self):
        e2e = copy.deepcopy(E2E)
        delivery.gateway_plugin(contract.named(e2e, "Rollout", "items", "argoproj.io"))["namespace"] = "meridian-prod"
        self.assertIn(("Rollout", "items", ""), differences(DEV, e2e))
        self.assertTrue(delivery.check_rollouts_plugin(CLUSTER_E2E, e2e))


if __name__ == "__main__":
    unittest.main()
