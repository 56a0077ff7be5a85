//! The services' memory allocator: mimalloc instead of glibc's malloc.
//!
//! Measured with cachegrind on the item read (docs/performance.md): glibc's malloc and free
//! took about 11,000 of its 63,000 instructions a request, most of it hyper's per-request read
//! buffer (an 8 KiB block freed and consolidated again each time); with mimalloc the whole read
//! is about 56,000. A bare hyper server barely allocates, and measures the same on either.
//!
//! Each binary declares it (`#[global_allocator]` must be in the binary's own crate):
//! `static ALLOCATOR: platform::allocator::Allocator = platform::allocator::Allocator;`

pub use mimalloc::MiMalloc as Allocator;

/// Hands the memory start-up used and freed (configuration, migrations, TLS roots, the API
/// document) back to the OS. mimalloc returns free pages lazily, when the allocator is next
/// busy, so an idle service would otherwise keep them: ~4 MiB of idle RSS.
pub fn release_startup_memory() {
    // SAFETY: `mi_collect` has no preconditions; it only frees pages no allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
