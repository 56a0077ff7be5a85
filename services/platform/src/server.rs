//! The HTTP server: our own accept loop over hyper, because poem's `Server` has none of the
//! limits a server facing hostile clients needs. It starts no clock for a request head (a client
//! sending one byte a second holds a connection for ever), accepts heads up to hyper's ~400 KB
//! buffer, has no cap on open connections, and retries a failing `accept` (EMFILE at the
//! file-descriptor limit) at once, spinning a core. Here, over HTTP/1.1 and HTTP/2 alike:
//!
//! - a client must deliver a whole request head within `header_read_timeout` of opening the
//!   connection or of starting the head (its first byte after the previous answer, or the
//!   moment a pipelined partial head is left alone); on HTTP/2, the preface and the first
//!   request's HEADERS within `header_read_timeout` of opening;
//! - a keep-alive connection with nothing in flight is closed after `idle_timeout`: gracefully
//!   (HTTP/2 GOAWAY), but a goodbye that takes longer than `close_timeout` is cut;
//! - a response that waits `write_timeout` for a client that reads nothing ends the connection;
//! - an HTTP/2 connection is pinged every `http2_keepalive_interval`, and closed when a ping
//!   goes unanswered as long;
//! - a head over `max_header_bytes` gets 431 from hyper's parser (HTTP/2: the header list);
//!   hyper's own 400 and 431 answers are counted;
//! - at most `max_connections` are open; more wait in the kernel's accept backlog, so the
//!   process keeps descriptors and memory for its database, its upstream and its logs;
//! - a failing `accept` is retried after a pause, never in a loop;
//! - on shutdown, HTTP/2 streams are the server's own tasks: the drain waits for them, and at
//!   the end of the grace period they go with their connections.
//!
//! The clocks cost little per request: a connection's watchdog sleeps until the next deadline,
//! and requests only store a few numbers (see [`Activity`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a server allows each client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a response may wait for a client that reads nothing before the connection goes.
    pub write_timeout: Duration,
    /// How long a graceful close (after the idle timeout) may take before the connection goes.
    pub close_timeout: Duration,
    /// How often an HTTP/2 connection is pinged; a ping unanswered as long closes it.
    pub http2_keepalive_interval: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// HTTP/2 flow control and buffers, chosen so that one connection's memory is bounded (and
/// [`connection_memory`] can count it): a client that sends and never lets its streams finish,
/// or asks and never reads, holds at most these.
pub const HTTP2_MAX_STREAMS: u32 = 64;
pub const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
pub const HTTP2_CONNECTION_WINDOW: u32 = 256 * 1024;
pub const HTTP2_SEND_BUFFER: usize = 64 * 1024;

/// An estimate of what one connection holds at most, beside the request it serves: its read
/// buffer (a head, up to the header limit), a request body being read (up to the body limit),
/// HTTP/2's connection window of unread data, and a send buffer. The default
/// `MAX_CONNECTIONS` divides a share of the memory limit by it.
pub fn connection_memory(max_header_bytes: usize, max_body_bytes: usize) -> u64 {
    (max_header_bytes + max_body_bytes + HTTP2_CONNECTION_WINDOW as usize + HTTP2_SEND_BUFFER)
        as u64
}

/// Which clock ran out when the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Head,
    Idle,
    Write,
    Close,
}

impl CloseReason {
    const ALL: [Self; 4] = [Self::Head, Self::Idle, Self::Write, Self::Close];

    fn label(self) -> &'static str {
        match self {
            Self::Head => "header_timeout",
            Self::Idle => "idle_timeout",
            Self::Write => "write_timeout",
            Self::Close => "close_timeout",
        }
    }
}

/// The statuses hyper answers by itself, before a request reaches the service: a head it cannot
/// parse, and a head over the limit.
const REJECTED_STATUSES: [u16; 2] = [400, 431];

/// The server's own series, per listener (`api`, `metrics`), present at 0 from the start so
/// alerts on them see data.
struct ServerMetrics {
    open: metrics::Gauge,
    closed: [metrics::Counter; 4],
    rejected: [metrics::Counter; 2],
    accept_errors: metrics::Counter,
}

impl ServerMetrics {
    fn register(listener: &'static str) -> Self {
        let closed = CloseReason::ALL.map(|reason| {
            let counter = metrics::counter!(
                "http_server_connections_closed_total",
                "listener" => listener,
                "reason" => reason.label()
            );
            counter.absolute(0);
            counter
        });
        let rejected = REJECTED_STATUSES.map(|status| {
            let counter = metrics::counter!(
                "http_server_requests_rejected_total",
                "listener" => listener,
                "status" => status.to_string()
            );
            counter.absolute(0);
            counter
        });
        let accept_errors =
            metrics::counter!("http_server_accept_errors_total", "listener" => listener);
        accept_errors.absolute(0);
        let open = metrics::gauge!("http_server_connections_open", "listener" => listener);
        open.increment(0.0);
        Self {
            open,
            closed,
            rejected,
            accept_errors,
        }
    }

    /// Counts what hyper answered by itself, from the error the connection ended with.
    fn connection_ended(&self, result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
        let Err(error) = result else { return };
        let Some(error) = error.downcast_ref::<hyper::Error>() else {
            return;
        };
        if error.is_parse_too_large() {
            self.rejected[1].increment(1);
        } else if error.is_parse() {
            self.rejected[0].increment(1);
        }
    }
}

/// Counts a connection open from its start until its task ends, however it ends (finished,
/// closed by a clock, or dropped with the runtime).
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

static CLOCK_START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on a process-wide monotonic clock, from 1: 0 means "not set".
fn now_ms() -> u64 {
    u64::try_from(CLOCK_START.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn instant_of(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*CLOCK_START + Duration::from_millis(ms.saturating_sub(1)))
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// What a connection is doing, as its watchdog needs to know: whether a request head is being
/// awaited (and since when), how many requests are in flight, since when it has been idle,
/// whether a write waits for the client, and whether it is closing.
struct Activity {
    /// When the current request head started (connection opened, or first byte after the
    /// previous answer); 0 while no head is awaited. On HTTP/2 only the first request's
    /// HEADERS are timed: frames arrive between requests, and keep-alive pings take over.
    head_started_ms: AtomicU64,
    in_flight: AtomicU32,
    idle_since_ms: AtomicU64,
    /// Since when a write has waited for the client to read; 0 while writes go through.
    write_stalled_ms: AtomicU64,
    /// Since when the connection has been closing gracefully; 0 if it is not.
    closing_since_ms: AtomicU64,
    protocol: AtomicU8,
    /// HTTP/1.1: whether the request in flight may still have body bytes to come, so that
    /// bytes read meanwhile cannot be told from the next head.
    body_expected: AtomicBool,
    /// HTTP/1.1: bytes read that belong to heads hyper has not handed over yet (pipelined
    /// requests), so a partial head behind a request is timed from the moment it is alone.
    pending_heads: Mutex<Vec<u8>>,
    /// HTTP/2: where the frames begin and end in what is read, to see a header block that is
    /// opened (HEADERS without END_HEADERS) and never finished.
    frames: Mutex<FrameBoundaries>,
    /// HTTP/2: whether a request has started, after which only unfinished header blocks run
    /// the head clock.
    served: AtomicBool,
    /// Responses whose bodies are still being sent, and when one of them last moved: a body
    /// the client does not let through (a full socket, or a closed HTTP/2 window) stops moving.
    responses_open: AtomicU32,
    response_moved_ms: AtomicU64,
}

/// Frame boundaries in an HTTP/2 connection's bytes (RFC 9113 §4.1: a 9-byte header with a
/// 24-bit length, then the payload), after the 24-byte client preface.
struct FrameBoundaries {
    skip: usize,
    header: [u8; 9],
    have: usize,
}

impl FrameBoundaries {
    const HEADERS: u8 = 0x1;
    const CONTINUATION: u8 = 0x9;
    const END_HEADERS: u8 = 0x4;

    fn new() -> Self {
        Self {
            skip: 24,
            header: [0; 9],
            have: 0,
        }
    }

    /// Follows `bytes`; returns whether a header block is left open at their end (`None`:
    /// no header block started or ended in them).
    fn feed(&mut self, mut bytes: &[u8]) -> Option<bool> {
        let mut open = None;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let [l0, l1, l2, kind, flags, ..] = self.header;
            self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            if kind == Self::HEADERS || kind == Self::CONTINUATION {
                open = Some(flags & Self::END_HEADERS == 0);
            }
        }
        open
    }
}

impl Activity {
    fn new() -> Self {
        let now = now_ms();
        Self {
            head_started_ms: AtomicU64::new(now),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(now),
            write_stalled_ms: AtomicU64::new(0),
            closing_since_ms: AtomicU64::new(0),
            protocol: AtomicU8::new(UNKNOWN),
            body_expected: AtomicBool::new(false),
            pending_heads: Mutex::new(Vec::new()),
            frames: Mutex::new(FrameBoundaries::new()),
            served: AtomicBool::new(false),
            responses_open: AtomicU32::new(0),
            response_moved_ms: AtomicU64::new(0),
        }
    }

    fn bytes_read(&self, bytes: &[u8], limits: &ConnectionLimits) {
        let mut protocol = self.protocol.load(Ordering::Relaxed);
        if protocol == UNKNOWN {
            protocol = if bytes.starts_with(b"PRI * HTTP/2.0") {
                HTTP2
            } else {
                HTTP1
            };
            self.protocol.store(protocol, Ordering::Relaxed);
        }
        if protocol == HTTP2 {
            let open = self
                .frames
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .feed(bytes);
            if self.served.load(Ordering::Relaxed) {
                match open {
                    // A header block started and not finished: a head in progress.
                    Some(true) if self.head_started_ms.load(Ordering::Relaxed) == 0 => {
                        self.head_started_ms.store(now_ms(), Ordering::Relaxed);
                    }
                    Some(false) => self.head_started_ms.store(0, Ordering::Relaxed),
                    _ => {}
                }
            }
            return;
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        if in_flight == 0 && self.head_started_ms.load(Ordering::Relaxed) == 0 {
            self.head_started_ms.store(now_ms(), Ordering::Relaxed);
        }
        if in_flight == 0 || !self.body_expected.load(Ordering::Relaxed) {
            let mut pending = self.pending_heads.lock().unwrap_or_else(|e| e.into_inner());
            // Beyond the header limit hyper answers 431 anyway: no need to keep more.
            let room = (limits.max_header_bytes * 2).saturating_sub(pending.len());
            pending.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn request_started(&self, body_expected: bool) {
        self.head_started_ms.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        if self.protocol.load(Ordering::Relaxed) != HTTP1 {
            return;
        }
        self.body_expected.store(body_expected, Ordering::Relaxed);
        let mut pending = self.pending_heads.lock().unwrap_or_else(|e| e.into_inner());
        match pending.windows(4).position(|w| w == b"\r\n\r\n") {
            // Behind a body, the bytes cannot be told apart without parsing it: stop keeping
            // them (pipelining after a request with a body is rare; the idle clock still holds).
            Some(end) if !body_expected => {
                pending.drain(..end + 4);
            }
            _ => pending.clear(),
        }
    }

    fn request_finished(&self) {
        let now = now_ms();
        self.idle_since_ms.store(now, Ordering::Relaxed);
        let in_flight = self.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        if in_flight == 0 && self.protocol.load(Ordering::Relaxed) == HTTP1 {
            self.body_expected.store(false, Ordering::Relaxed);
            let pending = self.pending_heads.lock().unwrap_or_else(|e| e.into_inner());
            if !pending.is_empty() {
                // The start of the next head is already here: its clock runs from now.
                self.head_started_ms.store(now, Ordering::Relaxed);
            }
        }
    }

    fn write_blocked(&self) {
        if self.write_stalled_ms.load(Ordering::Relaxed) == 0 {
            self.write_stalled_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    fn write_progressed(&self) {
        self.write_stalled_ms.store(0, Ordering::Relaxed);
    }

    fn response_started(&self) {
        self.response_moved_ms.store(now_ms(), Ordering::Relaxed);
        self.responses_open.fetch_add(1, Ordering::Relaxed);
    }

    fn response_moved(&self) {
        self.response_moved_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn response_finished(&self) {
        self.idle_since_ms.store(now_ms(), Ordering::Relaxed);
        self.responses_open.fetch_sub(1, Ordering::Relaxed);
    }

    fn start_closing(&self) {
        self.closing_since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the watchdog must look again, or the reason to close now.
    fn next_check(&self, limits: &ConnectionLimits, now: u64) -> Result<u64, CloseReason> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let closing_since = self.closing_since_ms.load(Ordering::Relaxed);
        let write_stalled = self.write_stalled_ms.load(Ordering::Relaxed);
        let head_started = self.head_started_ms.load(Ordering::Relaxed);
        let responses_open = self.responses_open.load(Ordering::Relaxed) > 0;
        let idle =
            self.in_flight.load(Ordering::Relaxed) == 0 && !responses_open && closing_since == 0;
        let response_moved = if responses_open {
            self.response_moved_ms.load(Ordering::Relaxed)
        } else {
            0
        };
        let clocks = [
            (closing_since, limits.close_timeout, CloseReason::Close),
            (write_stalled, limits.write_timeout, CloseReason::Write),
            (response_moved, limits.write_timeout, CloseReason::Write),
            (head_started, limits.header_read_timeout, CloseReason::Head),
            (
                if idle && head_started == 0 {
                    self.idle_since_ms.load(Ordering::Relaxed)
                } else {
                    0
                },
                limits.idle_timeout,
                CloseReason::Idle,
            ),
        ];
        let mut next: Option<u64> = None;
        for (since, timeout, reason) in clocks {
            if since == 0 {
                continue;
            }
            let deadline = since.saturating_add(ms(timeout));
            if now >= deadline {
                return Err(reason);
            }
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        // Busy with no clock running: the request's own deadline bounds it; look again later.
        Ok(next.unwrap_or_else(|| {
            now.saturating_add(ms(limits.header_read_timeout.min(limits.idle_timeout)))
        }))
    }
}

/// Marks a request finished however its future ends (answered, or dropped with the connection).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that tells its connection's [`Activity`] it is being sent, and each time
/// hyper takes a piece of it: hyper takes the next piece only when the last one found room (in
/// the socket, or in the client's HTTP/2 window).
struct WatchedBody<B> {
    inner: B,
    activity: Arc<Activity>,
    finished: bool,
}

impl<B> WatchedBody<B> {
    fn new(inner: B, activity: Arc<Activity>) -> Self {
        activity.response_started();
        Self {
            inner,
            activity,
            finished: false,
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.activity.response_finished();
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.activity.response_moved(),
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for WatchedBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A socket that tells its connection's [`Activity`] when request bytes arrive and whether
/// its writes go through.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
}

impl WatchedIo {
    fn wrote(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.write_progressed(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            this.activity
                .bytes_read(&buf.filled()[before..], &this.limits);
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs HTTP/2 streams (hyper spawns one task per request) as the server's own tasks: the
/// drain waits for them, and at the end of the grace period they are dropped with their
/// connection instead of running on detached.
#[derive(Clone)]
struct StreamExecutor {
    tasks: TaskTracker,
    closing: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let closing = self.closing.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stream => {}
                () = closing.cancelled() => {}
            }
        });
    }
}

/// Serves `app` on `listener` (named `name` in the server's metrics) until `stop` resolves; then
/// stops accepting, lets open connections finish their requests for up to `grace`, and closes
/// the rest.
pub async fn serve<E>(
    name: &'static str,
    listener: TcpListener,
    app: E,
    limits: ConnectionLimits,
    grace: Duration,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let metrics = Arc::new(ServerMetrics::register(name));
    let app = Arc::new(app);
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stopping = CancellationToken::new();
    let closing = CancellationToken::new();
    let tasks = TaskTracker::new();
    let streams = StreamExecutor {
        tasks: tasks.clone(),
        closing: closing.clone(),
    };
    tokio::pin!(stop);

    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics.accept_errors.increment(1);
                if !ACCEPT_ERROR_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "accept failed; pausing before the next accept");
                }
                // EMFILE/ENFILE stay until a descriptor frees up: pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ACCEPT_ERROR_LOGGED.store(false, Ordering::Relaxed);
        // Answers go out as soon as they are written; Nagle's algorithm would hold a small
        // response back waiting for the client's ACK of the previous one.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            metrics: Arc::clone(&metrics),
            app: Arc::clone(&app),
            local: local.clone(),
            remote: RemoteAddr(Addr::SocketAddr(remote)),
            limits,
            stopping: stopping.clone(),
            closing: closing.clone(),
            streams: streams.clone(),
        };
        tasks.spawn(async move {
            let _slot = slot;
            connection.serve(stream).await;
        });
    }

    drop(listener);
    stopping.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "grace period over; closing connections with requests still in flight"
        );
        crate::http::server_aborting();
        closing.cancel();
        tasks.wait().await;
    }
    Ok(())
}

static ACCEPT_ERROR_LOGGED: AtomicBool = AtomicBool::new(false);

struct Connection<E> {
    metrics: Arc<ServerMetrics>,
    app: Arc<E>,
    local: LocalAddr,
    remote: RemoteAddr,
    limits: ConnectionLimits,
    /// Finish the request in flight, then close.
    stopping: CancellationToken,
    /// Close now.
    closing: CancellationToken,
    streams: StreamExecutor,
}

impl<E> Connection<E>
where
    E: Endpoint<Output = Response> + 'static,
{
    async fn serve(self, stream: TcpStream) {
        let metrics = Arc::clone(&self.metrics);
        let _open = OpenConnection::new(&metrics.open);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            activity: Arc::clone(&activity),
            limits: self.limits,
        });
        let service = {
            let (app, local, remote) = (self.app, self.local, self.remote);
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let body_expected = !hyper::body::Body::is_end_stream(request.body());
                activity.request_started(body_expected);
                let in_flight = InFlight(Arc::clone(&activity));
                let request =
                    poem::Request::from((request, local.clone(), remote.clone(), Scheme::HTTP));
                let app = Arc::clone(&app);
                let activity = Arc::clone(&activity);
                async move {
                    // Boxed: the whole request future is large, and hyper and the runtime
                    // move it; a pointer moves for free (memmove was 8% of a read in `perf`).
                    let response = Box::pin(app.get_response(request)).await;
                    let response = hyper::Response::from(response)
                        .map(|body| WatchedBody::new(body, activity));
                    drop(in_flight);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let mut builder = auto::Builder::new(self.streams.clone());
        builder
            .http1()
            .max_buf_size(self.limits.max_header_bytes.max(MIN_HYPER_BUFFER));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.limits.http2_keepalive_interval)
            .keep_alive_timeout(self.limits.http2_keepalive_interval)
            .max_concurrent_streams(HTTP2_MAX_STREAMS)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .max_send_buf_size(HTTP2_SEND_BUFFER)
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX));
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut watchdog = Watchdog::new(&activity, self.limits);
        let (mut graceful, mut draining) = (false, false);

        loop {
            tokio::select! {
                // The connection first: the watchdog then sees what this poll of it changed.
                biased;
                result = connection.as_mut() => {
                    metrics.connection_ended(result);
                    break;
                }
                reason = &mut watchdog => {
                    metrics.closed[reason as usize].increment(1);
                    if reason == CloseReason::Idle && !graceful {
                        // Idle: say goodbye (HTTP/2 GOAWAY), but only for close_timeout.
                        graceful = true;
                        activity.start_closing();
                        connection.as_mut().graceful_shutdown();
                        continue;
                    }
                    // A head, a write or a goodbye past its clock: the client is not
                    // cooperating, so the connection is dropped.
                    break;
                }
                () = self.stopping.cancelled(), if !draining => {
                    draining = true;
                    if !graceful {
                        graceful = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                () = self.closing.cancelled() => break,
            }
        }
    }
}

/// hyper refuses a read buffer under 8 KiB.
const MIN_HYPER_BUFFER: usize = 8192;

/// Resolves when the connection must be closed. It looks at the connection's [`Activity`]
/// each time the connection's task runs (it is polled after the connection, in the same
/// `select!`), so a deadline that moves closer, such as a head starting on an idle
/// connection, is seen at once; between wake-ups it sleeps until the nearest deadline.
struct Watchdog<'a> {
    activity: &'a Activity,
    limits: ConnectionLimits,
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed_for: u64,
}

impl<'a> Watchdog<'a> {
    fn new(activity: &'a Activity, limits: ConnectionLimits) -> Self {
        Self {
            activity,
            limits,
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed_for: u64::MAX,
        }
    }
}

impl Future for Watchdog<'_> {
    type Output = CloseReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        loop {
            let at = match self.activity.next_check(&self.limits, now_ms()) {
                Err(reason) => {
                    // Polled again after a graceful goodbye: look at the clocks afresh.
                    self.armed_for = u64::MAX;
                    return Poll::Ready(reason);
                }
                Ok(at) => at,
            };
            // Only a nearer deadline re-arms the timer: a later one (the idle clock restarting
            // after each answer) is found when the armed timer fires, so a busy connection
            // touches the timer wheel about once per timeout, not per request.
            if at < self.armed_for || self.armed_for <= now_ms() {
                self.armed_for = at;
                self.sleep.as_mut().reset(instant_of(at));
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A socket bound up front, so its real address (port 0 in tests) is known before serving.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
            write_timeout: Duration::from_millis(300),
            close_timeout: Duration::from_millis(200),
            http2_keepalive_interval: Duration::from_millis(500),
            max_header_bytes: 16384,
            max_connections: 4,
        }
    }

    #[test]
    fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let activity = Activity::new();
        let opened = activity.head_started_ms.load(Ordering::Relaxed);
        assert_eq!(activity.next_check(&limits(), opened), Ok(opened + 100));
        assert_eq!(
            activity.next_check(&limits(), opened + 100),
            Err(CloseReason::Head)
        );
    }

    #[test]
    fn between_requests_the_idle_clock_runs_until_a_head_starts() {
        let activity = Activity::new();
        activity.bytes_read(b"GET / HTTP/1.1\r\n\r\n", &limits());
        activity.request_started(false);
        let now = now_ms();
        assert!(activity.next_check(&limits(), now).is_ok(), "busy");
        activity.request_finished();
        let idle_since = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.next_check(&limits(), idle_since),
            Ok(idle_since + 1000)
        );
        assert_eq!(
            activity.next_check(&limits(), idle_since + 1000),
            Err(CloseReason::Idle)
        );
        activity.bytes_read(b"G", &limits());
        let started = activity.head_started_ms.load(Ordering::Relaxed);
        assert_ne!(started, 0);
        assert_eq!(
            activity.next_check(&limits(), started + 100),
            Err(CloseReason::Head)
        );
    }

    #[test]
    fn a_pipelined_partial_head_is_timed_once_the_request_before_it_is_answered() {
        let activity = Activity::new();
        // One read: a whole request and the start of the next, which never ends.
        activity.bytes_read(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo",
            &limits(),
        );
        activity.request_started(false);
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
        activity.request_finished();
        let started = activity.head_started_ms.load(Ordering::Relaxed);
        assert_ne!(
            started, 0,
            "the partial head's clock runs, not the idle clock"
        );
        assert_eq!(
            activity.next_check(&limits(), started + 100),
            Err(CloseReason::Head)
        );
        // A whole pipelined head is not a partial one: its request starts at once.
        let activity = Activity::new();
        activity.bytes_read(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", &limits());
        activity.request_started(false);
        activity.request_finished();
        activity.request_started(false);
        activity.request_finished();
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn http2_times_the_first_request_then_only_idleness() {
        let activity = Activity::new();
        let opened = activity.head_started_ms.load(Ordering::Relaxed);
        activity.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &limits());
        activity.bytes_read(b"SETTINGS frames", &limits());
        assert_eq!(
            activity.next_check(&limits(), opened + 100),
            Err(CloseReason::Head),
            "a preface alone does not stop the clock"
        );
        activity.request_started(false);
        activity.request_finished();
        activity.bytes_read(b"more frames", &limits());
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
        let idle_since = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.next_check(&limits(), idle_since),
            Ok(idle_since + 1000)
        );
    }

    /// An HTTP/2 frame header: length, type, flags, stream 1.
    fn frame(length: usize, kind: u8, flags: u8) -> Vec<u8> {
        let mut header = vec![
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
            kind,
            flags,
        ];
        header.extend_from_slice(&[0, 0, 0, 1]);
        header.extend(std::iter::repeat_n(0, length));
        header
    }

    #[test]
    fn an_unfinished_http2_header_block_after_the_first_request_runs_the_head_clock() {
        let activity = Activity::new();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0, 0x4, 0)); // SETTINGS
        activity.bytes_read(&bytes, &limits());
        activity.request_started(false);
        activity.request_finished();
        // DATA, then HEADERS without END_HEADERS split across reads: the clock starts.
        activity.bytes_read(&frame(100, 0x0, 0), &limits());
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
        let headers = frame(20, 0x1, 0);
        activity.bytes_read(&headers[..5], &limits());
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
        activity.bytes_read(&headers[5..], &limits());
        let started = activity.head_started_ms.load(Ordering::Relaxed);
        assert_ne!(started, 0);
        assert_eq!(
            activity.next_check(&limits(), started + 100),
            Err(CloseReason::Head)
        );
        // Its CONTINUATION with END_HEADERS finishes the head.
        activity.bytes_read(&frame(10, 0x9, 0x4), &limits());
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_response_that_stops_moving_has_the_write_clock() {
        let activity = Activity::new();
        activity.bytes_read(b"GET / HTTP/1.1\r\n\r\n", &limits());
        activity.request_started(false);
        activity.response_started();
        activity.request_finished();
        let moved = activity.response_moved_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.next_check(&limits(), moved),
            Ok(moved + 300),
            "not idle"
        );
        assert_eq!(
            activity.next_check(&limits(), moved + 300),
            Err(CloseReason::Write)
        );
        activity.response_finished();
        let idle_since = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.next_check(&limits(), idle_since),
            Ok(idle_since + 1000)
        );
    }

    #[test]
    fn a_write_the_client_does_not_read_has_its_own_clock() {
        let activity = Activity::new();
        activity.bytes_read(b"GET / HTTP/1.1\r\n\r\n", &limits());
        activity.request_started(false);
        activity.request_finished();
        activity.write_blocked();
        let stalled = activity.write_stalled_ms.load(Ordering::Relaxed);
        assert_eq!(activity.next_check(&limits(), stalled), Ok(stalled + 300));
        assert_eq!(
            activity.next_check(&limits(), stalled + 300),
            Err(CloseReason::Write)
        );
        activity.write_progressed();
        assert!(activity.next_check(&limits(), stalled + 300).is_ok());
    }

    #[test]
    fn a_graceful_close_is_bounded() {
        let activity = Activity::new();
        activity.bytes_read(b"GET / HTTP/1.1\r\n\r\n", &limits());
        activity.request_started(false);
        activity.request_finished();
        activity.start_closing();
        let since = activity.closing_since_ms.load(Ordering::Relaxed);
        assert_eq!(activity.next_check(&limits(), since), Ok(since + 200));
        assert_eq!(
            activity.next_check(&limits(), since + 200),
            Err(CloseReason::Close)
        );
    }
}
