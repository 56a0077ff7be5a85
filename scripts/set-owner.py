#!/usr/bin/env python3
"""Points the deployment at one GitHub repository: the overlays' meridian images at
ghcr.io/<owner>/meridian-* (where release.yml pushes them) and Argo CD's repoURL and the
AppProject's sourceRepos at https://github.com/<owner>/<repo>.git. The deploy workflow runs it
with its own repository before each commit, so a fork deploys its own images from its own git;
run it by hand before the first `kubectl apply -k k8s/gitops` (docs/delivery.md).
Only those strings change; running it again changes nothing.
Usage: scripts/set-owner.py OWNER/REPO"""

import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+")
# The image name release.yml gives each service: ghcr.io/${OWNER,,}/meridian-${SERVICE}.
IMAGE = re.compile(r"^(\s+newName:\s*ghcr\.io/)[^/\s]+(/meridian-[a-z]+\s*)$", re.M)
GIT_URL = re.compile(r"https://github\.com/[^/\s]+/[^/\s]+?\.git\b")


def set_owner(root, repository):
    """Rewrites the files under root; returns {path: (old text, new text)} for those that changed."""
    owner = repository.split("/")[0].lower()
    files = {}
    for path in sorted(root.glob("k8s/overlays/*/kustomization.yaml")):
        files[path] = IMAGE.subn(lambda m: f"{m.group(1)}{owner}{m.group(2)}", path.read_text())
    for path in sorted(root.glob("k8s/gitops/*.yaml")):
        files[path] = GIT_URL.subn(f"https://github.com/{repository}.git", path.read_text())
    found_images = sum(n for p, (_, n) in files.items() if "overlays" in p.parts)
    found_urls = sum(n for p, (_, n) in files.items() if "gitops" in p.parts)
    if not found_images or not found_urls:
        raise ValueError(f"found {found_images} ghcr.io/<owner>/meridian-* images and {found_urls} "
                         "https://github.com/<owner>/<repo>.git URLs; expected both")
    changed = {}
    for path, (text, _) in files.items():
        old = path.read_text()
        if text != old:
            path.write_text(text)
            changed[path] = (old, text)
    return changed


def main():
    if len(sys.argv) != 2 or not REPOSITORY.fullmatch(sys.argv[1]):
        sys.exit(__doc__)
    try:
        changed = set_owner(REPO, sys.argv[1])
    except ValueError as e:
        sys.exit(f"set-owner: {e}")
    for path in changed:
        print(f"{path.relative_to(REPO)}: now {sys.argv[1]}")
    if not changed:
        print(f"already {sys.argv[1]}: nothing changed")


if __name__ == "__main__":
    main()
