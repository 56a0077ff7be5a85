#!/usr/bin/env python3
"""meridian's data-layer benchmark (issue 16): the figures for items' storage at scale, on
SQLite and PostgreSQL, reported against targets (never asserted). Run through
`BENCH_DATA=1 load-tests/bench.sh` (which builds, and starts a PostgreSQL of its own) or
directly once the release binaries are built. Writes BENCH_OUT/performance-data.md (a section
for docs/performance.md) and merges its figures into BENCH_OUT/performance-data.json.

Method, as load-tests/bench.py's (whose helpers it uses): release build; items pinned to CPU 0,
wrk (-t1 -c32, BENCH_SECONDS each) pinned to CPU 1. PostgreSQL is the one BENCH_POSTGRES_URL
names; with BENCH_PG_PIN=1 (bench.sh sets it for the server it starts) its processes are pinned
to CPU 0 too, so the system under test has one core and the load generator the other.

1. Seeding: `seed-items` (the store's own bulk insert), pinned to CPU 0, into a fresh database:
   the first size, then topped up to the second in the same database (seed-items numbers from 0
   again, so names repeat; the rare shapes land at the same ratio: i % 10000 == 0 gives 10
   rare items per 100,000 either way). PostgreSQL gets `VACUUM ANALYZE` after each seeding
   (what autovacuum does soon after a bulk insert); before it, with only `ANALYZE`, the rare
   name is measured once more, with the trigram index's GIN pending list as the load left it.
2. Filtered pages at each size: `?tag=rare`, `?name=zebracorn` (rare), `?tag=common`,
   `?name=lamp` (1 item in 16), `?name=la` (2 characters: no trigram, SQLite scans in page
   order), the first page, and one item by id. On SQLite also `/healthz` of the same process,
   for the ladder's storage step (item by id µs − /healthz µs, µs = 1e6 / req/s).
3. Creates per second through the API into a fresh database (the write rate limit raised out
   of the way; PostgreSQL with DATABASE_MAX_CONNECTIONS=16), without and with a unique
   Idempotency-Key per request.
4. With BENCH_BEFORE_ITEMS (an items binary of the previous release), its creates/s on both
   back ends as in 3 (no key), and read by id on PostgreSQL before and after, each binary on a fresh database of its own with 1,000 items
   created through its API, measured alternately twice each in this run.

Settings: BENCH_DATA_SIZES (default 100000,1000000), BENCH_DATA_BACKENDS (default
sqlite,postgres), BENCH_SECONDS (default 5), BENCH_OUT (default docs/), BENCH_POSTGRES_URL,
BENCH_PG_PIN, BENCH_BEFORE_ITEMS, BENCH_DATA_EXPLAIN=all (EXPLAIN every filter, not only misses).
Quick mode: BENCH_DATA_SIZES=1000,5000 BENCH_SECONDS=1."""

import json
import os
import pathlib
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import (API_KEY, BIN, CONCURRENCY, LOAD_CPU, REPO, SECONDS, SERVICE_CPU,  # noqa: E402
                   Process, fixed_concurrency, http_status, machine, provenance, provenance_line, to_ms,
                   verdict)

SIZES = [int(s) for s in os.environ.get("BENCH_DATA_SIZES", "100000,1000000").split(",")]
BACKENDS = os.environ.get("BENCH_DATA_BACKENDS", "sqlite,postgres").split(",")
OUT = pathlib.Path(os.environ.get("BENCH_OUT", REPO / "docs"))
PG_URL = os.environ.get("BENCH_POSTGRES_URL")
BEFORE = os.environ.get("BENCH_BEFORE_ITEMS")
EXPLAIN_ALL = os.environ.get("BENCH_DATA_EXPLAIN") == "all"
PAGE_P50_TARGET_MS = 5.0
STEP_TARGET_US = 10.0
READ_RATIO_TARGET = 1.5
WRITE_TARGETS = {"sqlite": 4900, "postgres": 5600}  # creates/s before issue 16
WRITE_CONNECTIONS = "16"
UNLIMITED_WRITES = {"WRITE_RATE_PER_SECOND": "1000000", "WRITE_BURST": "1000000"}

# name, query string, what it exercises.
PAGES = [
    ("tag=rare", "?tag=rare", "rare tag (1 in 10,000)"),
    ("name=zebracorn", "?name=zebracorn", "rare name substring (1 in 10,000)"),
    ("tag=common", "?tag=common", "common tag (1 in 2)"),
    ("name=lamp", "?name=lamp", "common name substring (1 in 16)"),
    ("name=la", "?name=la", "2-character needle (no trigram)"),
    ("first page", "", "no filter"),
]

LUA_CREATE = """
local counter = 0
local keyed = os.getenv("BENCH_KEYED") == "1"
local prefix = os.getenv("BENCH_KEY_PREFIX")
local api_key = os.getenv("BENCH_API_KEY")
request = function()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = api_key}
  if keyed then
    headers["Idempotency-Key"] = prefix .. "-" .. counter
  end
  local body = string.format('{"name":"bench write %d","tags":["bench","group-%d"]}',
                             counter, counter % 100)
  return wrk.format("POST", "/v1/items", headers, body)
end
"""


def log(message):
    print(message, flush=True)


def wrk(url, connections=CONCURRENCY, script=None, env=None):
    """wrk -t1 pinned to the load CPU, as fixed_concurrency, with any number of connections
    and optionally a Lua script."""
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}",
                          f"-d{SECONDS:g}s", "--latency", *(["-s", script] if script else []), url],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": to_ms(latency["50"]), "p99_ms": to_ms(latency["99"]),
            "non_2xx": int(errors.group(1)) if errors else 0}


def psql(url, sql):
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def pg_database(name):
    """A fresh database on the benchmark's PostgreSQL; returns its URL."""
    psql(PG_URL, f'DROP DATABASE IF EXISTS "{name}"')
    psql(PG_URL, f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(PG_URL)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def pin_postgres():
    """Pins the PostgreSQL server (postmaster and its processes; backends it forks later
    inherit it) to the service CPU."""
    data = psql(PG_URL, "SHOW data_directory")
    postmaster = int(pathlib.Path(data, "postmaster.pid").read_text().split()[0])
    pids = [postmaster] + [int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()
                           and _ppid(p) == postmaster]
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", SERVICE_CPU, str(pid)], check=False,
                       capture_output=True)
    return len(pids)


def _ppid(proc_dir):
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def seed(url, count):
    out = subprocess.run(["taskset", "-c", SERVICE_CPU, BIN / "seed-items", str(count)],
                         env={"PATH": os.environ["PATH"], "DATABASE_URL": url},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def items_env(url, timezones, extra=None):
    return {"TIMEZONES_URL": timezones.url, "DUMMY_API_KEY": API_KEY, "SECRET_MESSAGE": "bench",
            "DATABASE_URL": url, **(extra or {})}


def create_via_api(items, count):
    ids = []
    for i in range(count):
        body = json.dumps({"name": f"bench item {i}", "tags": ["bench", f"group-{i % 100}"]})
        status, answer = http_status(f"{items.url}/v1/items", body.encode(),
                                     {"X-API-Key": API_KEY, "Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError(f"create {i} answered {status}: {answer[:200]!r}")
        ids.append(json.loads(answer)["id"])
    return ids


def first_id(items, query=""):
    status, body = http_status(f"{items.url}/v1/items{query}")
    if status != 200:
        raise RuntimeError(f"GET /v1/items{query} answered {status}")
    page = json.loads(body)["items"]
    return page[len(page) // 2]["id"] if page else None


# The statements services/items/src/store/{sqlite,postgres}.rs run for these pages (limit 21:
# the page size 20 plus one), with the values filled in, for EXPLAIN. Keep them in step.
SQLITE_COLUMNS = "i.id, i.name, i.description, i.tags, i.version, i.created_at, i.updated_at"


def sqlite_statement(query):
    params = dict(urllib.parse.parse_qsl(query.lstrip("?")))
    if "name" in params and len(params["name"]) >= 3:
        needle = params["name"]
        return (f"SELECT {SQLITE_COLUMNS} FROM item_names JOIN items i ON i.seq = item_names.rowid "
                "WHERE item_names MATCH ?1 AND item_names.rowid >= 0 AND i.name LIKE ?2 ESCAPE '\\' "
                "ORDER BY item_names.rowid LIMIT 21", ['"' + needle + '"', f"%{needle.lower()}%"])
    if "tag" in params:
        return (f"SELECT {SQLITE_COLUMNS} FROM item_tags t JOIN items i ON i.seq = t.seq "
                "WHERE t.tag = ?1 AND t.seq >= 0 ORDER BY t.seq LIMIT 21", [params["tag"]])
    pattern = f"%{params['name'].lower()}%" if "name" in params else None
    return ("SELECT id, name, description, tags, version, created_at, updated_at FROM items "
            "WHERE seq >= 0 AND (?1 IS NULL OR name LIKE ?1 ESCAPE '\\') ORDER BY seq LIMIT 21",
            [pattern])


def postgres_statement(query):
    params = dict(urllib.parse.parse_qsl(query.lstrip("?")))
    columns = "id, name, description, tags, version, created_at, updated_at"
    if "tag" in params:
        return ("SELECT i.id, i.name, i.description, i.tags, i.version, i.created_at, i.updated_at "
                "FROM item_tags t JOIN items i ON i.id = t.item_id "
                f"WHERE t.tag = '{params['tag']}' AND t.item_id > '' ORDER BY t.item_id LIMIT 21")
    if "name" in params:
        return (f"SELECT {columns} FROM items WHERE LOWER(name) LIKE '%{params['name'].lower()}%' "
                "AND id > '' ORDER BY id LIMIT 21")
    return f"SELECT {columns} FROM items WHERE id > '' ORDER BY id LIMIT 21"


def explain(backend, url, query):
    try:
        if backend == "sqlite":
            path = url.split("://", 1)[1]
            sql, params = sqlite_statement(query)
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            return f"EXPLAIN QUERY PLAN {sql}  -- {params}\n" + "\n".join(
                f"{'  ' * (parent > 0)}{detail}" for _, parent, _, detail in rows)
        sql = postgres_statement(query)
        return f"EXPLAIN ANALYZE {sql}\n" + psql(url, "EXPLAIN ANALYZE " + sql)
    except (sqlite3.Error, subprocess.CalledProcessError) as e:
        return f"EXPLAIN failed: {e}"


def measure_pages(backend, url, size, timezones, scratch):
    items = Process("items", items_env(url, timezones), "/readyz", scratch)
    figures = {"ready_ms": items.ready_seconds * 1000}
    try:
        for name, query, _ in PAGES:
            target = f"{items.url}/v1/items{query}"
            http_status(target)
            figures[name] = fixed_concurrency(target)
            # One connection: the latency of a request that does not queue behind 31 others.
            figures[name]["one_connection"] = wrk(target, connections=1)
            if EXPLAIN_ALL or max(figures[name]["p50_ms"],
                                  figures[name]["one_connection"]["p50_ms"]) > PAGE_P50_TARGET_MS:
                figures[name]["explain"] = explain(backend, url, query)
            log(f"  {backend} {size:>9,} {name:14} {figures[name]}")
        item = first_id(items)
        if backend == "sqlite":
            figures["healthz"] = fixed_concurrency(f"{items.url}/healthz")
            log(f"  {backend} {size:>9,} {'/healthz':14} {figures['healthz']}")
        figures["item by id"] = fixed_concurrency(f"{items.url}/v1/items/{item}")
        log(f"  {backend} {size:>9,} {'item by id':14} {figures['item by id']}")
        figures["rss_mib"] = items.rss_mib()
    finally:
        items.stop()
    return figures


def measure_one(url, query, timezones, scratch):
    items = Process("items", items_env(url, timezones), "/readyz", scratch)
    try:
        target = f"{items.url}/v1/items{query}"
        http_status(target)
        figures = fixed_concurrency(target)
        figures["one_connection"] = wrk(target, connections=1)
    finally:
        items.stop()
    return figures


def measure_writes(backend, url, timezones, scratch, before=False):
    """Creates/s into a fresh database; `before`: the previous release's items (no keys)."""
    extra = dict(UNLIMITED_WRITES)
    if backend == "postgres":
        extra["DATABASE_MAX_CONNECTIONS"] = WRITE_CONNECTIONS
    env = items_env(url, timezones, extra)
    items = (_process_from(_before_binary(scratch), env, scratch) if before
             else Process("items", env, "/readyz", scratch))
    script = pathlib.Path(scratch) / "create.lua"
    script.write_text(LUA_CREATE)
    figures = {}
    variants = ((("creates (previous release)", "0"),) if before else
                (("creates", "0"), ("creates with Idempotency-Key", "1")))
    try:
        for variant, keyed in variants:
            figures[variant] = wrk(items.url, script=script, env={
                "BENCH_KEYED": keyed, "BENCH_KEY_PREFIX": uuid.uuid4().hex, "BENCH_API_KEY": API_KEY})
            log(f"  {backend} {variant:30} {figures[variant]}")
    finally:
        items.stop()
    return figures


def measure_before_after(timezones, scratch):
    """Read by id on PostgreSQL: the previous release's items and this one, each on a fresh
    database with 1,000 items created through its own API, alternately, twice each."""
    runs = {"before": [], "after": []}
    binaries = {"before": pathlib.Path(BEFORE).resolve(), "after": BIN / "items"}
    processes, targets = {}, {}
    try:
        for which, binary in binaries.items():
            url = pg_database(f"bench_read_{which}")
            link = _before_binary(scratch) if which == "before" else binary
            # The write limit is raised only so the 1,000 creates need not wait it out.
            processes[which] = _process_from(link, items_env(url, timezones, UNLIMITED_WRITES), scratch)
            ids = create_via_api(processes[which], 1000)
            targets[which] = f"{processes[which].url}/v1/items/{ids[500]}"
            http_status(targets[which])
        for _ in range(2):
            for which in ("before", "after"):
                runs[which].append(fixed_concurrency(targets[which]))
                log(f"  postgres read by id {which:6} {runs[which][-1]}")
    finally:
        for process in processes.values():
            process.stop()
    mean = {w: sum(r["rps"] for r in v) / len(v) for w, v in runs.items()}
    return {"binary_before": str(binaries["before"]), "runs": runs, "mean_rps": mean,
            "ratio": mean["after"] / mean["before"]}


def _before_binary(scratch):
    """The previous release's binary, as `items` in a directory of its own (Process runs
    BIN/<name>)."""
    link = pathlib.Path(scratch) / "bin-before" / "items"
    if not link.exists():
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(pathlib.Path(BEFORE).resolve())
    return link


def _process_from(binary, env, scratch):
    """bench.Process runs BIN/<name>; this points it at another directory for one start."""
    import bench
    saved = bench.BIN
    bench.BIN = binary.parent
    try:
        return Process(binary.name, env, "/readyz", scratch)
    finally:
        bench.BIN = saved


def main():
    results = {"machine": machine(), "run": provenance(), "seconds_per_measurement": SECONDS, "concurrency": CONCURRENCY,
               "sizes": SIZES, "backends": {}, "postgres_pinned": False}
    if "postgres" in BACKENDS and not PG_URL:
        log("BENCH_POSTGRES_URL is not set: PostgreSQL left out")
    backends = [b for b in BACKENDS if b == "sqlite" or (b == "postgres" and PG_URL)]
    if PG_URL:
        results["postgres_version"] = psql(PG_URL, "SHOW server_version")
        results["postgres_settings"] = {s: psql(PG_URL, f"SHOW {s}") for s in
                                        ("max_connections", "fsync", "shared_buffers")}
        if os.environ.get("BENCH_PG_PIN") == "1":
            results["postgres_pinned"] = pin_postgres() > 0
    started = time.perf_counter()
    results["load_average_at_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        timezones = Process("timezones", {}, "/readyz", scratch)
        try:
            for backend in backends:
                log(f"{backend}: seeding, filtered pages, item by id")
                if backend == "sqlite":
                    url = f"sqlite://{tempfile.mkdtemp(dir=scratch)}/items.db"
                else:
                    url = pg_database("bench_data")
                figures = {"seeding": [], "pages": {}}
                seeded = 0
                for size in SIZES:
                    s = seed(url, size - seeded)
                    seeded = size
                    if backend == "postgres":
                        # Right after the load, the trigram index's new entries sit in GIN's
                        # pending list, which every ?name= search reads through until a vacuum
                        # (autovacuum after inserts) merges it: the rare name measured so first.
                        psql(url, "ANALYZE")
                        figures.setdefault("gin_pending", {})[str(size)] = measure_one(
                            url, "?name=zebracorn", timezones, scratch)
                        log(f"  {backend} {size:>9,} zebracorn, GIN pending list unmerged: "
                            f"{figures['gin_pending'][str(size)]}")
                        t = time.perf_counter()
                        psql(url, "VACUUM ANALYZE")
                        s["vacuum_analyze_seconds"] = time.perf_counter() - t
                    s["total"] = size
                    figures["seeding"].append(s)
                    log(f"  {backend} seeded to {size:,}: {s}")
                    figures["pages"][str(size)] = measure_pages(backend, url, size, timezones, scratch)
                if backend == "sqlite":
                    path = pathlib.Path(url.split("://", 1)[1])
                    figures["file_mib"] = sum(p.stat().st_size for p in path.parent.iterdir()) / 2**20
                    for p in path.parent.iterdir():
                        p.unlink()  # the next steps need the disk more than this file
                else:
                    figures["database_mib"] = int(psql(url, "SELECT pg_database_size(current_database())")) / 2**20
                log(f"{backend}: creates per second")
                write_url = (f"sqlite://{tempfile.mkdtemp(dir=scratch)}/items.db" if backend == "sqlite"
                             else pg_database("bench_writes"))
                figures["writes"] = measure_writes(backend, write_url, timezones, scratch)
                if BEFORE:
                    before_url = (f"sqlite://{tempfile.mkdtemp(dir=scratch)}/items.db" if backend == "sqlite"
                                  else pg_database("bench_writes_before"))
                    figures["writes"].update(measure_writes(backend, before_url, timezones, scratch, before=True))
                    if backend == "postgres":
                        psql(PG_URL, 'DROP DATABASE IF EXISTS "bench_writes_before"')
                results["backends"][backend] = figures
                if backend == "postgres":
                    psql(PG_URL, 'DROP DATABASE IF EXISTS "bench_data"')
                    psql(PG_URL, 'DROP DATABASE IF EXISTS "bench_writes"')
            if BEFORE and PG_URL:
                log("postgres: read by id, previous release vs this build")
                results["read_by_id_before_after"] = measure_before_after(timezones, scratch)
            elif BEFORE:
                log("BENCH_BEFORE_ITEMS is set but PostgreSQL is not: before/after left out")
        finally:
            timezones.stop()
    results["run_seconds"] = time.perf_counter() - started
    results["load_average_at_end"] = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    merged_path = OUT / "performance-data.json"
    merged = json.loads(merged_path.read_text()) if merged_path.exists() else {}
    merged.update(results)
    merged_path.write_text(json.dumps(merged, indent=2) + "\n")
    (OUT / "performance-data.md").write_text(report(results))
    log(f"wrote {OUT / 'performance-data.md'} and {merged_path} ({results['run_seconds']:.0f} s)")


def us(figure):
    return 1e6 / figure["rps"]


def report(r):
    lines = []
    sizes = ", ".join(f"{s:,}" for s in r["sizes"])
    pg = ""
    if "postgres_version" in r:
        settings = r["postgres_settings"]
        pg = (f" PostgreSQL {r['postgres_version']} (max_connections {settings['max_connections']}, "
              f"fsync {settings['fsync']}, shared_buffers {settings['shared_buffers']}), "
              + ("pinned to CPU 0 with items." if r["postgres_pinned"] else "not pinned."))
    lines.append(f"""## The data layer at scale

GENERATED by `load-tests/bench_data.py` (`BENCH_DATA=1 load-tests/bench.sh`), one run on the
machine above. {provenance_line(r)} Items seeded with `seed-items` (the store's own bulk insert) to {sizes} items;
the data's shapes are in `services/items/src/bin/seed-items.rs`: `rare` tags and the word
`zebracorn` are on 1 item in 10,000, `common` on 1 in 2, `lamp` is in 1 name in 16. The larger
size is the smaller topped up in the same database (names repeat; the shares stay the same).
items on CPU 0, `wrk -t1 -c{r['concurrency']}` on CPU 1, {r['seconds_per_measurement']:g} s per
figure, 20 items a page.{pg} PostgreSQL gets `VACUUM ANALYZE` after each seeding, as
autovacuum does soon after a bulk insert (see the GIN pending list below).
""")
    backends = r["backends"]
    if backends:
        lines.append("### Seeding\n\n| Back end | items | seeded | seconds | items/s |\n|---|---|---|---|---|")
        for backend, f in backends.items():
            for s in f["seeding"]:
                extra = (f" (+ VACUUM ANALYZE {s['vacuum_analyze_seconds']:.1f} s)"
                         if "vacuum_analyze_seconds" in s else "")
                lines.append(f"| {backend} | {s['total']:,} | {s['seeded']:,} | {s['seconds']:.1f}{extra} | {s['per_second']:,.0f} |")
        sizes_on_disk = [f"SQLite file {f['file_mib']:.0f} MiB" for b, f in backends.items() if "file_mib" in f] + \
                        [f"PostgreSQL database {f['database_mib']:.0f} MiB" for b, f in backends.items() if "database_mib" in f]
        lines.append(f"\nAt {r['sizes'][-1]:,} items: {', '.join(sizes_on_disk)}.\n")

        lines.append(f"""### Filtered pages (target: p50 ≤ {PAGE_P50_TARGET_MS:g} ms at each size)

Each page twice: with {r['concurrency']} connections (throughput; a request there queues behind
the others on items' one core, so its p50 is about {r['concurrency']} ÷ req/s) and with one
connection (the latency of a request on its own).
""")
        lines.append(f"| Back end | items | page | req/s ({r['concurrency']} conn.) | p50 ms | p99 ms | "
                     "target | req/s (1 conn.) | p50 ms | p99 ms | target |\n|---|---|---|---|---|---|---|---|---|---|---|")
        misses = []
        for backend, f in backends.items():
            for size, pages in f["pages"].items():
                for name, query, what in PAGES:
                    v, one = pages[name], pages[name]["one_connection"]
                    ok = v["p50_ms"] <= PAGE_P50_TARGET_MS
                    ok_one = one["p50_ms"] <= PAGE_P50_TARGET_MS
                    errors = v["non_2xx"] + one["non_2xx"]
                    lines.append(f"| {backend} | {int(size):,} | `{query or '(none)'}` {what}"
                                 f"{f' ({errors} non-2xx)' if errors else ''} | {v['rps']:,.0f} | "
                                 f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {verdict(ok)} | {one['rps']:,.0f} | "
                                 f"{one['p50_ms']:.2f} | {one['p99_ms']:.2f} | {verdict(ok_one)} |")
                    if not ok_one:
                        misses.append((backend, size, query, v.get("explain", "")))
        lines.append("")
        if misses:
            lines.append("Plans of the pages that missed the target with one connection (the plans of every "
                         "page that missed either figure are in the JSON):\n")
            for backend, size, query, plan in misses:
                lines.append(f"- {backend}, {int(size):,} items, `/v1/items{query}`:\n\n```\n{plan}\n```\n")

        if "postgres" in backends and backends["postgres"].get("gin_pending"):
            rows = []
            for size, v in backends["postgres"]["gin_pending"].items():
                after = backends["postgres"]["pages"][size]["name=zebracorn"]
                rows.append(f"| {int(size):,} | {v['one_connection']['p50_ms']:.2f} | {v['rps']:,.0f} | "
                            f"{after['one_connection']['p50_ms']:.2f} | {after['rps']:,.0f} |")
            lines.append("""PostgreSQL's trigram index is GIN, which queues new entries in a pending list (up to
`gin_pending_list_limit`, 4 MB by default) that every search reads through until a vacuum, an
autovacuum or an overflow merges it. `?name=zebracorn` right after the load (only `ANALYZE`)
and after `VACUUM ANALYZE`:

| items | p50 ms (1 conn.), pending | req/s (32 conn.), pending | p50 ms (1 conn.), merged | req/s (32 conn.), merged |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n")
        lines.append("### Item by id\n\n| Back end | items | req/s | p50 ms | p99 ms | µs/request |\n|---|---|---|---|---|---|")
        for backend, f in backends.items():
            for size, pages in f["pages"].items():
                v = pages["item by id"]
                lines.append(f"| {backend} | {int(size):,} | {v['rps']:,.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {us(v):.1f} |")
        if "sqlite" in backends:
            lines.append(f"\nThe ladder's storage step on SQLite (item by id µs − `/healthz` µs of the same process; "
                         f"target ≤ {STEP_TARGET_US:g} µs):\n")
            lines.append("| items | /healthz req/s | item by id req/s | step µs | |\n|---|---|---|---|---|")
            for size, pages in backends["sqlite"]["pages"].items():
                step = us(pages["item by id"]) - us(pages["healthz"])
                lines.append(f"| {int(size):,} | {pages['healthz']['rps']:,.0f} | {pages['item by id']['rps']:,.0f} | "
                             f"{step:+.1f} | {verdict(step <= STEP_TARGET_US)} |")
        lines.append("")

    ba = r.get("read_by_id_before_after")
    if ba:
        runs = "; ".join(f"{w}: " + ", ".join(f"{x['rps']:,.0f}" for x in v) for w, v in ba["runs"].items())
        lines.append(f"""### Read by id on PostgreSQL, before and after (target ≥ {READ_RATIO_TARGET:g}×)

The previous release's items (`{pathlib.Path(ba['binary_before']).name}`, sqlx `Any`) and this
build, each on a fresh database of its own with 1,000 items created through its API, the
same settings (default pool), measured alternately twice each in this run (req/s: {runs}).

| | before req/s | after req/s | ratio | |
|---|---|---|---|---|
| `GET /v1/items/{{id}}` | {ba['mean_rps']['before']:,.0f} | {ba['mean_rps']['after']:,.0f} | {ba['ratio']:.2f}× | {verdict(ba['ratio'] >= READ_RATIO_TARGET)} |
""")

    if backends:
        lines.append(f"""### Creates per second

`POST /v1/items` through the API into a fresh database (with BENCH_BEFORE_ITEMS, the previous
release's items too, each on its own fresh database), `wrk -t1 -c{r['concurrency']}` with a Lua
script (a JSON body with two tags; in the keyed run a unique `Idempotency-Key` per request),
the write rate limit raised out of the way; PostgreSQL with DATABASE_MAX_CONNECTIONS={WRITE_CONNECTIONS}.
Target: not lower than before issue 16 (~4.9k/s SQLite, ~5.6k/s PostgreSQL).
""")
        costs = []
        lines.append("| Back end | variant | creates/s | p50 ms | p99 ms | non-2xx | target |\n|---|---|---|---|---|---|---|")
        for backend, f in backends.items():
            for variant, v in f["writes"].items():
                ok = v["rps"] >= WRITE_TARGETS[backend]
                target = ("(reference)" if "previous" in variant
                          else f"{'≥' if ok else '<'} {WRITE_TARGETS[backend]:,}: {verdict(ok)}")
                lines.append(f"| {backend} | {variant} | {v['rps']:,.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
                             f"{v['non_2xx']} | {target} |")
            plain, keyed = f["writes"]["creates"], f["writes"]["creates with Idempotency-Key"]
            if "creates (previous release)" in f["writes"]:
                costs.append(f"{backend}: this build's creates are {plain['rps'] / f['writes']['creates (previous release)']['rps']:.2f}× "
                             "the previous release's, measured in this run")
            costs.append(f"{backend}: a key costs {us(keyed) - us(plain):+.1f} µs per create "
                         f"({keyed['rps'] / plain['rps'] - 1:+.0%} throughput)")
        lines.append("\n" + "; ".join(costs) + ".\n")
    lines.append(f"Raw figures: [performance-data.json](performance-data.json). Run time {r['run_seconds'] / 60:.1f} min.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
