#!/usr/bin/env python3
"""Evaluates every PromQL expression in the Grafana dashboards and the Prometheus rules
against a running Prometheus, and fails on any expression that

  * names a metric that neither our services export, nor our recording rules record, nor a
    known external source (Linkerd proxy, kube-state-metrics) provides, or
  * uses only metrics we produce and still returns no data, or does not parse.

Expressions over Linkerd or kube-state-metrics metrics cannot return data without a mesh or a
cluster: they are syntax-checked with `promtool check rules` and listed as such.

Usage: check_queries.py PROMETHEUS_URL METRICS_URL... (the services' /metrics endpoints)
"""
import json
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
EXTERNAL = {
    "mesh (Linkerd proxy)": re.compile(r"^(request_total|response_total|response_latency_ms_(bucket|sum|count)|tcp_.*|outbound_.*|inbound_.*)$"),
    "cluster (kube-state-metrics)": re.compile(r"^kube_.*$"),
}
# Grafana variables, replaced by values that exist in the local run.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$service": "items",
    "$namespace": "meridian-.*",
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "le",
}


def expressions():
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            if panel["datasource"]["type"] != "prometheus":
                continue
            for target in panel["targets"]:
                yield f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"]
    rules = yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            yield f"rules.yml: {name}", rule["expr"]


def substitute(expr):
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr):
    """Identifiers that are metric names: not functions, keywords, labels or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    text = re.sub(r"\{[^}]*\}", "", text)                    # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                   # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exported_names(metrics_urls):
    names = {"up"}
    for url in metrics_urls:
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        for line in body.splitlines():
            if line and not line.startswith("#"):
                names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def query(prometheus, expr):
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return json.load(urllib.request.urlopen(url, timeout=10))
    except urllib.error.HTTPError as e:
        return json.load(e)


def promtool_syntax(exprs):
    rules = {"groups": [{"name": "syntax", "rules": [
        {"record": f"syntax:check_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rules, f)
        f.flush()
        result = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr


def classify(names, known):
    """(unknown names, external sources) of an expression's metric names."""
    unknown = sorted(n for n in names if n not in known and not any(p.match(n) for p in EXTERNAL.values()))
    external = sorted({kind for n in names for kind, p in EXTERNAL.items() if p.match(n)})
    return unknown, external


def recorded_names():
    rules = yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def main():
    prometheus, metrics_urls = sys.argv[1], sys.argv[2:]
    known = exported_names(metrics_urls) | recorded_names()
    failures, needs_elsewhere, passed = [], [], 0
    for where, raw in expressions():
        expr = substitute(raw)
        unknown, external = classify(metric_names(expr), known)
        if unknown:
            failures.append(f"{where}: unknown metric(s) {', '.join(unknown)}")
            continue
        if external:
            needs_elsewhere.append((where, " and ".join(external), expr))
            continue
        answer = query(prometheus, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            failures.append(f"{where}: no data for {expr!r}")
        else:
            passed += 1
            print(f"  data  {where}: {len(answer['data']['result'])} series")
    ok, output = promtool_syntax([expr for _, _, expr in needs_elsewhere])
    if not ok:
        failures.append(f"promtool rejected an expression that needs a mesh or cluster:\n{output}")
    for where, kind, _ in needs_elsewhere:
        print(f"  needs {kind}: {where} (syntax checked by promtool)")
    print(f"\n{passed} expressions returned data; {len(needs_elsewhere)} need a mesh or cluster "
          f"(syntax {'valid' if ok else 'INVALID'}); {len(failures)} failed")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
