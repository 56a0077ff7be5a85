"""The edge drops `x-request-timeout-ms` from outside requests; only meshed callers set it.

items and timezones shorten a request's deadline to a caller's `x-request-timeout-ms` (`0` is
refused at once with 503), so an outside client sending it through the Gateway or the legacy
Ingress could fail every call it makes, eating the SLO budget and aborting a canary (issue 17).
Each check returns a list of problems, empty when the manifests hold; test_edge_contract.py
runs them on the real renders and shows each failing on a broken copy.

What each controller does with the text, as its own code decides it:

- Gateway API v1.2.1 (config/crd/standard/gateway.networking.k8s.io_httproutes.yaml, the
  `requestHeaderModifier.remove` description): header names in `remove` are case-insensitive,
  and a rule may hold at most one RequestHeaderModifier (the CEL rule "RequestHeaderModifier
  filter cannot be repeated" on `filters`).
- NGINX Gateway Fabric 2.6.7 (internal/controller/nginx/config/servers.go,
  generateProxySetHeaders: each `remove` name becomes a header with value ""; servers_template.go
  renders it as `proxy_set_header NAME "";`).
- ingress-nginx controller v1.15.1, its last release: `allow-snippet-annotations` is false and
  `annotations-risk-level` "High" by default (internal/ingress/controller/config/config.go:765,
  769); `configuration-snippet` is a Critical-risk annotation
  (internal/ingress/annotations/snippet/main.go:36), and the admission webhook refuses an Ingress
  carrying any `*-snippet` annotation while snippets are off ("Snippet directives are disabled by
  the Ingress administrator", internal/ingress/controller/controller.go:403, CheckIngress). No
  other annotation sets or drops a request header. What does: the controller setting
  `proxy-set-headers` (a ConfigMap, namespace/name; config.go:324, read in nginx.go:557),
  rendered into every location as `proxy_set_header KEY "VALUE";`
  (rootfs/etc/nginx/template/nginx.tmpl:1329). The chart's `controller.proxySetHeaders` value
  makes that ConfigMap and points the setting at it
  (charts/ingress-nginx/templates/controller-configmap-proxyheaders.yaml and
  controller-configmap.yaml:23).
- NGINX itself (src/http/modules/ngx_http_proxy_module.c, release-1.31.4): a `proxy_set_header`
  with an empty value is put in the headers hash but not sent (ngx_http_proxy_init_headers,
  line 4299), and a client header found in that hash by its lower-cased name is not passed
  (ngx_http_proxy_create_request, line 1358; ngx_hash_init lower-cases the keys,
  src/core/ngx_hash.c:435). So `X-Request-Timeout-Ms: 0` is dropped as well.
"""

from __future__ import annotations

import yaml

import contract

HEADER = "x-request-timeout-ms"
LEGACY_INGRESS = contract.REPO / "k8s/components/legacy-ingress"
# Helm values for the ingress-nginx controller's chart: not a kustomize resource (the setting
# belongs to the controller, not to this namespace), kept beside the Ingress that needs it.
INGRESS_NGINX_VALUES = LEGACY_INGRESS / "ingress-nginx-values.yaml"
SNIPPET_PREFIX = "nginx.ingress.kubernetes.io/"


def same_header(name: str) -> bool:
    """HTTP header names compare case-insensitively (the Gateway API text cites RFC 2616 4.2)."""
    return name.lower() == HEADER


def parent_kinds(route) -> set[str]:
    """A parentRef's kind defaults to Gateway: only a Service parent makes a mesh (GAMMA) route."""
    return {ref.get("kind", "Gateway") for ref in route["spec"].get("parentRefs", [])}


def header_modifiers(filters) -> list[dict]:
    return [f.get("requestHeaderModifier") or {} for f in filters or [] if f.get("type") == "RequestHeaderModifier"]


def adds_header(filters) -> bool:
    return any(same_header(h["name"]) for m in header_modifiers(filters) for h in [*m.get("add", []), *m.get("set", [])])


def removes_header(filters) -> bool:
    return any(same_header(name) for m in header_modifiers(filters) for name in m.get("remove", []))


def check_gateway_routes(docs) -> list[str]:
    """Every rule of a Gateway's HTTPRoute that sends requests to a service drops the header
    (one RequestHeaderModifier, its `remove` naming it in any case) and nothing on the way adds
    it back; a mesh route (parent a Service) keeps it, since there the caller is meshed."""
    problems = []
    for route in contract.of_kind(docs, "HTTPRoute", "gateway.networking.k8s.io"):
        name, kinds = route["metadata"]["name"], parent_kinds(route)
        for index, rule in enumerate(route["spec"].get("rules", [])):
            where = f"HTTPRoute {name} rule {index}"
            filters = rule.get("filters", [])
            backend_filters = [f for ref in rule.get("backendRefs", []) for f in ref.get("filters", [])]
            if "Gateway" in kinds and rule.get("backendRefs"):
                if len(header_modifiers(filters)) > 1:
                    problems.append(f"{where}: more than one RequestHeaderModifier (the CRD refuses it)")
                if not removes_header(filters):
                    problems.append(f"{where}: an outside request's {HEADER} reaches "
                                    f"{sorted(ref['name'] for ref in rule['backendRefs'])}")
                if adds_header(filters) or adds_header(backend_filters):
                    problems.append(f"{where}: sets {HEADER} on outside requests")
            if kinds == {"Service"} and (removes_header(filters) or removes_header(backend_filters)):
                problems.append(f"{where}: drops {HEADER} between meshed callers, whose deadline must travel")
    return problems


def ingress_nginx_values(path=INGRESS_NGINX_VALUES) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def check_ingresses(docs, values: dict) -> list[str]:
    """Every Ingress is served by ingress-nginx with no snippet annotation (the default
    controller's admission refuses the Ingress), and the controller values drop the header
    through `controller.proxySetHeaders` with an empty value (a non-empty one would send it)."""
    problems = []
    ingresses = contract.of_kind(docs, "Ingress")
    for ingress in ingresses:
        name = ingress["metadata"]["name"]
        if ingress["spec"].get("ingressClassName") != "nginx":
            problems.append(f"Ingress {name}: class {ingress['spec'].get('ingressClassName')!r}, whose "
                            f"controller is not known to drop {HEADER}")
        for key in ingress["metadata"].get("annotations", {}):
            if key.startswith(SNIPPET_PREFIX) and key.endswith("-snippet"):
                problems.append(f"Ingress {name}: {key} is refused by ingress-nginx's defaults "
                                "(allow-snippet-annotations: false)")
    if ingresses:
        headers = (values.get("controller") or {}).get("proxySetHeaders") or {}
        found = {key: value for key, value in headers.items() if same_header(key)}
        if not found:
            problems.append(f"ingress-nginx values: controller.proxySetHeaders does not drop {HEADER}")
        for key, value in found.items():
            if value != "":
                problems.append(f"ingress-nginx values: controller.proxySetHeaders sets {key} to {value!r}; "
                                "only an empty value drops it")
    return problems


# Where an operator of the legacy Ingress reads what the controller must be given, and where
# the edge's behaviour is explained; each must name the chart value and the values file.
SETTING_DOCUMENTED_IN = {
    "k8s/components/legacy-ingress/kustomization.yaml": ("ingress-nginx-values.yaml", "controller.proxySetHeaders"),
    "k8s/components/legacy-ingress/ingress.yaml": ("ingress-nginx-values.yaml",),
    "docs/resilience.md": ("ingress-nginx-values.yaml", "controller.proxySetHeaders", "proxy-set-headers",
                           "RequestHeaderModifier", HEADER),
}


def check_documented(texts: dict[str, str]) -> list[str]:
    """The controller setting the Ingress depends on is stated where the Ingress is, and the
    edge's behaviour in docs/resilience.md."""
    return [f"{path} does not mention {phrase!r}" for path, phrases in SETTING_DOCUMENTED_IN.items()
            for phrase in phrases if phrase not in texts[path]]


def documentation() -> dict[str, str]:
    return {path: (contract.REPO / path).read_text() for path in SETTING_DOCUMENTED_IN}
