"""The Dockerfile and compose.yaml against what the code and the container runtimes do with them:
the numbers come from the Rust source (probe timeouts, shutdown defaults, the build_info
variable), the behaviour from Docker, runc and distroless (cited at each check). Each check is
also shown to catch the mistake it is there for. Run by scripts/container-test.sh;
DOCKERFILE and COMPOSE point it at other copies (e.g. `git show HEAD:Dockerfile`)."""

import copy
import datetime
import os
import pathlib
import re
import unittest

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
PLATFORM = REPO / "services/platform/src"
DEBIAN_RELEASES = {"bookworm": 12, "trixie": 13, "forky": 14}
# distroless SUPPORT_POLICY.md: cc-debian12 (like static/base) is supported until September
# 2026; a later release's date is only known once the next Debian is out.
DISTROLESS_CC_END_OF_LIFE = {12: datetime.date(2026, 9, 30)}
# Docker's defaults when the option is left out: HEALTHCHECK --timeout 30s (Dockerfile
# reference), stop_grace_period 10s (compose specification).
HEALTHCHECK_TIMEOUT_DEFAULT = 30.0
STOP_GRACE_DEFAULT = 10.0


def load_dockerfile(text):
    """{stage name: [(INSTRUCTION, arguments)]}; the ARGs before the first FROM under ""."""
    stages, current = {"": []}, ""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            stages[current] = []
        stages[current].append((instruction, args.strip()))
    return stages


def global_args(stages):
    return dict(a.split("=", 1) for i, a in stages[""] if i == "ARG" and "=" in a)


def seconds(duration):
    """Docker/compose durations: 8s, 1m30s, 500ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    return sum(float(n) * units[u] for n, u in parts)


def rust_duration(expression):
    """Duration::from_secs(20), Duration::from_millis(500), Duration::ZERO, in seconds."""
    if expression == "Duration::ZERO":
        return 0.0
    unit, value = re.fullmatch(r"Duration::from_(secs|millis)\((\d+)\)", expression).groups()
    return int(value) / (1000 if unit == "millis" else 1)


def probe_budget():
    """The longest `<service> healthcheck` may take: each connect/read/write timeout it sets,
    added up (lifecycle.rs `healthcheck`)."""
    source = (PLATFORM / "lifecycle.rs").read_text()
    body = source[source.index("pub fn healthcheck("):]
    body = body[:body.index("\n}\n")]
    timeout = rust_duration(re.search(r"let timeout = (Duration::\w+\(\d+\))", body).group(1))
    return timeout * len(re.findall(r"\w+_timeout\([^;]*\btimeout\b", body))


def shutdown_defaults():
    """{variable: default seconds} of the drain and grace ServerConfig reads (settings.rs)."""
    source = (PLATFORM / "settings.rs").read_text()
    return {name: rust_duration(default) for name, default in re.findall(
        r'millis_or\("((?:DRAIN_DELAY|SHUTDOWN_GRACE)_MS)", (Duration::\w+(?:\(\d+\))?)\)', source)}


def build_commit_variable():
    return re.search(r'option_env!\("(\w+)"\)', (PLATFORM / "metrics.rs").read_text()).group(1)


def built_services(compose):
    """Our services: the ones compose builds from the Dockerfile, with their stage."""
    return {name: s["build"]["target"] for name, s in compose["services"].items() if "build" in s}


def check_healthcheck_timeout(stages, compose):
    budget = probe_budget()
    problems = []
    for stage, instructions in stages.items():
        for instruction, args in instructions:
            if instruction != "HEALTHCHECK" or args.upper().startswith("NONE"):
                continue
            match = re.search(r"--timeout=(\S+)", args)
            timeout = seconds(match.group(1)) if match else HEALTHCHECK_TIMEOUT_DEFAULT
            # Docker kills a check that outlives --timeout and counts it as a failure without
            # the probe's own message; the probe must get to its own verdict first.
            if timeout <= budget:
                problems.append(f"{stage}: HEALTHCHECK --timeout {timeout:g}s is not longer than "
                                f"the probe's own timeouts ({budget:g}s, lifecycle.rs)")
    return problems


def check_stop_grace(stages, compose):
    defaults = shutdown_defaults()
    problems = []
    for name in built_services(compose):
        service = compose["services"][name]
        env = service.get("environment") or {}
        drain = sum(int(env[v]) / 1000 if v in env else d for v, d in defaults.items())
        grace = seconds(service.get("stop_grace_period", f"{STOP_GRACE_DEFAULT}s"))
        # After drain + grace the metrics port still closes (up to 1 s, lifecycle.rs): strictly
        # longer, or SIGKILL can cut the last scrape or the exit code.
        if grace <= drain:
            problems.append(f"{name}: stop_grace_period {grace:g}s does not outlast the drain "
                            f"and shutdown grace ({drain:g}s, settings.rs), SIGKILL cuts it short")
    return problems


def check_debian_release(stages, compose):
    args = global_args(stages)
    rust, runtime = args.get("RUST_IMAGE", ""), args.get("RUNTIME_IMAGE", "")
    codename = re.search(r"-(" + "|".join(DEBIAN_RELEASES) + r")$", rust.split(":")[-1])
    if not codename:
        # rust:<ver>-slim alone follows Debian's newest release and moves under the runtime.
        return [f"RUST_IMAGE {rust} does not name its Debian release"]
    builder = DEBIAN_RELEASES[codename.group(1)]
    release = re.search(r"distroless/cc-debian(\d+)", runtime)
    if not release:
        return [f"RUNTIME_IMAGE {runtime} is not a distroless cc-debianNN image"]
    problems = []
    # A binary needs at least the glibc it was linked against (GLIBC_2.xx not found).
    if int(release.group(1)) != builder:
        problems.append(f"builder is Debian {builder} ({rust}) but runtime is Debian "
                        f"{release.group(1)} ({runtime}): glibc must match")
    end = DISTROLESS_CC_END_OF_LIFE.get(int(release.group(1)))
    if end and datetime.date.today() > end:
        problems.append(f"{runtime} reached its end of life on {end} (distroless SUPPORT_POLICY.md)")
    return problems


def check_data_dir(stages, compose):
    items = stages.get("items", [])
    problems = []
    volumes = [a for i, a in items if i == "VOLUME"]
    if not any(re.search(r'(^|[\s"\[])/data($|[\s"\]])', v) for v in volumes):
        problems.append("items: no VOLUME /data (docker run with no mount has nowhere to write)")
    # Distroless / is root's: uid 65532 cannot create /data itself, and a new volume copies the
    # image directory's owner (Docker and podman copy-up), so the image must carry it.
    if not any(i == "COPY" and "--chown=65532" in a and re.search(r"\s/data/?$", a) for i, a in items):
        problems.append("items: /data is not created owned by 65532 (COPY --chown)")
    for entry in compose["services"].get("items", {}).get("tmpfs", []):
        path, _, options = entry.partition(":")
        # runc gives a tmpfs the mode of the directory it covers, never its owner
        # (libcontainer/rootfs_linux.go, "copy the mode for the tmpfs mount").
        if path.rstrip("/") == "/data" and not {"uid=65532", "gid=65532"} <= set(options.split(",")):
            problems.append("items: tmpfs on /data without uid=65532,gid=65532 is root's")
    for entry in compose["services"].get("items", {}).get("volumes", []):
        source, _, target = entry.partition(":")
        # A bind mount keeps the host directory's owner; only a volume copies the image's.
        if target.split(":")[0].rstrip("/") == "/data" and source.startswith((".", "/", "~")):
            problems.append(f"items: /data is bind-mounted from {source}, owned by whoever owns it")
    return problems


def check_health_dependencies(stages, compose):
    targets = built_services(compose)
    problems = []
    for name, service in compose["services"].items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if dependency not in targets:
                continue
            if condition.get("condition") != "service_healthy":
                problems.append(f"{name} waits for {dependency} to start, not to be healthy")
            if not any(i == "HEALTHCHECK" for i, _ in stages[targets[dependency]]) \
                    and "healthcheck" not in compose["services"][dependency]:
                problems.append(f"{dependency} has no healthcheck for {name} to wait on")
    return problems


def check_build_commit(stages, compose):
    variable = build_commit_variable()
    problems = []
    # option_env! is read when cargo compiles: the variable must be in the build stage's
    # environment before its cargo build, not only an ARG or a label.
    seen_env = False
    for instruction, args in stages.get("build", []):
        seen_env |= instruction == "ENV" and re.match(rf"{variable}=", args) is not None
        if instruction == "RUN" and "cargo build" in args and not seen_env:
            problems.append(f"build stage runs cargo build without ENV {variable}")
    for name in built_services(compose):
        if variable not in (compose["services"][name]["build"].get("args") or {}):
            problems.append(f"{name}: compose builds it without the {variable} build arg")
    return problems


def check_jaeger(stages, compose):
    jaeger = compose["services"].get("jaeger", {})
    image = jaeger.get("image", "")
    match = re.search(r"jaegertracing/jaeger:(\d+)\.", image)
    # v1's all-in-one image is end of life; v2 is jaegertracing/jaeger. Its OTLP receivers
    # are 4317 (gRPC) and 4318 (HTTP) (jaeger cmd/jaeger/Dockerfile, all-in-one.yaml).
    if not match or int(match.group(1)) < 2:
        return [f"jaeger runs {image}, not Jaeger v2 (jaegertracing/jaeger:2.x)"]
    problems = []
    for name in built_services(compose):
        endpoint = (compose["services"][name].get("environment") or {}).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint and endpoint != "http://jaeger:4318":
            problems.append(f"{name} sends traces to {endpoint}, not Jaeger's OTLP/HTTP port")
    return problems


CHECKS = [check_healthcheck_timeout, check_stop_grace, check_debian_release, check_data_dir,
          check_health_dependencies, check_build_commit, check_jaeger]
DOCKERFILE = pathlib.Path(os.environ.get("DOCKERFILE", REPO / "Dockerfile")).read_text()
COMPOSE = yaml.safe_load(pathlib.Path(os.environ.get("COMPOSE", REPO / "compose.yaml")).read_text())


class TheContractHolds(unittest.TestCase):
    def test_every_check(self):
        for check in CHECKS:
            with self.subTest(check=check.__name__):
                self.assertEqual(check(load_dockerfile(DOCKERFILE), COMPOSE), [])

    def test_the_numbers_are_read_from_the_code(self):
        self.assertEqual(probe_budget(), 6)
        self.assertEqual(shutdown_defaults(), {"SHUTDOWN_GRACE_MS": 20, "DRAIN_DELAY_MS": 0})
        self.assertEqual(build_commit_variable(), "MERIDIAN_GIT_COMMIT")


class EachCheckCatchesAMistake(unittest.TestCase):
    def assertCaught(self, check, fragment, dockerfile=lambda d: d, compose=lambda c: None):
        changed = copy.deepcopy(COMPOSE)
        compose(changed)
        problems = check(load_dockerfile(dockerfile(DOCKERFILE)), changed)
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_mistakes(self):
        items = lambda c: c["services"]["items"]  # noqa: E731
        cases = [
            (check_healthcheck_timeout, "not longer than the probe's",
             lambda d: d.replace("--timeout=8s", "--timeout=3s", 1), None),
            (check_stop_grace, "stop_grace_period 10s", None,
             lambda c: c["services"]["timezones"].pop("stop_grace_period")),
            (check_stop_grace, "(30s, settings.rs)", None,
             lambda c: items(c)["environment"].update(DRAIN_DELAY_MS="10000")),
            (check_debian_release, "glibc must match",
             lambda d: d.replace("cc-debian13", "cc-debian12"), None),
            (check_debian_release, "does not name its Debian release",
             lambda d: d.replace("1.95-slim-trixie", "1.95-slim"), None),
            (check_data_dir, "no VOLUME /data", lambda d: d.replace("VOLUME /data\n", ""), None),
            (check_data_dir, "not created owned by 65532",
             lambda d: d.replace("--chown=65532:65532 /out/data", "/out/data"), None),
            (check_data_dir, "tmpfs on /data without", None, lambda c: items(c).update(tmpfs=["/data"])),
            (check_data_dir, "bind-mounted from ./data", None, lambda c: items(c).update(volumes=["./data:/data"])),
            (check_health_dependencies, "to start, not to be healthy", None,
             lambda c: items(c)["depends_on"]["timezones"].update(condition="service_started")),
            (check_health_dependencies, "timezones has no healthcheck",
             lambda d: re.sub(r"HEALTHCHECK .*\\\n.*timezones.*\n", "", d), None),
            (check_build_commit, "without ENV MERIDIAN_GIT_COMMIT",
             lambda d: d.replace("ENV MERIDIAN_GIT_COMMIT=", "LABEL commit="), None),
            (check_build_commit, "items: compose builds it without", None,
             lambda c: items(c)["build"].pop("args")),
            (check_jaeger, "not Jaeger v2", None,
             lambda c: c["services"]["jaeger"].update(image="docker.io/jaegertracing/all-in-one:1.62.0")),
            (check_jaeger, "not Jaeger's OTLP/HTTP port", None,
             lambda c: items(c)["environment"].update(OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:14268")),
        ]
        for check, fragment, dockerfile, compose in cases:
            with self.subTest(fragment=fragment):
                self.assertCaught(check, fragment, dockerfile or (lambda d: d), compose or (lambda c: None))


if __name__ == "__main__":
    unittest.main()
