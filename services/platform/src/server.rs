//! The HTTP server: our own accept loop over hyper, because poem's `Server` has none of the
//! limits a server facing hostile clients needs. It starts no clock for a request head (a client
//! sending one byte a second holds a connection for ever), accepts heads up to hyper's ~400 KB
//! buffer, has no cap on open connections, and retries a failing `accept` (EMFILE at the
//! file-descriptor limit) at once, spinning a core. Here:
//!
//! - a client must deliver a whole request head within `header_read_timeout` of opening the
//!   connection or of starting the head (its first byte after the previous answer);
//! - a keep-alive connection with nothing in flight is closed after `idle_timeout`;
//! - a head over `max_header_bytes` gets 431 from hyper's parser;
//! - at most `max_connections` are open; more wait in the kernel's accept backlog, so the
//!   process keeps descriptors for its database, its upstream and its logs;
//! - a failing `accept` is retried after a pause, never in a loop.
//!
//! The clocks cost nothing per request: a connection's watchdog sleeps until the next deadline,
//! and requests only store two numbers (see [`Activity`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
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
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// Why the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
}

impl CloseReason {
    const ALL: [Self; 2] = [Self::HeaderTimeout, Self::IdleTimeout];

    fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// The server's own series, per listener (`api`, `metrics`), present at 0 from the start so
/// alerts on them see data.
struct ServerMetrics {
    open: metrics::Gauge,
    closed: [metrics::Counter; 2],
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
        let accept_errors =
            metrics::counter!("http_server_accept_errors_total", "listener" => listener);
        accept_errors.absolute(0);
        let open = metrics::gauge!("http_server_connections_open", "listener" => listener);
        open.increment(0.0);
        Self {
            open,
            closed,
            accept_errors,
        }
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

/// What a connection is doing, as its watchdog needs to know: whether a request head is being
/// awaited (and since when), how many requests are in flight, and since when it has been idle.
struct Activity {
    /// When the current request head started (connection opened, or first byte after the
    /// previous answer); 0 while no head is awaited.
    head_started_ms: AtomicU64,
    in_flight: AtomicU32,
    idle_since_ms: AtomicU64,
    /// HTTP/2 multiplexes: frames arrive between requests, so only the idle clock applies.
    http2: AtomicBool,
    first_read_seen: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        let now = now_ms();
        Self {
            head_started_ms: AtomicU64::new(now),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(now),
            http2: AtomicBool::new(false),
            first_read_seen: AtomicBool::new(false),
        }
    }

    fn bytes_read(&self, bytes: &[u8]) {
        if !self.first_read_seen.load(Ordering::Relaxed) {
            self.first_read_seen.store(true, Ordering::Relaxed);
            if bytes.starts_with(b"PRI * HTTP/2.0") {
                self.http2.store(true, Ordering::Relaxed);
                self.head_started_ms.store(0, Ordering::Relaxed);
                return;
            }
        }
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_started_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    fn request_started(&self) {
        self.head_started_ms.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.idle_since_ms.store(now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// When the watchdog must look again, or the reason to close now.
    fn next_check(&self, limits: &ConnectionLimits, now: u64) -> Result<u64, CloseReason> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let head_started = self.head_started_ms.load(Ordering::Relaxed);
        if head_started != 0 {
            let deadline = head_started.saturating_add(ms(limits.header_read_timeout));
            return if now >= deadline {
                Err(CloseReason::HeaderTimeout)
            } else {
                Ok(deadline)
            };
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let deadline = self
                .idle_since_ms
                .load(Ordering::Relaxed)
                .saturating_add(ms(limits.idle_timeout));
            return if now >= deadline {
                Err(CloseReason::IdleTimeout)
            } else {
                Ok(deadline)
            };
        }
        // Busy: the request's own deadline bounds it; look again later.
        Ok(now.saturating_add(ms(limits.header_read_timeout.min(limits.idle_timeout))))
    }
}

/// Marks a request finished however its future ends (answered, or dropped with the connection).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A socket that tells its connection's [`Activity`] when request bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
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
            this.activity.bytes_read(&buf.filled()[before..]);
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// Serves `app` on `listener` (named `name` in the server's metrics) until `stop` resolves; then stops accepting, lets open
/// connections finish their requests for up to `grace`, and closes the rest.
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
    let connections = TaskTracker::new();
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
        let connection = Connection {
            metrics: Arc::clone(&metrics),
            app: Arc::clone(&app),
            local: local.clone(),
            remote: RemoteAddr(Addr::SocketAddr(remote)),
            limits,
            stopping: stopping.clone(),
            closing: closing.clone(),
        };
        connections.spawn(async move {
            let _slot = slot;
            connection.serve(stream).await;
        });
    }

    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "grace period over; closing connections with requests still in flight"
        );
        closing.cancel();
        connections.wait().await;
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
}

impl<E> Connection<E>
where
    E: Endpoint<Output = Response> + 'static,
{
    async fn serve(self, stream: TcpStream) {
        let metrics = Arc::clone(&self.metrics);
        metrics.open.increment(1.0);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let service = {
            let (app, local, remote) = (self.app, self.local, self.remote);
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                activity.request_started();
                let in_flight = InFlight(Arc::clone(&activity));
                let request =
                    poem::Request::from((request, local.clone(), remote.clone(), Scheme::HTTP));
                let app = Arc::clone(&app);
                async move {
                    // Boxed: the whole request future is large, and hyper and the runtime
                    // move it; a pointer moves for free (memmove was 8% of a read in `perf`).
                    let response = Box::pin(app.get_response(request)).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(hyper::Response::from(response))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(self.limits.max_header_bytes.max(MIN_HYPER_BUFFER));
        builder
            .http2()
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX));
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut watchdog = Watchdog::new(&activity, self.limits);

        tokio::select! {
            // The connection first: the watchdog then sees what this poll of it changed.
            biased;
            _ = connection.as_mut() => {}
            reason = &mut watchdog => {
                metrics.closed[reason as usize].increment(1);
                if reason == CloseReason::IdleTimeout {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = self.closing.cancelled() => {}
                    }
                }
                // A header timeout drops the connection: the client is not reading anyway.
            }
            () = self.stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = connection.as_mut() => {}
                    () = self.closing.cancelled() => {}
                }
            }
        }
        metrics.open.decrement(1.0);
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
                Err(reason) => return Poll::Ready(reason),
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
            Err(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn between_requests_the_idle_clock_runs_until_a_head_starts() {
        let activity = Activity::new();
        activity.bytes_read(b"GET / HTTP/1.1\r\n");
        activity.request_started();
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
            Err(CloseReason::IdleTimeout)
        );
        activity.bytes_read(b"G");
        let started = activity.head_started_ms.load(Ordering::Relaxed);
        assert_ne!(started, 0);
        assert_eq!(
            activity.next_check(&limits(), started + 100),
            Err(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn http2_connections_have_only_the_idle_clock() {
        let activity = Activity::new();
        activity.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        activity.bytes_read(b"frames");
        assert_eq!(activity.head_started_ms.load(Ordering::Relaxed), 0);
        let idle_since = activity.idle_since_ms.load(Ordering::Relaxed);
        assert_eq!(
            activity.next_check(&limits(), idle_since),
            Ok(idle_since + 1000)
        );
    }
}
