#!/usr/bin/env python3
"""On the live cluster: are both services scraped through the mesh, and do the dashboards'
main panels return data? Prints one line per check; a line with MISSING fails the assertion.

Usage: dashboard_data.py PROMETHEUS_URL NAMESPACE
"""
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parents[2] / "observability/grafana/dashboards"
# The panels an operator opens first: traffic, errors, latency, the hop, saturation, replicas.
# (Error ratio panels are left out: with no 5xx they are rightly empty.)
MAIN_PANELS = {
    "meridian-services.json": [
        "Requests per second by route",
        "Latency p99 by route",
        "Responses by status",
        "Calls to timezones by outcome",
        "Items stored",
        "Versions running",
        "Replicas (HPA): current, desired, max",
    ],
    "meridian-mesh.json": [
        "items → timezones: success rate (Linkerd)",
        "items → timezones: requests per second",
        "items → timezones: latency p50, p95, p99",
        "mTLS share of inbound traffic, by app",
        "Inbound success rate by app",
        "Replicas (HPA)",
    ],
}


def query(url, expr):
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10) as answer:
        return json.load(answer)["data"]["result"]


def main():
    url, namespace = sys.argv[1], sys.argv[2]
    for service in ("items", "timezones"):
        up = query(url, f'up{{namespace="{namespace}", job="meridian-{service}"}}')
        healthy = [s for s in up if s["value"][1] == "1"]
        print(f"{service} scrape targets up: {len(healthy)} of {len(up)}" + ("" if healthy and len(healthy) == len(up) else " MISSING"))
    substitutions = {"$__rate_interval": "2m", "$service": "items", "$namespace": namespace}
    for file, titles in MAIN_PANELS.items():
        panels = {p["title"]: p for p in json.loads((DASHBOARDS / file).read_text())["panels"]}
        for title in titles:
            expr = panels[title]["targets"][0]["expr"]
            for name, value in substitutions.items():
                expr = expr.replace(name, value)
            series = query(url, expr)
            print(f"{file}: {title}: {len(series)} series" + ("" if series else " MISSING"))


if __name__ == "__main__":
    main()
