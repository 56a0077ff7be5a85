"""The workflow contract (scripts/workflow-contract.py) holds on the workflows and catches each
mistake it is there for; the deploy workflow's own shell steps, run twice against a local bare
git repository, are a no-op success the second time. Run by scripts/security.sh."""

import copy
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

REPO = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("workflow_contract", REPO / "scripts/workflow-contract.py")
contract = importlib.util.module_from_spec(spec)
spec.loader.exec_module(contract)

WORKFLOWS = contract.load(os.environ.get("WORKFLOWS_DIR", contract.WORKFLOWS))


def step(workflows, workflow, job, predicate):
    return next(s for s in workflows[workflow]["jobs"][job]["steps"] if predicate(s))


def uses(action):
    return lambda s: s.get("uses", "").startswith(action + "@")


def runs(fragment):
    return lambda s: fragment in s.get("run", "")


class TheContractHolds(unittest.TestCase):
    def test_every_check(self):
        for check in contract.CHECKS:
            with self.subTest(check=check.__name__):
                self.assertEqual(check(WORKFLOWS), [])


class EachCheckCatchesAMistake(unittest.TestCase):
    def assertCaught(self, check, mutate, fragment):
        broken = copy.deepcopy(WORKFLOWS)
        mutate(broken)
        problems = check(broken)
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_trivy_sarif_without_the_severity_limit(self):
        self.assertCaught(contract.check_trivy_sarif,
                          lambda w: step(w, "security.yml", "trivy-images", uses("aquasecurity/trivy-action"))[
                              "with"].pop("limit-severities-for-sarif"), "trivy-images: trivy-action writes SARIF")
        self.assertCaught(contract.check_trivy_sarif,
                          lambda w: step(w, "security.yml", "trivy-repo", uses("aquasecurity/trivy-action"))[
                              "with"].update({"limit-severities-for-sarif": "yes"}), "trivy-repo")

    def test_zap_failing_on_warnings(self):
        self.assertCaught(contract.check_zap_fails_only_on_fail_rules,
                          lambda w: step(w, "dast.yml", "dast", lambda s: s.get("name") == "ZAP API scan, timezones")[
                              "with"].update(cmd_options="-a"), "'ZAP API scan, timezones' has fail_action true")
        # `-Ia` is not -I: the action passes cmd_options on as words.
        self.assertCaught(contract.check_zap_fails_only_on_fail_rules,
                          lambda w: step(w, "dast.yml", "dast", lambda s: s.get("name") == "ZAP API scan, items")[
                              "with"].update(cmd_options="-a -II"), "ZAP API scan, items")

    def test_emulated_or_unmerged_release_builds(self):
        def qemu(w):
            w["release.yml"]["jobs"]["build"]["steps"].insert(
                0, {"uses": "docker/setup-qemu-action@99012661954931238ded8c8b007157a8430204e1"})

        def all_on_x64(w):
            w["release.yml"]["jobs"]["build"]["runs-on"] = "ubuntu-24.04"

        def both_platforms(w):
            step(w, "release.yml", "build", uses("docker/build-push-action"))["with"]["platforms"] = \
                "linux/amd64,linux/arm64"

        def sign_a_platform_digest(w):
            step(w, "release.yml", "images", runs("cosign sign"))["env"]["DIGEST"] = \
                "${{ steps.build.outputs.digest }}"

        def attest_nothing_merged(w):
            step(w, "release.yml", "images", uses("actions/attest-build-provenance"))["with"][
                "subject-digest"] = "${{ needs.build.outputs.digest }}"

        def no_merge(w):
            w["release.yml"]["jobs"]["images"]["steps"] = [
                s for s in w["release.yml"]["jobs"]["images"]["steps"] if "imagetools" not in s.get("run", "")]

        cases = [(qemu, "QEMU"), (all_on_x64, "builds linux/arm64 on runner 'ubuntu-24.04'"),
                 (both_platforms, "in one job"), (sign_a_platform_digest, "cosign sign uses"),
                 (attest_nothing_merged, "attest-build-provenance uses"), (no_merge, "no job merges")]
        for mutate, fragment in cases:
            with self.subTest(fragment=fragment):
                self.assertCaught(contract.check_native_multiplatform_release, mutate, fragment)

    def test_attestation_storage_record_without_permission(self):
        self.assertCaught(contract.check_attestation_storage_record,
                          lambda w: step(w, "release.yml", "images", uses("actions/attest-build-provenance"))[
                              "with"].pop("create-storage-record"), "needs `artifact-metadata: write`")

    def test_node20_or_unknown_actions(self):
        def slack_v2(w):
            step(w, "post-deploy.yml", "smoke", uses("slackapi/slack-github-action"))["uses"] = \
                "slackapi/slack-github-action@91efab103c0de0a537f72a35f6b8cda0ee76bf0a"

        def by_tag(w):
            step(w, "ci.yml", "lint", uses("actions/checkout"))["uses"] = "actions/checkout@v7"

        self.assertCaught(contract.check_action_runtimes, slack_v2, "v2.1.1 runs on node20")
        self.assertCaught(contract.check_action_runtimes, by_tag, "not pinned by commit SHA")

    def test_sarif_upload_on_fork_pull_requests(self):
        self.assertCaught(contract.check_sarif_upload_skips_fork_prs,
                          lambda w: step(w, "security.yml", "zizmor", uses("github/codeql-action/upload-sarif"))
                          .update({"if": "${{ !cancelled() }}"}), "security.yml/zizmor: SARIF upload runs")

    def test_deploy_without_the_owner(self):
        def drop(w):
            w["deploy.yml"]["jobs"]["prod"]["steps"] = [
                s for s in w["deploy.yml"]["jobs"]["prod"]["steps"] if "set-owner" not in s.get("run", "")]

        def other_name(w):
            step(w, "release.yml", "images", lambda s: s.get("id") == "image")["run"] = \
                'echo "name=ghcr.io/meridian-example/meridian-${SERVICE}" >> "$GITHUB_OUTPUT"'

        self.assertCaught(contract.check_deploy_sets_the_owner, drop, "deploy.yml/prod: commits without")
        self.assertCaught(contract.check_deploy_sets_the_owner, other_name, "release.yml: the image name")


    def test_deploy_concurrency_for_the_whole_workflow(self):
        def workflow_level(w):
            # deploy.yml before issue 22: one group for the whole run.
            w["deploy.yml"]["concurrency"] = {"group": "deploy", "cancel-in-progress": False}
            for job in w["deploy.yml"]["jobs"].values():
                job.pop("concurrency")

        def one_group(w):
            w["deploy.yml"]["jobs"]["prod"]["concurrency"]["group"] = "Deploy-Dev"

        def cancelling(w):
            w["deploy.yml"]["jobs"]["dev"]["concurrency"]["cancel-in-progress"] = True

        self.assertCaught(contract.check_deploy_concurrency_per_job, workflow_level, "deploy.yml: workflow-level")
        self.assertCaught(contract.check_deploy_concurrency_per_job, workflow_level, "deploy.yml/prod: no concurrency")
        self.assertCaught(contract.check_deploy_concurrency_per_job, one_group, "share the concurrency group")
        self.assertCaught(contract.check_deploy_concurrency_per_job, cancelling, "deploy.yml/dev: cancel-in-progress")

    def test_semgrep_tests_in_a_hidden_directory(self):
        def hidden(w):
            # security.yml before issue 22.
            step(w, "security.yml", "semgrep", runs("semgrep --test"))["run"] = \
                "semgrep --test --metrics=off --disable-version-check .semgrep/"

        def unchecked(w):
            s = step(w, "security.yml", "semgrep", runs("semgrep --test"))
            s["run"] = s["run"].replace("All tests passed", "tests passed")

        self.assertCaught(contract.check_semgrep_tests_run, hidden, "`semgrep --test .semgrep/`: semgrep skips hidden")
        self.assertCaught(contract.check_semgrep_tests_run, hidden, "is not made to fail when it ran no test")
        self.assertCaught(contract.check_semgrep_tests_run, unchecked, "is not made to fail when it ran no test")

    def test_release_cache_written_only_from_tags(self):
        def tag_cache_only(w):
            # release.yml before issue 22: it wrote the cache itself, and nothing on main did.
            inputs = step(w, "release.yml", "build", uses("docker/build-push-action"))["with"]
            inputs["cache-to"] = "type=gha,mode=max,scope=${{ matrix.service }}-${{ matrix.arch }}"
            del w["build-cache.yml"]

        def only_on_tags(w):
            w["build-cache.yml"]["on"] = {"push": {"tags": ["v*"]}}
            w["build-cache.yml"].pop(True, None)

        def min_mode(w):
            s = step(w, "build-cache.yml", "build", lambda s: s.get("name") == "timezones")
            s["with"]["cache-to"] = s["with"]["cache-to"].replace("mode=max", "mode=min")

        def other_target(w):
            step(w, "build-cache.yml", "build", lambda s: s.get("name") == "items")["with"]["target"] = "timezones"

        self.assertCaught(contract.check_release_cache_filled_from_main, tag_cache_only,
                          "release.yml/build items-arm64: writes a type=gha cache")
        self.assertCaught(contract.check_release_cache_filled_from_main, tag_cache_only,
                          "reads type=gha scope 'timezones-amd64', which no workflow on main writes")
        self.assertCaught(contract.check_release_cache_filled_from_main, only_on_tags, "scope 'items-arm64'")
        self.assertCaught(contract.check_release_cache_filled_from_main, min_mode, "scope 'timezones-amd64'")
        self.assertCaught(contract.check_release_cache_filled_from_main, other_target,
                          "scope 'items-amd64' is written by build-cache.yml for ('timezones', 'linux/amd64')")

    def test_release_images_labelled_as_the_repository(self):
        meta = {"id": "meta", "uses": "docker/metadata-action@dc802804100637a589fabce1cb79ff13a1411302",
                "with": {"images": "${{ steps.image.outputs.name }}"}}

        def default_labels(w):
            # release.yml before issue 22.
            build = w["release.yml"]["jobs"]["build"]
            build["steps"].insert(len(build["steps"]) - 3, copy.deepcopy(meta))
            step(w, "release.yml", "build", uses("docker/build-push-action"))["with"]["labels"] = \
                "${{ steps.meta.outputs.labels }}"

        self.assertCaught(contract.check_image_labels_are_the_services, default_labels,
                          "release.yml/build: labels from metadata-action step 'meta'")

        def own_labels(w):
            default_labels(w)
            step(w, "release.yml", "build", uses("docker/metadata-action"))["with"]["labels"] = (
                "org.opencontainers.image.title=meridian-${{ matrix.service }}\n"
                "org.opencontainers.image.description=x\norg.opencontainers.image.licenses=Apache-2.0")

        broken = copy.deepcopy(WORKFLOWS)
        own_labels(broken)
        self.assertEqual(contract.check_image_labels_are_the_services(broken), [])

        root = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        for name in ("Dockerfile", "Cargo.toml"):
            shutil.copy(REPO / name, root / name)
        problems = contract.check_image_labels_are_the_services(WORKFLOWS, root=root)
        self.assertIn("LICENSE: missing, but the images and Cargo.toml name Apache-2.0", problems)
        (root / "LICENSE").write_text("MIT License\n\nCopyright (c) meridian\n")
        problems = contract.check_image_labels_are_the_services(WORKFLOWS, root=root)
        self.assertIn("LICENSE: is not the text of Apache-2.0, the licence the images name", problems)
        shutil.copy(REPO / "LICENSE", root / "LICENSE")
        (root / "Dockerfile").write_text((REPO / "Dockerfile").read_text().replace(
            'title="meridian-timezones"', 'title="meridian"'))
        problems = contract.check_image_labels_are_the_services(WORKFLOWS, root=root)
        self.assertTrue(any("stage 'timezones'" in p for p in problems), problems)

    def test_sarif_upload_without_actions_read(self):
        # security.yml before issue 22: contents: read and security-events: write only.
        self.assertCaught(contract.check_sarif_upload_can_read_the_run,
                          lambda w: w["security.yml"]["jobs"]["trivy-images"]["permissions"].pop("actions"),
                          "security.yml/trivy-images: uploads SARIF without `actions: read`")

    def test_zap_rules_without_an_ignore_row(self):
        root = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        (root / ".zap").mkdir()
        rules = (REPO / ".zap/rules.tsv").read_text()
        self.assertGreater(contract.zap_ignore_rows(rules), 0)
        (root / ".zap/rules.tsv").write_text(rules.replace("\tIGNORE\t", "\tWARN\t"))
        problems = contract.check_zap_rules_file_applies(WORKFLOWS, root=root)
        self.assertTrue(any("has no IGNORE row" in p for p in problems), problems)
        # An IGNORE row that is commented out counts for nothing either.
        (root / ".zap/rules.tsv").write_text(rules.replace("10038\t", "#10038\t").replace("10049\t", "# 10049\t"))
        self.assertTrue(contract.check_zap_rules_file_applies(WORKFLOWS, root=root))
        (root / ".zap/rules.tsv").unlink()
        self.assertTrue(any("does not exist" in p for p in contract.check_zap_rules_file_applies(WORKFLOWS, root=root)))

    def test_artifact_upload_without_overwrite(self):
        def no_overwrite(w):
            # ci.yml before issue 22.
            s = next(s for s in w["ci.yml"]["jobs"]["coverage"]["steps"]
                     if s.get("uses", "").startswith("actions/upload-artifact@"))
            del s["with"]["overwrite"]

        self.assertCaught(contract.check_artifact_uploads_overwrite, no_overwrite,
                          "ci.yml/coverage: uploads 'coverage-lcov' without overwrite: true")

    def test_coverage_summary_only(self):
        def summary_only(w):
            # ci.yml before issue 22.
            s = step(w, "ci.yml", "coverage", runs("cargo llvm-cov --workspace"))
            s["run"] += " --summary-only"

        self.assertCaught(contract.check_coverage_keeps_line_data, summary_only,
                          "ci.yml/coverage: the uploaded lcov.info is exported with --summary-only")

    def test_scheduled_run_in_the_push_group(self):
        # security.yml before issue 22.
        self.assertCaught(contract.check_scheduled_runs_own_concurrency_group,
                          lambda w: w["security.yml"]["concurrency"].update(group="security-${{ github.ref }}"),
                          "security.yml: concurrency group 'security-${{ github.ref }}'")

    def test_dev_commits_everything(self):
        def commit_all(w):
            # deploy.yml before issue 22.
            s = step(w, "deploy.yml", "dev", runs("HEAD:main"))
            s["run"] = s["run"].replace("git add -- k8s/overlays/dev\ngit commit --message", "git commit --all --message")

        def add_all(w):
            s = step(w, "deploy.yml", "dev", runs("HEAD:main"))
            s["run"] = s["run"].replace("git add -- k8s/overlays/dev", "git add -A")

        def add_prod(w):
            s = step(w, "deploy.yml", "dev", runs("HEAD:main"))
            s["run"] = s["run"].replace("git add -- k8s/overlays/dev", "git add -- k8s/overlays/dev k8s/overlays/prod")

        self.assertCaught(contract.check_dev_commits_only_its_overlay, commit_all, "`git commit --all --message")
        self.assertCaught(contract.check_dev_commits_only_its_overlay, add_all, "`git add -A` stages more")
        self.assertCaught(contract.check_dev_commits_only_its_overlay, add_prod, "stages more than the dev overlay")

    def test_matrix_of_includes_only(self):
        job = {"strategy": {"matrix": {"include": [{"arch": "amd64"}, {"arch": "arm64"}]}}}
        self.assertEqual(contract.matrix_legs(job), [{"arch": "amd64"}, {"arch": "arm64"}])

# A stand-in for the GitHub CLI: it keeps the open pull requests in a file and, like gh, refuses
# a second pull request for the same head branch.
FAKE_GH = r"""#!/usr/bin/env bash
set -euo pipefail
echo "gh $*" >> "$GH_LOG"
head=""; prev=""
for arg in "$@"; do [ "$prev" = --head ] && head=$arg; prev=$arg; done
case "$1 $2" in
  "pr list") grep -cx -- "$head" "$GH_PRS" || true ;;
  "pr create")
    if grep -qx -- "$head" "$GH_PRS"; then echo "a pull request for branch \"$head\" already exists" >&2; exit 1; fi
    echo "$head" >> "$GH_PRS" ;;
  *) echo "unexpected: gh $*" >&2; exit 1 ;;
esac
"""


class DeployIsIdempotent(unittest.TestCase):
    """The dev and prod jobs' run steps, taken from deploy.yml as written, against a bare
    repository standing in for GitHub (git's url.insteadOf sends the push URL there)."""

    REPOSITORY = "example/meridian"
    SHA = "0123456789abcdef0123456789abcdef01234567"
    ITEMS = "sha256:" + "ab" * 32
    TIMEZONES = "sha256:" + "cd" * 32

    def setUp(self):
        self.scratch = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.scratch)
        seed = self.scratch / "seed"
        for part in ("scripts/set-image-digests.py", "scripts/set-owner.py", "k8s/overlays/dev/kustomization.yaml",
                     "k8s/overlays/prod/kustomization.yaml", "k8s/gitops"):
            (seed / part).parent.mkdir(parents=True, exist_ok=True)
            copy_ = shutil.copytree if (REPO / part).is_dir() else shutil.copy
            copy_(REPO / part, seed / part)
        self.origin = self.scratch / "origin.git"
        self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.origin))
        self.git("init", "--quiet", "--initial-branch=main", cwd=seed)
        self.git("add", "--all", cwd=seed)
        self.git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "--quiet", "-m", "seed", cwd=seed)
        self.git("push", "--quiet", str(self.origin), "main", cwd=seed)
        bin_dir = self.scratch / "bin"
        bin_dir.mkdir()
        (bin_dir / "gh").write_text(FAKE_GH)
        (bin_dir / "gh").chmod(0o755)
        gitconfig = self.scratch / "gitconfig"
        push_url = f"https://x-access-token:test-token@github.com/{self.REPOSITORY}.git"
        gitconfig.write_text(f'[url "{self.origin}"]\n\tinsteadOf = {push_url}\n')
        (self.scratch / "prs").touch()
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GIT_CONFIG_GLOBAL": str(gitconfig),
                    "GIT_CONFIG_NOSYSTEM": "1", "GITHUB_SHA": self.SHA, "GH_LOG": str(self.scratch / "gh.log"),
                    "GH_PRS": str(self.scratch / "prs")}
        self.expressions = {"inputs.items-digest": self.ITEMS, "inputs.timezones-digest": self.TIMEZONES,
                            "github.token": "test-token", "github.repository": self.REPOSITORY}

    def git(self, *args, cwd=None):
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                              env=getattr(self, "env", None)).stdout.strip()

    def run_job(self, job, workflows=WORKFLOWS):
        """A fresh checkout of main (as actions/checkout gives each run), then the job's run steps."""
        work = pathlib.Path(tempfile.mkdtemp(dir=self.scratch))
        self.git("clone", "--quiet", "--branch", "main", str(self.origin), str(work))
        # A re-run happens later: its commit differs from the first run's even with equal content.
        self.runs = getattr(self, "runs", 0) + 1
        date = f"2026-01-01T00:{self.runs:02d}:00Z"
        for s in workflows["deploy.yml"]["jobs"][job]["steps"]:
            if "run" not in s:
                self.assertTrue(s["uses"].startswith("actions/checkout@"), s)
                continue
            env = {k: re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: self.expressions[m.group(1)], str(v))
                   for k, v in (s.get("env") or {}).items()}
            result = subprocess.run(["bash", "-eo", "pipefail", "-c", s["run"]], cwd=work,
                                    env={**self.env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, **env},
                                    capture_output=True, text=True)
            if result.returncode:
                return result
        return result

    def main_head(self):
        return self.git("--git-dir", str(self.origin), "rev-parse", "main")

    def changed_on_main(self):
        """The files main's commits changed since the seed."""
        seed = self.git("--git-dir", str(self.origin), "rev-list", "--max-parents=0", "main")
        return self.git("--git-dir", str(self.origin), "diff", "--name-only", seed, "main").split()

    def test_dev_commits_only_its_overlay(self):
        # REPOSITORY is not the seed's owner: set-owner.py rewrites prod and Argo CD's objects too.
        result = self.run_job("dev")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(self.changed_on_main(), ["k8s/overlays/dev/kustomization.yaml"])

    def test_dev_committing_all_would_reach_prod(self):
        # deploy.yml before issue 22 (`git commit --all`): what test_dev_commits_only_its_overlay
        # catches.
        broken = copy.deepcopy(WORKFLOWS)
        s = step(broken, "deploy.yml", "dev", runs("HEAD:main"))
        s["run"] = s["run"].replace("git diff --quiet -- k8s/overlays/dev", "git diff --quiet").replace(
            "git add -- k8s/overlays/dev\ngit commit --message", "git commit --all --message")
        result = self.run_job("dev", broken)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("k8s/overlays/prod/kustomization.yaml", self.changed_on_main())

    def test_dev_twice(self):
        first = self.run_job("dev")
        self.assertEqual(first.returncode, 0, first.stderr)
        after_first = self.main_head()
        second = self.run_job("dev")
        self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
        self.assertEqual(self.main_head(), after_first, "a re-run committed again")
        dev = self.git("--git-dir", str(self.origin), "show", "main:k8s/overlays/dev/kustomization.yaml")
        self.assertIn(self.ITEMS, dev)
        self.assertIn("newName: ghcr.io/example/meridian-items", dev)

    def test_prod_twice_then_after_the_merge(self):
        self.assertEqual(self.run_job("dev").returncode, 0)
        branch = f"deploy/prod-{self.SHA[:12]}"
        for attempt in (1, 2):
            result = self.run_job("prod")
            self.assertEqual(result.returncode, 0, f"run {attempt}: {result.stdout}{result.stderr}")
        self.assertEqual((self.scratch / "prs").read_text().split(), [branch])
        promoted = self.git("--git-dir", str(self.origin), "show", f"{branch}:k8s/overlays/prod/kustomization.yaml")
        self.assertIn(self.TIMEZONES, promoted)
        # Merged: prod now equals dev, and promoting again has nothing to do.
        self.git("--git-dir", str(self.origin), "update-ref", "refs/heads/main", f"refs/heads/{branch}")
        (self.scratch / "prs").write_text("")
        result = self.run_job("prod")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((self.scratch / "prs").read_text(), "", "opened a pull request with no change")


if __name__ == "__main__":
    unittest.main()
