"""The PromQL in Argo Rollouts AnalysisTemplates, checked offline: every `{{args.x}}` it uses
is a declared argument, and with sample values in their place every query parses (promtool
check rules on a generated rules file). On synthetic series, promtool computes what a query
returns and the template's own conditions decide the measurement, as Argo Rollouts would.
Run by test_analysis_queries.py."""

import math
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


# ---------------------------------------------------------------- verdicts on synthetic series
#
# What Argo Rollouts makes of a query's answer, decided as its own code does (argo-rollouts
# v1.9.1): metricproviders/prometheus/prometheus.go processResponse turns an instant vector into
# a []float64 `result` (empty when the vector is), and utils/evaluate/evaluate.go EvaluateResult
# evaluates the metric's successCondition and failureCondition on it: failure wins; neither true
# is Inconclusive; a condition that cannot be evaluated (result[0] of an empty result) is Error.
# The answer itself comes from promtool, which evaluates the query on series written here.

SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR = "Successful", "Failed", "Inconclusive", "Error"

# The expr-lang (github.com/antonmedv/expr) the conditions use, as far as a Python expression
# can say the same: anything else is refused rather than guessed at.
_EXPR_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
                         r"|(?P<op>&&|\|\||==|!=|>=|<=|[<>!()\[\],+\-*/]))")
_EXPR_NAMES = {"result", "len", "isNaN", "isInf", "asFloat", "asInt", "true", "false", "and", "or", "not"}
_EXPR_WORDS = {"&&": " and ", "||": " or ", "!": " not ", "true": "True", "false": "False"}


def evaluate_condition(condition: str, result: list[float]) -> bool:
    """One successCondition/failureCondition on a Prometheus result (utils/evaluate EvalCondition,
    with the same environment: result, isNaN, isInf, asFloat, asInt, len). NaN compares false in
    both languages; `&&` and `||` short-circuit in both. Raises IndexError where expr-lang fails
    on an index out of range, ValueError on syntax outside the subset."""
    out, pos = [], 0
    condition = condition.strip()
    while pos < len(condition):
        match = _EXPR_TOKEN.match(condition, pos)
        if not match or match.end() == pos:
            raise ValueError(f"condition {condition!r}: cannot read from {condition[pos:]!r}")
        pos = match.end()
        token = match.group("number") or match.group("name") or match.group("op")
        if match.group("name") and token not in _EXPR_NAMES:
            raise ValueError(f"condition {condition!r}: unknown name {token!r}")
        out.append(_EXPR_WORDS.get(token, token))
    env = {"result": result, "len": len, "isNaN": math.isnan, "isInf": math.isinf,
           "asFloat": float, "asInt": int}
    value = eval("".join(out), {"__builtins__": {}}, env)  # noqa: S307 (tokens checked above)
    if not isinstance(value, bool):
        raise ValueError(f"condition {condition!r} gives {value!r}, not a bool")
    return value


def argo_phase(metric: dict, result: list[float]) -> str:
    """EvaluateResult: the measurement's phase for this result."""
    success_condition, failure_condition = metric.get("successCondition", ""), metric.get("failureCondition", "")
    try:
        success = evaluate_condition(success_condition, result) if success_condition else False
        failure = evaluate_condition(failure_condition, result) if failure_condition else False
    except (IndexError, TypeError):
        return ERROR
    if not success_condition and not failure_condition:
        return SUCCESSFUL
    if success_condition and not failure_condition:
        failure = not success
    elif failure_condition and not success_condition:
        success = not failure
    if failure:
        return FAILED
    return SUCCESSFUL if success else INCONCLUSIVE


def render_query(query: str, args: dict[str, str]) -> str:
    """The query with the AnalysisRun's argument values in place of `{{args.x}}`."""
    return ARG.sub(lambda m: args[m.group(1)], query)


def series_text(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def counter(name: str, labels: dict[str, str], per_second: float, interval_s: int = 15, samples: int = 40):
    """A promtool input series: a counter growing at `per_second` from 0, one sample per interval."""
    return {"series": series_text(name, labels), "values": f"0+{per_second * interval_s:g}x{samples}"}


_GOT_SAMPLE = re.compile(r"\{[^{}]*\}\s+(\S+?)(?=,\s*\{|\s*$)")


def instant_result(query: str, input_series: list[dict], eval_time: str = "5m", interval: str = "15s") -> list[float]:
    """The values of `query`'s instant vector at eval_time over the given series, as promtool's
    rule unit tests compute them (`promtool test rules`). promtool prints what a query returned
    only when it differs from the expected samples, so the test expects none: passing means an
    empty result, failing prints `got: {labels} value, ...`."""
    test = {"rule_files": [], "evaluation_interval": "1m",
            "tests": [{"interval": interval, "input_series": input_series,
                       "promql_expr_test": [{"expr": query, "eval_time": eval_time, "exp_samples": []}]}]}
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / "analysis.test.yml"
        path.write_text(yaml.safe_dump(test, sort_keys=False))
        run = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    output = run.stdout + run.stderr
    if run.returncode == 0:
        return []
    got = re.findall(r"^\s*got:\s*(.*)$", output, re.M)
    if len(got) != 1 or "exp: nil" not in output:
        raise RuntimeError(f"promtool did not evaluate the query:\n{output}")
    values = _GOT_SAMPLE.findall(got[0].strip())
    if not values:
        raise RuntimeError(f"cannot read promtool's result {got[0]!r}")
    return [float(v) for v in values]
