"""What the hostile checks see of a connection: the kernel's view of both ends of a loopback TCP
connection, HTTP/1.1 over a raw socket, and HTTP/2 frames crafted one by one (hyperframe and
hpack, which the pinned h2 package brings).

The kernel's view is what makes the figures honest. The server process reads its sockets with
recv(2), which /proc/PID/io does not count, and the client's own socket buffers megabytes, so
"the client wrote 20 MB" says nothing about what the server read. What the server's socket
received (tcpi_bytes_received, asked of the kernel through sock_diag) bounds what its process
can have read; and whether its process still holds the socket (an inode) says whether it has
let go of a client that reads nothing.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field

import hpack
from hyperframe import frame as hf


@dataclass
class KernelSocket:
    """What the kernel knows of one end of a connection."""

    state: int
    tx_queue: int
    rx_queue: int
    inode: int
    # All the bytes this end has received (tcpi_bytes_received), read by its process or not.
    bytes_received: int


TCP_TIME_WAIT, TCP_LISTEN = 0x06, 0x0A

# sock_diag (linux/sock_diag.h, linux/inet_diag.h): one exact lookup per call, where
# /proc/net/tcp walks the whole table (milliseconds a read here).
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, NLMSG_ERROR = 4, 20, 1, 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
INET_DIAG_INFO = 2
INET_DIAG_INFO_EXT = 1 << (INET_DIAG_INFO - 1)
# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, 24 u32, then u64 pacing_rate,
# max_pacing_rate, bytes_acked, bytes_received.
TCPI_BYTES_ACKED_OFFSET, TCPI_BYTES_RECEIVED_OFFSET = 120, 128
_diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
_diag_seq = 0


def kernel_socket(local_port: int, remote_port: int) -> KernelSocket | None:
    """The loopback TCP socket bound to local_port and connected to remote_port, if any."""
    global _diag_seq
    _diag_seq += 1
    loopback = socket.inet_aton("127.0.0.1") + bytes(12)
    # struct inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid:
    # sport, dport (big-endian), src[4], dst[4], if, cookie[2].
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, INET_DIAG_INFO_EXT, 0, 0xFFFFFFFF)
    request += struct.pack("!HH", local_port, remote_port) + loopback + loopback
    request += struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, _diag_seq, 0)
    _diag.send(header + request)
    while True:
        reply = _diag.recv(65536)
        _, kind, _, seq, _ = struct.unpack_from("=IHHII", reply)
        if seq != _diag_seq:
            continue
        if kind == NLMSG_ERROR:
            return None
        # struct inet_diag_msg after the 16-byte header: family, state, timer, retrans, the
        # 48-byte sockid, then expires, rqueue, wqueue, uid, inode.
        state = reply[17]
        if state == TCP_LISTEN:
            # An exact lookup falls back to the listener once the connection is gone.
            return None
        _, rqueue, wqueue, _, inode = struct.unpack_from("=IIIII", reply, 16 + 52)
        received = 0
        at = 16 + 72
        while at + 4 <= len(reply):
            length, kind = struct.unpack_from("=HH", reply, at)
            if length < 4:
                break
            if kind == INET_DIAG_INFO and length - 4 >= TCPI_BYTES_RECEIVED_OFFSET + 8:
                received = struct.unpack_from("=Q", reply, at + 4 + TCPI_BYTES_RECEIVED_OFFSET)[0]
            at += (length + 3) & ~3
        return KernelSocket(state, wqueue, rqueue, inode, received)


def server_holds(server_port: int, client_port: int) -> bool:
    """Whether the server process still holds its end of the connection: a socket closed by its
    process is orphaned (inode 0) while the kernel finishes with it, or gone. (A connection
    not accepted yet has inode 0 too: ask only about connections the server has answered on.)"""
    entry = kernel_socket(server_port, client_port)
    return entry is not None and entry.inode != 0 and entry.state != TCP_TIME_WAIT


class ServerReadMeter:
    """How much of a connection's bytes the server took in (see the module's doc).

    A server that closes with unread data resets the connection at once, and its socket's
    figures go with it; so the meter samples as the client writes, and also keeps what the
    client's socket says the server's kernel acknowledged, which outlives the reset."""

    def __init__(self, sock: socket.socket, server_port: int):
        self.sock = sock
        self.server_port = server_port
        self.client_port = sock.getsockname()[1]
        self.received = 0

    def sample(self) -> None:
        entry = kernel_socket(self.server_port, self.client_port)
        if entry is not None:
            self.received = max(self.received, entry.bytes_received)

    def taken_in(self) -> int:
        """At most what the server's process can have read: what its socket received."""
        self.sample()
        return max(self.received, bytes_acked(self.sock))


def bytes_acked(sock: socket.socket) -> int:
    """Bytes of ours the peer's kernel has acknowledged (tcpi_bytes_acked)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("=Q", info, TCPI_BYTES_ACKED_OFFSET)[0]


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the window the client advertises is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_closed(sock: socket.socket, deadline: float) -> tuple[bool, bytes]:
    """Reads until the peer closes (EOF or reset) or the deadline passes; returns whether it
    closed, and what arrived."""
    received = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, bytes(received)
        ready, _, _ = select.select([sock], [], [], min(left, 0.05))
        if not ready:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(received)
        if not chunk:
            return True, bytes(received)
        received.extend(chunk)


def wait_released(server_port: int, client_port: int, deadline: float) -> bool:
    """Asks the kernel every 10 ms whether the server's process still holds the connection,
    until it lets go (the client reading nothing) or the deadline passes."""
    while time.monotonic() < deadline:
        if not server_holds(server_port, client_port):
            return True
        time.sleep(0.01)
    return not server_holds(server_port, client_port)


# ---------------------------------------------------------------- HTTP/1.1


@dataclass
class H1Response:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_h1_response(data: bytes) -> H1Response | None:
    """The first response in data, if its head (and a Content-Length body) is all there."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = data[end + 4 : end + 4 + length]
    if len(body) < length:
        return None
    return H1Response(status, headers, body)


def h1_request(port: int, method: str, path: str, headers=(), body: bytes = b"", timeout=5.0) -> H1Response:
    """One request on a new connection (Connection: close); the whole answer."""
    sock = connect(port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: hostile\r\nConnection: close\r\n"
        for name, value in headers:
            head += f"{name}: {value}\r\n"
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body)}\r\n"
        sock.sendall(head.encode() + b"\r\n" + body)
        _, data = wait_closed(sock, time.monotonic() + timeout)
        response = parse_h1_response(data)
        if response is None:
            raise RuntimeError(f"no whole HTTP/1.1 response to {method} {path}: {data[:200]!r}")
        return response
    finally:
        sock.close()


# ---------------------------------------------------------------- HTTP/2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_MAX_FRAME_SIZE = 0x5
DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1


def frame_bytes(frame) -> bytes:
    return frame.serialize()


@dataclass
class Stream:
    headers: list[tuple[str, str]] | None = None
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        return int(dict(self.headers)[":status"])


class RawH2:
    """A client that sends exactly the frames it is told to, over a raw socket, and keeps
    track of what the server sent: its settings, windows, streams, GOAWAY and PINGs.

    It acknowledges the server's SETTINGS and PINGs, and opens windows for what it receives,
    only while the matching flags are on: hostile checks turn them off."""

    def __init__(self, port: int, rcvbuf: int | None = None):
        self.sock = connect(port, rcvbuf)
        self.sock.setblocking(False)
        self.port = port
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.inbuf = bytearray()
        self.server_settings: dict[int, int] = {}
        self.settings_received = False
        self.conn_send_window = DEFAULT_WINDOW
        self.stream_send_window: dict[int, int] = {}
        self.streams: dict[int, Stream] = {}
        self.goaway: hf.GoAwayFrame | None = None
        self.goaway_at: float | None = None
        self.pings_received = 0
        self.closed = False
        self.closed_at: float | None = None
        self.ack_settings = True
        self.ack_pings = True
        self.open_windows = True
        self.bytes_sent = 0
        self._partial_headers: tuple[int, bytearray, bool] | None = None

    # -- sending

    def send_raw(self, data: bytes, deadline: float | None = None) -> bool:
        """Writes all of data unless the peer closes first or the deadline passes; returns
        whether it was all written. Reads whatever arrives meanwhile."""
        view = memoryview(data)
        deadline = deadline if deadline is not None else time.monotonic() + 5
        while view:
            if self.closed:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, writable, _ = select.select([self.sock], [self.sock], [], min(left, 0.05))
            if readable:
                self.receive_available()
            if writable and not self.closed:
                try:
                    sent = self.sock.send(view)
                except BlockingIOError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    self._mark_closed()
                    return False
                self.bytes_sent += sent
                view = view[sent:]
        return True

    def send(self, *frames) -> bool:
        return self.send_raw(b"".join(frame_bytes(f) for f in frames))

    def start(self, settings: dict[int, int] | None = None) -> bool:
        settings_frame = hf.SettingsFrame(0, settings=settings or {})
        return self.send_raw(PREFACE + frame_bytes(settings_frame))

    def header_block(self, headers) -> bytes:
        return self.encoder.encode(headers)

    def request_headers(self, method: str, path: str, extra=()) -> list[tuple[str, str]]:
        return [
            (":method", method),
            (":scheme", "http"),
            (":authority", "hostile"),
            (":path", path),
            *extra,
        ]

    def headers_frame(self, stream_id: int, headers, end_stream: bool = True, end_headers: bool = True):
        flags = set()
        if end_stream:
            flags.add("END_STREAM")
        if end_headers:
            flags.add("END_HEADERS")
        frame = hf.HeadersFrame(stream_id, data=self.header_block(headers), flags=flags)
        self.streams.setdefault(stream_id, Stream())
        self.stream_send_window.setdefault(
            stream_id, self.server_settings.get(hf.SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
        )
        return frame

    def get(self, stream_id: int, path: str, extra=()) -> bool:
        return self.send(self.headers_frame(stream_id, self.request_headers("GET", path, extra)))

    # -- receiving

    def _mark_closed(self):
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()

    def receive_available(self) -> None:
        """Reads what the socket has now, without waiting, and handles every whole frame."""
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except (ConnectionResetError, BrokenPipeError):
                self._mark_closed()
                break
            if not chunk:
                self._mark_closed()
                break
            self.inbuf.extend(chunk)
        self._handle_frames()

    def _handle_frames(self) -> None:
        replies = []
        while len(self.inbuf) >= 9:
            frame, length = hf.Frame.parse_frame_header(memoryview(self.inbuf[:9]))
            if len(self.inbuf) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.inbuf[9 : 9 + length])))
            del self.inbuf[: 9 + length]
            replies.extend(self._handle(frame))
        if replies and not self.closed:
            data = b"".join(frame_bytes(f) for f in replies)
            try:
                self.sock.sendall(data)
                self.bytes_sent += len(data)
            except (BlockingIOError, ConnectionResetError, BrokenPipeError):
                pass

    def _handle(self, frame) -> list:
        replies = []
        if isinstance(frame, hf.SettingsFrame):
            if "ACK" not in frame.flags:
                self.settings_received = True
                old = self.server_settings.get(hf.SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
                self.server_settings.update(frame.settings)
                new = self.server_settings.get(hf.SettingsFrame.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)
                for sid in self.stream_send_window:
                    self.stream_send_window[sid] += new - old
                if self.ack_settings:
                    replies.append(hf.SettingsFrame(0, flags={"ACK"}))
        elif isinstance(frame, hf.PingFrame):
            if "ACK" not in frame.flags:
                self.pings_received += 1
                if self.ack_pings:
                    replies.append(hf.PingFrame(0, opaque_data=frame.opaque_data, flags={"ACK"}))
        elif isinstance(frame, hf.WindowUpdateFrame):
            if frame.stream_id == 0:
                self.conn_send_window += frame.window_increment
            else:
                self.stream_send_window[frame.stream_id] = (
                    self.stream_send_window.get(frame.stream_id, 0) + frame.window_increment
                )
        elif isinstance(frame, hf.GoAwayFrame):
            if self.goaway is None:
                self.goaway_at = time.monotonic()
            self.goaway = frame
        elif isinstance(frame, (hf.HeadersFrame, hf.ContinuationFrame)):
            if isinstance(frame, hf.HeadersFrame):
                self._partial_headers = (frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags)
            else:
                assert self._partial_headers is not None
                self._partial_headers[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                sid, block, end = self._partial_headers
                self._partial_headers = None
                stream = self.streams.setdefault(sid, Stream())
                decoded = [(str(n), str(v)) for n, v in self.decoder.decode(bytes(block), raw=False)]
                if stream.headers is None:
                    stream.headers = decoded
                if end:
                    stream.ended = True
        elif isinstance(frame, hf.DataFrame):
            stream = self.streams.setdefault(frame.stream_id, Stream())
            stream.body.extend(frame.data)
            if "END_STREAM" in frame.flags:
                stream.ended = True
            if self.open_windows and frame.flow_controlled_length:
                replies.append(hf.WindowUpdateFrame(0, window_increment=frame.flow_controlled_length))
                if not stream.ended:
                    replies.append(
                        hf.WindowUpdateFrame(frame.stream_id, window_increment=frame.flow_controlled_length)
                    )
        elif isinstance(frame, hf.RstStreamFrame):
            self.streams.setdefault(frame.stream_id, Stream()).reset = frame.error_code
        return replies

    def pump(self, until, deadline: float) -> bool:
        """Reads and handles frames until until() holds, the connection closes or the deadline
        passes; returns until()."""
        while not until():
            if self.closed:
                return until()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], min(left, 0.05))
            if readable:
                self.receive_available()
        return True

    def response(self, stream_id: int, deadline: float) -> Stream:
        stream = self.streams.setdefault(stream_id, Stream())
        self.pump(lambda: stream.ended or stream.reset is not None or self.goaway is not None, deadline)
        # A GOAWAY may come with the stream's last frames behind it.
        self.pump(lambda: stream.ended or stream.reset is not None, min(deadline, time.monotonic() + 0.2))
        return stream

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def h2_request(port: int, method: str, path: str, headers=(), body: bytes = b"", timeout=5.0) -> Stream:
    """One request over HTTP/2 with prior knowledge, the way a well-behaved client does it,
    with the h2 package's state machine (so it is not our own frame code being tested)."""
    import h2.config
    import h2.connection
    import h2.events

    sock = connect(port)
    deadline = time.monotonic() + timeout
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        request = [(":method", method), (":scheme", "http"), (":authority", "hostile"), (":path", path)]
        request += list(headers)
        if body:
            request.append(("content-length", str(len(body))))
        conn.send_headers(sid, request, end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        result = Stream()
        while not (result.ended or result.reset is not None):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole HTTP/2 response to {method} {path} within {timeout} s")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before the response to {method} {path} ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    result.headers = [(n.decode() if isinstance(n, bytes) else n,
                                       v.decode() if isinstance(v, bytes) else v) for n, v in event.headers]
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    result.body.extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    result.ended = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    result.reset = event.error_code
            sock.sendall(conn.data_to_send())
        return result
    finally:
        sock.close()
