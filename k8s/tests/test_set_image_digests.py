"""The GitOps deploy steps (scripts/set-image-digests.py, scripts/set-owner.py) on copies of the real overlays."""

import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/set-image-digests.py"
spec = importlib.util.spec_from_file_location("set_image_digests", SCRIPT)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

ITEMS = "sha256:" + "ab" * 32
TIMEZONES = "sha256:" + "cd" * 32


def render(overlay):
    return subprocess.run(["kubectl", "kustomize", str(overlay)], check=True,
                          capture_output=True, text=True).stdout


class SetImageDigests(unittest.TestCase):
    def setUp(self):
        self.scratch = pathlib.Path(tempfile.mkdtemp())
        # The overlay refers to ../../base and ../../../mesh: copy the tree it needs.
        for part in ("k8s", "mesh"):
            shutil.copytree(REPO / part, self.scratch / part,
                            ignore=shutil.ignore_patterns(".render-*", "__pycache__"))
        self.addCleanup(shutil.rmtree, self.scratch)

    def run_script(self, overlay, *arguments):
        return subprocess.run([sys.executable, str(SCRIPT), str(self.scratch / "k8s/overlays" / overlay),
                               *arguments], capture_output=True, text=True)

    def test_only_the_digests_change_and_the_overlay_renders_them(self):
        path = self.scratch / "k8s/overlays/dev/kustomization.yaml"
        before = path.read_text()
        result = self.run_script("dev", f"meridian-items={ITEMS}", f"meridian-timezones={TIMEZONES}")
        self.assertEqual(result.returncode, 0, result.stderr)
        after = path.read_text()
        changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
        self.assertEqual(len(changed), 2, changed)
        self.assertTrue(all("digest:" in b for _, b in changed))
        rendered = render(self.scratch / "k8s/overlays/dev")
        self.assertIn(f"ghcr.io/meridian-example/meridian-items@{ITEMS}", rendered)
        self.assertIn(f"ghcr.io/meridian-example/meridian-timezones@{TIMEZONES}", rendered)

    def test_prod_is_set_the_same_way(self):
        result = self.run_script("prod", f"meridian-items={ITEMS}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"meridian-items@{ITEMS}", render(self.scratch / "k8s/overlays/prod"))

    def test_bad_digests_and_unknown_names_change_nothing(self):
        path = self.scratch / "k8s/overlays/dev/kustomization.yaml"
        before = path.read_text()
        for argument in ("meridian-items=latest", "meridian-items=sha256:abc",
                         f"meridian-items={ITEMS}\nmalicious: true", f"={ITEMS}", f"nosuchimage={ITEMS}"):
            result = self.run_script("dev", argument)
            self.assertNotEqual(result.returncode, 0, argument)
            self.assertIn("set-image-digests:", result.stderr)
            self.assertEqual(path.read_text(), before, argument)

    def test_promotion_copies_what_dev_runs_to_prod(self):
        self.assertEqual(self.run_script("dev", f"meridian-items={ITEMS}", f"meridian-timezones={TIMEZONES}").returncode, 0)
        result = self.run_script("prod", "--from", str(self.scratch / "k8s/overlays/dev"),
                                 "meridian-items", "meridian-timezones")
        self.assertEqual(result.returncode, 0, result.stderr)
        rendered = render(self.scratch / "k8s/overlays/prod")
        self.assertIn(f"meridian-items@{ITEMS}", rendered)
        self.assertIn(f"meridian-timezones@{TIMEZONES}", rendered)
        # postgres runs only in dev: asking to promote it fails and changes nothing.
        before = (self.scratch / "k8s/overlays/prod/kustomization.yaml").read_text()
        result = self.run_script("prod", "--from", str(self.scratch / "k8s/overlays/dev"), "postgres")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual((self.scratch / "k8s/overlays/prod/kustomization.yaml").read_text(), before)

    def test_entries_outside_images_are_not_touched(self):
        text = "images:\n  - name: a\n    digest: sha256:" + "0" * 64 + "\nother:\n  - name: a\n    digest: keep\n"
        out = module.set_digests(text, {"a": ITEMS})
        self.assertIn(f"digest: {ITEMS}\n", out)
        self.assertTrue(out.endswith("digest: keep\n"))


class SetOwner(unittest.TestCase):
    """scripts/set-owner.py, which the deploy workflow runs with its own repository: a fork's
    overlays pull the images its release pushed, and its Argo CD reads its own git."""

    def setUp(self):
        self.scratch = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.scratch)
        for part in ("k8s", "mesh"):
            shutil.copytree(REPO / part, self.scratch / part,
                            ignore=shutil.ignore_patterns(".render-*", "__pycache__"))
        (self.scratch / "scripts").mkdir()
        shutil.copy(REPO / "scripts/set-owner.py", self.scratch / "scripts")

    def set_owner(self, repository):
        return subprocess.run([sys.executable, str(self.scratch / "scripts/set-owner.py"), repository],
                              capture_output=True, text=True)

    def test_a_fork_deploys_its_own_images_from_its_own_git(self):
        result = self.set_owner("Some-Fork/meridian")
        self.assertEqual(result.returncode, 0, result.stderr)
        for overlay in ("dev", "prod"):
            rendered = render(self.scratch / "k8s/overlays" / overlay)
            # release.yml pushes to ghcr.io/${OWNER,,}/meridian-<service>: lower-case.
            images = set(re.findall(r"image: (\S*meridian-(?:items|timezones)\S*)", rendered))
            self.assertTrue(images, overlay)
            self.assertTrue(all(i.startswith("ghcr.io/some-fork/meridian-") for i in images), images)
        gitops = yaml.safe_load_all(render(self.scratch / "k8s/gitops"))
        urls = [d["spec"]["source"]["repoURL"] for d in gitops if d and d["kind"] == "Application"]
        self.assertEqual(set(urls), {"https://github.com/Some-Fork/meridian.git"})
        project = (self.scratch / "k8s/gitops/appproject.yaml").read_text()
        self.assertIn("- https://github.com/Some-Fork/meridian.git", project)
        self.assertNotIn("meridian-example", project)

    def test_a_second_run_changes_nothing(self):
        self.assertEqual(self.set_owner("Some-Fork/meridian").returncode, 0)
        before = {p: p.read_text() for p in self.scratch.glob("k8s/**/*.yaml")}
        result = self.set_owner("Some-Fork/meridian")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("nothing changed", result.stdout)
        self.assertEqual({p: p.read_text() for p in before}, before)

    def test_a_bad_name_or_nothing_to_rewrite_fails(self):
        self.assertNotEqual(self.set_owner("no-slash").returncode, 0)
        self.assertNotEqual(self.set_owner("a/b; rm -rf /").returncode, 0)
        for path in self.scratch.glob("k8s/overlays/*/kustomization.yaml"):
            path.write_text(path.read_text().replace("ghcr.io/", "docker.io/"))
        result = self.set_owner("Some-Fork/meridian")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("found 0 ghcr.io", result.stderr)


if __name__ == "__main__":
    unittest.main()
