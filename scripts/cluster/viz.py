#!/usr/bin/env python3
"""Reads `linkerd viz edges -o json` and `linkerd viz stat -o json` (linkerd 2.20, the shapes
in scripts/cluster/upstream-cli.json) for scripts/cluster.sh test.

  viz.py edge SRC_APP DST_APP   < edges.json   prints "CLIENT_ID -> SERVER_ID, tls" (or the
                                               reason it is not TLS) for the first edge whose
                                               pods belong to those apps
  viz.py stat APP               < stat.json    prints "success S, rps R" summed over APP's
                                               ReplicaSets that served traffic, nothing if none
"""
import json
import sys


def owned_by(name: str, app: str) -> bool:
    # Pods and ReplicaSets are named <app>-<hash>[-<suffix>].
    return name.startswith(app + "-")


def edge(rows, src_app, dst_app):
    for row in rows:
        if owned_by(row["src"], src_app) and owned_by(row["dst"], dst_app):
            tls = "tls" if not row.get("no_tls_reason") else "not tls: " + row["no_tls_reason"]
            return f'{row["client_id"]} -> {row["server_id"]}, {tls}'
    return ""


def stat(rows, app):
    served = [r for r in rows if owned_by(r["name"], app) and r.get("success") is not None and r.get("rps")]
    if not served:
        return ""
    rps = sum(float(r["rps"]) for r in served)
    success = sum(float(r["success"]) * float(r["rps"]) for r in served) / rps
    return f"success {success:.3f}, rps {rps:.2f}"


def main():
    text = sys.stdin.read()  # empty under `scripts/cluster.sh plan`, which runs nothing
    rows = json.loads(text) if text.strip() else []
    if sys.argv[1] == "edge":
        print(edge(rows, sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "stat":
        print(stat(rows, sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
