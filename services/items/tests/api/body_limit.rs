//! Request bodies against the real `items` binary over HTTP/1.1 and HTTP/2: every body counts
//! against MAX_BODY_BYTES whatever its headers say (HTTP/2 needs neither `Content-Length` nor
//! `Transfer-Encoding`), and a write's credentials are checked before its body is read.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::{KEY, items_command};
use crate::helpers::{Db, LoggedProcess, TestDb, closed_port};

const LIMIT: usize = 16 * 1024;
const UNKNOWN_KEY: &str = "made-up-key-0123";

struct Items {
    _process: LoggedProcess,
    addr: String,
    _db: TestDb,
}

impl Items {
    async fn start() -> Self {
        let db = TestDb::create(Db::Sqlite).await;
        let mut command = items_command();
        command
            .env("DATABASE_URL", &db.url)
            .env("TIMEZONES_URL", format!("http://{}", closed_port()))
            .env("MAX_BODY_BYTES", LIMIT.to_string());
        let process = LoggedProcess::start(&mut command);
        let addr = process.address.trim_start_matches("http://").to_owned();
        Self {
            _process: process,
            addr,
            _db: db,
        }
    }

    /// An HTTP/2 connection (prior knowledge, as h2c clients and the mesh speak it).
    async fn http2(&self) -> hyper::client::conn::http2::SendRequest<Body> {
        let stream = TcpStream::connect(&self.addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an HTTP/2 handshake");
        tokio::spawn(connection);
        sender
    }
}

/// A request body fed by the test through a channel, a chunk at a time; it ends when the
/// sender is dropped. (http-body-util's own `channel` feature would add a dependency.)
struct Body(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// `POST /v1/items` over HTTP/2 with no `Content-Length`; the body is fed through the sender.
fn http2_post(key: &str) -> (tokio::sync::mpsc::Sender<Bytes>, hyper::Request<Body>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let request = hyper::Request::post("/v1/items")
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(Body(receiver))
        .unwrap();
    (sender, request)
}

/// The start of a JSON body that never ends within the limit: `{"name":"aaaa…`.
fn endless_json_chunk(first: bool, size: usize) -> Bytes {
    let mut chunk = if first {
        br#"{"name":""#.to_vec()
    } else {
        Vec::new()
    };
    chunk.resize(size, b'a');
    Bytes::from(chunk)
}

async fn problem_of(response: hyper::Response<hyper::body::Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(content_type, "application/problem+json");
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn an_http2_body_past_the_limit_without_a_length_gets_413() {
    let items = Items::start().await;
    let mut http2 = items.http2().await;
    let (body, request) = http2_post(KEY);
    let answer = tokio::spawn(http2.send_request(request));
    // 1 MiB in 16 KiB chunks, far past the limit, with no length announced. The server stops
    // reading at the limit, so the flow-control window closes and the sender stalls: stop
    // feeding once it does.
    let mut sent = 0;
    for i in 0..64 {
        let chunk = endless_json_chunk(i == 0, 16 * 1024);
        match tokio::time::timeout(Duration::from_secs(2), body.send(chunk)).await {
            Ok(Ok(())) => sent += 16 * 1024,
            _ => break,
        }
    }
    let response = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer within 10 s")
        .unwrap()
        .expect("a response, not a reset");
    let (status, problem) = problem_of(response).await;
    assert_eq!(status, 413, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&LIMIT.to_string()),
        "{problem}"
    );
    println!("413 after the client had queued {sent} bytes (limit {LIMIT})");
}

#[tokio::test]
async fn an_http1_chunked_body_past_the_limit_gets_413() {
    let items = Items::start().await;
    let mut stream = TcpStream::connect(&items.addr).await.unwrap();
    let head = format!(
        "POST /v1/items HTTP/1.1\r\nHost: items\r\nContent-Type: application/json\r\n\
         X-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = endless_json_chunk(true, 4 * LIMIT);
    stream
        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
        .await
        .unwrap();
    // The server may answer and close before it has read all of this: ignore a broken pipe.
    let _ = stream.write_all(&chunk).await;
    let status = read_status(&mut stream).await;
    assert_eq!(status, 413);
}

/// Reads an HTTP/1.1 response's status line, bounded by 10 s.
async fn read_status(stream: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !data.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.expect("reading the answer");
            assert!(n > 0, "closed without an answer");
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within 10 s");
    String::from_utf8_lossy(&data)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn an_unknown_key_is_refused_before_the_body_arrives_over_http1() {
    let items = Items::start().await;
    let mut stream = TcpStream::connect(&items.addr).await.unwrap();
    // A head and the start of a body that the client never finishes: only an answer given
    // before the body is read can arrive.
    let request = format!(
        "POST /v1/items HTTP/1.1\r\nHost: items\r\nContent-Type: application/json\r\n\
         X-API-Key: {UNKNOWN_KEY}\r\nContent-Length: 1000\r\n\r\n{{\"name\":\"a"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_status(&mut stream).await, 403);
}

#[tokio::test]
async fn an_unknown_key_is_refused_before_the_body_arrives_over_http2() {
    let items = Items::start().await;
    let mut http2 = items.http2().await;
    let (body, request) = http2_post(UNKNOWN_KEY);
    let answer = tokio::spawn(http2.send_request(request));
    body.send(endless_json_chunk(true, 100)).await.unwrap();
    // The body stays open: the sender is kept, and nothing more is sent.
    let response = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer within 10 s, with the body still open")
        .unwrap()
        .expect("a response");
    let (status, _) = problem_of(response).await;
    assert_eq!(status, 403);
    drop(body);
}
