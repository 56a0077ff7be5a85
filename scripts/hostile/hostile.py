"""Runs the hostile-client checks (checks.py) against the release binaries and prints one line
per check, its measured figures under it, and a last line "N passed, M failed".

Usage: python3 scripts/hostile/hostile.py [--bin-dir target/release] [SUBSTRING...]
(only the checks whose "name service protocol" contains one of the substrings).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checks import CHECKS, Failed, Run  # noqa: E402
from services import Binaries, stop_all  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", default="target/release")
    parser.add_argument("only", nargs="*")
    args = parser.parse_args()
    bins = Binaries(args.bin_dir)

    selected = list(CHECKS)
    if args.only:
        selected = [c for c in selected if any(s in f"{c[0]} {c[1]} {c[2]}" for s in args.only)]

    passed = failed = 0
    suite_started = time.monotonic()
    for name, service, protocol, fn in selected:
        run = Run()
        started = time.monotonic()
        wanted = inspect.signature(fn).parameters
        kwargs = {}
        if "service" in wanted:
            kwargs["service"] = service
        if "protocol" in wanted:
            kwargs["protocol"] = protocol
        error = None
        try:
            fn(run, bins, **kwargs)
        except Failed as failure:
            error = str(failure)
        except Exception as failure:  # a check that breaks is a failed check, with its reason
            error = f"{failure.__class__.__name__}: {failure}\n" + traceback.format_exc(limit=3)
        finally:
            stop_all()
        ok = error is None and not run.failures
        passed += ok
        failed += not ok
        took = time.monotonic() - started
        print(f"{'PASS' if ok else 'FAIL'}  {name}  [{service}, {protocol}]  ({took:.1f} s)", flush=True)
        for figure in run.figures:
            print(f"        {figure}", flush=True)
        if error:
            for line in error.rstrip().splitlines():
                print(f"        ERROR: {line}", flush=True)
    print(f"hostile clients, {time.monotonic() - suite_started:.0f} s against {args.bin_dir}:")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
