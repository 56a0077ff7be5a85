#!/usr/bin/env python3
"""Validate custom resources in rendered manifests against upstream CRD schemas, offline.

Usage: validate_custom_resources.py [--crds DIR] FILE...   (FILE may be '-' for stdin)

Every document whose API group is served by a known CRD is checked against that CRD's
openAPIV3Schema. Unknown fields are rejected: a real cluster silently prunes them, so a
misspelled field would otherwise vanish without any error. Built-in Kubernetes groups are
skipped (left to kubernetes-validate). Exit: 0 all valid, 1 any invalid/unknown, 2 usage/IO error.
"""
import argparse
import copy
import os
import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# The CRDs total a few MB of YAML; the libyaml loader parses them ~10x faster when present.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Pinned upstream sources (see shared/crds/SOURCES.md): file -> raw URL at the pinned commit.
_LINKERD = "https://raw.githubusercontent.com/linkerd/linkerd2/eadc1acf79ad2e766afbdceadb77f1594296fd77/charts/linkerd-crds/templates/"
_GATEWAY = "https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/a8fe5c8732a37ef471d86afaf570ff8ad0ef0221/config/crd/standard/gateway.networking.k8s.io_"
_CERT_MANAGER = "https://raw.githubusercontent.com/cert-manager/cert-manager/24e33194fb39488eff2bbf10c6dc640f407cad44/deploy/crds/cert-manager.io_"
_ROLLOUTS = "https://raw.githubusercontent.com/argoproj/argo-rollouts/b6bd3bcf8f60d717a98763d26acc983db7f97cb0/manifests/crds/"
_ARGO_CD = "https://raw.githubusercontent.com/argoproj/argo-cd/109ca7ca71139e514114499d294a492e7910a965/manifests/crds/"
_SEALED = "https://raw.githubusercontent.com/bitnami-labs/sealed-secrets/6dc880366d1cafa16683173cc3c8e3b58e930937/helm/sealed-secrets/crds/"
_PROMETHEUS = "https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/f8fafd475f3d132e239432ae6172de60a6cb6516/example/prometheus-operator-crd/monitoring.coreos.com_"
PINNED_CRD_URLS = {
    "linkerd/server.yaml": _LINKERD + "policy/server.yaml",
    "linkerd/serverauthorization.yaml": _LINKERD + "policy/server-authorization.yaml",
    "linkerd/authorizationpolicy.yaml": _LINKERD + "policy/authorization-policy.yaml",
    "linkerd/meshtlsauthentication.yaml": _LINKERD + "policy/meshtls-authentication.yaml",
    "linkerd/networkauthentication.yaml": _LINKERD + "policy/network-authentication.yaml",
    "linkerd/httproute.yaml": _LINKERD + "policy/httproute.yaml",
    "linkerd/serviceprofile.yaml": _LINKERD + "serviceprofile.yaml",
    "gateway-api/httproute.yaml": _GATEWAY + "httproutes.yaml",
    "gateway-api/grpcroute.yaml": _GATEWAY + "grpcroutes.yaml",
    "gateway-api/gateway.yaml": _GATEWAY + "gateways.yaml",
    "gateway-api/gatewayclass.yaml": _GATEWAY + "gatewayclasses.yaml",
    "gateway-api/referencegrant.yaml": _GATEWAY + "referencegrants.yaml",
    "cert-manager/certificate.yaml": _CERT_MANAGER + "certificates.yaml",
    "cert-manager/clusterissuer.yaml": _CERT_MANAGER + "clusterissuers.yaml",
    "cert-manager/issuer.yaml": _CERT_MANAGER + "issuers.yaml",
    "argo-rollouts/rollout.yaml": _ROLLOUTS + "rollout-crd.yaml",
    "argo-rollouts/analysistemplate.yaml": _ROLLOUTS + "analysis-template-crd.yaml",
    "argo-rollouts/clusteranalysistemplate.yaml": _ROLLOUTS + "cluster-analysis-template-crd.yaml",
    "argo-rollouts/analysisrun.yaml": _ROLLOUTS + "analysis-run-crd.yaml",
    "argo-cd/application.yaml": _ARGO_CD + "application-crd.yaml",
    "argo-cd/appproject.yaml": _ARGO_CD + "appproject-crd.yaml",
    "sealed-secrets/sealedsecret.yaml": _SEALED + "bitnami.com_sealedsecrets.yaml",
    "prometheus-operator/servicemonitor.yaml": _PROMETHEUS + "servicemonitors.yaml",
    "prometheus-operator/podmonitor.yaml": _PROMETHEUS + "podmonitors.yaml",
    "prometheus-operator/prometheusrule.yaml": _PROMETHEUS + "prometheusrules.yaml",
}

BUILTIN_GROUPS = {
    "", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io", "certificates.k8s.io", "events.k8s.io",
    "flowcontrol.apiserver.k8s.io", "apiregistration.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "resource.k8s.io",
}
# Fields the API server handles itself; CRD schemas often leave them out or describe them loosely.
ROOT_FIELDS = ("apiVersion", "kind", "metadata", "status")


class UsageError(Exception):
    """Bad input or environment: reported on stderr with exit code 2."""


@dataclass
class Result:
    status: str  # "ok", "fail" or "core"
    kind: str
    name: str
    api_version: str
    errors: list = field(default_factory=list)


# ---------------------------------------------------------------- CRD source

def resolve_crds_dir(cli_dir=None):
    """--crds, else $MERIDIAN_CRDS_DIR, else shared/crds beside the repo (or beside the nearest
    parent directory that has one: a CI checkout may sit one level deeper), else the download
    cache."""
    chosen = cli_dir or os.environ.get("MERIDIAN_CRDS_DIR")
    if chosen:
        if not Path(chosen).is_dir():
            raise UsageError(f"CRD directory not found: {chosen}")
        return Path(chosen)
    for ancestor in REPO_ROOT.parents:
        shared = ancestor / "shared" / "crds"
        if shared.is_dir():
            return shared
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meridian" / "crds"
    download_pinned_crds(cache)
    return cache


def download_pinned_crds(cache_dir, timeout=30):
    """Fetch any missing pinned CRD file into cache_dir (same layout as shared/crds)."""
    for rel, url in PINNED_CRD_URLS.items():
        target = cache_dir / rel
        if target.exists():
            continue
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                text = response.read().decode("utf-8")
        except OSError as exc:  # URLError and socket timeouts are OSErrors
            raise UsageError(f"failed to download CRD {url}: {exc}") from exc
        if rel.startswith("linkerd/"):
            text = strip_helm_metadata_lines(text)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")  # rename so a crash never leaves a half file
        partial.write_text(f"# Source: {url}\n{text}", encoding="utf-8")
        partial.replace(target)


def strip_helm_metadata_lines(text):
    """Linkerd CRDs are Helm templates whose only directives sit in metadata; drop those lines."""
    out, in_spec = [], False
    for line in text.splitlines(keepends=True):
        in_spec = in_spec or line.startswith("spec:")
        if in_spec or "{{" not in line:
            out.append(line)
    return "".join(out)


def load_crd_schemas(crds_dir):
    """Map (group, version, kind) -> strict JSON schema for every served CRD version."""
    schemas = {}
    for path in sorted(Path(crds_dir).rglob("*.y*ml")):
        try:
            docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=YAML_LOADER))
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read CRD file {path}: {exc}") from exc
        for crd in docs:
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec.get("versions", []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if version.get("served") and schema is not None:
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    schemas[key] = to_strict_json_schema(schema)
    if not schemas:
        raise UsageError(f"no CustomResourceDefinitions found under {crds_dir}")
    return schemas


# ---------------------------------------------------------------- schema conversion

def to_strict_json_schema(openapi_schema):
    schema = _convert(copy.deepcopy(openapi_schema), structural=True)
    properties = schema.setdefault("properties", {})
    for name in ROOT_FIELDS:
        properties.setdefault(name, {})
    return schema


def _convert(node, structural):
    """Rewrite a Kubernetes OpenAPI v3 schema node into plain JSON Schema, in place.

    `structural` is False inside allOf/anyOf/oneOf/not: Kubernetes only lets those branches
    constrain fields already declared in the main schema, so closing objects there would
    wrongly reject fields declared next to them.
    """
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        node["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in node:
        node["type"] = [*(node["type"] if isinstance(node["type"], list) else [node["type"]]), "null"]
    if isinstance(node.get("pattern"), str):
        pattern = _python_pattern(node.pop("pattern"))
        if pattern is not None:
            node["pattern"] = pattern
    preserve_unknown = node.get("x-kubernetes-preserve-unknown-fields") is True
    if structural and "properties" in node and "additionalProperties" not in node and not preserve_unknown:
        node["additionalProperties"] = False
    for key in [k for k in node if k.startswith("x-kubernetes-") or k == "nullable"]:
        del node[key]
    for name, sub in node.get("properties", {}).items():
        node["properties"][name] = _convert(sub, structural)
    if isinstance(node.get("additionalProperties"), dict):
        _convert(node["additionalProperties"], structural)
    items = node.get("items")
    for sub in items if isinstance(items, list) else [items]:
        _convert(sub, structural)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(keyword, []):
            _convert(sub, structural=False)
    _convert(node.get("not"), structural=False)
    return node


def _python_pattern(pattern):
    """CRD patterns are Go RE2; Python rejects e.g. `^(?i)x` (flags must lead), so move such flags
    to the front. A pattern Python still cannot compile is dropped rather than crashing validation."""
    candidates = [pattern, "".join(re.findall(r"\(\?[aiLmsux]+\)", pattern)) + re.sub(r"\(\?[aiLmsux]+\)", "", pattern)]
    for candidate in candidates:
        try:
            re.compile(candidate)
            return candidate
        except re.error:
            pass
    return None


# ---------------------------------------------------------------- validation

def iter_resources(docs):
    """Yield resource dicts, flattening `kind: List` and skipping empty documents."""
    for doc in docs:
        if not doc:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from iter_resources(doc["items"])
        else:
            yield doc


def format_path(path):
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def validate_documents(docs, schemas):
    """Validate parsed YAML documents; return one Result per resource."""
    crd_groups = {group for group, _, _ in schemas}
    validators, results = {}, []
    for doc in iter_resources(docs):
        if not isinstance(doc, dict):
            results.append(Result("fail", "?", "?", "?", [f"document is not a mapping: {doc!r:.60}"]))
            continue
        api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        name = str((doc.get("metadata") or {}).get("name", "<unnamed>"))
        if not api_version or not kind:
            results.append(Result("fail", kind or "?", name, api_version, ["missing apiVersion or kind"]))
            continue
        group, _, version = api_version.rpartition("/")
        key = (group, version, kind)
        if group in crd_groups:
            if key not in schemas:
                results.append(Result("fail", kind, name, api_version, [f"unknown kind/version {kind} in {api_version}"]))
                continue
            if key not in validators:
                validators[key] = jsonschema.Draft7Validator(schemas[key])
            # By path; at one path, put vague oneOf/anyOf summaries after the specific errors.
            errors = sorted(validators[key].iter_errors(doc),
                            key=lambda e: (format_path(e.absolute_path), e.validator in ("oneOf", "anyOf")))
            messages = [f"{format_path(e.absolute_path)}: {_shorten(e.message)}" for e in errors]
            results.append(Result("fail" if messages else "ok", kind, name, api_version, messages))
        elif group in BUILTIN_GROUPS:
            results.append(Result("core", kind, name, api_version))
        else:
            results.append(Result("fail", kind, name, api_version, [f"no CRD schema for group {group}: unknown kind"]))
    return results


def _shorten(message, limit=200):
    # oneOf/anyOf messages embed the whole offending value; keep lines readable.
    return message if len(message) <= limit else message[: limit - 3] + "..."


def read_documents(file_arg):
    try:
        text = sys.stdin.read() if file_arg == "-" else Path(file_arg).read_text(encoding="utf-8")
        return list(yaml.load_all(text, Loader=YAML_LOADER))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {file_arg}: {exc}") from exc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", metavar="DIR", help="directory of CRD YAML files (default: $MERIDIAN_CRDS_DIR, else ../shared/crds beside the repo, else a download cache)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="multi-document YAML, '-' for stdin")
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        schemas = load_crd_schemas(resolve_crds_dir(args.crds))
        docs = [doc for file_arg in args.files for doc in read_documents(file_arg)]
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = validate_documents(docs, schemas)
    for r in results:
        if r.status == "ok":
            print(f"ok   {r.kind}/{r.name} ({r.api_version})")
        elif r.status == "fail":
            print(f"FAIL {r.kind}/{r.name}: {'; '.join(r.errors[:3])}")
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "fail", "core")}
    print(f"custom resources: {counts['ok']} valid, {counts['fail']} invalid, {counts['core']} core skipped")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
