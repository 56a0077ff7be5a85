//! What serving the API's document and Swagger UI costs one request in memory: both are made
//! once at start, so a request allocates a few small objects, not a copy of the 1.6 MB page.
//! A counting allocator (this test binary's own) measures it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use poem::{Endpoint, Request};
use poem_openapi::payload::PlainText;
use poem_openapi::{OpenApi, OpenApiService};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a count is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Api;

#[OpenApi]
impl Api {
    /// A greeting.
    #[oai(path = "/hello", method = "get", operation_id = "hello")]
    async fn hello(&self) -> PlainText<&'static str> {
        PlainText("hello")
    }
}

/// Bytes allocated while `path` is answered (not counting reading its body).
async fn allocated_for(
    routes: &impl Endpoint<Output = poem::Response>,
    path: &str,
) -> (usize, usize) {
    let request = Request::builder().uri(path.parse().unwrap()).finish();
    ALLOCATED.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let response = routes.get_response(request).await;
    COUNTING.store(false, Ordering::Relaxed);
    let allocated = ALLOCATED.load(Ordering::Relaxed);
    assert_eq!(response.status(), 200, "{path}");
    let size = response.into_body().into_bytes().await.unwrap().len();
    (allocated, size)
}

#[tokio::test(flavor = "current_thread")]
async fn the_document_and_swagger_ui_are_not_copied_per_request() {
    let (routes, _) = platform::http::api_routes(OpenApiService::new(Api, "test", "1.0"));
    for path in ["/docs", "/openapi.json"] {
        allocated_for(&routes, path).await; // anything made lazily, made now
        let (allocated, size) = allocated_for(&routes, path).await;
        println!("{path}: {size} bytes served, {allocated} bytes allocated for the request");
        assert!(
            allocated < 4096,
            "{path}: {allocated} bytes allocated for a {size}-byte answer"
        );
    }
    let (_, page) = allocated_for(&routes, "/docs").await;
    assert!(
        page > 1_000_000,
        "Swagger UI's page, its bundle inlined: {page} bytes"
    );
}
