"""Argo CD's and Argo Rollouts' view of the GitOps, cluster and canary manifests
(contract_delivery.py): the real renders pass, and each check fails on a copy with the mistake
it exists for. Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'"""

import copy
import functools
import json
import pathlib
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402
import contract_delivery as delivery  # noqa: E402

@functools.lru_cache(maxsize=None)
def _rendered(path):
    return contract.render(path)


def render(path):
    """contract.render, once per path (the checks render each Application's source)."""
    return copy.deepcopy(_rendered(path))


GITOPS = render("k8s/gitops")
CLUSTER = render("k8s/cluster")
PROD = render("k8s/overlays/prod")


def application(docs, name):
    return contract.named(docs, "Application", name, "argoproj.io")


class TheManifestsHold(unittest.TestCase):
    def test_every_application_and_what_it_renders_is_admitted(self):
        self.assertEqual(delivery.check_applications(GITOPS, render), [])

    def test_deployments_behind_rollouts_run_no_pods(self):
        self.assertEqual(delivery.check_workload_ref_deployments(PROD), [])

    def test_the_rollouts_plugin_is_current_and_has_its_rights(self):
        self.assertEqual(delivery.check_rollouts_plugin(CLUSTER, PROD), [])

    def test_custom_resources_compare_synced(self):
        self.assertEqual(delivery.check_custom_resources_synced(GITOPS, render), [])

    def test_route_rules_reach_the_cluster_and_canary_weights_stay(self):
        self.assertEqual(delivery.check_canary_routes(GITOPS, render), [])

    def test_rollouts_services_keep_their_hash(self):
        self.assertEqual(delivery.check_rollout_services(GITOPS, render), [])

    def test_every_mesh_route_has_meshed_callers(self):
        self.assertEqual(delivery.check_mesh_routes(PROD), [])


class EachCheckCatchesItsMistake(unittest.TestCase):
    def assertCaught(self, problems, fragment):
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_a_destination_without_a_namespace_is_refused(self):
        docs = copy.deepcopy(GITOPS)
        del application(docs, "meridian-platform")["spec"]["destination"]["namespace"]
        self.assertCaught(delivery.check_applications(docs, render), "destination namespace '' matches none")

    def test_objects_outside_the_projects_namespaces_are_refused(self):
        docs = copy.deepcopy(GITOPS)
        project = contract.named(docs, "AppProject", "meridian", "argoproj.io")
        project["spec"]["destinations"] = [d for d in project["spec"]["destinations"]
                                           if d["namespace"] != "monitoring"]
        self.assertCaught(delivery.check_applications(docs, render), "PrometheusRule")

    def test_a_cluster_kind_missing_from_the_whitelist_is_refused(self):
        docs = copy.deepcopy(GITOPS)
        project = contract.named(docs, "AppProject", "meridian", "argoproj.io")
        project["spec"]["clusterResourceWhitelist"] = [
            k for k in project["spec"]["clusterResourceWhitelist"] if k["kind"] != "ClusterIssuer"]
        self.assertCaught(delivery.check_applications(docs, render), "cluster-scoped ClusterIssuer")

    def test_a_deny_pattern_wins_over_a_match(self):
        project = {"spec": {"destinations": [{"server": "*", "namespace": "*"},
                                             {"server": "*", "namespace": "!kube-system"}]}}
        self.assertTrue(delivery.destination_permitted(project, "https://k", "", "meridian-dev"))
        self.assertFalse(delivery.destination_permitted(project, "https://k", "", "kube-system"))

    def test_ignoring_the_deployments_replicas_is_caught(self):
        docs = copy.deepcopy(GITOPS)
        application(docs, "meridian-prod")["spec"]["ignoreDifferences"].append(
            {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]})
        self.assertCaught(delivery.check_applications(docs, render), "git's 0 is not kept")

    def test_a_deployment_with_replicas_behind_a_rollout_is_caught(self):
        docs = copy.deepcopy(PROD)
        contract.named(docs, "Deployment", "items")["spec"]["replicas"] = 3
        self.assertCaught(delivery.check_workload_ref_deployments(docs), "Deployment items behind Rollout")

    def test_an_old_plugin_or_missing_rights_are_caught(self):
        docs = copy.deepcopy(CLUSTER)
        config = contract.named(docs, "ConfigMap", "argo-rollouts-config")
        config["data"]["trafficRouterPlugins"] = config["data"]["trafficRouterPlugins"].replace(
            delivery.PLUGIN_RELEASE, "v0.8.0")
        role = contract.named(docs, "Role", "argo-rollouts-gatewayapi")
        role["rules"][0]["verbs"] = ["get"]
        role["rules"].append({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})
        problems = delivery.check_rollouts_plugin(docs, PROD)
        self.assertCaught(problems, "v0.8.0, not")
        self.assertCaught(problems, "needs ['update'] on gateway.networking.k8s.io/httproutes in namespace meridian-prod")
        self.assertCaught(problems, "grants ['get'] on core/configmaps")

    def test_rights_the_plugin_never_uses_or_cluster_wide_are_caught(self):
        docs = copy.deepcopy(CLUSTER)
        contract.named(docs, "Role", "argo-rollouts-gatewayapi")["rules"][0]["verbs"] += ["list", "watch", "patch"]
        self.assertCaught(delivery.check_rollouts_plugin(docs, PROD),
                          "grants ['list', 'patch', 'watch'] on gateway.networking.k8s.io/httproutes")
        docs = copy.deepcopy(CLUSTER)
        for doc in docs:
            if doc["kind"] in ("Role", "RoleBinding"):
                doc["kind"] = "Cluster" + doc["kind"]
                doc["metadata"].pop("namespace")
        doc = contract.named(docs, "ClusterRoleBinding", "argo-rollouts-gatewayapi")
        doc["roleRef"]["kind"] = "ClusterRole"
        problems = delivery.check_rollouts_plugin(docs, PROD)
        self.assertCaught(problems, "ClusterRole argo-rollouts-gatewayapi grants the plugin's rights in every namespace")
        self.assertCaught(problems, "needs ['get', 'update'] on gateway.networking.k8s.io/httproutes in namespace "
                                    "meridian-prod")
        # A Rollout in another namespace needs a Role there too.
        prod = copy.deepcopy(PROD)
        delivery.gateway_plugin(contract.named(prod, "Rollout", "items", "argoproj.io"))["namespace"] = "meridian-qa"
        self.assertCaught(delivery.check_rollouts_plugin(CLUSTER, prod), "in namespace meridian-qa")

    def prod_app(self, docs):
        return application(docs, "meridian-prod")

    def test_without_server_side_diff_gateway_objects_never_sync(self):
        docs = copy.deepcopy(GITOPS)
        for app in contract.of_kind(docs, "Application", "argoproj.io"):
            del app["metadata"]["annotations"][delivery.COMPARE_OPTIONS]
        problems = delivery.check_custom_resources_synced(docs, render)
        self.assertCaught(problems, "meridian-prod: HTTPRoute items never shows Synced: the diff predicts "
                                    ".spec.parentRefs[0].group (None vs 'gateway.networking.k8s.io')")
        self.assertCaught(problems, "meridian-dev: Gateway meridian never shows Synced")
        self.assertCaught(problems, "meridian-platform: ClusterIssuer letsencrypt-prod never shows Synced")

    def test_ignoring_the_weights_alone_keeps_git_rules_out(self):
        docs = copy.deepcopy(GITOPS)
        route_ignore = next(i for i in self.prod_app(docs)["spec"]["ignoreDifferences"] if i["kind"] == "HTTPRoute")
        route_ignore["jqPathExpressions"] = [".spec.rules[].backendRefs[]?.weight"]
        self.assertCaught(delivery.check_canary_routes(docs, render),
                          "a change to HTTPRoute items's rules in git never reaches the cluster")

    def test_a_sync_during_a_canary_resetting_the_weights_is_caught(self):
        docs = copy.deepcopy(GITOPS)
        self.prod_app(docs)["spec"]["syncPolicy"]["syncOptions"].remove("ApplyOutOfSyncOnly=true")
        self.assertCaught(delivery.check_canary_routes(docs, render), "a sync during a canary puts git's weights back on "
                                                             "HTTPRoute timezones-mesh")
        docs = copy.deepcopy(GITOPS)
        del self.prod_app(docs)["metadata"]["annotations"][delivery.COMPARE_OPTIONS]
        self.assertCaught(delivery.check_canary_routes(docs, render), "HTTPRoute items is OutOfSync during every canary")

    def test_services_fighting_the_rollouts_controller_are_caught(self):
        docs = copy.deepcopy(GITOPS)
        app = self.prod_app(docs)
        app["spec"]["ignoreDifferences"] = [i for i in app["spec"]["ignoreDifferences"] if i["kind"] != "Service"]
        problems = delivery.check_rollout_services(docs, render)
        self.assertCaught(problems, "Service items-stable is OutOfSync whenever Argo Rollouts has set")
        self.assertCaught(problems, "Service timezones-canary: a sync drops the selector's rollouts-pod-template-hash")
        docs = copy.deepcopy(GITOPS)
        self.prod_app(docs)["spec"]["syncPolicy"]["syncOptions"].remove("RespectIgnoreDifferences=true")
        self.assertCaught(delivery.check_rollout_services(docs, render),
                          "Service items-canary: a sync of a change to it drops the selector's")

    def test_a_mesh_route_only_the_gateway_would_use_is_caught(self):
        docs = copy.deepcopy(PROD)
        mesh_route = copy.deepcopy(contract.named(docs, "HTTPRoute", "timezones-mesh", "gateway.networking.k8s.io"))
        mesh_route["metadata"]["name"] = "items-mesh"
        mesh_route["spec"]["parentRefs"] = [{"group": "core", "kind": "Service", "name": "items", "port": 8080}]
        docs.append(mesh_route)
        self.assertCaught(delivery.check_mesh_routes(docs), "HTTPRoute items-mesh routes nothing: only "
                                                           "['meridian-nginx'] may call Service items")


class ArgoCdModel(unittest.TestCase):
    """The pieces of Argo CD's behaviour the checks rebuild."""

    @unittest.skipUnless(shutil.which("jq"), "jq is not installed")
    def test_jq_paths_agree_with_jq(self):
        route = delivery.stored(contract.named(PROD, "HTTPRoute", "items", "gateway.networking.k8s.io"))
        labelled = copy.deepcopy(route)
        labelled["metadata"].setdefault("labels", {})[delivery.IN_PROGRESS_LABEL[0]] = delivery.IN_PROGRESS_LABEL[1]
        expressions = [e for app in contract.of_kind(GITOPS, "Application", "argoproj.io")
                       for i in app["spec"].get("ignoreDifferences", []) for e in i.get("jqPathExpressions", [])]
        expressions.append(".spec.rules[].backendRefs[]?.weight")
        for expression in expressions:
            for doc in (route, labelled, contract.named(PROD, "Service", "items")):
                with self.subTest(expression=expression, kind=doc["kind"], labels=doc["metadata"].get("labels")):
                    real = subprocess.run(["jq", "-c", f"del({expression})"], input=json.dumps(doc),
                                          capture_output=True, text=True)
                    mine = copy.deepcopy(doc)
                    try:
                        delivery.delete_paths(mine, delivery.jq_paths(expression, mine))
                    except delivery.JqError:
                        self.assertNotEqual(real.returncode, 0, "jq succeeds where the model fails")
                        continue
                    self.assertEqual(real.returncode, 0, real.stderr)
                    self.assertEqual(mine, json.loads(real.stdout))

    def test_restore_keeps_git_where_the_target_was_not_normalized(self):
        app = {"spec": {"ignoreDifferences": [{"group": "g", "kind": "K", "jqPathExpressions": [
            'select(.metadata.labels["x"] == "y") | .spec.rules']}],
            "syncPolicy": {"syncOptions": ["RespectIgnoreDifferences=true"]}}}
        git = {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"rules": [1]}}
        live = {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "n", "labels": {"x": "y"}}, "spec": {"rules": [2]}}
        # The label is on the live object only: git's rules are applied (controller/sync.go).
        self.assertEqual(delivery.sync_target(app, git, live)["spec"]["rules"], [1])
        app["spec"]["ignoreDifferences"][0]["jqPathExpressions"] = [".spec.rules"]
        self.assertEqual(delivery.sync_target(app, git, live)["spec"]["rules"], [2])


if __name__ == "__main__":
    unittest.main()
