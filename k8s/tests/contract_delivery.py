"""What Argo CD and Argo Rollouts will do with the GitOps and canary manifests, as their own
code decides it (each rule cites the upstream file it follows). Each check returns a list of
problems, empty when the manifests hold; test_delivery_contract.py runs them on the real
renders and shows each one failing on a broken copy.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import re

import yaml

import contract
import validate_custom_resources

# Kinds with no namespace, among those the Applications render.
CLUSTER_SCOPED = {"Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "GatewayClass", "IngressClass", "PriorityClass"}
# The Gateway API traffic-router plugin release the canaries use, and the API calls it makes
# (rollouts-plugin-trafficrouter-gatewayapi v0.15.0, pkg/plugin): for each route it is given by
# name, Get then Update (httproute.go, grpcroute.go, tcproute.go, tlsroute.go); List only to
# discover routes by a label selector (plugin.go discoverRoutesBySelector); Services Get only
# when an experiment step adds a backend (experiment.go), which the controller's own ClusterRole
# already grants (argo-rollouts v1.9.1 manifests/role/argo-rollouts-clusterrole.yaml: services
# get, list, watch, patch, create, delete): the plugin runs as the controller's child process,
# with its ServiceAccount. No Watch, Patch, Create or Delete anywhere, no ConfigMaps.
PLUGIN_RELEASE = "v0.15.0"
ROUTE_RESOURCES = {"httpRoutes": "httproutes", "grpcRoutes": "grpcroutes", "tcpRoutes": "tcproutes",
                   "tlsRoutes": "tlsroutes"}
ROLLOUTS_SERVICE_ACCOUNT = ("argo-rollouts", "argo-rollouts")  # (namespace, name)


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


def gateway_plugin(rollout: dict) -> dict | None:
    routing = rollout["spec"].get("strategy", {}).get("canary", {}).get("trafficRouting", {})
    return routing.get("plugins", {}).get("argoproj-labs/gatewayAPI")


def plugin_needs(workload_docs) -> dict[str, dict[tuple[str, str], set[str]]]:
    """Per namespace the plugin edits routes in, the verbs it calls on each resource there."""
    needs: dict[str, dict[tuple[str, str], set[str]]] = {}
    for rollout in contract.of_kind(workload_docs, "Rollout", "argoproj.io"):
        plugin = gateway_plugin(rollout)
        if plugin is None:
            continue
        namespace = plugin.get("namespace") or rollout["metadata"].get("namespace", "")
        for field, resource in ROUTE_RESOURCES.items():
            verbs = needs.setdefault(namespace, {})
            if plugin.get(field) or plugin.get(field[:-1]):
                verbs.setdefault(("gateway.networking.k8s.io", resource), set()).update({"get", "update"})
            if plugin.get(field[:-1] + "Selector"):
                verbs.setdefault(("gateway.networking.k8s.io", resource), set()).update({"get", "update", "list"})
    return needs


def granted_to_rollouts(cluster_docs) -> tuple[dict[str, dict[tuple[str, str], set[str]]], list[str]]:
    """What the Rollouts controller's ServiceAccount is granted by these manifests: per namespace
    through Role + RoleBinding, and the names of ClusterRoles bound to it cluster-wide."""
    def rules_of(role):
        granted: dict[tuple[str, str], set[str]] = {}
        for rule in role.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    granted.setdefault((group, resource), set()).update(rule.get("verbs", []))
        return granted

    def binds_controller(binding):
        return any(s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) == ROLLOUTS_SERVICE_ACCOUNT
                   for s in binding.get("subjects", []))

    per_namespace: dict[str, dict[tuple[str, str], set[str]]] = {}
    for binding in contract.of_kind(cluster_docs, "RoleBinding", "rbac.authorization.k8s.io"):
        namespace = binding["metadata"].get("namespace", "")
        role = next((r for r in contract.of_kind(cluster_docs, binding["roleRef"]["kind"], "rbac.authorization.k8s.io")
                     if r["metadata"]["name"] == binding["roleRef"]["name"]
                     and r["metadata"].get("namespace", namespace) == namespace), None)
        if role is not None and binds_controller(binding):
            for key, verbs in rules_of(role).items():
                per_namespace.setdefault(namespace, {}).setdefault(key, set()).update(verbs)
    cluster_wide = [b["roleRef"]["name"] for b in contract.of_kind(cluster_docs, "ClusterRoleBinding",
                                                                     "rbac.authorization.k8s.io")
                    if binds_controller(b)]
    return per_namespace, cluster_wide


def check_rollouts_plugin(cluster_docs, workload_docs) -> list[str]:
    """The Gateway API plugin is the release named above, and the Rollouts controller gets what
    it calls, where it calls it: a Role in each namespace whose routes it edits (as the plugin's
    docs/installation.md installs it for one namespace), no verb it never calls, nothing
    cluster-wide."""
    problems = []
    config = contract.named(cluster_docs, "ConfigMap", "argo-rollouts-config") or {"data": {}}
    plugins = config["data"].get("trafficRouterPlugins", "")
    release = re.search(r"rollouts-plugin-trafficrouter-gatewayapi/releases/download/([^/]+)/", plugins)
    if not release or release.group(1) != PLUGIN_RELEASE:
        problems.append(f"gatewayAPI plugin {release.group(1) if release else 'missing'}, not {PLUGIN_RELEASE}")
    needs = plugin_needs(workload_docs)
    granted, cluster_wide = granted_to_rollouts(cluster_docs)
    for name in cluster_wide:
        problems.append(f"ClusterRole {name} grants the plugin's rights in every namespace; it edits routes "
                        f"only in {sorted(needs)}")
    for namespace in sorted(set(needs) | set(granted)):
        need, have = needs.get(namespace, {}), granted.get(namespace, {})
        for (group, resource), verbs in sorted(need.items()):
            missing = verbs - have.get((group, resource), set())
            if missing:
                problems.append(f"the plugin needs {sorted(missing)} on {group or 'core'}/{resource} "
                                f"in namespace {namespace}")
        for (group, resource), verbs in sorted(have.items()):
            extra = verbs - need.get((group, resource), set())
            if extra:
                problems.append(f"the Role in namespace {namespace} grants {sorted(extra)} on "
                                f"{group or 'core'}/{resource}, which plugin {PLUGIN_RELEASE} never calls there")
    return problems


# ---------------------------------------------------------------- Argo CD's diff and sync
#
# How Argo CD v3.5.1 compares a resource and what a sync applies, for the fields at stake here
# (argo-cd v3.5.1, with gitops-engine in the same repository):
# - ignoreDifferences (util/argo/normalizers/diff_normalizer.go): a JSON pointer is a JSON-patch
#   `remove`; a jqPathExpression runs as `del(<expr>)` on the whole object (gojq). A patch that
#   fails (a missing key, a jq error) is skipped.
# - Compare with ServerSideApply and without server-side diff (gitops-engine/pkg/diff/diff.go
#   Diff → StructuredMergeDiff): git's object and the live one are each normalized, then git's
#   is merged into the live one as a server-side apply would (atomic lists and maps replaced
#   whole) and compared with it. Defaults are filled in only for kinds in the client's scheme
#   (normalizeTypedValue → patchDefaultValues), never for custom resources.
# - With server-side diff (diff.go serverSideDiff): the API server dry-runs the apply (so CRD
#   defaults are filled in), fields Argo CD does not manage keep their live values
#   (removeWebhookMutation), and only then are the prediction and the live object normalized.
#   It is on for an Application annotated `argocd.argoproj.io/compare-options:
#   ServerSideDiff=true` (controller/state.go); the controller-wide default is off
#   (cmd/argocd-application-controller: --server-side-diff-enabled, default false, and
#   manifests/install.yaml sets no controller.diff.server.side).
# - Sync (controller/sync.go): with RespectIgnoreDifferences=true, normalizeTargetResources
#   copies the live values of the ignored fields into git's object: a merge patch from the
#   normalized live object to the live one (a JSON merge patch for custom resources, which
#   replaces an array whole), applied to the normalized target; then restoreNonIgnoredFields
#   puts back any map entry or leaf where the target's normalization changed nothing. With
#   ApplyOutOfSyncOnly=true, a resource that compares Synced is not applied at all
#   (gitops-engine/pkg/sync WithResourceModificationChecker).
# Not modelled: the legacy three-way diff (every Application here uses ServerSideApply),
# resource tracking labels, managed-fields ignores.

ARGO_CD_RELEASE = "v3.5.1"
COMPARE_OPTIONS = "argocd.argoproj.io/compare-options"
# Built-in fields whose merge differs from the default: Service.spec.selector is
# `+mapType=atomic` (k8s.io/api core/v1 types.go ServiceSpec.Selector), so an apply replaces it
# whole. Built-in kinds' lists are not modelled: the checks never change them.
BUILTIN_SCHEMAS = {
    ("", "Service"): {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "selector": {"type": "object", "x-kubernetes-map-type": "atomic"}}}}},
}
# What Argo Rollouts v1.9.1 writes on the stable and canary Services (rollout/service.go
# switchServiceSelector, a strategic merge patch) and the plugin on the routes it edits
# (pkg/plugin/httproute.go setHTTPRouteWeight with labels.go ensureInProgressLabel; the label's
# default key and value: internal/defaults/defaults.go).
POD_TEMPLATE_HASH = "rollouts-pod-template-hash"
MANAGED_BY_ROLLOUTS = "argo-rollouts.argoproj.io/managed-by-rollouts"
IN_PROGRESS_LABEL = ("rollouts.argoproj.io/gatewayapi-canary", "in-progress")


def sync_options(app: dict) -> set[str]:
    return set(app["spec"].get("syncPolicy", {}).get("syncOptions", []))


def annotation_options(app: dict, key: str) -> set[str]:
    value = app["metadata"].get("annotations", {}).get(key, "")
    return {option.strip() for option in value.split(",") if option.strip()}


def server_side_diff(app: dict) -> bool:
    options = annotation_options(app, COMPARE_OPTIONS)
    return "ServerSideDiff=true" in options and "ServerSideDiff=false" not in options


# -- jq path expressions, the forms ignoreDifferences uses: `.a.b`, `.["k"]`, `["k"]`, `[]`,
#    `[]?`, `select(<path> == "<string>")`, and `|` between them. Anything else is refused.

class JqError(Exception):
    """What gojq would fail on: the normalization patch is then skipped."""


_JQ_STEP = re.compile(r'\.?\["((?:[^"\\]|\\.)*)"\]|\.([A-Za-z_]\w*)|\[\](\?)?|\.')
_JQ_SELECT = re.compile(r'select\((.*)==\s*"((?:[^"\\]|\\.)*)"\s*\)$')


def _jq_steps(text: str) -> list[tuple]:
    text, steps, pos = text.strip(), [], 0
    if not text.startswith((".", "[")):
        raise ValueError(f"unsupported jq path {text!r}")
    while pos < len(text):
        match = _JQ_STEP.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"unsupported jq path {text!r} at {text[pos:]!r}")
        pos = match.end()
        if match.group(1) is not None:
            steps.append(("key", match.group(1)))
        elif match.group(2) is not None:
            steps.append(("key", match.group(2)))
        elif match.group(0).startswith("["):
            steps.append(("iter", match.group(3) == "?"))
    return steps


def _jq_walk(steps, pairs):
    for step in steps:
        out = []
        for path, value in pairs:
            if step[0] == "key":
                if isinstance(value, dict):
                    out.append((path + (step[1],), value.get(step[1])))
                elif value is None:
                    out.append((path + (step[1],), None))
                else:
                    raise JqError(f"cannot index {type(value).__name__} with {step[1]!r}")
            else:
                if isinstance(value, list):
                    out.extend((path + (i,), v) for i, v in enumerate(value))
                elif isinstance(value, dict):
                    out.extend((path + (k,), v) for k, v in value.items())
                elif not step[1]:
                    raise JqError(f"cannot iterate over {value!r}")
        pairs = out
    return pairs


def jq_paths(expression: str, document) -> list[tuple]:
    """path(<expression>) on the document: the paths `del(<expression>)` deletes."""
    pairs = [((), document)]
    for term in expression.split("|"):
        term = term.strip()
        select = _JQ_SELECT.match(term)
        if select:
            steps, wanted = _jq_steps(select.group(1)), select.group(2)
            pairs = [(path, value) for path, value in pairs
                     if any(v == wanted for _, v in _jq_walk(steps, [((), value)]))]
        else:
            pairs = _jq_walk(_jq_steps(term), pairs)
    return [path for path, _ in pairs]


def delete_paths(document, paths):
    for path in sorted(paths, key=lambda p: [str(x) for x in p], reverse=True):
        parent = document
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else (
                parent[key] if isinstance(parent, list) and key < len(parent) else None)
            if parent is None:
                break
        else:
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, list) and path[-1] < len(parent):
                del parent[path[-1]]


def ignores_for(app: dict, doc: dict) -> list[dict]:
    group, kind = api_group(doc), doc["kind"]
    return [item for item in app["spec"].get("ignoreDifferences", [])
            if fnmatch.fnmatchcase(group, item.get("group", "")) and fnmatch.fnmatchcase(kind, item.get("kind", ""))
            and item.get("name", "") in ("", doc["metadata"]["name"])
            and item.get("namespace", "") in ("", doc["metadata"].get("namespace", ""))]


def normalize(app: dict, doc: dict | None) -> dict | None:
    """The object with the Application's ignored fields removed (ignoreNormalizer.Normalize)."""
    if doc is None:
        return None
    doc = copy.deepcopy(doc)
    for item in ignores_for(app, doc):
        for pointer in item.get("jsonPointers", []):
            keys = [k.replace("~1", "/").replace("~0", "~") for k in pointer.strip("/").split("/")]
            keys = [int(k) if k.isdigit() else k for k in keys]
            delete_paths(doc, [tuple(keys)])
        for expression in item.get("jqPathExpressions", []):
            try:
                delete_paths(doc, jq_paths(expression, doc))
            except JqError:
                continue
    return doc


# -- what the API server does with an apply

def _schema_at(schema, key):
    if not schema:
        return None
    if isinstance(key, int):
        return schema.get("items")
    return schema.get("properties", {}).get(key) or (
        schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None)


def server_side_apply(live, config, schema=None):
    """git's object applied over the live one: git's values win; an object's other keys stay
    (another manager's, or defaults) unless the schema makes it atomic; a list is replaced whole
    unless its x-kubernetes-list-type is map (merged by its keys) or set."""
    if isinstance(config, dict) and isinstance(live, dict) and (schema or {}).get("x-kubernetes-map-type") != "atomic":
        merged = copy.deepcopy(live)
        for key, value in config.items():
            merged[key] = server_side_apply(live.get(key), value, _schema_at(schema, key))
        return merged
    if isinstance(config, list) and isinstance(live, list) and (schema or {}).get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        merged = [copy.deepcopy(item) for item in live]
        for item in config:
            index = next((i for i, old in enumerate(merged) if all(old.get(k) == item.get(k) for k in keys)), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = server_side_apply(merged[index], item, schema.get("items"))
        return merged
    return copy.deepcopy(config)


def apply_defaults(value, schema):
    """Structural defaulting as the API server does it for a CRD: a missing property with a
    `default` gets it, then defaulting goes on inside, and inside every array item."""
    if not schema:
        return value
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in list(value):
            value[key] = apply_defaults(value[key], _schema_at(schema, key))
    elif isinstance(value, list):
        return [apply_defaults(item, schema.get("items")) for item in value]
    return value


@functools.lru_cache(maxsize=1)
def _crd_schemas() -> dict[tuple[str, str, str], dict]:
    schemas = {}
    for path in sorted(validate_custom_resources.resolve_crds_dir().rglob("*.y*ml")):
        for crd in yaml.load_all(path.read_text(), Loader=validate_custom_resources.YAML_LOADER):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"].get("versions", []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    schemas[(crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"])] = schema
    return schemas


def schema_of(doc: dict) -> tuple[dict | None, bool]:
    """(schema, is a custom resource) for a rendered object."""
    group, _, version = doc["apiVersion"].rpartition("/")
    if group in validate_custom_resources.BUILTIN_GROUPS:
        return BUILTIN_SCHEMAS.get((group, doc["kind"])), False
    return _crd_schemas().get((group, version, doc["kind"])), True


def stored(doc: dict) -> dict:
    """git's object as the API server stores it after the first apply."""
    schema, custom = schema_of(doc)
    return apply_defaults(copy.deepcopy(doc), schema) if custom else copy.deepcopy(doc)


def in_sync(app: dict, config: dict, live: dict) -> bool:
    """Whether Argo CD compares the resource Synced (see the notes above)."""
    if "ServerSideApply=true" not in sync_options(app):
        raise ValueError(f"Application {app['metadata']['name']}: only ServerSideApply is modelled")
    schema, custom = schema_of(config)
    if server_side_diff(app):
        predicted = server_side_apply(live, config, schema)
        if custom:
            predicted = apply_defaults(predicted, schema)
        return normalize(app, predicted) == normalize(app, live)
    live_n = normalize(app, live)
    return server_side_apply(live_n, normalize(app, config), schema) == live_n


def _merge_patch(original, modified):
    """RFC 7386 merge patch from original to modified (jsonpatch.CreateMergePatch)."""
    if not (isinstance(original, dict) and isinstance(modified, dict)):
        return copy.deepcopy(modified)
    patch = {key: None for key in original if key not in modified}
    for key, value in modified.items():
        if key not in original:
            patch[key] = copy.deepcopy(value)
        elif original[key] != value:
            patch[key] = _merge_patch(original[key], value)
    return patch


def _apply_merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply_merge_patch(result.get(key), value)
    return result


def _restore_non_ignored(patched: dict, original: dict, normalized: dict, normalized_live: dict | None):
    """restoreNonIgnoredFields: where the target's normalization left a field alone, git's
    value goes back; keys the live object brought in that its normalization kept go away."""
    for key, original_value in original.items():
        in_patched, in_normalized = key in patched, key in normalized
        if in_patched and all(isinstance(x, dict) for x in (patched[key], original_value, normalized.get(key))):
            live_sub = (normalized_live or {}).get(key)
            _restore_non_ignored(patched[key], original_value, normalized[key],
                                 live_sub if isinstance(live_sub, dict) else None)
            continue
        if in_normalized and normalized[key] == original_value and (not in_patched or patched[key] != original_value):
            patched[key] = copy.deepcopy(original_value)
    for key in list(patched):
        if key not in original and key in (normalized_live or {}):
            del patched[key]


def sync_target(app: dict, config: dict, live: dict) -> dict:
    """What a sync applies for the resource (normalizeTargetResources when
    RespectIgnoreDifferences=true, else git's object)."""
    if "RespectIgnoreDifferences=true" not in sync_options(app):
        return copy.deepcopy(config)
    live_no_status = {k: v for k, v in live.items() if k != "status"}
    normalized_live = normalize(app, live_no_status)
    normalized_target = normalize(app, config)
    patched = _apply_merge_patch(normalized_target, _merge_patch(normalized_live, live_no_status))
    _restore_non_ignored(patched, config, normalized_target, normalized_live)
    return patched


def after_sync(app: dict, config: dict, live: dict) -> dict:
    """The live object after an automated sync of the Application (self-heal, or a new revision)."""
    if "ApplyOutOfSyncOnly=true" in sync_options(app) and in_sync(app, config, live):
        return live
    schema, custom = schema_of(config)
    applied = server_side_apply(live, sync_target(app, config, live), schema)
    return apply_defaults(applied, schema) if custom else applied


def first_difference(a, b, path="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path or '.'} ({a!r} vs {b!r})"


def _applications_with_rollouts(gitops_docs, render):
    for app in contract.of_kind(gitops_docs, "Application", "argoproj.io"):
        docs = render(app["spec"]["source"]["path"])
        rollouts = [r for r in contract.of_kind(docs, "Rollout", "argoproj.io")]
        if rollouts:
            yield app, docs, rollouts


def check_custom_resources_synced(gitops_docs, render=contract.render) -> list[str]:
    """Every custom resource an Application renders compares Synced once applied: the live
    object is git's with the CRD's defaults filled in, which the client-side structured-merge
    diff does not predict (so an omitted default inside an atomic list, such as an HTTPRoute
    backendRef's group, kind and weight, shows as a difference forever)."""
    problems = []
    for app in contract.of_kind(gitops_docs, "Application", "argoproj.io"):
        for doc in render(app["spec"]["source"]["path"]):
            schema, custom = schema_of(doc)
            if not custom or schema is None:
                continue
            live = stored(doc)
            if not in_sync(app, doc, live):
                predicted = server_side_apply(normalize(app, live), normalize(app, doc), schema)
                problems.append(f"Application {app['metadata']['name']}: {doc['kind']} {doc['metadata']['name']} "
                                f"never shows Synced: the diff predicts "
                                f"{first_difference(predicted, normalize(app, live))} (git vs live, where "
                                "the API server filled in the CRD default)")
    return problems


def _set_weights(route: dict, weights: dict[str, int]) -> dict:
    for rule in route["spec"].get("rules", []):
        names = {b["name"] for b in rule.get("backendRefs", [])}
        if set(weights) <= names:
            for backend in rule["backendRefs"]:
                if backend["name"] in weights:
                    backend["weight"] = weights[backend["name"]]
    return route


def check_canary_routes(gitops_docs, render=contract.render) -> list[str]:
    """For every HTTPRoute a Rollout's plugin edits, as Argo CD v3.5.1 would handle it:
    - at rest (no canary), a change to the route's rules in git reaches the cluster on the next
      sync: RespectIgnoreDifferences must not copy the live `spec.rules` back;
    - during a canary (the plugin has moved the weights and labelled the route), the route
      compares Synced, and a sync of the Application (self-heal, another change merged) leaves
      the plugin's weights alone."""
    problems = []
    for app, docs, rollouts in _applications_with_rollouts(gitops_docs, render):
        name = app["metadata"]["name"]
        for rollout in rollouts:
            plugin = gateway_plugin(rollout)
            canary = rollout["spec"]["strategy"]["canary"]
            for ref in (plugin or {}).get("httpRoutes", []):
                route = contract.named(docs, "HTTPRoute", ref["name"], "gateway.networking.k8s.io")
                if route is None:
                    continue
                # At rest: the cluster still has the previous revision's first rule.
                live = stored(route)
                live["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/previous"}}]
                if in_sync(app, route, live):
                    problems.append(f"Application {name}: a change to HTTPRoute {ref['name']}'s rules is not "
                                    "even seen (the route compares Synced)")
                elif after_sync(app, route, live)["spec"]["rules"] != stored(route)["spec"]["rules"]:
                    problems.append(f"Application {name}: a change to HTTPRoute {ref['name']}'s rules in git never "
                                    "reaches the cluster: RespectIgnoreDifferences copies the live spec.rules "
                                    f"back (argo-cd {ARGO_CD_RELEASE} controller/sync.go normalizeTargetResources)")
                # During a canary: 10% on the canary, the route labelled.
                weights = {canary["stableService"]: 90, canary["canaryService"]: 10}
                live = _set_weights(stored(route), weights)
                live["metadata"].setdefault("labels", {})[IN_PROGRESS_LABEL[0]] = IN_PROGRESS_LABEL[1]
                if not in_sync(app, route, live):
                    problems.append(f"Application {name}: HTTPRoute {ref['name']} is OutOfSync during every canary")
                synced = after_sync(app, route, live)
                if synced["spec"]["rules"] != live["spec"]["rules"]:
                    problems.append(f"Application {name}: a sync during a canary puts git's weights back on "
                                    f"HTTPRoute {ref['name']}")
    return problems


def check_rollout_services(gitops_docs, render=contract.render) -> list[str]:
    """The stable and canary Services of every Rollout, once Argo Rollouts has added the pods'
    hash to their selectors (and its managed-by annotation), compare Synced, and a sync keeps
    the hash, also one that applies a change git made to the Service meanwhile: otherwise
    self-heal and the Rollouts controller overwrite each other."""
    problems = []
    for app, docs, rollouts in _applications_with_rollouts(gitops_docs, render):
        for rollout in rollouts:
            canary = rollout["spec"]["strategy"].get("canary", {})
            for role in ("stableService", "canaryService"):
                service = contract.named(docs, "Service", canary.get(role, ""))
                if service is None:
                    continue
                live = stored(service)
                live["spec"].setdefault("selector", {})[POD_TEMPLATE_HASH] = "5b8c7d9f4"
                live["metadata"].setdefault("annotations", {})[MANAGED_BY_ROLLOUTS] = rollout["metadata"]["name"]
                where = f"Application {app['metadata']['name']}: Service {service['metadata']['name']}"
                if not in_sync(app, service, live):
                    problems.append(f"{where} is OutOfSync whenever Argo Rollouts has set its selector's "
                                    f"{POD_TEMPLATE_HASH}")
                changed = copy.deepcopy(service)
                changed["metadata"].setdefault("annotations", {})["meridian.example.com/changed"] = "true"
                for config in (service, changed):
                    if after_sync(app, config, live)["spec"].get("selector", {}).get(POD_TEMPLATE_HASH) != "5b8c7d9f4":
                        problems.append(f"{where}: a sync {'of a change to it ' if config is changed else ''}drops "
                                        f"the selector's {POD_TEMPLATE_HASH}, and the Rollouts controller puts it "
                                        "back: they overwrite each other")
    return problems


# ---------------------------------------------------------------- mesh routes

# The edge Gateway's data plane ServiceAccount (NGINX Gateway Fabric names it
# <gateway>-<gatewayclass>; mesh/authentications.yaml). NGF sends to the backend Service's
# endpoints, not to the Service: nginx-gateway-fabric v2.6.7
# internal/controller/state/dataplane/configuration.go resolveUpstreamEndpoints →
# internal/controller/state/resolver/resolver.go Resolve, which lists the Service's
# EndpointSlices and returns their addresses (ExternalName Services aside). A meshed caller's
# proxy applies a Service-parented route only to connections to that Service's cluster IP
# (linkerd2 version-2.20 policy-controller runtime/src/lib.rs lookup_ip → index lookup_service,
# keyed by cluster IPs; a pod address gets no Service routes).
GATEWAY_DATA_PLANE_ACCOUNTS = {"meridian-nginx"}


def mesh_callers(docs, service: dict, port: int | None = None) -> set[str]:
    """The meshed identities the namespace's policy lets call the Service's port (every port
    when None) on its pods: the MeshTLSAuthentications of AuthorizationPolicies on a Server for
    those pods and that target port, or on a route of such a Server."""
    selector = service["spec"].get("selector", {})
    ports = {p.get("targetPort", p["port"]) for p in service["spec"]["ports"] if port in (None, p["port"])}
    servers = {s["metadata"]["name"] for s in contract.of_kind(docs, "Server", "policy.linkerd.io")
               if s["spec"]["port"] in ports
               and all(selector.get(k) == v for k, v in s["spec"].get("podSelector", {}).get("matchLabels", {}).items())}
    routes = {r["metadata"]["name"] for r in contract.of_kind(docs, "HTTPRoute", "policy.linkerd.io")
              if any(p.get("kind") == "Server" and p["name"] in servers for p in r["spec"]["parentRefs"])}
    callers = set()
    for policy in contract.of_kind(docs, "AuthorizationPolicy", "policy.linkerd.io"):
        target = policy["spec"]["targetRef"]
        if not ((target["kind"] == "Server" and target["name"] in servers)
                or (target["kind"] == "HTTPRoute" and target["name"] in routes)):
            continue
        for ref in policy["spec"].get("requiredAuthenticationRefs", []):
            if ref["kind"] != "MeshTLSAuthentication":
                continue
            authn = contract.named(docs, "MeshTLSAuthentication", ref["name"], "policy.linkerd.io") or {"spec": {}}
            callers |= {i["name"] for i in authn["spec"].get("identityRefs", []) if i.get("kind") == "ServiceAccount"}
            callers |= set(authn["spec"].get("identities", []))
    return callers


def check_mesh_routes(docs) -> list[str]:
    """A Service-parented (GAMMA) HTTPRoute splits only meshed calls to that Service, so it must
    have a caller that makes them: one the mesh policy admits, other than the Gateway, which
    sends to pod endpoints."""
    problems = []
    for route in contract.of_kind(docs, "HTTPRoute", "gateway.networking.k8s.io"):
        for parent in route["spec"]["parentRefs"]:
            if parent.get("kind") != "Service":
                continue
            service = contract.named(docs, "Service", parent["name"])
            if service is None:
                continue
            callers = mesh_callers(docs, service, parent.get("port"))
            if not callers - GATEWAY_DATA_PLANE_ACCOUNTS:
                problems.append(f"HTTPRoute {route['metadata']['name']} routes nothing: only "
                                f"{sorted(callers) or 'nobody'} may call Service {parent['name']}, and the "
                                "Gateway sends to its endpoints, not through the Service")
    return problems
