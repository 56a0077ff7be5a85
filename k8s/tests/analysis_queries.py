"""The PromQL in Argo Rollouts AnalysisTemplates, checked offline: every `{{args.x}}` it uses
is a declared argument, and with sample values in their place every query parses (promtool
check rules on a generated rules file). Run by test_analysis_queries.py."""

import pathlib
import re
import subprocess
import tempfile

import yaml

ARG = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")


def queries(docs):
    """(template name, metric name, query, declared argument names) for every Prometheus metric."""
    for doc in docs:
        if doc.get("kind") != "AnalysisTemplate":
            continue
        declared = {a["name"] for a in doc["spec"].get("args", [])}
        for metric in doc["spec"]["metrics"]:
            prometheus = metric.get("provider", {}).get("prometheus")
            if prometheus:
                yield doc["metadata"]["name"], metric["name"], prometheus["query"], declared


def problems(docs):
    found, rules = [], []
    for template, metric, query, declared in queries(docs):
        undeclared = set(ARG.findall(query)) - declared
        if undeclared:
            found.append(f"{template}/{metric} uses undeclared args {sorted(undeclared)}")
        sample = ARG.sub(lambda m: f"sample-{m.group(1)}", query)
        rules.append({"record": f"analysis:{template}:{metric}".replace("-", "_"), "expr": sample})
    if not rules:
        return found + ["no AnalysisTemplate queries found"]
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / "analysis.rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "analysis", "rules": rules}]}))
        result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            found.append(f"promtool: {result.stdout.strip()} {result.stderr.strip()}")
    return found
