#!/usr/bin/env python3
"""Contract checks on the GitHub workflows: what each pinned action does with the inputs we give
it, read from that action's own source at the pinned version (cited beside each check). Each
check takes {file name: parsed workflow} and returns a list of problems, empty when the contract
holds; scripts/test_workflow_contract.py proves each one fails on a broken copy.
Usage: scripts/workflow-contract.py [WORKFLOWS_DIR]   (default .github/workflows)"""

from __future__ import annotations

import itertools
import pathlib
import re
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github/workflows"
PIN = re.compile(r"^(?P<action>[^@\s]+)@(?P<sha>[0-9a-f]{40})$")

# runs.using of each pinned release, read from its action.yml. The runners dropped node20, so
# only node24, composite and docker actions still start. "newest in snapshot" means the pinned
# tag is newer than the stored copy of the action's repository: the row gives the newest tag
# that copy has, same major, and its runtime.
RUNTIMES = {
    "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1": ("v7.0.1", "node24"),
    "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97": ("v7.0.0", "node24"),
    "actions/download-artifact@3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c": ("v8.0.1", "node24"),
    # newest in snapshot: v7.0.0 (bbbca2dd), node24
    "actions/upload-artifact@043fb46d1a93c77aae656e7c1c64a875d1fc6a0a": ("v7.0.1", "node24"),
    # newest in snapshot: v4.1.0 (a2bbfa25), composite around actions/attest v4.1.0 (node24)
    "actions/attest-build-provenance@0f67c3f4856b2e3261c31976d6725780e5e4c373": ("v4.1.1", "composite"),
    "aquasecurity/trivy-action@ed142fd0673e97e23eac54620cfb913e5ce36c25": ("v0.36.0", "composite"),
    # newest in snapshot: v7.3.0 (53b7df96), node24
    "docker/build-push-action@c3c9e263c25d99ce0380d002d59b67737d91b0dc": ("v7.4.0", "node24"),
    # newest in snapshot: v4.1.0 (4907a6dd), node24
    "docker/login-action@dbcb813823bdd20940b903addbd779551569679f": ("v4.6.0", "node24"),
    "docker/metadata-action@dc802804100637a589fabce1cb79ff13a1411302": ("v6.2.0", "node24"),
    # newest in snapshot: v4.3.0 (37fe6310), node24
    "docker/setup-buildx-action@f87e5991a6d7451dcb8d9637bfbc97413f497069": ("v4.4.1", "node24"),
    # newest in snapshot: v4.36.2 (8aad20d1), upload-sarif/action.yml node24
    "github/codeql-action/upload-sarif@2892aa5e19bbd11bc0cff5427e3b750a04d9e3c2": ("v4.38.2", "node24"),
    "grafana/setup-k6-action@db07bd9765aac508ef18982e52ab937fe633a065": ("v1.2.1", "node24"),
    "sigstore/cosign-installer@6f9f17788090df1f26f669e9d70d6ae9567deba6": ("v4.1.2", "composite"),
    "slackapi/slack-github-action@91efab103c0de0a537f72a35f6b8cda0ee76bf0a": ("v2.1.1", "node20"),
    "slackapi/slack-github-action@0d95c9a7becc1e6e297d76df9bc735c44f4cbcbc": ("v3.0.5", "node24"),
    "Swatinem/rust-cache@6323deb102c322ba6fcbdcafc7e3dddab59af2b6": ("v2.9.2", "node24"),
    # newest in snapshot: v2.86.5 (ba47c86a), composite
    "taiki-e/install-action@f7e5d7c961414b23f5b25b2da9294395d08513ad": ("v2.87.26", "composite"),
    "zaproxy/action-api-scan@5158fe4d9d8fcc75ea204db81317cce7f9e5453d": ("v0.10.0", "node24"),
}
RUNNABLE = {"node24", "composite", "docker"}


def load(directory=WORKFLOWS) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(pathlib.Path(directory).glob("*.yml"))}


def jobs(workflows):
    for name, workflow in workflows.items():
        for job_id, job in (workflow.get("jobs") or {}).items():
            yield name, job_id, job


def steps(workflows, action=None):
    """(workflow, job id, job, step) for each step, only those of `action` when given."""
    for name, job_id, job in jobs(workflows):
        for step in job.get("steps") or []:
            uses = step.get("uses", "")
            if action is None or uses.split("@")[0] == action:
                yield name, job_id, job, step


def truthy(value) -> bool:
    # Action inputs arrive as strings; YAML's true becomes "true".
    return str(value).strip().lower() == "true"


def one_line(text) -> str:
    return " ".join(str(text).split())


def matrix_legs(job) -> list[dict]:
    """Each combination of the job's matrix, as GitHub expands it: the product of the list axes,
    then each `include` entry added to the legs whose axis values it matches (or as a leg of its
    own when it matches none)."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    if not isinstance(matrix, dict):
        return [{}]
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude") and isinstance(v, list)}
    legs = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] or [{}]
    for extra in matrix.get("include") or []:
        original = {k: v for k, v in extra.items() if k in axes}
        matched = [leg for leg in legs if all(leg[k] == v for k, v in original.items())]
        for leg in matched:
            leg.update(extra)
        if not matched:
            legs.append(dict(extra))
    return legs


def expand(value, leg) -> str:
    return re.sub(r"\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}", lambda m: str(leg.get(m.group(1), m.group(0))),
                  str(value))


def check_trivy_sarif(workflows) -> list[str]:
    # trivy-action v0.36.0 entrypoint.sh:75-83: with TRIVY_FORMAT=sarif and
    # INPUT_LIMIT_SEVERITIES_FOR_SARIF not exactly "true", it runs `unset TRIVY_SEVERITY`, so
    # the scan reports (and exit-code fails on) every severity, not the `severity` input.
    return [f"{w}/{j}: trivy-action writes SARIF without limit-severities-for-sarif: true, so its "
            f"severity filter is dropped and any LOW/MEDIUM finding fails the job"
            for w, j, _, s in steps(workflows, "aquasecurity/trivy-action")
            if (s.get("with") or {}).get("format") == "sarif"
            and str((s.get("with") or {}).get("limit-severities-for-sarif", "")) not in ("True", "true")]


def check_zap_fails_only_on_fail_rules(workflows) -> list[str]:
    # zaproxy/action-api-scan v0.10.0 index.js:64-72 fails the step on exit code 1 or 2 when
    # fail_action is true; zap-api-scan.py exits 2 for "at least one WARN and no FAILs" unless
    # -I ("do not return failure on warning"). Only -I leaves the rules file's FAIL in charge.
    problems = []
    for w, j, _, s in steps(workflows):
        if not s.get("uses", "").startswith("zaproxy/action-"):
            continue
        inputs = s.get("with") or {}
        if truthy(inputs.get("fail_action", False)) and "-I" not in str(inputs.get("cmd_options", "")).split():
            problems.append(f"{w}/{j}: ZAP step {s.get('name', s['uses'])!r} has fail_action true without -I "
                            "in cmd_options: every WARN fails the job, not only the rules marked FAIL")
    return problems


def runner_arch(label) -> str | None:
    # GitHub-hosted labels: ubuntu-24.04 (x64), ubuntu-24.04-arm / ubuntu-22.04-arm (arm64).
    if re.fullmatch(r"ubuntu-\d\d\.\d\d-arm|ubuntu-latest-arm|ubuntu-\d\d\.\d\d-arm64", label):
        return "linux/arm64"
    if re.fullmatch(r"ubuntu-(\d\d\.\d\d|latest)", label):
        return "linux/amd64"
    return None


def check_native_multiplatform_release(workflows) -> list[str]:
    """release builds each platform on a runner of that platform and merges the per-platform
    digests into one index, and that index's digest is what is signed, attested and handed to
    deploy (docs: docs.docker.com/build/ci/github-actions/multi-platform, "Distribute build
    across multiple runners")."""
    release = {"release.yml": workflows["release.yml"]}
    problems = [f"{w}/{j}: QEMU (setup-qemu-action): each platform must build natively"
                for w, j, _, _ in steps(release, "docker/setup-qemu-action")]
    built = set()
    build_jobs = set()
    for w, j, job, s in steps(release, "docker/build-push-action"):
        build_jobs.add(j)
        for leg in matrix_legs(job):
            platforms = [p.strip() for p in expand((s.get("with") or {}).get("platforms", ""), leg).split(",")]
            runner = expand(job.get("runs-on", ""), leg)
            if len(platforms) != 1:
                problems.append(f"{w}/{j} {leg}: builds {platforms} in one job: one platform per runner")
                continue
            if runner_arch(runner) != platforms[0]:
                problems.append(f"{w}/{j} {leg}: builds {platforms[0]} on runner {runner!r} "
                                f"({runner_arch(runner) or 'unknown arch'}): emulated or not buildable")
            outputs = expand((s.get("with") or {}).get("outputs", ""), leg)
            if "push-by-digest=true" not in outputs:
                problems.append(f"{w}/{j}: per-platform images must be pushed by digest, not tagged")
            built.add(platforms[0])
    if built != {"linux/amd64", "linux/arm64"}:
        problems.append(f"release.yml: builds {sorted(built)}, not linux/amd64 and linux/arm64")
    merge_jobs = [(j, job) for _, j, job in jobs(release)
                  if any("imagetools create" in str(s.get("run", "")) for s in job.get("steps") or [])]
    if not merge_jobs:
        problems.append("release.yml: no job merges the platform digests (docker buildx imagetools create)")
    for j, job in merge_jobs:
        needs = job.get("needs", [])
        if not set([needs] if isinstance(needs, str) else needs) & build_jobs:
            problems.append(f"release.yml/{j}: merges before the platform builds (needs none of {sorted(build_jobs)})")
        merge_ids = {s["id"] for s in job["steps"] if "imagetools create" in str(s.get("run", "")) and "id" in s}
        merged = {f"${{{{ steps.{i}.outputs.digest }}}}" for i in merge_ids}
        subjects = {
            "cosign sign": [s.get("env", {}).get("DIGEST") for s in job["steps"] if "cosign sign" in str(s.get("run", ""))],
            "attest-build-provenance": [(s.get("with") or {}).get("subject-digest") for s in job["steps"]
                                        if s.get("uses", "").startswith("actions/attest-build-provenance@")],
            "the recorded digest for deploy": [s["env"]["DIGEST"] for s in job["steps"]
                                               if "DIGEST" in s.get("env", {}) and "digests/" in str(s.get("run", ""))],
        }
        for what, digests in subjects.items():
            if not digests or any(d not in merged for d in digests):
                problems.append(f"release.yml/{j}: {what} uses {digests}, not the merged index's digest {sorted(merged)}")
    if not any("cosign sign" in str(s.get("run", "")) for *_, s in steps(release)):
        problems.append("release.yml: nothing signs the images")
    return problems


def permissions_of(workflow, job) -> dict:
    permissions = job.get("permissions", workflow.get("permissions", {}))
    return permissions if isinstance(permissions, dict) else {}


def check_attestation_storage_record(workflows) -> list[str]:
    # actions/attest v4.1.0 (what attest-build-provenance v4 wraps): create-storage-record
    # defaults to true with push-to-registry (attest-build-provenance action.yml); src/attest.ts
    # 64-104 then calls the artifact metadata API, which needs `artifact-metadata: write`, and
    # without it only warns ("Failed to create storage record"). Either grant it or turn the
    # record off.
    problems = []
    for w, j, job, s in steps(workflows):
        if not re.match(r"actions/attest(-build-provenance)?@", s.get("uses", "")):
            continue
        inputs = s.get("with") or {}
        if not truthy(inputs.get("push-to-registry", False)):
            continue
        if truthy(inputs.get("create-storage-record", True)) and \
                permissions_of(workflows[w], job).get("artifact-metadata") != "write":
            problems.append(f"{w}/{j}: attestation with push-to-registry creates a storage record, which needs "
                            "`artifact-metadata: write` (or create-storage-record: false)")
    return problems


def check_action_runtimes(workflows) -> list[str]:
    problems = []
    for w, j, _, s in steps(workflows):
        uses = s.get("uses", "")
        if not uses or uses.startswith(("./", "docker://")):
            continue
        if not PIN.match(uses):
            problems.append(f"{w}/{j}: {uses} is not pinned by commit SHA")
        elif uses not in RUNTIMES:
            problems.append(f"{w}/{j}: {uses} is not in RUNTIMES: read runs.using in its action.yml and add it")
        elif RUNTIMES[uses][1] not in RUNNABLE:
            tag, using = RUNTIMES[uses]
            problems.append(f"{w}/{j}: {uses.split('@')[0]} {tag} runs on {using}, which the runners no longer have")
    return problems


def check_sarif_upload_skips_fork_prs(workflows) -> list[str]:
    # A pull_request from a fork gets a read-only GITHUB_TOKEN whatever the workflow asks; the
    # upload then gets 403 "Resource not accessible by integration", which codeql-action
    # (src/upload-lib.ts, the 403 case, then throw) turns into a failed step.
    guard = "github.event.pull_request.head.repo.full_name == github.repository"
    problems = []
    for w, j, job, s in steps(workflows, "github/codeql-action/upload-sarif"):
        on = workflows[w].get("on", workflows[w].get(True)) or {}
        if "pull_request" not in on:
            continue
        if guard not in one_line(s.get("if", "")) and guard not in one_line(job.get("if", "")):
            problems.append(f"{w}/{j}: SARIF upload runs on pull requests from forks (read-only token): "
                            f"guard it with `{guard}`")
    return problems


def check_deploy_sets_the_owner(workflows) -> list[str]:
    """The images release pushes (ghcr.io/<owner, lower-case>/meridian-<service>) are the ones
    deploy writes: every deploy job that commits runs scripts/set-owner.py with this repository
    first, and release names its images the way set-owner.py writes them."""
    problems = []
    for _, j, job in jobs({"deploy.yml": workflows["deploy.yml"]}):
        runs = [one_line(s.get("run", "")) for s in job.get("steps") or []]
        envs = [s.get("env") or {} for s in job.get("steps") or []]
        commit = next((i for i, r in enumerate(runs) if "git commit" in r), None)
        if commit is None:
            continue
        owner = [i for i, r in enumerate(runs) if "scripts/set-owner.py" in r
                 and envs[i].get("REPOSITORY") == "${{ github.repository }}" and '"$REPOSITORY"' in r]
        if not owner or owner[0] > commit:
            problems.append(f"deploy.yml/{j}: commits without first running scripts/set-owner.py with "
                            "${{ github.repository }}: a fork would deploy another owner's images")
    names = [s for *_, s in steps({"release.yml": workflows["release.yml"]}) if s.get("id") == "image"]
    for s in names:
        if (s.get("env") or {}).get("OWNER") != "${{ github.repository_owner }}" or \
                "ghcr.io/${OWNER,,}/meridian-${SERVICE}" not in str(s.get("run", "")):
            problems.append("release.yml: the image name is not ghcr.io/<repository owner, lower-case>/meridian-<service>, "
                            "the name scripts/set-owner.py writes")
    if not names:
        problems.append("release.yml: no step with id `image` names the images")
    return problems


CHECKS = [check_trivy_sarif, check_zap_fails_only_on_fail_rules, check_native_multiplatform_release,
          check_attestation_storage_record, check_action_runtimes, check_sarif_upload_skips_fork_prs,
          check_deploy_sets_the_owner]


def main():
    workflows = load(sys.argv[1] if len(sys.argv) > 1 else WORKFLOWS)
    failed = False
    for check in CHECKS:
        problems = check(workflows)
        failed |= bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {check.__name__}")
        for problem in problems:
            print(f"     {problem}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
