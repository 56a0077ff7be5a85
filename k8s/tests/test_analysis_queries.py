"""The canary analysis queries (k8s/components/canary) parse, and a broken one is caught."""

import copy
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


if __name__ == "__main__":
    unittest.main()
