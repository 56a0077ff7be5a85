"""Unit tests for check_queries.py: python3 -m unittest discover -s observability"""
import unittest

from check_queries import classify, metric_names


class MetricNames(unittest.TestCase):
    def test_functions_labels_and_keywords_are_not_metrics(self):
        expr = ('histogram_quantile(0.99, sum by (route, le) '
                '(rate(http_server_request_duration_seconds_bucket{service="items", le="0.25"}[5m])))')
        self.assertEqual(metric_names(expr), {"http_server_request_duration_seconds_bucket"})

    def test_binary_operations_keep_both_sides(self):
        expr = 'sum(rate(a_total[1m])) / on (service) group_left (version) b_info and c > 2'
        self.assertEqual(metric_names(expr), {"a_total", "b_info", "c"})

    def test_recording_rule_names_with_colons(self):
        self.assertEqual(metric_names('meridian:slo_errors:ratio_rate1h > (14.4 * 0.001)'),
                         {"meridian:slo_errors:ratio_rate1h"})


class Classify(unittest.TestCase):
    def test_a_metric_we_do_not_export_is_unknown(self):
        unknown, _ = classify({"http_requests_total", "up"}, known={"up"})
        self.assertEqual(unknown, ["http_requests_total"])

    def test_mesh_and_cluster_metrics_are_external(self):
        unknown, external = classify({"response_total", "kube_pod_info"}, known=set())
        self.assertEqual(unknown, [])
        self.assertEqual(external, ["cluster (kube-state-metrics)", "mesh (Linkerd proxy)"])


if __name__ == "__main__":
    unittest.main()
