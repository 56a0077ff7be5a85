#!/usr/bin/env python3
"""Contract checks on the GitHub workflows: what each pinned action does with the inputs we give
it, read from that action's own source at the pinned version (cited beside each check). Each
check takes {file name: parsed workflow} and returns a list of problems, empty when the contract
holds; scripts/test_workflow_contract.py proves each one fails on a broken copy.
Usage: scripts/workflow-contract.py [WORKFLOWS_DIR]   (default .github/workflows; the Dockerfile,
Cargo.toml, LICENSE and .zap/ some checks read come from the tree WORKFLOWS_DIR is the
.github/workflows of, e.g. a `git archive` of another commit)"""

from __future__ import annotations

import inspect
import itertools
import pathlib
import re
import shlex
import sys
import tomllib

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
    if not axes:
        # Only `include`: each entry is a leg of its own.
        return [dict(extra) for extra in matrix.get("include") or []] or [{}]
    legs = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
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


def triggers(workflow) -> dict:
    # PyYAML reads the key `on` as True.
    on = workflow.get("on", workflow.get(True)) or {}
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {event: None for event in on}
    return on


def runs_on_main(workflow) -> bool:
    """Whether some run of the workflow has the default branch's ref (and so writes caches
    every other ref can restore): a schedule, or a push that can be a push to main."""
    on = triggers(workflow)
    if "schedule" in on:
        return True
    if "push" not in on:
        return False
    push = on["push"] or {}
    if "branches" in push:
        return "main" in push["branches"]
    return "tags" not in push and "branches-ignore" not in push


def words_of(line) -> list[str]:
    """A shell line's words, [] for one shlex cannot split (an unbalanced quote)."""
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return []


def cache_entries(value, leg) -> list[dict]:
    """build-push-action's cache-from / cache-to: one `key=value,...` entry a line."""
    entries = []
    for line in expand(value or "", leg).splitlines():
        if line.strip():
            entries.append(dict(part.split("=", 1) for part in line.strip().split(",") if "=" in part))
    return entries


def check_deploy_concurrency_per_job(workflows) -> list[str]:
    # GitHub's concurrency (docs.github.com, "Control the concurrency of workflows and jobs"):
    # at most one running and one pending run per group; a newly queued one cancels the pending
    # one. A workflow-level group is held for the whole run, so a prod job waiting for approval
    # (environment: production) keeps the next release's dev commit pending, and a third release
    # cancels it. Each job gets a group of its own, and none cancels a job in progress.
    deploy = workflows["deploy.yml"]
    problems = []
    if "concurrency" in deploy:
        problems.append(f"deploy.yml: workflow-level concurrency {deploy['concurrency']!r}: a prod job waiting "
                        "for approval holds it, and the next releases' dev deploys wait behind it or are cancelled")
    groups = {}
    for _, j, job in jobs({"deploy.yml": deploy}):
        concurrency = job.get("concurrency")
        group = concurrency.get("group") if isinstance(concurrency, dict) else concurrency
        if not group:
            problems.append(f"deploy.yml/{j}: no concurrency group of its own: two releases' {j} jobs can overlap")
            continue
        if isinstance(concurrency, dict) and truthy(concurrency.get("cancel-in-progress", False)):
            problems.append(f"deploy.yml/{j}: cancel-in-progress would stop a deploy halfway through its push")
        groups.setdefault(str(group).lower(), []).append(j)
    for group, members in groups.items():
        if len(members) > 1:
            problems.append(f"deploy.yml: jobs {members} share the concurrency group {group!r}: one group per job")
    return problems


def check_semgrep_tests_run(workflows) -> list[str]:
    # semgrep v1.93.0 (the newest tag stored; we pin 1.182.0, which behaves the same:
    # `semgrep --test .semgrep/` prints "No unit tests found" and exits 0 here)
    # cli/src/semgrep/test.py:335-345 drops every config whose directory name starts with "."
    # and 662-665 then prints "No unit tests found" without failing. The rules must be tested
    # from a directory that is not hidden, and a run must fail unless "All tests passed".
    problems = []
    for w, j, _, s in steps(workflows):
        run = str(s.get("run", ""))
        tested = False
        for line in run.replace("\\\n", " ").splitlines():
            words = words_of(line)
            for i in range(len(words) - 1):
                if words[i] != "semgrep" or words[i + 1] not in ("--test", "test"):
                    continue
                tested = True
                args = list(itertools.takewhile(lambda word: word not in ("|", "||", "&&", ";")
                                                and not re.match(r"\d?>", word), words[i + 2:]))
                targets = [word for word in args if not word.startswith("-")]
                if not targets or any(part.startswith(".") and part not in (".", "..")
                                      for target in targets for part in pathlib.PurePosixPath(target).parts):
                    problems.append(f"{w}/{j}: `semgrep --test {' '.join(targets) or '(no path)'}`: semgrep skips "
                                    "hidden directories and then passes with \"No unit tests found\"")
        if tested and "All tests passed" not in run:
            problems.append(f"{w}/{j}: semgrep --test is not made to fail when it ran no test "
                            "(grep for \"All tests passed\")")
    return problems


def check_release_cache_filled_from_main(workflows) -> list[str]:
    # GitHub's cache scoping (docs.github.com, "Caching dependencies to speed up workflows",
    # restrictions for accessing a cache): a run restores caches from its own ref and the
    # default branch only. BuildKit's type=gha cache is that cache, so a tag's build reads
    # nothing another tag wrote. Each scope release reads must be written, mode=max (the
    # dependency layers are in the intermediate `build` stage), by a build of the same target
    # and platform in a workflow that runs on main; release itself writes none.
    written = {}
    for w, j, job, s in steps(workflows, "docker/build-push-action"):
        if w == "release.yml" or not runs_on_main(workflows[w]):
            continue
        inputs = s.get("with") or {}
        for leg in matrix_legs(job):
            for entry in cache_entries(inputs.get("cache-to"), leg):
                if entry.get("type") == "gha" and entry.get("mode") == "max":
                    written[entry.get("scope", "buildkit")] = (
                        expand(inputs.get("target", ""), leg), expand(inputs.get("platforms", ""), leg), w)
    problems = []
    for w, j, job, s in steps({"release.yml": workflows["release.yml"]}, "docker/build-push-action"):
        inputs = s.get("with") or {}
        for leg in matrix_legs(job):
            if any(e.get("type") == "gha" for e in cache_entries(inputs.get("cache-to"), leg)):
                problems.append(f"release.yml/{j} {leg.get('service', '')}-{leg.get('arch', '')}: writes a type=gha "
                                "cache under the tag's ref, which no later tag can restore")
            target, platform = expand(inputs.get("target", ""), leg), expand(inputs.get("platforms", ""), leg)
            for entry in cache_entries(inputs.get("cache-from"), leg):
                if entry.get("type") != "gha":
                    continue
                scope = entry.get("scope", "buildkit")
                if scope not in written:
                    problems.append(f"release.yml/{j}: reads type=gha scope {scope!r}, which no workflow on main "
                                    "writes (mode=max): a tag restores only its own and main's caches, so it builds cold")
                elif written[scope][:2] != (target, platform):
                    problems.append(f"release.yml/{j}: scope {scope!r} is written by {written[scope][2]} for "
                                    f"{written[scope][:2]}, read for {(target, platform)}")
    return problems


def dockerfile_stages(text) -> dict[str, str]:
    """{stage name: its instructions, continuation lines joined}."""
    stages, name = {}, None
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        match = re.match(r"\s*FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if match:
            name = (match.group(1) or "").lower()
            stages[name] = ""
        elif name is not None:
            stages[name] += line + "\n"
    return stages


# The first words of each licence's text, for the licences we might name.
LICENCE_TEXTS = {"Apache-2.0": ("Apache License", "Version 2.0, January 2004")}


def check_image_labels_are_the_services(workflows, root=REPO) -> list[str]:
    # docker/metadata-action v6.2.0 src/meta.ts:540-566: its `labels` output always starts with
    # org.opencontainers.image.title, .description and .licenses from the repository (name,
    # description, GitHub's licence detection); a `labels` input only overrides them. Given to
    # build-push-action as `labels` (buildx --label), they replace the Dockerfile's LABELs of the
    # same keys (BuildKit frontend/dockerfile/dockerfile2llb/convert.go sets the build's labels on
    # the image config after every instruction), so both images would carry the repository's
    # title and description. Each released target's
    # stage must label its own title, and the licence the images name must be the workspace's,
    # with its text in LICENSE.
    problems = []
    release = {"release.yml": workflows["release.yml"]}
    targets = set()
    for w, j, job, s in steps(release, "docker/build-push-action"):
        inputs = s.get("with") or {}
        targets |= {expand(inputs.get("target", ""), leg) for leg in matrix_legs(job)}
        metas = {m.get("id"): m for m in job.get("steps") or [] if m.get("uses", "").startswith("docker/metadata-action@")}
        for meta_id in re.findall(r"steps\.([A-Za-z0-9_-]+)\.outputs\.labels", str(inputs.get("labels", ""))):
            if meta_id not in metas:
                continue
            custom = str((metas[meta_id].get("with") or {}).get("labels", ""))
            missing = [k for k in ("title", "description", "licenses") if f"org.opencontainers.image.{k}=" not in custom]
            if missing:
                problems.append(f"{w}/{j}: labels from metadata-action step {meta_id!r}: its defaults give every image "
                                f"the repository's {', '.join(missing)} in place of the service's own")
    stages = dockerfile_stages((root / "Dockerfile").read_text())
    for target in sorted(t for t in targets if t):
        if f'org.opencontainers.image.title="meridian-{target}"' not in stages.get(target, ""):
            problems.append(f"Dockerfile: stage {target!r} (a release target) does not label its own title meridian-{target}")
    named = set(re.findall(r'org\.opencontainers\.image\.licenses="([^"]+)"', (root / "Dockerfile").read_text()))
    cargo = tomllib.loads((root / "Cargo.toml").read_text()).get("workspace", {}).get("package", {}).get("license")
    if named != {cargo}:
        problems.append(f"Dockerfile: the images name the licence {sorted(named)}, Cargo.toml {cargo!r}")
    licence = root / "LICENSE"
    head = " ".join(licence.read_text().split()[:12]) if licence.is_file() else ""
    if not licence.is_file():
        problems.append(f"LICENSE: missing, but the images and Cargo.toml name {cargo}")
    elif cargo in LICENCE_TEXTS and not all(words in head for words in LICENCE_TEXTS[cargo]):
        problems.append(f"LICENSE: is not the text of {cargo}, the licence the images name")
    return problems


def check_sarif_upload_can_read_the_run(workflows) -> list[str]:
    # codeql-action v4.36.2 (the newest tag stored; we pin v4.38.2) src/upload-lib.ts:637 calls
    # api.getAnalysisKey() on every upload; src/api-client.ts:173-216 builds it from
    # GET /repos/{owner}/{repo}/actions/runs/{run_id}, and src/upload-sarif-action.ts:142-149
    # fails the step on its error. In a private repository the job's token reads a workflow
    # run only with `actions: read`.
    return [f"{w}/{j}: uploads SARIF without `actions: read`: in a private repository codeql-action "
            "cannot read the workflow run (its analysis key) and the upload fails"
            for w, j, job, _ in steps(workflows, "github/codeql-action/upload-sarif")
            if permissions_of(workflows[w], job).get("actions") not in ("read", "write")]


def zap_ignore_rows(text) -> int:
    """The IGNORE rows as @zaproxy/actions-common-scans v1.4.0 src/action-helper.ts:32-60 reads
    them: lines not starting with #, split on tabs, a non-empty id and IGNORE (any case)."""
    rows = 0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        cells = line.split("\t")
        if cells[0].strip() and len(cells) > 1 and cells[1].strip().upper() == "IGNORE":
            rows += 1
    return rows


def check_zap_rules_file_applies(workflows, root=REPO) -> list[str]:
    # zaproxy/action-api-scan v0.10.0 index.js:45-59: the rules file's IGNORE ids are read into
    # `plugins`, and `-c <rules_file_name>` is added to zap-api-scan.py's command only when
    # plugins.length !== 0. A rules file without an IGNORE row is never given to ZAP, so none of
    # its levels, FAIL included, applies.
    problems = []
    for w, j, _, s in steps(workflows):
        if not s.get("uses", "").startswith("zaproxy/action-"):
            continue
        rules = (s.get("with") or {}).get("rules_file_name")
        if not rules:
            continue
        path, where = root / str(rules), f"{w}/{j} ({s.get('name', s['uses'])})"
        if not path.is_file():
            problems.append(f"{where}: ZAP rules file {rules} does not exist")
        elif zap_ignore_rows(path.read_text()) == 0:
            problems.append(f"{where}: {rules} has no IGNORE row, so the action never passes it to ZAP (-c) "
                            "and its FAIL rules do not apply")
    return problems


def check_coverage_keeps_line_data(workflows) -> list[str]:
    # cargo-llvm-cov src/report.rs:743-744 passes --summary-only to `llvm-cov export` as
    # -summary-only, and LLVM's lcov exporter (llvm/tools/llvm-cov/CoverageExporterLcov.cpp)
    # then writes each file's totals only: no FN/DA records, no line data. An uploaded coverage
    # report must be exported without it.
    problems = []
    for w, j, job in jobs(workflows):
        uploaded = " ".join(str((s.get("with") or {}).get("path", "")) for s in job.get("steps") or []
                            if s.get("uses", "").startswith("actions/upload-artifact@"))
        for s in job.get("steps") or []:
            for line in str(s.get("run", "")).splitlines():
                if "cargo llvm-cov" not in line or "--summary-only" not in line:
                    continue
                words = words_of(line)
                output = next((words[i + 1] for i, word in enumerate(words[:-1]) if word == "--output-path"),
                              next((word.split("=", 1)[1] for word in words if word.startswith("--output-path=")), None))
                if output and output in uploaded.split():
                    problems.append(f"{w}/{j}: the uploaded {output} is exported with --summary-only: "
                                    "file totals only, no line data")
    return problems


def check_scheduled_runs_own_concurrency_group(workflows) -> list[str]:
    # A scheduled run has the default branch's ref (docs.github.com, "Events that trigger
    # workflows": schedule, GITHUB_REF = default branch), the same as a push to main. In a
    # group keyed on the ref alone with cancel-in-progress, each cancels the other.
    problems = []
    for w, workflow in workflows.items():
        if "schedule" not in triggers(workflow):
            continue
        holders = [(w, workflow.get("concurrency"))] + [(f"{w}/{j}", job.get("concurrency"))
                                                        for _, j, job in jobs({w: workflow})]
        for where, concurrency in holders:
            if not concurrency:
                continue
            group = concurrency.get("group") if isinstance(concurrency, dict) else concurrency
            cancels = isinstance(concurrency, dict) and str(concurrency.get("cancel-in-progress", False)) != "False"
            if cancels and not re.search(r"github\.(event_name|run_id)", str(group)):
                problems.append(f"{where}: concurrency group {group!r} is shared by the scheduled run and a push "
                                "to main, and cancel-in-progress makes them cancel each other: key it on github.event_name")
    return problems


def check_dev_commits_only_its_overlay(workflows) -> list[str]:
    """The deploy job that pushes to main commits the dev overlay and nothing else:
    scripts/set-owner.py also rewrites prod's overlay and Argo CD's objects in the checkout, and
    those reach main only through the reviewed promotion pull request. (The behaviour itself is
    run against a local repository in scripts/test_workflow_contract.py.)"""
    problems = []
    for _, j, job in jobs({"deploy.yml": workflows["deploy.yml"]}):
        for s in job.get("steps") or []:
            run = str(s.get("run", ""))
            if "HEAD:main" not in run:
                continue
            added, found = [], []
            for line in run.splitlines():
                words = words_of(line)
                if words[:2] == ["git", "commit"] and any(
                        w == "--all" or re.fullmatch(r"-[A-Za-z]*a[A-Za-z]*", w) for w in words[2:]):
                    found.append(f"deploy.yml/{j}: `{line.strip()}` commits every change in the checkout, "
                                 "set-owner.py's rewrites of prod and Argo CD included")
                if words[:2] == ["git", "add"]:
                    paths = [w for w in words[2:] if not w.startswith("-")]
                    if any(w in ("-A", "--all", "-u", "--update") for w in words[2:]) or \
                            any(not (p + "/").startswith("k8s/overlays/dev/") for p in paths):
                        found.append(f"deploy.yml/{j}: `{line.strip()}` stages more than the dev overlay")
                    added += paths
            if not added and not found:
                found.append(f"deploy.yml/{j}: pushes to main without staging only k8s/overlays/dev")
            problems += found
    return problems


def check_artifact_uploads_overwrite(workflows) -> list[str]:
    # actions/upload-artifact v4+ (action.yml: the `overwrite` input, default false) fails when
    # the run already holds an artifact of that name. Whether "Re-run all jobs" counts as the same
    # run for the artifact service is the backend's decision, not the action's: the toolkit's
    # client (packages/artifact/src/internal/client.ts) only says reruns can leave duplicates,
    # while users report 409 conflicts on re-runs (apache/datafusion-comet#3723,
    # NVIDIA/aicr#1928). Replacing the artifact is right either way: a re-run's output is the one
    # to keep.
    return [f"{w}/{j}: uploads {one_line((s.get('with') or {}).get('name'))!r} without overwrite: true, "
            "so a re-run of the job can fail on the name it uploaded before"
            for w, j, _, s in steps(workflows, "actions/upload-artifact")
            if not truthy((s.get("with") or {}).get("overwrite"))]


CHECKS = [check_artifact_uploads_overwrite, check_trivy_sarif, check_zap_fails_only_on_fail_rules, check_native_multiplatform_release,
          check_attestation_storage_record, check_action_runtimes, check_sarif_upload_skips_fork_prs,
          check_deploy_sets_the_owner, check_deploy_concurrency_per_job, check_semgrep_tests_run,
          check_release_cache_filled_from_main, check_image_labels_are_the_services,
          check_sarif_upload_can_read_the_run, check_zap_rules_file_applies, check_coverage_keeps_line_data,
          check_scheduled_runs_own_concurrency_group, check_dev_commits_only_its_overlay]


def main():
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else WORKFLOWS).resolve()
    workflows = load(directory)
    # The files some checks read beside the workflows (Dockerfile, LICENSE, .zap/): from the
    # tree the workflows are in when they are its .github/workflows, else this repository.
    root = directory.parents[1] if directory.parts[-2:] == (".github", "workflows") else REPO
    failed = False
    for check in CHECKS:
        problems = check(workflows, root=root) if "root" in inspect.signature(check).parameters else check(workflows)
        failed |= bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {check.__name__}")
        for problem in problems:
            print(f"     {problem}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
