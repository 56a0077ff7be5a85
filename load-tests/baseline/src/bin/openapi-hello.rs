//! The framework floor: poem + poem-openapi answering "hello" from one OpenAPI operation, with
//! none of meridian's middleware, telemetry or storage. Between the bare hyper server and
//! items' `/healthz`, it shows how much of the gap is the framework and how much is ours
//! (load-tests/bench.py). Listens on BIND_ADDR (default 127.0.0.1:8091).

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Route, Server};
use poem_openapi::payload::PlainText;
use poem_openapi::{OpenApi, OpenApiService};

struct Hello;

#[OpenApi]
impl Hello {
    #[oai(path = "/", method = "get")]
    async fn hello(&self) -> PlainText<&'static str> {
        PlainText("hello")
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8091".into());
    let api = OpenApiService::new(Hello, "openapi-hello", "1");
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    // The benchmark waits for this line (load-tests/instructions.py sends no probe requests).
    for addr in acceptor.local_addr() {
        println!("listening on {addr}");
    }
    Server::new_with_acceptor(acceptor)
        .run(Route::new().nest("/", api))
        .await
}
