//! Opening and closing 100 connections 5 times in a row over real WebRTC on
//! loopback, closed from either side: the transports' tables and the runtime's
//! task count come back to where they were, and no component logs an error
//! (the `webrtc` crate logs through `log`, captured here).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use common::{config, eventually, key, wire};
use n2n_core::PeerId;
use n2n_core::transport::{Connection, Transport};
use n2n_transport_webrtc::{TransportStats, WebRtcTransport};

/// Error-level records logged through `log` (the first few, and how many).
struct ErrorLog {
    errors: Mutex<(usize, Vec<String>)>,
}

impl log::Log for ErrorLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Error
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut errors = self.errors.lock().unwrap();
            errors.0 += 1;
            if errors.1.len() < 10 {
                errors
                    .1
                    .push(format!("{}: {}", record.target(), record.args()));
            }
        }
    }

    fn flush(&self) {}
}

static LOG: ErrorLog = ErrorLog {
    errors: Mutex::new((0, Vec::new())),
};

async fn connect(
    ta: &WebRtcTransport,
    tb: &WebRtcTransport,
    a: PeerId,
    b: PeerId,
) -> (Box<dyn Connection>, Box<dyn Connection>) {
    let (dp, ap) = wire(a, b, b, a);
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    (ca.expect("dial"), cb.expect("accept"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_close_cycles_leave_nothing_behind_and_log_no_error() {
    const CONNECTIONS: usize = 100;
    const CYCLES: usize = 5;
    const BATCH: usize = 10;
    log::set_logger(&LOG).unwrap();
    log::set_max_level(log::LevelFilter::Error);
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let ta = WebRtcTransport::new(config()).unwrap();
    let tb = WebRtcTransport::new(config()).unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    // Warm-up: the first connection starts lazily created process-wide state.
    let (ca, cb) = connect(&ta, &tb, a, b).await;
    ca.close().await;
    cb.close().await;
    let settle = || async {
        eventually(10, "tables empty", || async {
            ta.stats() == TransportStats::default() && tb.stats() == TransportStats::default()
        })
        .await;
    };
    settle().await;
    let mut baseline = None;
    for cycle in 0..CYCLES {
        let mut open = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS / BATCH {
            let batch =
                futures_util::future::join_all((0..BATCH).map(|_| connect(&ta, &tb, a, b))).await;
            open.extend(batch);
        }
        assert_eq!(ta.stats().connections, CONNECTIONS);
        assert_eq!(tb.stats().connections, CONNECTIONS);
        for (i, (ca, cb)) in open.iter().enumerate() {
            ca.send(Bytes::from(vec![cycle as u8; 100])).await.unwrap();
            assert_eq!(cb.recv().await.unwrap().len(), 100, "connection {i}");
        }
        // Half closed by the dialer, half by the acceptor; both ends closed.
        for (i, (ca, cb)) in open.iter().enumerate() {
            if i % 2 == 0 {
                ca.close().await;
                cb.close().await;
            } else {
                cb.close().await;
                ca.close().await;
            }
        }
        drop(open);
        settle().await;
        // The runtime's own task count (webrtc's internal tasks included) comes
        // back to the level of the first cycle.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let alive = metrics.num_alive_tasks();
            match baseline {
                None => {
                    baseline = Some(alive);
                    break;
                }
                Some(b) if alive <= b => break,
                Some(b) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "cycle {cycle}: {alive} tasks alive, {b} after the first cycle"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let errors = LOG.errors.lock().unwrap();
    assert_eq!(errors.0, 0, "errors logged: {:?}", errors.1);
}
