"""The release binaries under test, one fresh process per check, on 127.0.0.1 ports the process
picks itself (BIND_ADDR=127.0.0.1:0; the address is read from its "listening" log line), with a
scratch SQLite file. Every process started is killed when its check ends, and at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

API_KEY = "hostile-suite-api-key-0123456789"
# An anonymous client's guess: 16 characters, the shortest a key may be, and not the key.
MADE_UP_KEY = "made-up-key-0042"

# The clocks the suite runs the services with: short, so each check takes about a second, and
# different from each other, so a check can tell which clock closed a connection.
HEADER_READ_TIMEOUT_MS = 500
WRITE_TIMEOUT_MS = 500
KEEPALIVE_INTERVAL_MS = 500
CLOSE_TIMEOUT_MS = 500
# Longer than every other clock, so that an idle close never passes for another limit.
IDLE_TIMEOUT_MS = 4000
# For the settings a check does not exercise: far beyond the check's own time.
NEVER_MS = 60000
MAX_BODY_BYTES = 65536
MAX_HEADER_BYTES = 32768

BASE_ENV = {
    "HTTP_HEADER_READ_TIMEOUT_MS": str(HEADER_READ_TIMEOUT_MS),
    "HTTP_IDLE_TIMEOUT_MS": str(IDLE_TIMEOUT_MS),
    "HTTP_WRITE_TIMEOUT_MS": str(WRITE_TIMEOUT_MS),
    "HTTP2_KEEPALIVE_INTERVAL_MS": str(NEVER_MS),
    "HTTP_CLOSE_TIMEOUT_MS": str(CLOSE_TIMEOUT_MS),
    "HTTP_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
}

_running: list["Service"] = []


class Service:
    def __init__(self, binary: str, name: str, env: dict[str, str]):
        self.name = name
        self.scratch = tempfile.mkdtemp(prefix=f"meridian-hostile-{name}.")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BIND_ADDR": "127.0.0.1:0",
            "METRICS_ADDR": "127.0.0.1:0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "DUMMY_API_KEY": API_KEY,
            "SECRET_MESSAGE": "hostile suite secret",
            "DATABASE_URL": f"sqlite://{self.scratch}/items.db",
            # Nothing here calls timezones from items: an address nothing listens on.
            "TIMEZONES_URL": "http://127.0.0.1:9",
            "WRITE_RATE_PER_SECOND": "100000",
            "WRITE_BURST": "100000",
            **BASE_ENV,
            **env,
        }
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [binary],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _running.append(self)
        self.port = 0
        self.metrics_port = 0
        found = threading.Event()

        def read():
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("target") == "platform::lifecycle":
                    if event.get("message") == "metrics listening":
                        self.metrics_port = int(event["addr"].rsplit(":", 1)[1])
                    elif event.get("message") == "listening":
                        self.port = int(event["addr"].rsplit(":", 1)[1])
                        found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(20):
            self.stop()
            raise RuntimeError(f"{name} did not log its address within 20 s:\n" + "\n".join(self.lines[-20:]))

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        return _status_field(self.pid, "VmRSS")

    def peak_rss_bytes(self) -> int:
        return _status_field(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metric(self, name: str, *labels: str) -> float:
        """The sum of name's samples whose labels include each label="value" given."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                if all(label in line for label in labels):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self in _running:
            _running.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _status_field(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def stop_all(*_):
    for service in list(_running):
        service.stop()


atexit.register(stop_all)


def _on_signal(signum, _frame):
    stop_all()
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


class Binaries:
    def __init__(self, directory: str):
        self.items = os.path.join(directory, "items")
        self.timezones = os.path.join(directory, "timezones")
        for path in (self.items, self.timezones):
            if not os.access(path, os.X_OK):
                raise SystemExit(f"{path} is missing: build it first (cargo build --release --locked --bins)")

    def start(self, service: str, **env: str) -> Service:
        binary = self.items if service == "items" else self.timezones
        return Service(binary, service, {k: str(v) for k, v in env.items()})


def wait_until(condition, within: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
