#!/usr/bin/env python3
"""Runs the shell commands in the documentation, so the docs cannot rot.

Every ```sh (or ```bash) block in a tracked Markdown file says in its info string what it is:
  ```sh               runs here: executed, in order, against the system ./scripts/run.sh starts
  ```sh run-command   the README's run command: this script starts the system with it
  ```sh test-command  the README's test command: CI runs it, and this script runs inside it
  ```sh cluster       needs a Kubernetes cluster; only its lines marked `# (run here)` run
  ```sh long          runs here but takes minutes (benchmarks, profiling); the test command
                      runs a shorter form of it
  ```sh docker        needs a Docker engine (none here); scripts/container-test.sh runs the
                      same images with podman
Anything else fails the run, as does a command that fails or one that leaves files behind.
Usage: python3 scripts/docs-test.py   (after the release build; ports 8080 and 8081 free)"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(sh|bash)\b(.*)$")
KINDS = {"", "run-command", "test-command", "cluster", "long", "docker"}
RUN_HERE = re.compile(r"#\s*\(run here\)")
# A claim such as `kubectl kustomize k8s/cluster  # (run here) renders 8 objects` is checked.
RENDER_CLAIM = re.compile(r"kubectl kustomize (\S+).*renders (\d+) objects")


def blocks():
    """(file, line, kind, text) for every shell block in the tracked Markdown files."""
    files = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout.split()
    for name in sorted(files, key=lambda f: (f != "README.md", f)):
        lines = (REPO / name).read_text().splitlines()
        i = 0
        while i < len(lines):
            match = FENCE.match(lines[i])
            if not match:
                i += 1
                continue
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
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
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        print(f"FAIL {name}:{line}\n{script}\n--- output ---\n{result.stdout}{result.stderr}")
        raise SystemExit(1)
    print(f"  ok   {name}:{line}")


def check_render_count(name, line, path, claimed):
    rendered = subprocess.run(["kubectl", "kustomize", path], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout
    actual = len(re.findall(r"^kind:", rendered, re.M))
    if actual != int(claimed):
        raise SystemExit(f"FAIL {name}:{line}: says {path} renders {claimed} objects; it renders {actual}")


def main():
    found = list(blocks())
    unknown = [f"{n}:{l} ```sh {k}" for n, l, k, _ in found if k not in KINDS]
    if unknown:
        raise SystemExit("docs-test: blocks of no known kind:\n  " + "\n  ".join(unknown))
    run_commands = [t.strip() for _, _, k, t in found if k == "run-command"]
    if run_commands != ["./scripts/run.sh"]:
        raise SystemExit(f"docs-test: expected one run-command block, ./scripts/run.sh; found {run_commands}")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout

    system = subprocess.Popen(["./scripts/run.sh"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    counts = dict.fromkeys(KINDS, 0)
    try:
        wait_ready(["http://127.0.0.1:8080/readyz", "http://127.0.0.1:8081/readyz"], 900)
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
        os.killpg(system.pid, signal.SIGINT)
        system.wait(timeout=60)

    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    if after != before:
        raise SystemExit(f"docs-test: the documented commands changed or left files:\n{after}")
    print(f"docs: {counts['']} blocks run, the run command started, cluster blocks {counts['cluster']} "
          f"(their `# (run here)` lines run); not run here: test command {counts['test-command']}, "
          f"long {counts['long']}, docker {counts['docker']}")


if __name__ == "__main__":
    sys.exit(main())
