#!/usr/bin/env python3
"""Sets image digests in an overlay's kustomization.yaml, the GitOps deploy step
(.github/workflows/deploy.yml): only the `digest:` of the named `images:` entries changes;
comments, order and everything else stay as they are, so the commit shows exactly what moved.
Rejects anything that is not `sha256:` and 64 hex digits, and names the overlay has no entry for.
Usage: scripts/set-image-digests.py OVERLAY_DIR NAME=sha256:... [NAME=sha256:...]
       scripts/set-image-digests.py OVERLAY_DIR --from OTHER_OVERLAY_DIR NAME [NAME...]
         (promotion: copies the named images' digests from the other overlay)"""

import pathlib
import re
import sys

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def digest_lines(lines):
    """(line index, image name, match) for each `digest:` line of an `images:` entry."""
    current, in_images = None, False
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            in_images, current = line.startswith("images:"), None
            continue
        if not in_images:
            continue
        entry = re.match(r"^\s*-\s+name:\s*(\S+)\s*$", line)
        if entry:
            current = entry.group(1)
            continue
        digest = re.match(r"^(\s+digest:\s*)(\S+)(\s*)$", line)
        if digest and current:
            yield i, current, digest


def require(names, found):
    missing = set(names) - set(found)
    if missing:
        raise ValueError(f"no images entry with a digest for {', '.join(sorted(missing))}")


def set_digests(text, digests):
    lines, seen = text.splitlines(keepends=True), set()
    for i, name, digest in list(digest_lines(lines)):
        if name in digests:
            lines[i] = f"{digest.group(1)}{digests[name]}{digest.group(3)}"
            seen.add(name)
    require(digests, seen)
    return "".join(lines)


def digests_in(text, names):
    """The digests of the named `images:` entries of a kustomization."""
    found = {name: digest.group(2) for _, name, digest in digest_lines(text.splitlines()) if name in names}
    require(names, found)
    return found


def parse(arguments):
    digests = {}
    for argument in arguments:
        name, _, digest = argument.partition("=")
        if not name or not DIGEST.fullmatch(digest):
            raise ValueError(f"{argument!r}: expected NAME=sha256:<64 hex digits>")
        digests[name] = digest
    return digests


def main():
    if len(sys.argv) < 3 or (sys.argv[2] == "--from" and len(sys.argv) < 5):
        sys.exit(__doc__)
    path = pathlib.Path(sys.argv[1]) / "kustomization.yaml"
    try:
        if sys.argv[2] == "--from":
            source = pathlib.Path(sys.argv[3]) / "kustomization.yaml"
            digests = parse(f"{n}={d}" for n, d in digests_in(source.read_text(), sys.argv[4:]).items())
        else:
            digests = parse(sys.argv[2:])
        path.write_text(set_digests(path.read_text(), digests))
    except ValueError as e:
        sys.exit(f"set-image-digests: {e}")
    for name, digest in digests.items():
        print(f"{path}: {name} -> {digest}")


if __name__ == "__main__":
    main()
