#!/usr/bin/env python3
"""Does items' memory stay bounded under the k6 soak mix? Runs the release binaries as
load-tests/bench.py does (services on CPU 0, k6 on CPU 1, items on SQLite in a fresh
directory), sends the project's traffic mix (load-tests/mix.js) at a constant arrival rate and
samples items' VmRSS every 5 s. Reported, not asserted: the target line says met or not met.
Writes BENCH_OUT/soak-memory.json and BENCH_OUT/soak-memory.md (a fragment for
docs/performance.md).

The load is mix.js's `sendOne` from a small k6 script of its own rather than meridian.js's soak
scenario, whose teardown deletes every item the run created: here the table keeps growing, as
in production, and the measurement ends with the arrival-rate window. The write rate limit is
raised to the offered rate on purpose: the measurement is of items storing every create the mix
sends (a tenth of the rate, past the default 50/s), so the table grows at that pace. (A 429 would
not count as failed either way: mix.js counts it in writes_rate_limited, reported here.)
The clock starts when k6's setup (20 seed items) has finished and the constant rate begins.

Settings: SOAK_RATE (requests/s, default 1000), SOAK_SECONDS (measured load after the
warm-up, default 300), SOAK_WARMUP (seconds of load before it, default 60: 6 minutes in all),
BENCH_OUT (default docs/).
  python3 load-tests/soak_memory.py     (after `cargo build --release --bins`)"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's Process, machine() and pinning)

RATE = int(os.environ.get("SOAK_RATE", "1000"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
WARMUP = float(os.environ.get("SOAK_WARMUP", "60"))
TOTAL = WARMUP + SECONDS
OUT = pathlib.Path(os.environ.get("BENCH_OUT", bench.REPO / "docs"))
SAMPLE_EVERY = 5.0
PHASES = 4
TARGET_GROWTH = 0.10
DELIVERED = 0.95  # achieved/offered below this: the run measured an overloaded service
START_MARKER = "soak-memory: constant rate starts"

K6_SCRIPT = """
import { sendOne, startRun } from '%(mix)s';

export const options = {
  scenarios: { soak: { executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
    duration: __ENV.DURATION, preAllocatedVUs: 50, maxVUs: 500 } },
  summaryTrendStats: ['med', 'p(95)', 'p(99)', 'max'],
  setupTimeout: '60s',
};

export function setup() {
  const data = startRun(20);
  console.log('%(marker)s');
  return data;
}

export default function (data) {
  sendOne(data);
}
"""


def metric(metrics_url, name):
    """One gauge's value from the Prometheus text on the metrics port (None if absent)."""
    status, body = bench.http_status(metrics_url)
    if status != 200:
        return None
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", body.decode(), re.M)
    return float(match.group(1)) if match else None


def count_items(items_url):
    """Every item in the database, paged through GET /v1/items (exact; run after the load)."""
    count, cursor = 0, None
    while True:
        url = f"{items_url}/v1/items?limit=100" + (f"&cursor={cursor}" if cursor else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.loads(response.read())
        count += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return count


def schedule():
    """Sample times (seconds after the rate starts): every 5 s, plus the end of warm-up and of
    each of the post-warm-up phases exactly."""
    times = {round(i * SAMPLE_EVERY, 3) for i in range(int(TOTAL // SAMPLE_EVERY) + 1)}
    phase = SECONDS / PHASES
    times |= {round(WARMUP + k * phase, 3) for k in range(PHASES + 1)}
    return sorted(t for t in times if 0 <= t <= TOTAL)


class K6:
    """k6 on CPU 1; `started` is set when its setup has finished and the constant rate begins."""

    def __init__(self, items, timezones, scratch):
        script = pathlib.Path(scratch) / "soak-memory.js"
        script.write_text(K6_SCRIPT % {"mix": (pathlib.Path(__file__).resolve().parent / "mix.js").as_posix(),
                                        "marker": START_MARKER})
        self.summary = pathlib.Path(scratch) / "soak-memory-summary.json"
        self.log = pathlib.Path(scratch) / "k6.log"
        env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
        self.proc = subprocess.Popen(
            ["taskset", "-c", bench.LOAD_CPU, "k6", "run", "--no-usage-report", "--no-color",
             "--summary-export", str(self.summary),
             "-e", f"ITEMS_URL={items.url}", "-e", f"TIMEZONES_URL={timezones.url}",
             "-e", f"API_KEY={bench.API_KEY}", "-e", f"RATE={RATE}", "-e", f"DURATION={TOTAL:g}s",
             str(script)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started = threading.Event()
        self.start_time = None
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self):
        with open(self.log, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                if not self.started.is_set() and START_MARKER in line:
                    self.start_time = time.monotonic()
                    self.started.set()

    def wait(self):
        code = self.proc.wait()
        self.reader.join()
        if code not in (0, 99):  # 99: a threshold breached (none are set here, but harmless)
            raise RuntimeError(f"k6 exited {code}; see {self.log}:\n{self.log.read_text()[-2000:]}")
        m = json.loads(self.summary.read_text())["metrics"]
        return {"requests": m["http_reqs"]["count"], "rps": m["http_reqs"]["rate"],
                "failed": m["http_req_failed"]["value"],
                "rate_limited": m.get("writes_rate_limited", {}).get("count", 0),
                "dropped": m.get("dropped_iterations", {}).get("count", 0),
                "p50_ms": m["http_req_duration"]["med"], "p99_ms": m["http_req_duration"]["p(99)"]}


def at(samples, t):
    return next(s for s in samples if abs(s["t"] - t) < 1e-6)


def main():
    if WARMUP <= 0 or SECONDS <= 0:
        sys.exit("SOAK_WARMUP and SOAK_SECONDS must be positive")
    with tempfile.TemporaryDirectory() as scratch:
        metrics_port = bench.free_port()
        timezones = bench.Process("timezones", {}, "/readyz", scratch)
        items = bench.Process("items", {
            "TIMEZONES_URL": timezones.url, "DUMMY_API_KEY": bench.API_KEY, "SECRET_MESSAGE": "bench",
            "DATABASE_URL": f"sqlite://{tempfile.mkdtemp(dir=scratch)}/items.db",
            "METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "WRITE_RATE_PER_SECOND": str(max(RATE, 50)), "WRITE_BURST": str(max(RATE, 100)),
        }, "/readyz", scratch)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        try:
            idle_rss = items.rss_mib()
            print(f"soak: {RATE}/s for {WARMUP:g} s of warm-up, then {SECONDS:g} s measured;, items idle RSS {idle_rss:.1f} MiB")
            k6 = K6(items, timezones, scratch)
            while not k6.started.wait(0.1):
                if k6.proc.poll() is not None:
                    k6.wait()
                    raise RuntimeError(f"k6 ended before its load started; see {k6.log}")
            samples = []
            for t in schedule():
                delay = k6.start_time + t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sample = {"t": t, "rss_mib": items.rss_mib(), "items_count_gauge": metric(metrics_url, "items_count")}
                samples.append(sample)
                print(f"  t={t:6.1f} s  items RSS {sample['rss_mib']:6.1f} MiB  "
                      f"items_count gauge {sample['items_count_gauge']}", flush=True)
            k6_result = k6.wait()
            item_count = count_items(items.url)
            final_rss = items.rss_mib()
        finally:
            items.stop()
            timezones.stop()

    warm, end = at(samples, WARMUP), at(samples, TOTAL)
    phase = SECONDS / PHASES
    phases = []
    previous = warm
    for k in range(1, PHASES + 1):
        s = at(samples, WARMUP + k * phase)
        phases.append({"phase": k, "t_end": s["t"], "rss_mib": s["rss_mib"],
                       "growth_vs_warmup": (s["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"],
                       "growth_vs_previous": (s["rss_mib"] - previous["rss_mib"]) / previous["rss_mib"]})
        previous = s
    results = {
        "machine": bench.machine(), "run": bench.provenance(), "rate": RATE, "seconds_after_warmup": SECONDS, "warmup_seconds": WARMUP,
        "total_seconds": TOTAL,
        "sample_every_seconds": SAMPLE_EVERY, "idle_rss_mib": idle_rss,
        "warmup_rss_mib": warm["rss_mib"], "end_rss_mib": end["rss_mib"],
        "max_rss_mib": max(s["rss_mib"] for s in samples),
        "growth_after_warmup": (end["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"],
        "phases": phases, "items_at_end": item_count, "rss_after_counting_mib": final_rss,
        "k6": k6_result, "samples": samples,
        "target": {"text": "items' RSS after a 1-minute warm-up grows ≤ 10%", "max_growth": TARGET_GROWTH},
    }
    results["target"]["met"] = results["growth_after_warmup"] <= TARGET_GROWTH
    if WARMUP != 60:
        results["target"]["text"] += f" (this run: {WARMUP:g}-s warm-up, then {SECONDS:g} s)"
    # A service that cannot keep up holds more requests in flight, and so more memory: the
    # figure describes the soak only if the offered rate was served.
    results["load_delivered"] = k6_result["rps"] >= DELIVERED * RATE and \
        k6_result["dropped"] <= (1 - DELIVERED) * RATE * TOTAL
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak-memory.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "soak-memory.md").write_text(report(results))
    print(report(results))
    print(f"wrote {OUT / 'soak-memory.md'} and {OUT / 'soak-memory.json'}")


def report(r):
    k = r["k6"]
    overloaded = "" if r["load_delivered"] else f"""
**The offered rate was not delivered** (under {DELIVERED:.0%} of it achieved, or more than
{1 - DELIVERED:.0%} of the iterations dropped): the machine was busy or the services saturated, so
requests queued in flight and the RSS above is that of an overloaded service. Rerun on a quiet
machine before reading the target line.
"""
    rows = "\n".join(f"| {p['phase']} (to {p['t_end']:g} s) | {p['rss_mib']:.1f} | {p['growth_vs_warmup']:+.1%} | "
                     f"{p['growth_vs_previous']:+.1%} |" for p in r["phases"])
    return f"""## Memory under the soak mix

GENERATED by `load-tests/soak_memory.py`. {bench.provenance_line(r)} The k6 traffic mix (`load-tests/mix.js`) at a constant
{r['rate']:,} requests/s for {r['total_seconds']:g} s ({r['warmup_seconds']:g} s of warm-up, then {r['seconds_after_warmup']:g} s
measured), items on SQLite in a fresh directory (the table grows by every create; nothing is
deleted), the write rate limit raised to the offered rate; services on CPU 0, k6 on CPU 1;
items' VmRSS sampled every {r['sample_every_seconds']:g} s.

| Target | Measured | |
|---|---|---|
| {r['target']['text']} | {r['growth_after_warmup']:+.1%} ({r['warmup_rss_mib']:.1f} MiB at {r['warmup_seconds']:g} s → {r['end_rss_mib']:.1f} MiB at {r['total_seconds']:g} s) | {bench.verdict(r['target']['met'])} |

| | items RSS (MiB) |
|---|---|
| idle, before the load | {r['idle_rss_mib']:.1f} |
| end of warm-up ({r['warmup_seconds']:g} s) | {r['warmup_rss_mib']:.1f} |
| end ({r['total_seconds']:g} s) | {r['end_rss_mib']:.1f} |
| max of every sample | {r['max_rss_mib']:.1f} |

| Phase after warm-up | RSS at its end (MiB) | vs warm-up | vs previous phase |
|---|---|---|---|
{rows}

Items in the table at the end: {r['items_at_end']:,}. k6: {k['requests']:,} requests,
{k['rps']:,.1f}/s achieved, {k['failed']:.2%} failed, {k['rate_limited']} creates rate-limited,
{k['dropped']} dropped iterations;
p50 {k['p50_ms']:.2f} ms, p99 {k['p99_ms']:.2f} ms.
{overloaded}"""


if __name__ == "__main__":
    main()
