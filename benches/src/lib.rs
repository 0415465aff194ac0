//! Benchmarks of n2n: see `benches/README.md`.
//!
//! This library holds what the bench files share: the bare `webrtc` crate set
//! up the way the n2n transport sets it up (host candidates on loopback only,
//! no mDNS), n2n nodes over that transport, and bounded waits. Every wait has a
//! timeout, so that a broken connection fails a bench instead of hanging it.

use std::future::Future;
use std::time::Duration;

pub mod bare;
pub mod n2n;

/// Bound on every wait in the benches (a set-up, a message, a transfer).
pub const WAIT: Duration = Duration::from_secs(45);

/// Whether the bench binary runs under `cargo bench` (criterion gets
/// `--bench`), as opposed to the quick single pass of `cargo test`, where
/// sizes are kept small.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Awaits `fut` for at most [`WAIT`].
///
/// # Panics
/// On timeout, naming `what`: a bench that cannot finish must fail loudly.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {WAIT:?}"),
    }
}

/// A multi-threaded runtime with two workers, like the machine the figures
/// come from.
///
/// # Panics
/// If the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
