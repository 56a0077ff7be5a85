"""The canary analysis queries (k8s/components/canary) parse, and a broken one is caught; and on
synthetic Linkerd proxy series, what promtool computes from the rendered template's queries and
what the template's own conditions make of it decide the canary as Argo Rollouts would: an
all-5xx canary fails, a healthy one passes, one nobody called is inconclusive."""

import copy
import math
import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import analysis_queries  # noqa: E402
import contract  # noqa: E402

PROD = contract.render("k8s/overlays/prod")


class AnalysisQueries(unittest.TestCase):
    def test_prod_queries_parse_and_use_declared_args(self):
        self.assertEqual(len(list(analysis_queries.queries(PROD))), 2)
        self.assertEqual(analysis_queries.problems(PROD), [])

    def test_a_syntax_error_is_caught(self):
        docs = copy.deepcopy(PROD)
        template = contract.named(docs, "AnalysisTemplate", "linkerd-canary", "argoproj.io")
        template["spec"]["metrics"][0]["provider"]["prometheus"]["query"] += ")"
        self.assertTrue(any("promtool" in p for p in analysis_queries.problems(docs)))

    def test_an_undeclared_argument_is_caught(self):
        docs = copy.deepcopy(PROD)
        template = contract.named(docs, "AnalysisTemplate", "linkerd-canary", "argoproj.io")
        metric = template["spec"]["metrics"][1]["provider"]["prometheus"]
        metric["query"] = metric["query"].replace("args.app", "args.service")
        self.assertIn("undeclared args ['service']", " ".join(analysis_queries.problems(docs)))


# The AnalysisRun's arguments (the Rollouts pass namespace, app and the canary's hash) and the
# labels Linkerd's proxies put on their inbound metrics, with the pod labels the PodMonitor
# (k8s/components/monitoring) copies: app and rollouts_pod_template_hash.
ARGS = {"namespace": "meridian-prod", "app": "items", "canary-hash": "7c9d5f6b8"}
STABLE_HASH = "5b8c7d9f4"


def proxy_labels(hash_, route, server="items-http", **extra):
    return {"namespace": ARGS["namespace"], "app": ARGS["app"], "rollouts_pod_template_hash": hash_,
            "pod": f"items-{hash_}-x1y2z", "direction": "inbound", "tls": "true", "srv_kind": "server",
            "srv_name": server, "route_kind": "route", "route_name": route, **extra}


def responses(hash_, route, per_second, classification, status, server="items-http"):
    return analysis_queries.counter("response_total", proxy_labels(
        hash_, route, server, classification=classification, status_code=status), per_second)


def latencies(hash_, route, per_second, under_ms, server="items-http"):
    """Every response under `under_ms`: each bucket from there up counts all of them."""
    return [analysis_queries.counter("response_latency_ms_bucket", proxy_labels(hash_, route, server, le=le),
                                     per_second if le == "+Inf" or float(le) >= under_ms else 0)
            for le in ("5", "10", "50", "100", "250", "500", "1000", "+Inf")]


# What every canary pod answers besides the API: the kubelet's probes and the scrapes, and the
# stable pods' own API traffic. None of it may count for the canary.
BACKGROUND = [
    responses(ARGS["canary-hash"], "items-probes", 0.2, "success", "200"),
    *latencies(ARGS["canary-hash"], "items-probes", 0.2, 5),
    responses(ARGS["canary-hash"], "metrics", 0.1, "success", "200", server="items-metrics"),
    responses(STABLE_HASH, "items-api", 20, "success", "200"),
    *latencies(STABLE_HASH, "items-api", 20, 50),
]
SCENARIOS = {
    # The canary answers every API call with a 500 (fast): it must fail.
    "all-5xx": BACKGROUND + [responses(ARGS["canary-hash"], "items-api", 5, "failure", "500"),
                             *latencies(ARGS["canary-hash"], "items-api", 5, 10)],
    # 999 of 1000 succeed, all within 50 ms: it must pass.
    "healthy": BACKGROUND + [responses(ARGS["canary-hash"], "items-api", 4.995, "success", "200"),
                             responses(ARGS["canary-hash"], "items-api", 0.005, "failure", "503"),
                             *latencies(ARGS["canary-hash"], "items-api", 5, 50)],
    # Nobody calls the canary's API: probes and scrapes only. Neither pass nor fail.
    "no-traffic": BACKGROUND,
}


class CanaryVerdicts(unittest.TestCase):
    """Each metric of the rendered linkerd-canary template, evaluated by promtool on a scenario's
    series, then judged by the metric's own successCondition/failureCondition."""

    def phases(self, scenario):
        template = contract.named(PROD, "AnalysisTemplate", "linkerd-canary", "argoproj.io")
        phases = {}
        for metric in template["spec"]["metrics"]:
            query = analysis_queries.render_query(metric["provider"]["prometheus"]["query"], ARGS)
            result = analysis_queries.instant_result(query, SCENARIOS[scenario])
            phases[metric["name"]] = (analysis_queries.argo_phase(metric, result), result)
        return phases

    def test_an_all_5xx_canary_fails(self):
        phases = self.phases("all-5xx")
        self.assertEqual(phases["success-rate"][0], analysis_queries.FAILED, phases)

    def test_a_healthy_canary_passes(self):
        phases = self.phases("healthy")
        self.assertEqual({name: phase for name, (phase, _) in phases.items()},
                         {"success-rate": analysis_queries.SUCCESSFUL, "p99-latency-ms": analysis_queries.SUCCESSFUL},
                         phases)

    def test_a_canary_nobody_called_is_inconclusive(self):
        phases = self.phases("no-traffic")
        self.assertEqual({name: phase for name, (phase, _) in phases.items()},
                         {"success-rate": analysis_queries.INCONCLUSIVE,
                          "p99-latency-ms": analysis_queries.INCONCLUSIVE},
                         phases)


class ArgoConditions(unittest.TestCase):
    """The condition evaluator against EvaluateResult's own rules."""

    def test_evaluate_result_rules(self):
        both = {"successCondition": "len(result) > 0 && result[0] >= 0.99",
                "failureCondition": "len(result) > 0 && result[0] < 0.99"}
        self.assertEqual(analysis_queries.argo_phase(both, [1.0]), analysis_queries.SUCCESSFUL)
        self.assertEqual(analysis_queries.argo_phase(both, [0.0]), analysis_queries.FAILED)
        self.assertEqual(analysis_queries.argo_phase(both, []), analysis_queries.INCONCLUSIVE)
        self.assertEqual(analysis_queries.argo_phase(both, [math.nan]), analysis_queries.INCONCLUSIVE)
        # Only a success condition: anything else is a failure; result[0] of nothing is an error.
        self.assertEqual(analysis_queries.argo_phase({"successCondition": "result[0] >= 0.99"}, [0.5]),
                         analysis_queries.FAILED)
        self.assertEqual(analysis_queries.argo_phase({"successCondition": "result[0] >= 0.99"}, []),
                         analysis_queries.ERROR)
        self.assertEqual(analysis_queries.argo_phase({}, []), analysis_queries.SUCCESSFUL)
        with self.assertRaises(ValueError):
            analysis_queries.evaluate_condition("__import__('os')", [])


if __name__ == "__main__":
    unittest.main()
