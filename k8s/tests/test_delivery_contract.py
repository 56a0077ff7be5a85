"""Argo CD's and Argo Rollouts' view of the GitOps, cluster and canary manifests
(contract_delivery.py): the real renders pass, and each check fails on a copy with the mistake
it exists for. Run: python3 -m unittest discover -s k8s/tests -p 'test_*.py'"""

import copy
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import contract  # noqa: E402
import contract_delivery as delivery  # noqa: E402

GITOPS = contract.render("k8s/gitops")
CLUSTER = contract.render("k8s/cluster")
PROD = contract.render("k8s/overlays/prod")


def application(docs, name):
    return contract.named(docs, "Application", name, "argoproj.io")


class TheManifestsHold(unittest.TestCase):
    def test_every_application_and_what_it_renders_is_admitted(self):
        self.assertEqual(delivery.check_applications(GITOPS), [])

    def test_deployments_behind_rollouts_run_no_pods(self):
        self.assertEqual(delivery.check_workload_ref_deployments(PROD), [])

    def test_the_rollouts_plugin_is_current_and_has_its_rights(self):
        self.assertEqual(delivery.check_rollouts_plugin(CLUSTER), [])


class EachCheckCatchesItsMistake(unittest.TestCase):
    def assertCaught(self, problems, fragment):
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_a_destination_without_a_namespace_is_refused(self):
        docs = copy.deepcopy(GITOPS)
        del application(docs, "meridian-platform")["spec"]["destination"]["namespace"]
        self.assertCaught(delivery.check_applications(docs), "destination namespace '' matches none")

    def test_objects_outside_the_projects_namespaces_are_refused(self):
        docs = copy.deepcopy(GITOPS)
        project = contract.named(docs, "AppProject", "meridian", "argoproj.io")
        project["spec"]["destinations"] = [d for d in project["spec"]["destinations"]
                                           if d["namespace"] != "monitoring"]
        self.assertCaught(delivery.check_applications(docs), "PrometheusRule")

    def test_a_cluster_kind_missing_from_the_whitelist_is_refused(self):
        docs = copy.deepcopy(GITOPS)
        project = contract.named(docs, "AppProject", "meridian", "argoproj.io")
        project["spec"]["clusterResourceWhitelist"] = [
            k for k in project["spec"]["clusterResourceWhitelist"] if k["kind"] != "ClusterIssuer"]
        self.assertCaught(delivery.check_applications(docs), "cluster-scoped ClusterIssuer")

    def test_a_deny_pattern_wins_over_a_match(self):
        project = {"spec": {"destinations": [{"server": "*", "namespace": "*"},
                                             {"server": "*", "namespace": "!kube-system"}]}}
        self.assertTrue(delivery.destination_permitted(project, "https://k", "", "meridian-dev"))
        self.assertFalse(delivery.destination_permitted(project, "https://k", "", "kube-system"))

    def test_ignoring_the_deployments_replicas_is_caught(self):
        docs = copy.deepcopy(GITOPS)
        application(docs, "meridian-prod")["spec"]["ignoreDifferences"].append(
            {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]})
        self.assertCaught(delivery.check_applications(docs), "git's 0 is not kept")

    def test_a_deployment_with_replicas_behind_a_rollout_is_caught(self):
        docs = copy.deepcopy(PROD)
        contract.named(docs, "Deployment", "items")["spec"]["replicas"] = 3
        self.assertCaught(delivery.check_workload_ref_deployments(docs), "Deployment items behind Rollout")

    def test_an_old_plugin_or_missing_rights_are_caught(self):
        docs = copy.deepcopy(CLUSTER)
        config = contract.named(docs, "ConfigMap", "argo-rollouts-config")
        config["data"]["trafficRouterPlugins"] = config["data"]["trafficRouterPlugins"].replace(
            delivery.PLUGIN_RELEASE, "v0.8.0")
        role = contract.named(docs, "ClusterRole", "argo-rollouts-gatewayapi")
        role["rules"] = [r for r in role["rules"] if "services" not in r["resources"]]
        role["rules"].append({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})
        problems = delivery.check_rollouts_plugin(docs)
        self.assertCaught(problems, "v0.8.0, not")
        self.assertCaught(problems, "needs ['get'] on core/services")
        self.assertCaught(problems, "grants core/configmaps")


if __name__ == "__main__":
    unittest.main()
