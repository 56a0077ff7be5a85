#!/usr/bin/env python3
"""Runs the shell commands in the documentation, so the docs cannot rot.

Every ```sh (or ```bash) block in a tracked Markdown file says in its info string what it is:
  ```sh               runs here: executed, in order, against the system ./scripts/run.sh starts
  ```sh run-command   the README's run command: this script starts the system with it
  ```sh test-command  the README's test command: CI runs it, and this script runs inside it
  ```sh suite         steps of the test command, which it has already run by the time this
                      script runs: each line must be a command scripts/test.sh (or the manifest
                      check it calls) runs as written; running them twice cost two minutes
  ```sh cluster       needs a Kubernetes cluster; only its lines marked `# (run here)` run
  ```sh long          runs here but takes minutes (benchmarks, profiling); the test command
                      runs a shorter form of it
  ```sh docker        needs a Docker engine (none here); scripts/container-test.sh runs the
                      same images with podman
  ```sh registry      needs the published images in their registry (unreachable here)
Anything else fails the run, as does a command that fails or one that leaves files behind.
It also checks that every relative link resolves (file and heading), that the README shows what
the run command prints, that docs/configuration.md's table of settings names exactly the
variables each service's binary reads, and that a benchmark figure quoted outside the generated
pages is the one in docs/performance.json (see check_quoted_figures).
Usage: python3 scripts/docs-test.py   (after the release build; ports 8080 and 8081 free)"""

import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "k8s/tests"))
from contract import SERVICES, settings_read_by  # noqa: E402  (the one reading of the code)

FENCE = re.compile(r"^\s*```(sh|bash)\b(.*)$")  # also indented, inside a list item
KINDS = {"", "run-command", "test-command", "suite", "cluster", "long", "docker", "registry"}
# Where a ```sh suite block's commands must appear, each as the start of a line.
SUITE_SCRIPTS = ["scripts/test.sh", "k8s/tests/check.sh"]
RUN_HERE = re.compile(r"#\s*\(run here\)")
# A claim such as `kubectl kustomize k8s/cluster  # (run here) renders 8 objects` is checked.
RENDER_CLAIM = re.compile(r"kubectl kustomize (\S+).*renders (\d+) objects")


def markdown_files():
    """The tracked Markdown files, README.md first."""
    files = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout.split()
    return sorted(files, key=lambda f: (f != "README.md", f))


def blocks():
    """(file, line, kind, text) for every shell block in the tracked Markdown files."""
    for name in markdown_files():
        lines = (REPO / name).read_text().splitlines()
        i = 0
        while i < len(lines):
            match = FENCE.match(lines[i])
            if not match:
                i += 1
                continue
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith("```"):
                body.append(lines[i])
                i += 1
            i += 1
            yield name, start, match.group(2).strip(), "\n".join(body)


def wait_ready(urls, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if all(urllib.request.urlopen(u, timeout=2).status == 200 for u in urls):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"docs-test: the system did not become ready within {seconds} s")


def run(name, line, script):
    started = time.monotonic()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        print(f"FAIL {name}:{line}\n{script}\n--- output ---\n{result.stdout}{result.stderr}")
        raise SystemExit(1)
    print(f"  ok   {name}:{line} ({time.monotonic() - started:.1f} s)")


def check_suite(found):
    """Every command of a ```sh suite block is one the test command runs as written."""
    run_lines = [l.strip() for f in SUITE_SCRIPTS for l in (REPO / f).read_text().splitlines()]
    missing = [f"{name}:{line + offset}: {command.strip()}"
               for name, line, kind, text in found if kind == "suite"
               for offset, command in enumerate(text.splitlines())
               if command.strip() and not command.lstrip().startswith("#")
               and not any(l.startswith(command.strip()) for l in run_lines)]
    if missing:
        raise SystemExit(f"docs-test: suite commands that {' and '.join(SUITE_SCRIPTS)} do not run:\n  "
                         + "\n  ".join(missing))
    count = sum(len([c for c in t.splitlines() if c.strip()]) for _, _, k, t in found if k == "suite")
    print(f"docs-test: the {count} commands in suite blocks are ones the test command runs")


def check_render_count(name, line, path, claimed):
    rendered = subprocess.run(["kubectl", "kustomize", path], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout
    actual = len(re.findall(r"^kind:", rendered, re.M))
    if actual != int(claimed):
        raise SystemExit(f"FAIL {name}:{line}: says {path} renders {claimed} objects; it renders {actual}")


def check_banner(output, path="README.md"):
    """The README shows what the run command prints once both services are up: every line of
    that ```text block must be in its output."""
    text = (REPO / path).read_text()
    shown = re.search(r"```text\n(meridian is running.*?)```", text, re.S).group(1).splitlines()
    deadline = time.monotonic() + 10
    while True:
        output.seek(0)
        printed = set(output.read().splitlines())
        missing = [line for line in shown if line not in printed]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if missing:
        raise SystemExit(f"docs-test: {path} shows lines the run command does not print:\n  " + "\n  ".join(missing))
    print(f"  ok   {path}: the run command prints the {len(shown)} lines shown")


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def headings_and_links(path):
    """GitHub's anchors for the file's headings, and its link targets, outside code blocks."""
    anchors, links, fenced = set(), [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f"{slug}-{n}"
            anchors.add(anchor)
        links += LINK.findall(line)
    return anchors, links


def check_links(files):
    """Every relative link in the docs names a file that exists, and a heading in it."""
    broken = []
    for name in files:
        source = REPO / name
        for target in headings_and_links(source)[1]:
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (source.parent / path).resolve() if path else source
            if not resolved.exists():
                broken.append(f"{name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in headings_and_links(resolved)[0]:
                broken.append(f"{name}: {target} (no heading with that anchor)")
    if broken:
        raise SystemExit("docs-test: broken links:\n  " + "\n  ".join(broken))
    print(f"docs-test: every relative link in {len(files)} Markdown files resolves")


def check_settings_table(path="docs/configuration.md"):
    """Every `| Variable | Service | ...` row names variables (first column, and any `X_FILE`
    in the row) for `items`, `timezones` or `both`; per service they must equal what it reads."""
    documented = {service: set() for service in SERVICES}
    for row in (REPO / path).read_text().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 4 or cells[1] not in (*SERVICES, "both"):
            continue
        names = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]))
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]+_FILE)`", row))
        for service in SERVICES if cells[1] == "both" else [cells[1]]:
            documented[service] |= names
    problems = []
    for service in SERVICES:
        read = settings_read_by(service)
        problems += [f"{service} reads {n}, which {path} does not list" for n in sorted(read - documented[service])]
        problems += [f"{path} lists {n} for {service}, which it never reads" for n in sorted(documented[service] - read)]
    if problems:
        raise SystemExit("docs-test: the settings table and the code disagree:\n  " + "\n  ".join(problems))
    print(f"docs-test: {path} lists exactly the settings each service reads "
          f"({', '.join(f'{s} {len(documented[s])}' for s in SERVICES)})")


# Benchmark figures a hand-written page may quote, each computed from docs/performance.json
# (load-tests/bench.py writes it; the generated pages below are its report).
FIGURES = {
    # As load-tests/bench.py computes × bare: the median over its rounds of each round's ratio.
    "framework-vs-bare": lambda r: f"{statistics.median(x / bare for x, bare in zip(r['rounds']['openapi hello'], r['rounds']['bare hello'])):.2f}×",
}
GENERATED = {"docs/performance.md", "docs/performance-data.md", "docs/soak-memory.md"}
# A ratio such as 0.74×, and the marker that must follow it: `0.74× <!-- figure: key -->`.
RATIO = re.compile(r"\d\.\d+×")
MARKED = re.compile(r"(\d\.\d+×)\s*<!-- figure: ([a-z-]+) -->")


def check_quoted_figures(files):
    """A measured ratio quoted outside the generated pages names its figure in a marker, and
    equals that figure in docs/performance.json: it cannot go stale when the benchmark reruns."""
    results = __import__("json").loads((REPO / "docs/performance.json").read_text())
    problems, checked = [], 0
    for name in files:
        if name in GENERATED:
            continue
        text = (REPO / name).read_text()
        for quoted, key in MARKED.findall(text):
            checked += 1
            if key not in FIGURES:
                problems.append(f"{name}: {quoted} names figure {key!r}, not one of {sorted(FIGURES)}")
            elif quoted != FIGURES[key](results):
                problems.append(f"{name}: {quoted} for {key}, but docs/performance.json gives {FIGURES[key](results)}")
        unmarked = len(RATIO.findall(text)) - len(MARKED.findall(text))
        if unmarked:
            problems.append(f"{name}: {unmarked} ratio(s) like 0.74× without a `<!-- figure: key -->` marker")
    if problems:
        raise SystemExit("docs-test: quoted benchmark figures disagree with docs/performance.json:\n  "
                         + "\n  ".join(problems))
    print(f"docs-test: {checked} benchmark figures quoted outside the generated pages match docs/performance.json")


def main():
    check_links(markdown_files())
    check_settings_table()
    check_quoted_figures(markdown_files())
    found = list(blocks())
    unknown = [f"{n}:{l} ```sh {k}" for n, l, k, _ in found if k not in KINDS]
    if unknown:
        raise SystemExit("docs-test: blocks of no known kind:\n  " + "\n  ".join(unknown))
    check_suite(found)
    run_commands = [t.strip() for _, _, k, t in found if k == "run-command"]
    if run_commands != ["./scripts/run.sh"]:
        raise SystemExit(f"docs-test: expected one run-command block, ./scripts/run.sh; found {run_commands}")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout

    output = tempfile.TemporaryFile("w+")
    system = subprocess.Popen(["./scripts/run.sh"], cwd=REPO, stdout=output, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    counts = dict.fromkeys(KINDS, 0)
    try:
        wait_ready(["http://127.0.0.1:8080/readyz", "http://127.0.0.1:8081/readyz"], 900)
        check_banner(output)
        print("docs-test: the system from ./scripts/run.sh is up; running the documented commands")
        for name, line, kind, text in found:
            counts[kind] += 1
            if kind == "":
                run(name, line, text)
            elif kind == "cluster":
                for offset, command in enumerate(text.splitlines()):
                    if RUN_HERE.search(command):
                        run(name, line + offset, command)
                        claim = RENDER_CLAIM.search(command)
                        if claim:
                            check_render_count(name, line + offset, *claim.groups())
    finally:
        os.killpg(system.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        stopped = system.wait(timeout=60)
    if stopped != 0:
        raise SystemExit(f"docs-test: ./scripts/run.sh exited {stopped} after Ctrl-C")

    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    if after != before:
        raise SystemExit(f"docs-test: the documented commands changed or left files:\n{after}")
    print(f"docs: {counts['']} blocks run, the run command started, cluster blocks {counts['cluster']} "
          f"(their `# (run here)` lines run), suite blocks {counts['suite']} (run by the test command); "
          f"not run here: test command {counts['test-command']}, "
          f"long {counts['long']}, docker {counts['docker']}, registry {counts['registry']}")


if __name__ == "__main__":
    sys.exit(main())
