#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's cachegrind: the benchmark's yardstick that
noise cannot move (this VM has no hardware counters, and throughput on a shared 2-core machine
varies by 25% between runs; instruction counts agree to ~2%). The method iai-callgrind uses.

For one endpoint: the release binary runs under `valgrind --tool=cachegrind --cache-sim=no`
twice. Each run waits for the binary's "listening" log line (no probe requests), opens one
keep-alive connection, sends the endpoint's setup requests (say, creating the item to read) and
WARMUP requests; the second run then sends N more. Both are stopped with SIGTERM, and
(Ir_second - Ir_first) / N is the figure: start-up, set-up, warm-up and shutdown cancel out.
Other processes (timezones behind the hop, PostgreSQL) run natively and are not counted.

Used by load-tests/bench.py (the ladder, the hop, telemetry's cost and the PostgreSQL read).
By hand, for one endpoint and a profile of where its instructions go:
  python3 load-tests/instructions.py item-by-id        (after cargo build --release --bins)
  PROFILE=1 python3 load-tests/instructions.py item-by-id   (cg_annotate of the N-request run;
      function names need a build with symbols: CARGO_PROFILE_RELEASE_STRIP=false)
Settings: INSTRUCTIONS_N (default 10000: start-up varies by a few million instructions, from
quanta's clock calibration and SQLite preparing statements, which 10,000 requests dilute to ~1%), INSTRUCTIONS_WARMUP (default 50)."""

import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "release"
N = int(os.environ.get("INSTRUCTIONS_N", "10000"))
WARMUP = int(os.environ.get("INSTRUCTIONS_WARMUP", "50"))
API_KEY = "bench-api-key-0123456789"
# PROFILE=callgrind: the N-request run under callgrind, annotated with inclusive costs (who
# calls what), instead of the cachegrind difference of the two runs.
TOOL = "callgrind" if os.environ.get("PROFILE") == "callgrind" else "cachegrind"
# The counted process and this client share one CPU: a request then runs while the client
# waits for it, the same way each time. On two CPUs, how often the server's threads park and
# wake between requests (thousands of instructions each time) followed what else the machine
# was doing: the same /healthz counted 28,700 on a busy machine and 40,300 on a quiet one.
CPU = os.environ.get("INSTRUCTIONS_CPU", "0")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Binary:
    """One of the release binaries on a free port, under cachegrind or natively; started by
    `with`, stopped with SIGTERM when the block ends (then `instructions` holds its Ir total)."""

    def __init__(self, name, env, scratch, counted=True):
        self.name, self.counted, self.scratch = name, counted, pathlib.Path(scratch)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"PATH": os.environ["PATH"], "BIND_ADDR": f"127.0.0.1:{self.port}",
                    "METRICS_ADDR": "127.0.0.1:0", "LOG_LEVEL": "info", **env}
        self.out = self.scratch / f"cachegrind.{name}.{self.port}"
        self.log_path = self.scratch / f"{name}.{self.port}.log"
        self.instructions = None

    def __enter__(self):
        command = [str(BIN / self.name)]
        if self.counted:
            tool = (["--tool=callgrind", f"--callgrind-out-file={self.out}"] if TOOL == "callgrind"
                    else ["--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={self.out}"])
            command = ["taskset", "-c", CPU, "valgrind", *tool, *command]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        # Its own log line says it listens: no request is spent on finding out. With logging
        # off, a connection is tried every 0.2 s (a few accepted-and-closed connections, well
        # under 1% of N requests).
        while not self.listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
            time.sleep(0.2 if self.env.get("LOG_LEVEL") == "off" else 0.05)
        return self

    def listening(self):
        if self.env.get("LOG_LEVEL") != "off":
            return "listening" in self.log_path.read_text()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.log.close()
        if self.counted:
            summary = re.search(r"^(?:summary|totals): (\d+)", self.out.read_text(), re.M)
            self.instructions = int(summary.group(1))


def send(connection, method, path, body=None, headers=None, expect=200):
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    if response.status != expect:
        raise RuntimeError(f"{method} {path} answered {response.status}: {data[:300]!r}")
    return data


def create_item(connection):
    body = json.dumps({"name": "bench item", "description": "read by the benchmark",
                       "tags": ["bench", "ladder"]})
    created = send(connection, "POST", "/v1/items", body,
                   {"X-API-Key": API_KEY, "Content-Type": "application/json"}, expect=201)
    return json.loads(created)["id"]


def items_env(scratch, **extra):
    database = tempfile.mkdtemp(dir=scratch)
    return {"DUMMY_API_KEY": API_KEY, "SECRET_MESSAGE": "bench",
            "DATABASE_URL": f"sqlite://{database}/items.db", **extra}


# Each endpoint: the binary counted, its settings, and (connection -> path) doing the setup.
def endpoints(scratch, timezones_url=None, otlp_url=None, postgres_url=None):
    no_hop = {"TIMEZONES_URL": "http://127.0.0.1:9"}
    read_item = lambda suffix="": (lambda c: f"/v1/items/{create_item(c)}{suffix}")
    table = {
        "bare": ("bare-hello", {}, lambda c: "/"),
        "openapi-hello": ("openapi-hello", {}, lambda c: "/"),
        "healthz": ("items", items_env(scratch, **no_hop), lambda c: "/healthz"),
        "item-by-id": ("items", items_env(scratch, **no_hop), read_item()),
        "zone-detail": ("timezones", {}, lambda c: "/v1/timezones/Europe/Paris"),
        # Telemetry's cost on the item read: `item-by-id` is "ids" (the default: access log,
        # trace ids, metrics); off drops the log and the ids; on exports every span.
        "item-by-id-telemetry-off": ("items", items_env(scratch, LOG_LEVEL="off",
                                     OTEL_TRACES_SAMPLER="always_off", **no_hop), read_item()),
    }
    if otlp_url:
        table["item-by-id-telemetry-on"] = (
            "items", items_env(scratch, OTEL_TRACES_SAMPLER="always_on",
                               OTEL_EXPORTER_OTLP_ENDPOINT=otlp_url, **no_hop), read_item())
    if timezones_url:
        table["hop"] = ("items", items_env(scratch, TIMEZONES_URL=timezones_url),
                        read_item("?tz=Asia/Tokyo"))
    if postgres_url:
        table["item-by-id-postgres"] = ("items", items_env(scratch, DATABASE_URL=postgres_url, **no_hop),
                                        read_item())
    return table


def run_once(binary, env, setup, requests, scratch):
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(CPU)})
    try:
        return counted_run(binary, env, setup, requests, scratch)
    finally:
        os.sched_setaffinity(0, allowed)


def counted_run(binary, env, setup, requests, scratch):
    with Binary(binary, env, scratch) as process:
        connection = http.client.HTTPConnection("127.0.0.1", process.port, timeout=60)
        path = setup(connection)
        for _ in range(WARMUP + requests):
            send(connection, "GET", path)
        connection.close()
    return process.instructions, process.out


def per_request(binary, env, setup, scratch, n=None):
    """(instructions per request, the two runs' cachegrind files: without and with the N)."""
    n = n or N
    base, base_out = run_once(binary, dict(env), setup, 0, scratch)
    total, out = run_once(binary, dict(env), setup, n, scratch)
    return (total - base) / n, (base_out, out)


class OtlpSink:
    """An OTLP/HTTP receiver that accepts and discards spans (native, not counted)."""

    def __enter__(self):
        import http.server

        class Sink(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def measure(names=None, postgres_url=None, repeat=int(os.environ.get("INSTRUCTIONS_REPEAT", "1"))):
    """{endpoint: [instructions per request, one per repeat]} for the named endpoints (all by
    default). timezones, for the hop, runs natively."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch, OtlpSink() as sink, \
            Binary("timezones", {}, scratch, counted=False) as timezones:
        table = endpoints(scratch, timezones.url, sink.url, postgres_url)
        for name in names or table:
            binary, env, setup = table[name]
            results[name] = [round(per_request(binary, env, setup, scratch)[0]) for _ in range(repeat)]
            print(f"  instructions/request {name:28} {results[name]}", flush=True)
    return results


def main():
    names = sys.argv[1:] or None
    if os.environ.get("PROFILE") and names and len(names) == 1:
        with tempfile.TemporaryDirectory() as scratch, OtlpSink() as sink, \
                Binary("timezones", {}, scratch, counted=False) as timezones:
            binary, env, setup = endpoints(scratch, timezones.url, sink.url,
                                           os.environ.get("BENCH_POSTGRES_URL"))[names[0]]
            figure, (base_out, out) = per_request(binary, env, setup, scratch)
            print(f"{names[0]}: {figure:,.0f} instructions/request; where the N requests' went:")
            if os.environ.get("PROFILE_OUT"):
                # Kept for callgrind_annotate --tree=caller and friends, after the scratch goes.
                shutil.copyfile(out, os.environ["PROFILE_OUT"])
            if TOOL == "callgrind":
                subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], check=True)
                return
            # The difference of the two runs: only what the N requests cost.
            diff = pathlib.Path(scratch) / "requests.diff"
            subprocess.run(["cg_diff", "--mod-funcname=s/\\{\\{closure\\}\\}//g", str(base_out), str(out)],
                           check=True, stdout=open(diff, "w"))
            subprocess.run(["cg_annotate", "--auto=no", str(diff)], check=True)
        return
    print(json.dumps(measure(names, os.environ.get("BENCH_POSTGRES_URL")), indent=2))


if __name__ == "__main__":
    main()
