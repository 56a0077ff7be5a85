#!/usr/bin/env python3
"""Writes prometheusrule.yaml from observability/prometheus/rules.yml, the one source of the
rules (promtool tests it). The groups are copied as text, comments included.
Usage: python3 k8s/cluster/render-prometheusrule.py [--check]
--check exits 1 when the file in the repo differs from what this would write."""
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
rules = here.parents[1] / "observability/prometheus/rules.yml"
target = here / "prometheusrule.yaml"

HEADER = """\
# GENERATED from observability/prometheus/rules.yml by k8s/cluster/render-prometheusrule.py;
# edit the rules there, then run the script. The test command fails when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: meridian
  namespace: monitoring
  labels:
    release: kube-prometheus-stack
spec:
"""


def render() -> str:
    lines = rules.read_text().splitlines()
    start = lines.index("groups:")
    return HEADER + "".join(f"  {line}\n" if line else "\n" for line in lines[start:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        if target.read_text() != render():
            sys.exit(f"{target} is out of date: run python3 {sys.argv[0]}")
    else:
        target.write_text(render())
