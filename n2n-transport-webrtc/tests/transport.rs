//! The transport on its own, over real WebRTC on loopback: two transports
//! exchange their signals through hand-wired pipes (no node runtime), then talk
//! over a data channel. Large messages, limits, close from either side, a
//! remote that never answers, a remote that vanishes, malformed signals.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{config, eventually, key, wire};
use n2n_core::PeerId;
use n2n_core::transport::{Connection, ConnectionError, SignalPipe, Transport, TransportError};
use n2n_transport_webrtc::signal::Signal;
use n2n_transport_webrtc::{Config, TransportStats, WebRtcTransport};

struct Pair {
    ca: Box<dyn Connection>,
    cb: Box<dyn Connection>,
    a: PeerId,
    b: PeerId,
    ta: WebRtcTransport,
    tb: WebRtcTransport,
}

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

async fn pair_with(cfg: Config) -> Pair {
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let ta = WebRtcTransport::new(cfg.clone()).unwrap();
    let tb = WebRtcTransport::new(cfg).unwrap();
    let (ca, cb) = connect(&ta, &tb, a, b).await;
    Pair {
        ca,
        cb,
        a,
        b,
        ta,
        tb,
    }
}

async fn pair() -> Pair {
    pair_with(config()).await
}

/// A pair whose connections carry messages up to the wire's largest frame
/// (above the 1 MiB default of `max_message`).
async fn large_pair() -> Pair {
    pair_with(Config {
        max_message: n2n_core::wire::MAX_FRAME,
        ..config()
    })
    .await
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_both_ways_including_8_mib() {
    let p = large_pair().await;
    assert_eq!(p.ca.remote(), p.b);
    assert_eq!(p.cb.remote(), p.a);
    for i in 0..100u32 {
        p.ca.send(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(
            p.cb.recv().await.unwrap(),
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }
    // Around the chunk size, an empty message, and 8 MiB each way.
    for len in [
        0,
        1,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        65_000,
        65_536,
        1 << 20,
    ] {
        let m = pattern(len, len as u8);
        let (sent, got) = tokio::join!(p.cb.send(m.clone()), p.ca.recv());
        sent.unwrap();
        assert_eq!(got.unwrap(), m, "{len} bytes b → a");
    }
    let big = pattern(8 * 1024 * 1024, 7);
    let (sent, got) = tokio::join!(p.ca.send(big.clone()), p.cb.recv());
    sent.unwrap();
    assert_eq!(got.unwrap(), big);
    let (sent, got) = tokio::join!(p.cb.send(big.clone()), p.ca.recv());
    sent.unwrap();
    assert_eq!(got.unwrap(), big);
    // Small messages still flow after the large ones.
    p.ca.send(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(p.cb.recv().await.unwrap(), Bytes::from_static(b"after"));
    p.ca.close().await;
    p.cb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_interleave_and_arrive_whole() {
    let p = large_pair().await;
    let big = pattern(4 * 1024 * 1024, 3);
    let small = Bytes::from_static(b"small");
    let ca = &p.ca;
    let (r1, r2, got) = tokio::join!(
        ca.send(big.clone()),
        async {
            // Starts while the large message is on its way.
            tokio::time::sleep(Duration::from_millis(5)).await;
            ca.send(small.clone()).await
        },
        async {
            let first = p.cb.recv().await.unwrap();
            let second = p.cb.recv().await.unwrap();
            (first, second)
        }
    );
    r1.unwrap();
    r2.unwrap();
    let (first, second) = got;
    // The small message did not wait for the whole large one.
    assert_eq!(first, small);
    assert_eq!(second, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_the_limit_are_refused_clearly() {
    let p = pair().await;
    let limit = Config::default().max_message;
    assert_eq!(limit, n2n_core::wire::DEFAULT_MAX_MESSAGE);
    assert_eq!(
        p.ca.send(Bytes::from(vec![0; limit + 1])).await,
        Err(ConnectionError::TooLarge {
            size: limit + 1,
            limit
        })
    );
    // The connection is still fine, and a message of exactly the limit crosses.
    let max = pattern(limit, 1);
    let (sent, got) = tokio::join!(p.ca.send(max.clone()), p.cb.recv());
    sent.unwrap();
    assert_eq!(got.unwrap(), max);

    // A receiver with a smaller limit drops a sender that exceeds it.
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let ta = WebRtcTransport::new(config()).unwrap();
    let tb = WebRtcTransport::new(Config {
        max_message: 100_000,
        ..config()
    })
    .unwrap();
    let (ca, cb) = connect(&ta, &tb, a, b).await;
    ca.send(pattern(200_000, 0)).await.unwrap();
    match cb.recv().await {
        Err(ConnectionError::Lost(why)) => assert!(why.contains("exceeds"), "{why}"),
        other => panic!("expected a lost connection, got {other:?}"),
    }
}

async fn closes_from(dialer_closes: bool) {
    let p = pair().await;
    let (closer, other) = if dialer_closes {
        (&p.ca, &p.cb)
    } else {
        (&p.cb, &p.ca)
    };
    closer
        .send(Bytes::from_static(b"last words"))
        .await
        .unwrap();
    closer.close().await;
    assert_eq!(
        other.recv().await.unwrap(),
        Bytes::from_static(b"last words")
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), other.recv())
            .await
            .unwrap(),
        Err(ConnectionError::Closed)
    );
    assert_eq!(
        closer.send(Bytes::from_static(b"x")).await,
        Err(ConnectionError::Closed)
    );
    // The other side knows too, before it closes.
    assert_eq!(
        other.send(Bytes::from_static(b"x")).await,
        Err(ConnectionError::Closed)
    );
    assert_eq!(closer.recv().await, Err(ConnectionError::Closed));
    closer.close().await; // idempotent
    other.close().await;
    for t in [&p.ta, &p.tb] {
        eventually(5, "tables empty", || async {
            t.stats() == TransportStats::default()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_closes() {
    closes_from(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_closes() {
    closes_from(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_never_answers_times_out() {
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let ta = WebRtcTransport::new(Config {
        handshake_timeout: Duration::from_millis(500),
        ..config()
    })
    .unwrap();
    // The offer goes nowhere: the runtime's end is kept but never answers.
    let (pipe, mut ends) = SignalPipe::new(a, b);
    let sink = tokio::spawn(async move {
        let mut n = 0;
        while let Some(s) = ends.outbound.recv().await {
            if n == 0 {
                assert!(matches!(Signal::decode(&s), Ok(Signal::Offer { .. })));
            }
            n += 1;
        }
        n
    });
    match ta.dial(pipe).await {
        Err(TransportError::Timeout(d)) => assert_eq!(d, Duration::from_millis(500)),
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    assert!(sink.await.unwrap() >= 1, "the offer went out");
    eventually(5, "handshake released", || async {
        ta.stats() == TransportStats::default()
    })
    .await;
}

/// The signaling path may vanish once the offer and the answer went through
/// (the remote finished first, a relaying neighbour left): ICE and DTLS
/// complete without it, and the connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_closed_after_offer_and_answer_is_not_fatal() {
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let ta = WebRtcTransport::new(config()).unwrap();
    let tb = WebRtcTransport::new(config()).unwrap();
    let (dial_pipe, mut dial_ends) = SignalPipe::new(a, b);
    let (accept_pipe, mut accept_ends) = SignalPipe::new(b, a);
    // Forwards the offer and the answer only, then drops both ends.
    let relay = tokio::spawn(async move {
        let offer = dial_ends.outbound.recv().await.expect("offer");
        assert!(matches!(Signal::decode(&offer), Ok(Signal::Offer { .. })));
        accept_ends
            .inbound
            .send(offer)
            .await
            .expect("acceptor listens");
        let answer = accept_ends.outbound.recv().await.expect("answer");
        assert!(matches!(Signal::decode(&answer), Ok(Signal::Answer { .. })));
        dial_ends
            .inbound
            .send(answer)
            .await
            .expect("dialer listens");
    });
    let (ca, cb) = tokio::join!(ta.dial(dial_pipe), tb.accept(accept_pipe));
    relay.await.unwrap();
    let (ca, cb) = (ca.expect("dial"), cb.expect("accept"));
    ca.send(Bytes::from_static(b"without signaling"))
        .await
        .unwrap();
    assert_eq!(&cb.recv().await.unwrap()[..], b"without signaling");
    ca.close().await;
    cb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_dropped_mid_session_is_reported_lost() {
    let cfg = Config {
        lost_timeout: Duration::from_millis(1500),
        keepalive_interval: Duration::from_millis(300),
        ..config()
    };
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let ta = WebRtcTransport::new(cfg.clone()).unwrap();
    // B lives on a runtime of its own, which is then shut down at once: its tasks
    // and sockets vanish without sending anything, as when a process is killed.
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (dp, ap) = wire(a, b, b, a);
    rt_b.spawn(async move {
        let tb = WebRtcTransport::new(cfg).unwrap();
        let cb = tb.accept(ap).await.unwrap();
        cb.send(Bytes::from_static(b"hi")).await.unwrap();
        std::future::pending::<()>().await;
        drop((cb, tb));
    });
    let ca = ta.dial(dp).await.unwrap();
    assert_eq!(ca.recv().await.unwrap(), Bytes::from_static(b"hi"));
    rt_b.shutdown_background();
    let started = tokio::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(20), ca.recv())
        .await
        .expect("the loss is detected");
    match got {
        Err(ConnectionError::Lost(why)) => {
            tracing::info!(after = ?started.elapsed(), %why, "remote reported lost");
        }
        other => panic!("expected a lost connection, got {other:?}"),
    }
    assert!(matches!(
        ca.send(Bytes::from_static(b"x")).await,
        Err(ConnectionError::Lost(_))
    ));
    ca.close().await;
    eventually(5, "tables empty", || async {
        ta.stats() == TransportStats::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_missing_signals_are_typed_errors() {
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let tb = WebRtcTransport::new(Config {
        handshake_timeout: Duration::from_millis(500),
        ..config()
    })
    .unwrap();
    // Garbage as the first signal.
    let (pipe, ends) = SignalPipe::new(b, a);
    ends.inbound.send(vec![1, 0xff, 0xff]).await.unwrap();
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::BadSignal(_))
    ));
    // An answer where an offer belongs.
    let (pipe, ends) = SignalPipe::new(b, a);
    ends.inbound
        .send(Signal::Answer { sdp: "v=0".into() }.encode())
        .await
        .unwrap();
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::BadSignal(_))
    ));
    // An offer that is not SDP.
    let (pipe, ends) = SignalPipe::new(b, a);
    ends.inbound
        .send(
            Signal::Offer {
                sdp: "not sdp".into(),
            }
            .encode(),
        )
        .await
        .unwrap();
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::BadSignal(_))
    ));
    // Silence: the wait is bounded.
    let (pipe, _ends) = SignalPipe::new(b, a);
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::Timeout(_))
    ));
    // The runtime abandons the handshake.
    let (pipe, ends) = SignalPipe::new(b, a);
    drop(ends);
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::SignalingClosed)
    ));
    // A real offer, then a flood of candidates.
    let ta = WebRtcTransport::new(config()).unwrap();
    let (dial_pipe, mut dial_ends) = SignalPipe::new(a, b);
    let dial = tokio::spawn(async move { ta.dial(dial_pipe).await.map(|_| ()) });
    let offer = dial_ends.outbound.recv().await.unwrap();
    let (pipe, ends) = SignalPipe::new(b, a);
    ends.inbound.send(offer).await.unwrap();
    let flood = tokio::spawn(async move {
        for i in 0..=n2n_transport_webrtc::MAX_REMOTE_CANDIDATES {
            let c = Signal::Candidate {
                candidate: format!("candidate:{i} 1 udp 1 127.0.0.1 9 typ host"),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            };
            if ends.inbound.send(c.encode()).await.is_err() {
                break;
            }
        }
        ends
    });
    match tb.accept(pipe).await {
        Err(TransportError::BadSignal(why)) => assert!(why.contains("candidates"), "{why}"),
        other => panic!("expected a bad signal, got {:?}", other.map(|_| ())),
    }
    drop(flood.await.unwrap());
    drop(dial_ends);
    assert!(dial.await.unwrap().is_err());
    eventually(5, "handshakes released", || async {
        tb.stats() == TransportStats::default()
    })
    .await;
}
