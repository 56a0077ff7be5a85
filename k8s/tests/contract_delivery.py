"""What Argo CD and Argo Rollouts will do with the GitOps and canary manifests, as their own
code decides it (each rule cites the upstream file it follows). Each check returns a list of
problems, empty when the manifests hold; test_delivery_contract.py runs them on the real
renders and shows each one failing on a broken copy.
"""

from __future__ import annotations

import fnmatch
import re

import contract

# Kinds with no namespace, among those the Applications render.
CLUSTER_SCOPED = {"Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "GatewayClass", "IngressClass", "PriorityClass"}
# The Gateway API traffic-router plugin release the canaries use, and the rights it needs:
# its docs/installation.md ClusterRole, checked against the API calls in pkg/plugin (v0.15.0
# reads Services for experiment steps and no longer keeps state in ConfigMaps).
PLUGIN_RELEASE = "v0.15.0"
PLUGIN_RULES = {
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "update", "patch"},
    ("", "services"): {"get"},
}


def glob_match(pattern: str, value: str) -> bool:
    """Argo CD's globMatch (pkg/apis/application/v1alpha1/app_project_types.go): '*' matches
    anything, '!' negates, otherwise a glob; an empty value matches only an empty pattern."""
    if pattern.startswith("!"):
        return not fnmatch.fnmatchcase(value, pattern[1:])
    return pattern == "*" or fnmatch.fnmatchcase(value, pattern)


def destination_permitted(project: dict, server: str, name: str, namespace: str) -> bool:
    """AppProject.isDestinationMatched: some destination matches by server or name and by
    namespace, and no deny pattern ('!…') fails."""
    any_matched, deny_failed = False, False
    for item in project["spec"].get("destinations", []):
        name_ok = bool(name) and glob_match(item.get("name", ""), name)
        server_ok = bool(server) and glob_match(item.get("server", ""), server)
        namespace_ok = glob_match(item.get("namespace", ""), namespace)
        if (server_ok or name_ok) and namespace_ok:
            any_matched = True
        elif any(not ok and pattern.startswith("!") for ok, pattern in (
                (name_ok, item.get("name", "")), (server_ok, item.get("server", "")),
                (namespace_ok, item.get("namespace", "")))):
            deny_failed = True
    return any_matched and not deny_failed


def kind_whitelisted(project: dict, group: str, kind: str) -> bool:
    """IsGroupKindPermitted for a cluster-scoped kind: it must be in clusterResourceWhitelist."""
    return any(fnmatch.fnmatchcase(kind, item["kind"]) and fnmatch.fnmatchcase(group, item["group"])
               for item in project["spec"].get("clusterResourceWhitelist", []))


def api_group(doc: dict) -> str:
    return doc["apiVersion"].rpartition("/")[0]


def ignores_deployment_replicas(app: dict) -> bool:
    return any(item.get("group") == "apps" and item.get("kind") == "Deployment"
               and "/spec/replicas" in item.get("jsonPointers", [])
               for item in app["spec"].get("ignoreDifferences", []))


def check_applications(gitops_docs, render=contract.render) -> list[str]:
    """Every Application is admitted by its AppProject, and so is every object it renders, as
    Argo CD decides: the destination (util/argo ValidatePermissions → IsDestinationPermitted),
    each cluster-scoped kind (clusterResourceWhitelist) and each namespaced object's namespace,
    its own or else the destination's (IsLiveResourcePermitted). An Application whose render
    holds workloadRef Rollouts must not ignore its Deployments' replicas: git's 0 is the state
    Argo CD keeps."""
    problems = []
    for app in contract.of_kind(gitops_docs, "Application", "argoproj.io"):
        name, spec = app["metadata"]["name"], app["spec"]
        project = contract.named(gitops_docs, "AppProject", spec.get("project", "default"), "argoproj.io")
        if project is None:
            problems.append(f"Application {name}: AppProject {spec.get('project')!r} is not defined")
            continue
        dest = spec["destination"]
        server, cluster, namespace = dest.get("server", ""), dest.get("name", ""), dest.get("namespace", "")
        if not destination_permitted(project, server, cluster, namespace):
            problems.append(f"Application {name}: destination namespace {namespace!r} matches none of "
                            f"project {project['metadata']['name']}'s destinations")
        rendered = render(spec["source"]["path"])
        for doc in rendered:
            kind = doc["kind"]
            if kind in CLUSTER_SCOPED:
                if not kind_whitelisted(project, api_group(doc), kind):
                    problems.append(f"Application {name}: cluster-scoped {kind} is not in the project's "
                                    "clusterResourceWhitelist")
                continue
            where = doc["metadata"].get("namespace") or namespace
            if not destination_permitted(project, server, cluster, where):
                problems.append(f"Application {name}: {kind} {doc['metadata']['name']} in namespace "
                                f"{where!r}, which the project does not permit")
        if any(r["spec"].get("workloadRef") for r in contract.of_kind(rendered, "Rollout", "argoproj.io")) \
                and ignores_deployment_replicas(app):
            problems.append(f"Application {name} ignores its Deployments' replicas, so git's 0 is "
                            "not kept")
    return problems


def check_workload_ref_deployments(docs) -> list[str]:
    """A Deployment a Rollout takes its template from (workloadRef) runs no pods itself. Argo
    Rollouts scales it to zero only for the Rollout's first revision (v1.9.1 rollout/sync.go:
    `revision == 1 && … ScaleDownOnSuccess`), so replicas above 0 in git come back on every
    later apply, with the new template and outside the canary."""
    problems = []
    for rollout in contract.of_kind(docs, "Rollout", "argoproj.io"):
        ref = rollout["spec"].get("workloadRef")
        if not ref or ref.get("kind") != "Deployment":
            continue
        deployment = contract.named(docs, "Deployment", ref["name"])
        if deployment is not None and deployment["spec"].get("replicas", 1) != 0:
            problems.append(f"Deployment {ref['name']} behind Rollout {rollout['metadata']['name']} has "
                            f"replicas {deployment['spec'].get('replicas', 1)}, not 0")
    return problems


def check_rollouts_plugin(cluster_docs) -> list[str]:
    """The Gateway API plugin is the release named above, and the controller's ClusterRole grants
    what that release calls."""
    problems = []
    config = contract.named(cluster_docs, "ConfigMap", "argo-rollouts-config") or {"data": {}}
    plugins = config["data"].get("trafficRouterPlugins", "")
    release = re.search(r"rollouts-plugin-trafficrouter-gatewayapi/releases/download/([^/]+)/", plugins)
    if not release or release.group(1) != PLUGIN_RELEASE:
        problems.append(f"gatewayAPI plugin {release.group(1) if release else 'missing'}, not {PLUGIN_RELEASE}")
    granted: dict[tuple[str, str], set[str]] = {}
    role = contract.named(cluster_docs, "ClusterRole", "argo-rollouts-gatewayapi") or {}
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                granted.setdefault((group, resource), set()).update(rule.get("verbs", []))
    for (group, resource), verbs in PLUGIN_RULES.items():
        missing = verbs - granted.get((group, resource), set())
        if missing:
            problems.append(f"the plugin needs {sorted(missing)} on {group or 'core'}/{resource}")
    for group, resource in granted:
        if (group, resource) not in PLUGIN_RULES:
            problems.append(f"the ClusterRole grants {group or 'core'}/{resource}, which "
                            f"plugin {PLUGIN_RELEASE} never calls")
    return problems
