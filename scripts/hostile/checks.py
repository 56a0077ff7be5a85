"""The checks: one attack each, against a fresh process, with the limit it must meet asserted
and the measured figure printed. docs/resilience.md ("Limits a hostile client meets") lists
which check proves which limit.

Every wait polls a real signal (the socket, the kernel's sock_diag, the metrics port) up to a deadline
a little past the limit, so a check that fails says how far off it was, and ends.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time

from hyperframe import frame as hf

from services import (
    API_KEY,
    CLOSE_TIMEOUT_MS,
    HEADER_READ_TIMEOUT_MS,
    IDLE_TIMEOUT_MS,
    KEEPALIVE_INTERVAL_MS,
    MADE_UP_KEY,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    NEVER_MS,
    WRITE_TIMEOUT_MS,
    wait_until,
)
from wire import (
    DEFAULT_WINDOW,
    PREFACE,
    RawH2,
    Stream,
    ServerReadMeter,
    connect,
    h1_request,
    h2_request,
    kernel_socket,
    parse_h1_response,
    server_holds,
    wait_closed,
    wait_released,
)

# How late a connection may be closed past its limit: the server's clocks tick in whole
# milliseconds and this machine's two cores are shared, so the close itself and the
# suite's noticing it take a little time.
SLACK = 0.3
# How early: the server's deadlines may fall a millisecond early, and its clock for a
# connection starts when it accepts it, a little after the suite's.
GRAIN = 0.05
# What the server's side of a connection may take in past a limit before it stops the client:
# its kernel's receive window while the process is not reading (about 128 KiB at
# net.ipv4.tcp_rmem's default), and what hyper and h2 read ahead into their buffers.
READ_AHEAD = 512 * 1024
# The attack's size: far past every limit, and past what a server could read by accident.
BIG_BODY = 20_000_000
# How much a flood may grow the server's memory (peak RSS over RSS before it): a few header
# lists' worth, far under what reading the flood would take.
MEMORY_GROWTH = 16 * 1024 * 1024

WRITE_TARGET = {"items": ("POST", "/v1/items"), "timezones": ("PUT", "/admin/faults")}

CHECKS = []


def check(name: str, service: str, protocol: str):
    def register(fn):
        # Stacked decorators run bottom-up: keep a function's checks in the order written.
        first = next((i for i, c in enumerate(CHECKS) if c[3] is fn), len(CHECKS))
        CHECKS.insert(first, (name, service, protocol, fn))
        return fn

    return register


class Failed(Exception):
    pass


class Run:
    """What a check measured, and which of its expectations failed."""

    def __init__(self):
        self.figures: list[str] = []
        self.failures: list[str] = []

    def note(self, text: str):
        self.figures.append(text)

    def expect(self, ok: bool, text: str):
        self.figures.append(("" if ok else "NOT MET: ") + text)
        if not ok:
            self.failures.append(text)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def size(n: int) -> str:
    return f"{n:,} bytes"


def normal_clients_served(run: Run, port: int, within: float = 1.0):
    """A well-behaved client on each protocol is answered 200 on /healthz, quickly."""
    for protocol, request in (("HTTP/1.1", h1_request), ("HTTP/2", h2_request)):
        started = time.monotonic()
        try:
            answer = request(port, "GET", "/healthz", timeout=within + 2)
            status = answer.status
        except (OSError, RuntimeError, TimeoutError, ConnectionError) as error:
            status = f"no answer ({error})"
        took = time.monotonic() - started
        run.expect(status == 200 and took <= within,
                   f"a normal {protocol} client got {status} in {ms(took)} (limit {ms(within)})")


def is_problem(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip() == "application/problem+json"


def h2_started(port: int, settings=None, rcvbuf=None) -> RawH2:
    """A connection past the preface, with the server's SETTINGS in."""
    client = RawH2(port, rcvbuf)
    client.start(settings)
    if not client.pump(lambda: client.settings_received or client.goaway is not None,
                       time.monotonic() + 2):
        raise Failed("the server sent no SETTINGS within 2 s of the preface")
    return client


def header_frames(client: RawH2, stream_id: int, block: bytes, end_stream: bool, end_headers: bool = True):
    """A header block as HEADERS and CONTINUATION frames of at most 16 KiB each."""
    limit = 16384
    pieces = [block[i : i + limit] for i in range(0, len(block), limit)] or [b""]
    frames = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        flags = {"END_HEADERS"} if last and end_headers else set()
        if i == 0:
            if end_stream:
                flags.add("END_STREAM")
            frames.append(hf.HeadersFrame(stream_id, data=piece, flags=flags))
        else:
            frames.append(hf.ContinuationFrame(stream_id, data=piece, flags=flags))
    client.streams.setdefault(stream_id, Stream())
    return frames


# ---------------------------------------------------------------- request bodies


def _json_start() -> bytes:
    return b'{"name": "' + b"a" * 16374


@check("body-over-limit-chunked", "items", "HTTP/1.1")
@check("body-over-limit-chunked", "timezones", "HTTP/1.1")
def body_over_limit_h1(run: Run, bins, service: str):
    """A 20 MB chunked body (no length) with the service's key: 413, having read about the
    limit and no more."""
    method, path = WRITE_TARGET[service]
    with bins.start(service) as server:
        sock = connect(server.port)
        meter = ServerReadMeter(sock, server.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: hostile\r\nX-API-Key: {API_KEY}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        sock.sendall(head)
        sock.setblocking(False)
        first = b"4000\r\n" + _json_start() + b"\r\n"
        chunk = b"4000\r\n" + b"a" * 16384 + b"\r\n"
        pending = memoryview(first)
        body_sent = 0
        received = bytearray()
        closed = False
        deadline = time.monotonic() + 20
        while body_sent < BIG_BODY and not closed and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.05)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed = True
                received.extend(data)
                if parse_h1_response(bytes(received)) or closed:
                    break
            if writable:
                try:
                    sent = sock.send(pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
                    break
                pending = pending[sent:]
                body_sent += sent
                # Each time: the server's socket is gone (reset) as soon as it closes with
                # unread data, and with it the figure.
                meter.sample()
                if not pending:
                    pending = memoryview(chunk if body_sent < BIG_BODY else b"")
        sock.setblocking(True)
        if body_sent >= BIG_BODY and not closed:
            # All of it went: end it, so a server that read it all can answer.
            try:
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass
        if not closed and parse_h1_response(bytes(received)) is None:
            _, rest = wait_closed(sock, time.monotonic() + 5)
            received.extend(rest)
        taken = max(meter.taken_in() - len(head), 0)
        sock.close()
        answer = parse_h1_response(bytes(received))
        status = answer.status if answer else None
        run.expect(status == 413, f"answered {status if status else 'nothing'} (want 413)")
        if answer:
            run.expect(is_problem(answer.headers.get("content-type")),
                       f"content-type {answer.headers.get('content-type')}")
        bound = MAX_BODY_BYTES + READ_AHEAD
        run.expect(taken <= bound, f"the server's side took in at most {size(taken)} of the body "
                                   f"({size(body_sent)} written into the client's socket), limit "
                                   f"{size(MAX_BODY_BYTES)} + {size(READ_AHEAD)} (kernel window, read-ahead)")


def _h2_big_body(run: Run, bins, service: str, declared: bool):
    method, path = WRITE_TARGET[service]
    with bins.start(service) as server:
        client = h2_started(server.port)
        window = client.server_settings.get(hf.SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        headers = client.request_headers(method, path, [("x-api-key", API_KEY),
                                                        ("content-type", "application/json")])
        if declared:
            headers.append(("content-length", str(BIG_BODY)))
        client.send(client.headers_frame(1, headers, end_stream=False))
        stream = client.streams[1]

        def answered():
            return (stream.headers is not None or stream.reset is not None
                    or client.goaway is not None or client.closed)

        body_sent = 0
        payload = _json_start()
        deadline = time.monotonic() + 20
        while body_sent < BIG_BODY and not answered() and time.monotonic() < deadline:
            room = min(client.conn_send_window, client.stream_send_window[1], 16384, BIG_BODY - body_sent)
            if room <= 0:
                client.pump(lambda: answered() or min(client.conn_send_window, client.stream_send_window[1]) > 0,
                            min(deadline, time.monotonic() + 0.05))
                continue
            data = payload[:room] if body_sent == 0 else b"a" * room
            last = body_sent + room >= BIG_BODY
            frame = hf.DataFrame(1, data=data, flags={"END_STREAM"} if last else set())
            client.conn_send_window -= room
            client.stream_send_window[1] -= room
            if not client.send(frame):
                break
            body_sent += room
        response = client.response(1, time.monotonic() + 5)
        client.close()
        status = response.status
        outcome = status if status else (f"RST_STREAM {response.reset}" if response.reset is not None
                                         else f"GOAWAY {client.goaway.error_code}" if client.goaway else "nothing")
        run.expect(status == 413, f"answered {outcome} (want 413)")
        if response.headers:
            content_type = dict(response.headers).get("content-type")
            run.expect(is_problem(content_type), f"content-type {content_type}")
        bound = MAX_BODY_BYTES + window + 16384
        run.expect(body_sent <= bound,
                   f"server took {size(body_sent)} of {size(BIG_BODY)} (flow control lets through only "
                   f"what it reads: limit {size(MAX_BODY_BYTES)} + its {size(window)} stream window + a frame)")


@check("body-over-limit-no-length", "items", "HTTP/2")
@check("body-over-limit-no-length", "timezones", "HTTP/2")
def body_over_limit_h2(run: Run, bins, service: str):
    """A 20 MB body in DATA frames, no content-length, with the service's key (a made-up key is
    refused before the body: unknown-key-body-not-parsed): 413, having read about the limit and
    no more."""
    _h2_big_body(run, bins, service, declared=False)


@check("body-over-limit-declared", "items", "HTTP/2")
def body_over_limit_declared_h2(run: Run, bins, service: str):
    """The same with content-length: 20000000: 413 from the header, before the body."""
    _h2_big_body(run, bins, service, declared=True)


@check("unknown-key-body-not-parsed", "items", "HTTP/1.1")
@check("unknown-key-body-not-parsed", "items", "HTTP/2")
@check("unknown-key-body-not-parsed", "timezones", "HTTP/1.1")
@check("unknown-key-body-not-parsed", "timezones", "HTTP/2")
def unknown_key(run: Run, bins, service: str, protocol: str):
    """A write with a made-up key and a body that is not JSON: the key is refused (401/403)
    before the body is parsed; a 400 would mean the anonymous body was read and parsed first."""
    method, path = WRITE_TARGET[service]
    with bins.start(service) as server:
        request = h1_request if protocol == "HTTP/1.1" else h2_request
        answer = request(server.port, method, path,
                         [("x-api-key", MADE_UP_KEY), ("content-type", "application/json")], b'{"name": ')
        headers = answer.headers if isinstance(answer.headers, dict) else dict(answer.headers)
        run.expect(answer.status in (401, 403), f"answered {answer.status} (want 401 or 403): "
                                                f"{bytes(answer.body)[:120].decode('utf-8', 'replace')}")
        run.expect(is_problem(headers.get("content-type")), f"content-type {headers.get('content-type')}")


# ---------------------------------------------------------------- HTTP/2 resets

RESET_STREAMS = 10_000
# Connection after connection for this long (at most RESET_CONNECTIONS), so that the normal
# client asking meanwhile is answered many times under the attack.
RESET_SECONDS = 2.0
RESET_CONNECTIONS = 500


class Prober(threading.Thread):
    """A normal client asking /healthz over both protocols while an attack runs."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self):
        turn = 0
        while not self.stop.is_set() and turn < 2000:
            request = h1_request if turn % 2 == 0 else h2_request
            started = time.monotonic()
            try:
                status = request(self.port, "GET", "/healthz", timeout=5).status
                if status != 200:
                    self.failures.append(f"status {status}")
            except (OSError, RuntimeError, TimeoutError, ConnectionError) as error:
                self.failures.append(str(error))
            self.latencies.append(time.monotonic() - started)
            turn += 1
            self.stop.wait(0.02)

    def report(self, run: Run):
        self.stop.set()
        self.join(10)
        worst = max(self.latencies, default=0.0)
        run.expect(not self.failures and worst <= 1.0,
                   f"a normal client meanwhile: {len(self.latencies)} requests, {len(self.failures)} failed, "
                   f"slowest {ms(worst)} (limit 1000 ms)"
                   + (f"; first failure: {self.failures[0]}" if self.failures else ""))


def _reset_attack(run: Run, bins, stream_frames):
    """Opens streams and has each reset at once, up to RESET_STREAMS per connection, on one
    connection after another for RESET_SECONDS; every connection must be cut short by the
    server."""
    with bins.start("items") as server:
        prober = Prober(server.port)
        prober.start()
        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        cut, taken, sent_total, connections = 0, [], 0, 0
        reasons = set()
        while connections < RESET_CONNECTIONS and time.monotonic() - started < RESET_SECONDS:
            connections += 1
            client = h2_started(server.port)
            max_streams = client.server_settings.get(hf.SettingsFrame.MAX_CONCURRENT_STREAMS)
            sent = 0
            deadline = time.monotonic() + 10
            while sent < RESET_STREAMS and client.goaway is None and not client.closed \
                    and time.monotonic() < deadline:
                batch = b"".join(stream_frames(client, 2 * (sent + i) + 1) for i in range(100))
                client.send_raw(batch, deadline)
                sent += 100
            client.pump(lambda: client.goaway is not None or client.closed, time.monotonic() + 2)
            if client.goaway is not None or client.closed:
                cut += 1
            if client.goaway is not None:
                taken.append(client.goaway.last_stream_id // 2 + 1)
                reasons.add(_reason(client.goaway.error_code))
            elif client.closed:
                reasons.add("closed without GOAWAY")
            sent_total += sent
            client.close()
        took = time.monotonic() - started
        cpu = server.cpu_seconds() - cpu_before
        run.expect(cut == connections,
                   f"{cut} of {connections} connections cut by the server "
                   f"({', '.join(sorted(reasons)) or 'none'}); {sent_total:,} streams sent in {ms(took)}")
        if taken:
            run.note(f"streams the server took per connection before its GOAWAY: at most {max(taken):,} "
                     f"(its SETTINGS_MAX_CONCURRENT_STREAMS: {max_streams})")
        run.note(f"server CPU during the attack: {cpu:.2f} s")
        prober.report(run)
        run.expect(server.alive(), "the process is still running")


REASONS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
           6: "FRAME_SIZE_ERROR", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


def _reason(code: int) -> str:
    return "GOAWAY " + REASONS.get(code, str(code))


@check("rapid-reset", "items", "HTTP/2")
def rapid_reset(run: Run, bins):
    """CVE-2023-44487: HEADERS then RST_STREAM(CANCEL) at once, stream after stream."""

    def frames(client: RawH2, stream_id: int) -> bytes:
        headers = client.headers_frame(stream_id, client.request_headers("GET", "/v1/items?limit=100"))
        return headers.serialize() + hf.RstStreamFrame(stream_id, error_code=8).serialize()

    _reset_attack(run, bins, frames)


@check("provoked-reset", "items", "HTTP/2")
def provoked_reset(run: Run, bins):
    """CVE-2025-8671 ("MadeYouReset"): the client makes the server reset each stream itself,
    so no RST_STREAM of the client's is there to count: a WINDOW_UPDATE that takes the stream's
    send window past 2^31-1 is a stream error (FLOW_CONTROL_ERROR, RFC 9113 6.9.1)."""

    def frames(client: RawH2, stream_id: int) -> bytes:
        headers = client.headers_frame(stream_id, client.request_headers("GET", "/v1/items?limit=100"))
        overflow = hf.WindowUpdateFrame(stream_id, window_increment=2**31 - 1)
        return headers.serialize() + overflow.serialize()

    _reset_attack(run, bins, frames)


# ---------------------------------------------------------------- header floods


def _flood(run: Run, server, client: RawH2, first: bytes, next_batch, what: str):
    """Sends first, then next_batch() over and over (up to 20 MB, 20 s) until the server ends
    the connection; asserts it ended it having read little, and that memory stayed flat."""
    rss_before = server.rss_bytes()
    meter = ServerReadMeter(client.sock, server.port)
    head_bytes = client.bytes_sent
    client.send_raw(first)
    flood_sent = 0
    deadline = time.monotonic() + 20
    while flood_sent < BIG_BODY and client.goaway is None and not client.closed and time.monotonic() < deadline:
        batch = next_batch()
        if not client.send_raw(batch, deadline):
            break
        flood_sent += len(batch)
        meter.sample()
    meter.sample()
    client.pump(lambda: client.goaway is not None or client.closed, time.monotonic() + 2)
    meter.sample()
    stream = client.streams.get(1)
    if client.goaway is not None:
        ended = _reason(client.goaway.error_code)
    elif client.closed:
        ended = "closed without GOAWAY"
    elif stream is not None and stream.status == 431:
        ended = "431 on the stream"
    elif stream is not None and stream.reset is not None:
        ended = f"RST_STREAM {REASONS.get(stream.reset, stream.reset)}"
    else:
        ended = None
    taken = max(meter.taken_in() - head_bytes, 0)
    bound = MAX_HEADER_BYTES + READ_AHEAD
    run.expect(ended is not None, f"{what}: the server {'answered with ' + ended if ended else 'never refused it'}"
                                  f" after {size(flood_sent + len(first))} written")
    run.expect(taken <= bound, f"the server's side took in at most {size(taken)} of it, limit "
                               f"{size(MAX_HEADER_BYTES)} + {size(READ_AHEAD)} (kernel window, read-ahead)")
    growth = server.peak_rss_bytes() - rss_before
    run.expect(growth <= MEMORY_GROWTH, f"peak memory grew {growth / 2**20:.1f} MiB "
                                        f"(limit {MEMORY_GROWTH / 2**20:.0f} MiB)")
    client.close()


@check("continuation-flood-empty-frames", "items", "HTTP/2")
def continuation_flood_empty(run: Run, bins):
    """CVE-2024-27316 class: HEADERS without END_HEADERS, then empty CONTINUATION frames for
    ever (each costs the server a frame's work and nothing on the header list)."""
    with bins.start("items") as server:
        client = h2_started(server.port)
        block = client.header_block(client.request_headers("GET", "/healthz"))
        first = hf.HeadersFrame(1, data=block, flags={"END_STREAM"}).serialize()
        client.streams.setdefault(1, Stream())
        batch = hf.ContinuationFrame(1, data=b"").serialize() * 4096
        _flood(run, server, client, first, lambda: batch, "endless empty CONTINUATION frames")
        normal_clients_served(run, server.port)


@check("continuation-flood-endless-header", "items", "HTTP/2")
def continuation_flood_value(run: Run, bins):
    """One header whose value is declared 256 MiB long, sent 16 KiB per CONTINUATION frame: a
    server that buffers until the value is whole keeps everything."""
    with bins.start("items") as server:
        client = h2_started(server.port)
        block = client.header_block(client.request_headers("GET", "/healthz"))
        # Literal without indexing, new name "x-flood", value length 2**28 (HPACK integer, 7-bit
        # prefix, no Huffman).
        length = 2**28 - 127
        encoded = bytearray([0x7F])
        while length >= 128:
            encoded.append((length % 128) | 0x80)
            length //= 128
        encoded.append(length)
        block += b"\x00\x07x-flood" + bytes(encoded)
        first = hf.HeadersFrame(1, data=block, flags={"END_STREAM"}).serialize()
        client.streams.setdefault(1, Stream())
        batch = hf.ContinuationFrame(1, data=b"a" * 16384).serialize() * 16
        _flood(run, server, client, first, lambda: batch, "a 256 MiB header value in CONTINUATION frames")
        normal_clients_served(run, server.port)


@check("continuation-flood-many-headers", "items", "HTTP/2")
def continuation_flood_headers(run: Run, bins):
    """Endless CONTINUATION frames of small, complete headers: the header list grows past any
    limit a frame at a time."""
    with bins.start("items") as server:
        client = h2_started(server.port)
        block = client.header_block(client.request_headers("GET", "/healthz"))
        first = hf.HeadersFrame(1, data=block, flags={"END_STREAM"}).serialize()
        client.streams.setdefault(1, Stream())
        counter = [0]

        def batch():
            frames = []
            for _ in range(64):
                counter[0] += 1
                # Literal without indexing, new name: nothing enters the HPACK table.
                name = f"x-flood-{counter[0]}".encode()
                piece = b"\x00" + bytes([len(name)]) + name + b"\x01v"
                frames.append(hf.ContinuationFrame(1, data=piece).serialize())
            return b"".join(frames)

        _flood(run, server, client, first, batch, "endless CONTINUATION frames of small headers")
        normal_clients_served(run, server.port)


def _refused(client: RawH2, stream_id: int) -> str | None:
    stream = client.streams.get(stream_id)
    if stream is not None and stream.status is not None:
        return f"{stream.status} on the stream" if stream.status != 200 else None
    if stream is not None and stream.reset is not None:
        return f"RST_STREAM {REASONS.get(stream.reset, stream.reset)}"
    if client.goaway is not None:
        return _reason(client.goaway.error_code)
    if client.closed:
        return "closed without GOAWAY"
    return None


@check("header-list-over-limit", "items", "HTTP/2")
def header_list_over_limit(run: Run, bins):
    """A 40 KB header list (over HTTP_MAX_HEADER_BYTES) in HEADERS + CONTINUATION: refused
    (431, a reset or GOAWAY), and the next client is served."""
    with bins.start("items") as server:
        client = h2_started(server.port)
        padding = [(f"x-pad-{i:02}", "p" * 1000) for i in range(40)]
        block = client.header_block(client.request_headers("GET", "/healthz", padding))
        client.send(*header_frames(client, 1, block, end_stream=True))
        stream = client.streams[1]
        client.pump(lambda: stream.ended or stream.reset is not None or client.goaway is not None
                    or client.closed, time.monotonic() + 2)
        refused = _refused(client, 1)
        run.expect(refused is not None, f"a 40,000-byte header list (limit {size(MAX_HEADER_BYTES)}): "
                                        f"{refused or f'answered {stream.status}'}")
        client.close()
        normal_clients_served(run, server.port)


@check("hpack-bomb", "items", "HTTP/2")
def hpack_bomb(run: Run, bins):
    """A 4,000-byte header put in the HPACK table by one request, then referenced 10,000 times
    (one byte each) by the next: 40 MB of header list from 10 KB on the wire."""
    with bins.start("items") as server:
        rss_before = server.rss_bytes()
        client = h2_started(server.port)
        client.send(client.headers_frame(1, client.request_headers("GET", "/healthz", [("x-bomb", "b" * 4000)])))
        first = client.response(1, time.monotonic() + 2)
        run.note(f"the request that stores the 4,000-byte header: {first.status}")
        table = [name for name, _ in client.encoder.header_table.dynamic_entries]
        index = 62 + table.index(b"x-bomb")
        # :method GET, :scheme http, :path / from the static table, :authority as a literal
        # (indexed name 1, not stored), then the stored header, one byte a reference.
        block = bytes([0x82, 0x86, 0x84, 0x01, 0x07]) + b"hostile" + bytes([0x80 | index]) * 10000
        client.send(*header_frames(client, 3, block, end_stream=True))
        stream = client.streams[3]
        client.pump(lambda: stream.ended or stream.reset is not None or client.goaway is not None
                    or client.closed, time.monotonic() + 2)
        refused = _refused(client, 3)
        run.expect(refused is not None, f"40 MB of decoded header list: {refused or f'answered {stream.status}'}")
        growth = server.peak_rss_bytes() - rss_before
        run.expect(growth <= MEMORY_GROWTH,
                   f"peak memory grew {growth / 2**20:.1f} MiB (limit {MEMORY_GROWTH / 2**20:.0f} MiB)")
        client.close()
        normal_clients_served(run, server.port)


# ---------------------------------------------------------------- heads that never finish


def _closed_within(run: Run, sock: socket.socket, started: float, limit_ms: int, what: str,
                   lower_ms: int | None = None):
    """Waits for the server to close sock; expects it between lower_ms (default limit_ms)
    and limit_ms + SLACK after started. Watches until a second past the idle timeout, so a
    connection the head clock missed shows when the idle clock closed it."""
    limit = limit_ms / 1000
    lower = (lower_ms if lower_ms is not None else limit_ms) / 1000
    closed, _ = wait_closed(sock, started + max(limit + SLACK, IDLE_TIMEOUT_MS / 1000) + 1)
    took = time.monotonic() - started
    if closed:
        run.expect(lower - GRAIN <= took <= limit + SLACK,
                   f"{what}: closed after {ms(took)}, limit {limit_ms} ms")
    else:
        run.expect(False, f"{what}: still open after {ms(took)}, limit {limit_ms} ms")
    sock.close()


@check("preface-then-nothing", "items", "HTTP/2")
@check("preface-then-nothing", "timezones", "HTTP/2")
def preface_then_nothing(run: Run, bins, service: str):
    """The 24-byte preface, then silence: closed at the header-read timeout."""
    with bins.start(service) as server:
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(PREFACE)
        _closed_within(run, sock, started, HEADER_READ_TIMEOUT_MS, "preface only")


@check("partial-preface", "items", "HTTP/2")
def partial_preface(run: Run, bins):
    """The preface's first line ("PRI * HTTP/2.0"), then silence."""
    with bins.start("items") as server:
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(PREFACE[:16])
        _closed_within(run, sock, started, HEADER_READ_TIMEOUT_MS, "16 bytes of the preface")


@check("settings-then-no-headers", "items", "HTTP/2")
def settings_no_headers(run: Run, bins):
    """Preface and SETTINGS, the server's SETTINGS acknowledged, then no HEADERS."""
    with bins.start("items") as server:
        started = time.monotonic()
        client = h2_started(server.port)
        client.sock.setblocking(True)
        _closed_within(run, client.sock, started, HEADER_READ_TIMEOUT_MS, "SETTINGS exchanged, no request")


@check("pings-but-no-headers", "items", "HTTP/2")
def pings_no_headers(run: Run, bins):
    """Preface, SETTINGS, then a PING every 100 ms and never a request: traffic is not a head."""
    with bins.start("items") as server:
        started = time.monotonic()
        client = h2_started(server.port)
        deadline = started + IDLE_TIMEOUT_MS / 1000 + 1
        while not client.closed and time.monotonic() < deadline:
            client.send(hf.PingFrame(0, opaque_data=b"hostile!"))
            client.pump(lambda: client.closed, time.monotonic() + 0.1)
        took = (client.closed_at or time.monotonic()) - started
        limit = HEADER_READ_TIMEOUT_MS / 1000
        run.expect(client.closed and limit - GRAIN <= took <= limit + SLACK,
                   f"PINGs every 100 ms, no request: {'closed' if client.closed else 'still open'} after "
                   f"{ms(took)}, limit {HEADER_READ_TIMEOUT_MS} ms")
        client.close()


@check("unfinished-header-block", "items", "HTTP/2")
def unfinished_header_block(run: Run, bins):
    """HEADERS without END_HEADERS, and no CONTINUATION: a head that never ends."""
    with bins.start("items") as server:
        started = time.monotonic()
        client = h2_started(server.port)
        block = client.header_block(client.request_headers("GET", "/healthz"))
        client.send(hf.HeadersFrame(1, data=block, flags={"END_STREAM"}))
        client.sock.setblocking(True)
        _closed_within(run, client.sock, started, HEADER_READ_TIMEOUT_MS, "HEADERS without END_HEADERS")


@check("unfinished-second-header-block", "items", "HTTP/2")
def unfinished_second_header_block(run: Run, bins):
    """One request answered, then a second stream's HEADERS without END_HEADERS: timed from
    that HEADERS, as an HTTP/1.1 keep-alive head is from its first byte."""
    with bins.start("items") as server:
        client = h2_started(server.port)
        client.get(1, "/healthz")
        status = client.response(1, time.monotonic() + 2).status
        run.note(f"first request: {status}")
        block = client.header_block(client.request_headers("GET", "/healthz"))
        started = time.monotonic()
        client.send(hf.HeadersFrame(3, data=block, flags={"END_STREAM"}))
        client.sock.setblocking(True)
        _closed_within(run, client.sock, started, HEADER_READ_TIMEOUT_MS, "second HEADERS without END_HEADERS")


@check("partial-head-then-nothing", "items", "HTTP/1.1")
def partial_head(run: Run, bins):
    """Part of a request head, then silence (the Rust tests trickle one; this one stops)."""
    with bins.start("items") as server:
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hos")
        _closed_within(run, sock, started, HEADER_READ_TIMEOUT_MS, "half a head")


@check("pipelined-partial-second-head", "items", "HTTP/1.1")
@check("pipelined-partial-second-head", "timezones", "HTTP/1.1")
def pipelined_partial_head(run: Run, bins, service: str):
    """A whole request and the start of a second in one write: the first is answered; the
    second head, already in the server's buffer, is timed like any other."""
    with bins.start(service) as server:
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hostile\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
        received = bytearray()
        deadline = started + 2
        while parse_h1_response(bytes(received)) is None and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                data = sock.recv(65536)
                if not data:
                    break
                received.extend(data)
        first = parse_h1_response(bytes(received))
        run.note(f"first request: {first.status if first else 'no answer'}")
        _closed_within(run, sock, started, HEADER_READ_TIMEOUT_MS, "pipelined half head")


# ---------------------------------------------------------------- readers that stop


def _large_items_page(server) -> str:
    """Fills items with 100 items of the largest size allowed; returns the path of a page of
    all of them (about 650 KB)."""
    import json

    description = "€" * 2000
    for i in range(100):
        body = json.dumps({"name": f"hostile-{i:03}-" + "n" * 80, "description": description,
                           "tags": [f"t{j}-" + "x" * 28 for j in range(10)]}).encode()
        answer = h1_request(server.port, "POST", "/v1/items",
                            [("x-api-key", API_KEY), ("content-type", "application/json")], body)
        if answer.status != 201:
            raise Failed(f"creating item {i}: {answer.status} {answer.body[:200]!r}")
    return "/v1/items?limit=100"


# (service, check name): the path, or what makes it.
SLOW_READ_TARGETS = {
    ("items", "slow-reader-docs"): "/docs",
    ("items", "slow-reader-openapi"): "/openapi.json",
    ("items", "slow-reader-items-page"): _large_items_page,
    ("timezones", "slow-reader-docs"): "/docs",
}


def _pipelined_bytes() -> int:
    """Enough answers that the server's kernel cannot take them all: twice the most a socket's
    send buffer can grow to (net.ipv4.tcp_wmem's maximum), and a MiB."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return 2 * int(f.read().split()[2]) + 2**20


def _h1_stalled_reader(run: Run, server, path: str, limit_ms: int, what: str):
    """Pipelines enough GETs of path that their answers overflow the kernel's buffers, reads
    none of them, and expects the server to let go of the connection within limit_ms."""
    one = len(h1_request(server.port, "GET", path, timeout=10).body)
    count = math.ceil(_pipelined_bytes() / one)
    sock = connect(server.port, rcvbuf=4096)
    client_port = sock.getsockname()[1]
    started = time.monotonic()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: hostile\r\n\r\n".encode() * count)
    # The premise: the answers do not fit in the two kernels' buffers, so the server's
    # process is left holding the rest. Looked at before any limit is due.
    time.sleep(min(limit_ms, 400) / 1000 / 2)
    mine, theirs = kernel_socket(client_port, server.port), kernel_socket(server.port, client_port)
    buffered = (mine.rx_queue if mine else 0) + (theirs.tx_queue if theirs else 0)
    run.note(f"{count} pipelined GET {path}: {size(count * one)} of answers, {size(buffered)} in kernel "
             f"buffers when the client stopped reading")
    if buffered >= count * one:
        raise Failed(f"the answers fit in kernel buffers ({size(buffered)}): no stalled writer to test")
    released = wait_released(server.port, client_port, started + limit_ms / 1000 + SLACK + 2)
    took = time.monotonic() - started
    run.expect(released and took <= limit_ms / 1000 + SLACK,
               f"{what}: {'released' if released else 'still held'} by the server after {ms(took)}, "
               f"limit {limit_ms} ms")
    sock.close()


def _slow_reader_check(service: str, name: str):
    @check(name, service, "HTTP/1.1")
    def slow_reader(run: Run, bins):
        """A client that asks for large answers and reads none of them (a 4 KiB receive
        buffer): the server lets go at the write-progress deadline."""
        with bins.start(service, HTTP_IDLE_TIMEOUT_MS=NEVER_MS) as server:
            target = SLOW_READ_TARGETS[(service, name)]
            path = target if isinstance(target, str) else target(server)
            _h1_stalled_reader(run, server, path, WRITE_TIMEOUT_MS, "no reads")
            normal_clients_served(run, server.port)

    return slow_reader


for _service, _name in SLOW_READ_TARGETS:
    _slow_reader_check(_service, _name)


@check("slow-reader-at-idle-close", "items", "HTTP/1.1")
def slow_reader_idle_close(run: Run, bins):
    """The same reader with only the idle clock and the close timeout running (no write
    deadline): the graceful close at the idle timeout cannot finish the answer, and is cut
    after HTTP_CLOSE_TIMEOUT_MS."""
    idle = 500
    with bins.start("items", HTTP_IDLE_TIMEOUT_MS=idle, HTTP_WRITE_TIMEOUT_MS=NEVER_MS) as server:
        _h1_stalled_reader(run, server, "/docs", idle + CLOSE_TIMEOUT_MS,
                           f"idle timeout {idle} ms + close timeout {CLOSE_TIMEOUT_MS} ms")


def _h2_stalled(run: Run, server, *, reads: bool, acks_pings: bool, limit_ms: int, what: str):
    client = h2_started(server.port, rcvbuf=None if reads else 4096)
    client.ack_pings = acks_pings
    client.open_windows = False
    client_port = client.sock.getsockname()[1]
    started = time.monotonic()
    client.get(1, "/docs")
    deadline = started + limit_ms / 1000 + SLACK + 2
    if reads:
        client.pump(lambda: client.closed, deadline)
        released = client.closed or not server_holds(server.port, client_port)
        took = (client.closed_at or time.monotonic()) - started
    else:
        released = wait_released(server.port, client_port, deadline)
        took = time.monotonic() - started
    stream = client.streams[1]
    run.note(f"GET /docs: {size(len(stream.body))} received of it (the client's window is "
             f"{size(DEFAULT_WINDOW)} and never opens); {client.pings_received} PINGs seen"
             + (f"; GOAWAY after {ms(client.goaway_at - started)}" if client.goaway_at else ""))
    run.expect(released and took <= limit_ms / 1000 + SLACK,
               f"{what}: {'closed' if released else 'still open'} after {ms(took)}, limit {limit_ms} ms")
    client.close()
    return client, started


@check("stalled-reader-no-acks", "items", "HTTP/2")
def h2_no_acks(run: Run, bins):
    """Asks for /docs, then reads the socket but sends nothing: no WINDOW_UPDATE, no PING ack.
    Keep-alive PINGs go unanswered: closed after the interval and the ack timeout."""
    with bins.start("items", HTTP2_KEEPALIVE_INTERVAL_MS=KEEPALIVE_INTERVAL_MS,
                    HTTP_WRITE_TIMEOUT_MS=NEVER_MS, HTTP_IDLE_TIMEOUT_MS=NEVER_MS) as server:
        _h2_stalled(run, server, reads=True, acks_pings=False, limit_ms=2 * KEEPALIVE_INTERVAL_MS,
                    what=f"keep-alive every {KEEPALIVE_INTERVAL_MS} ms, ack within {KEEPALIVE_INTERVAL_MS} ms")
        normal_clients_served(run, server.port)


@check("stalled-reader-reads-nothing", "items", "HTTP/2")
def h2_reads_nothing(run: Run, bins):
    """Asks for /docs, then reads nothing at all (a 4 KiB receive buffer)."""
    with bins.start("items", HTTP2_KEEPALIVE_INTERVAL_MS=KEEPALIVE_INTERVAL_MS,
                    HTTP_IDLE_TIMEOUT_MS=NEVER_MS) as server:
        _h2_stalled(run, server, reads=False, acks_pings=False, limit_ms=2 * KEEPALIVE_INTERVAL_MS,
                    what=f"keep-alive every {KEEPALIVE_INTERVAL_MS} ms or write deadline {WRITE_TIMEOUT_MS} ms")
        normal_clients_served(run, server.port)


@check("zero-window-reader-acks-pings", "items", "HTTP/2")
def h2_zero_window(run: Run, bins):
    """Asks for /docs, acknowledges PINGs and SETTINGS, and never opens its window: a reader
    that keep-alive cannot catch. The write-progress deadline does."""
    with bins.start("items", HTTP2_KEEPALIVE_INTERVAL_MS=KEEPALIVE_INTERVAL_MS,
                    HTTP_IDLE_TIMEOUT_MS=NEVER_MS) as server:
        _h2_stalled(run, server, reads=True, acks_pings=True, limit_ms=WRITE_TIMEOUT_MS + CLOSE_TIMEOUT_MS,
                    what=f"write deadline {WRITE_TIMEOUT_MS} ms + close timeout {CLOSE_TIMEOUT_MS} ms")
        normal_clients_served(run, server.port)


@check("idle-close-ping-never-acked", "items", "HTTP/2")
def h2_idle_close_no_ack(run: Run, bins):
    """One request answered, then the client goes quiet and acknowledges nothing. At the idle
    timeout the server's graceful close sends GOAWAY and a PING, and h2 waits for that PING's
    ack before it closes (h2 0.4.20, Connection::go_away_gracefully): the close timeout must
    drop the connection anyway."""
    idle = 500
    with bins.start("items", HTTP_IDLE_TIMEOUT_MS=idle) as server:
        client = h2_started(server.port)
        client.get(1, "/healthz")
        status = client.response(1, time.monotonic() + 2).status
        run.note(f"first request: {status}")
        answered = time.monotonic()
        client.ack_pings = False
        client.pump(lambda: client.closed, answered + idle / 1000 + CLOSE_TIMEOUT_MS / 1000 + SLACK + 2)
        took = (client.closed_at or time.monotonic()) - answered
        limit = (idle + CLOSE_TIMEOUT_MS) / 1000
        run.note(f"{client.pings_received} PINGs seen"
                 + (f"; GOAWAY after {ms(client.goaway_at - answered)}" if client.goaway_at else "; no GOAWAY"))
        run.expect(client.closed and took <= limit + SLACK,
                   f"idle timeout {idle} ms + close timeout {CLOSE_TIMEOUT_MS} ms: "
                   f"{'closed' if client.closed else 'still open'} after {ms(took)}, limit {ms(limit)}")
        client.close()


# ---------------------------------------------------------------- connection floods


def _open_flood(port: int, count: int, opener: bytes) -> list[socket.socket]:
    flood = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        sock.sendall(opener)
        flood.append(sock)
    return flood


@check("connection-flood-past-cap", "items", "both")
def connection_flood(run: Run, bins):
    """120 connections (half an unfinished HTTP/1.1 head, half the HTTP/2 preface) against
    MAX_CONNECTIONS=16, clocks long enough that they stay: 16 open in the process, the rest in
    the kernel's backlog, nothing spinning; service back as soon as they go."""
    cap = 16
    with bins.start("items", MAX_CONNECTIONS=cap, HTTP_HEADER_READ_TIMEOUT_MS=NEVER_MS,
                    HTTP_IDLE_TIMEOUT_MS=NEVER_MS) as server:
        flood = _open_flood(server.port, 60, b"GET /healthz HTTP/1.1\r\nHo")
        flood += _open_flood(server.port, 60, PREFACE)
        open_at_cap = wait_until(lambda: server.metric("http_server_connections_open", 'listener="api"') >= cap, 5)
        open_now = server.metric("http_server_connections_open", 'listener="api"')
        run.expect(open_at_cap and open_now == cap, f"{len(flood)} connections: {open_now:.0f} open in the "
                                                    f"process (cap {cap}), the rest in the backlog")
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        time.sleep(1)
        cpu = server.cpu_seconds() - cpu_before
        wall = time.monotonic() - wall_before
        run.expect(cpu <= 0.1, f"CPU while flooded: {cpu * 1000:.0f} ms in {ms(wall)} (limit 100 ms)")
        run.expect(server.alive(), "the process is still running; its metrics port answered")
        for sock in flood:
            sock.close()
        ended = time.monotonic()
        served = wait_until(lambda: _healthz_ok(server.port), 3, step=0.05)
        took = time.monotonic() - ended
        run.expect(served and took <= 1.0, f"after the flood: /healthz answered {ms(took)} after it went "
                                           f"(limit 1000 ms)")
        normal_clients_served(run, server.port)


def _healthz_ok(port: int) -> bool:
    try:
        return h1_request(port, "GET", "/healthz", timeout=2).status == 200
    except (OSError, RuntimeError):
        return False


def _flood_drains(run: Run, bins, opener: bytes, what: str):
    cap, count = 16, 64
    with bins.start("items", MAX_CONNECTIONS=cap) as server:
        flood = _open_flood(server.port, count, opener)
        started = time.monotonic()
        rounds = math.ceil(count / cap)
        limit = rounds * HEADER_READ_TIMEOUT_MS / 1000 + 0.5
        try:
            status = h1_request(server.port, "GET", "/healthz", timeout=limit + 1.5).status
        except (OSError, RuntimeError):
            status = "no answer"
        took = time.monotonic() - started
        run.expect(status == 200 and took <= limit,
                   f"{count} connections that {what}, cap {cap}: a client queued behind them got {status} "
                   f"after {ms(took)}, limit {ms(limit)} ({rounds} header-read timeouts + 500 ms)")
        for sock in flood:
            sock.close()


@check("flood-of-silent-prefaces-drains", "items", "HTTP/2")
def flood_prefaces(run: Run, bins):
    """Connections past the cap that send the HTTP/2 preface and nothing else: each holds a
    slot for one header-read timeout, so a client queued behind them is served after a few."""
    _flood_drains(run, bins, PREFACE, "send the preface and nothing else")


@check("flood-of-partial-heads-drains", "items", "HTTP/1.1")
def flood_heads(run: Run, bins):
    """The same with half an HTTP/1.1 head."""
    _flood_drains(run, bins, b"GET /healthz HTTP/1.1\r\nHo", "send half a head")
