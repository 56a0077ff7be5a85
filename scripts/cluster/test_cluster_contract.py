"""scripts/cluster.sh against what it cannot run here: no cluster, Docker or GitHub exists on the
machines the test command runs on. Its plan mode prints every command `up`, `test` and `down`
run; these tests hold that output to the upstream sources at the pinned versions, recorded with
their citations in upstream-cli.json (kind, helm, the linkerd CLI, kind's v1alpha4 config API)
and upstream-charts.json (each chart's values.yaml):

  * every flag passed to kind, helm and linkerd exists for that (sub)command at that version;
  * every value set on a chart (--set, --set-json) exists in that chart's values.yaml;
  * every field of scripts/cluster/kind.yaml exists in kind's v1alpha4 API;
  * the pinned versions in tools.sh and charts.sh are the ones the facts were read at.

Run: python3 -m unittest scripts/cluster/test_cluster_contract.py
"""
import functools
import json
import os
import re
import shlex
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLI = json.loads((HERE / "upstream-cli.json").read_text())
CHARTS = json.loads((HERE / "upstream-charts.json").read_text())
# helm release name -> the chart's key in upstream-charts.json
RELEASES = {
    "metrics-server": "metrics-server",
    "cert-manager": "cert-manager",
    "ngf": "nginx-gateway-fabric",
    "kube-prometheus-stack": "kube-prometheus-stack",
}
# kind v1alpha4: which type each nested field holds (pkg/apis/config/v1alpha4/types.go).
KIND_FIELD_TYPES = {
    ("Cluster", "networking"): "Networking",
    ("Cluster", "nodes"): "Node",
    ("Node", "extraPortMappings"): "PortMapping",
    ("Node", "extraMounts"): "Mount",
}


def shell_vars(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            values[match[1]] = match[2].strip("'\"")
    return values


def plan(*args: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, MERIDIAN_CLUSTER_BIN=f"{scratch}/bin", MERIDIAN_CLUSTER_STATE=f"{scratch}/state",
                   PATH=os.environ["PATH"])
        done = subprocess.run(["bash", str(REPO / "scripts/cluster.sh"), "plan", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"plan {args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def commands(text: str) -> list[list[str]]:
    """The commands of a plan, split at pipes: each `+ ` line is one or more argv lists."""
    found = []
    for line in text.splitlines():
        if not line.startswith("+ "):
            continue
        text = line[2:].split("   #")[0]
        if text.startswith("until "):  # wait_until: the command it retries
            text = text[len("until "):].split("; do sleep")[0]
        words = shlex.split(text, comments=False)
        current: list[str] = []
        for word in words:
            if word == "|":
                found.append(current)
                current = []
            else:
                current.append(word)
        found.append(current)
    return found


def tool_of(argv: list[str]) -> str | None:
    if not argv:
        return None
    name = Path(argv[0]).name
    for tool in ("kind", "helm", "linkerd"):
        if name == tool or name.startswith(tool + "-"):
            return tool
    return None


def flag_problems(argv: list[str]) -> list[str]:
    """What is wrong with one kind/helm/linkerd command line, read against upstream-cli.json."""
    tool = tool_of(argv)
    surface = CLI[tool]
    known = surface["commands"]
    words = argv[1:]
    # Global flags may come before the subcommand (linkerd --context X install ...).
    global_surface = surface.get("global", {})
    global_flags = set(global_surface.get("flags", [])) | set(global_surface.get("short", []))
    positional = []
    flags = []
    skip_next = False
    for i, word in enumerate(words):
        if skip_next:
            skip_next = False
            continue
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            flags.append(name)
            if "=" not in word and i + 1 < len(words) and not words[i + 1].startswith("-") and name not in BOOLEAN_FLAGS.get(tool, set()):
                skip_next = True
        else:
            positional.append(word)
    command = None
    for size in (3, 2, 1):
        candidate = " ".join(positional[:size])
        if candidate in known:
            command = candidate
            break
    if command is None:
        return [f"{tool}: no such command in the pinned version: {' '.join(positional[:2])!r} ({' '.join(argv)})"]
    allowed = set(known[command]["flags"]) | set(known[command].get("short", [])) | global_flags
    return [f"{tool} {command}: unknown flag {flag}" for flag in flags if flag not in allowed]


# Flags that take no value: the next word is an argument, not the flag's value.
BOOLEAN_FLAGS = {
    "kind": set(),
    "helm": {"--install", "--wait", "--create-namespace", "--devel", "--atomic"},
    "linkerd": {"--pre", "--linkerd-cni-enabled", "--crds"},
}


def chart_value_problems(argv: list[str]) -> list[str]:
    if tool_of(argv) != "helm" or "upgrade" not in argv:
        return []
    release = argv[argv.index("upgrade") + 2] if "--install" == argv[argv.index("upgrade") + 1] else argv[argv.index("upgrade") + 1]
    chart = CHARTS[RELEASES[release]]
    problems = []
    for i, word in enumerate(argv):
        if word in ("--set", "--set-json", "--set-string"):
            path = re.split(r"(?<!\\)=", argv[i + 1], maxsplit=1)[0]
            if not value_path_known(chart["values"], path):
                problems.append(f"helm {release}: {path} is not in {chart['source']['path']} at {chart['version']}")
    return problems


def value_path_known(values: dict, path: str) -> bool:
    """Known when recorded, or below a recorded free-form map: cert-manager's `config` (the chart
    writes it out whole as the controller's config file) and kube-prometheus-stack's
    `prometheus.prometheusSpec.podMetadata` (labels and annotations of any name)."""
    path = path.replace("\\.", "\u2024")
    parts = [part.replace("\u2024", ".") for part in path.split(".")]
    return any(".".join(parts[:size]) in values for size in range(len(parts), 0, -1))


def kind_config_problems(config: dict, type_name: str = "Cluster") -> list[str]:
    fields = set(CLI["kind_config_v1alpha4"]["types"][type_name])
    problems = []
    for key, value in config.items():
        if key not in fields:
            problems.append(f"kind v1alpha4 {type_name} has no field {key!r}")
            continue
        nested = KIND_FIELD_TYPES.get((type_name, key))
        if nested:
            for item in value if isinstance(value, list) else [value]:
                problems += kind_config_problems(item, nested)
    return problems


KUBECTL_FLAG = re.compile(r"^\s+(?:(-\w), )?(--[\w-]+)[=:]", re.M)


@functools.lru_cache(maxsize=None)
def kubectl_help(*words: str) -> str:
    return subprocess.run(["kubectl", *words], capture_output=True, text=True, timeout=30).stdout


def kubectl_problems(argv: list[str]) -> list[str]:
    """Flags of one kubectl line that the kubectl here (the test machines' 1.32) does not have."""
    rest = argv[1:]
    if rest[:1] == ["--context"]:  # how the script starts every kubectl line
        rest = rest[2:]
    words = []
    for word in rest:  # the command words come before the first flag
        if word.startswith("-"):
            break
        words.append(word)
    command = tuple(words[:1])
    # A second word is part of the command when the first lists it (set env, rollout status).
    listed = kubectl_help(*command, "--help").partition("Available Commands:")[2]
    if len(words) > 1 and re.search(rf"^\s+{re.escape(words[1])}\s", listed, re.M):
        command = tuple(words[:2])
    allowed = set()
    for text in (kubectl_help(*command, "--help"), kubectl_help("options")):
        for short, long in KUBECTL_FLAG.findall(text):
            allowed |= {long} | ({short} if short else set())
    own = argv[1:argv.index("--")] if "--" in argv else argv[1:]  # after --: the container's command
    flags = [w.split("=", 1)[0] for w in own if w.startswith("-") and w != "-"]
    return [f"kubectl {' '.join(command)}: unknown flag {flag}" for flag in flags if flag not in allowed]


class PlanMode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.plans = {what: plan(what) for what in ("up", "test", "down")}
        # The add-ons as docs/deploy.md installs them on a real cluster (no kind-only values).
        addons = re.search(r'^ADDONS="([^"]+)"', (HERE / "install.sh").read_text(), re.M)[1].split()
        cls.plans["install"] = plan("install", *addons)
        cls.commands = [argv for text in cls.plans.values() for argv in commands(text)]

    def test_every_phase_prints_its_steps(self):
        up, test, down = self.plans["up"], self.plans["test"], self.plans["down"]
        for step in ("kind cluster", "Calico", "Gateway API CRDs", "Linkerd", "metrics-server", "cert-manager",
                     "NGINX Gateway Fabric", "kube-prometheus-stack", "Argo Rollouts", "Images", "e2e overlay"):
            self.assertIn(step, up)
        for step in ("Through the Gateway over TLS", "mTLS", "Default deny", "k6 drives the HPA",
                     "passes the Linkerd analysis", "aborted and rolled back", "Drain", "Degraded mode",
                     "Observability"):
            self.assertIn(step, test)
        self.assertIn("delete cluster --name meridian", down)
        self.assertIn("--kube-context CURRENT-CONTEXT upgrade --install ngf", self.plans["install"])
        self.assertNotIn("NodePort", self.plans["install"], "a real cluster keeps NGF's LoadBalancer")

    def test_nothing_ran(self):
        # Plan mode prints; it downloads nothing and touches no cluster (the scratch dirs stay empty).
        self.assertNotIn("FAILED", "".join(self.plans.values()))

    def test_every_kind_helm_and_linkerd_flag_exists_upstream(self):
        problems = [p for argv in self.commands if tool_of(argv) for p in flag_problems(argv)]
        self.assertEqual(problems, [])
        self.assertGreaterEqual(sum(1 for argv in self.commands if tool_of(argv)), 15)

    def test_every_kubectl_flag_exists(self):
        lines = {tuple(argv) for argv in self.commands if argv and argv[0] == "kubectl"}
        self.assertGreaterEqual(len(lines), 20)
        problems = [p for argv in sorted(lines) for p in kubectl_problems(list(argv))]
        self.assertEqual(problems, [])

    def test_every_chart_value_exists_in_its_values_yaml(self):
        problems = [p for argv in self.commands for p in chart_value_problems(argv)]
        self.assertEqual(problems, [])

    def test_the_kind_config_uses_only_v1alpha4_fields(self):
        config = yaml.safe_load((HERE / "kind.yaml").read_text())
        self.assertEqual(config["apiVersion"], "kind.x-k8s.io/v1alpha4")
        self.assertEqual(kind_config_problems(config), [])
        self.assertTrue(config["networking"]["disableDefaultCNI"], "kindnet must be off: Calico enforces policy")

    def test_the_pins_are_the_versions_the_facts_were_read_at(self):
        tools = shell_vars(HERE / "tools.sh")
        charts = shell_vars(HERE / "charts.sh")
        self.assertEqual(tools["KIND_VERSION"], CLI["kind"]["version"])
        self.assertEqual(tools["HELM_VERSION"], CLI["helm"]["version"])
        self.assertEqual(tools["LINKERD_VERSION"], CLI["linkerd"]["version"])
        for variable, chart in (("CERT_MANAGER_VERSION", "cert-manager"), ("NGF_CHART_VERSION", "nginx-gateway-fabric"),
                                ("METRICS_SERVER_CHART_VERSION", "metrics-server"),
                                ("KPS_CHART_VERSION", "kube-prometheus-stack")):
            self.assertEqual(charts[variable], CHARTS[chart]["version"], variable)
        for name, value in tools.items():
            if "SHA256" in name:
                self.assertRegex(value, r"^[0-9a-f]{64}$", name)


class DownloadsAreCheckedBySha256(unittest.TestCase):
    """steps.sh's `download`, with curl replaced by a function that writes known bytes (the
    machines that run the tests reach no release server)."""

    def fetch(self, pinned: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as scratch:
            script = f"""
                set -euo pipefail
                source scripts/cluster/steps.sh
                curl() {{ printf 'the release binary' >"${{@: -2:1}}"; }}
                download kind https://example.invalid/kind {pinned} {scratch}/kind
                cat {scratch}/kind
            """
            return subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)

    def test_the_pinned_checksum_lets_the_binary_in(self):
        # sha256 of the bytes the fake curl writes: printf 'the release binary' | sha256sum
        done = self.fetch("272959941d10e721ab182f9ca55fe3cb611c69568a2825f876092297096421e5")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertTrue(done.stdout.endswith("\nthe release binary"), done.stdout)

    def test_any_other_checksum_stops_the_script(self):
        done = self.fetch("0" * 64)
        self.assertEqual(done.returncode, 1)
        self.assertIn("pinned 0000", done.stderr)

    def test_no_pin_stops_the_script(self):
        done = self.fetch("''")
        self.assertEqual(done.returncode, 1)
        self.assertIn("no pinned sha256 for kind", done.stderr)


class TheCheckersCatchMistakes(unittest.TestCase):
    """Each checker fails on a wrong line, so a green run means something."""

    def test_an_unknown_flag(self):
        self.assertEqual(flag_problems(["/x/kind-v0", "create", "cluster", "--nmae", "meridian"]),
                         ["kind create cluster: unknown flag --nmae"])
        self.assertTrue(flag_problems(["/x/linkerd-edge", "viz", "edges", "pod", "--output-format", "json"]))

    def test_an_unknown_command(self):
        self.assertTrue(flag_problems(["/x/helm-v3", "instal", "x", "y"]))

    def test_an_unknown_chart_value(self):
        self.assertTrue(chart_value_problems(["/x/helm-v3", "upgrade", "--install", "cert-manager", "chart",
                                              "--set", "crds.enable=true"]))

    def test_an_unknown_kubectl_flag(self):
        self.assertEqual(kubectl_problems(["kubectl", "debug", "pod", "--custom-profile=x"]),
                         ["kubectl debug: unknown flag --custom-profile"])

    def test_an_unknown_kind_field(self):
        self.assertEqual(kind_config_problems({"networking": {"disableDefaultCni": True}}),
                         ["kind v1alpha4 Networking has no field 'disableDefaultCni'"])


if __name__ == "__main__":
    unittest.main()
