//! The transport on its own, over real libp2p on loopback: two transports
//! exchange their signals through hand-wired pipes (no node runtime), then talk
//! over TCP+Noise+Yamux or QUIC. Identity mismatches on either side, the dial
//! back, limits and malformed signals.

use std::time::Duration;

use bytes::Bytes;
use n2n_core::transport::{Connection, ConnectionError, SignalPipe, Transport, TransportError};
use n2n_core::{Keypair, PeerId};
use n2n_transport_libp2p::signal::Signal;
use n2n_transport_libp2p::{Config, Libp2pTransport, Multiaddr, Protocol};
use rand::SeedableRng;

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

fn config(protocols: &[Protocol]) -> Config {
    Config {
        protocols: protocols.to_vec(),
        handshake_timeout: Duration::from_secs(5),
        // Above the 1 MiB default: large messages are tested here.
        max_message: n2n_core::wire::MAX_FRAME,
        ..Config::default()
    }
}

/// Two pipes whose signals are forwarded to each other.
fn wire(
    dialer: PeerId,
    dial_to: PeerId,
    acceptor: PeerId,
    accept_from: PeerId,
) -> (SignalPipe, SignalPipe) {
    n2n_core::memory::wired_pipes(dialer, dial_to, acceptor, accept_from)
}

struct Pair {
    ca: Box<dyn Connection>,
    cb: Box<dyn Connection>,
    a: PeerId,
    b: PeerId,
    /// The transports own the swarms the connections run on.
    _transports: (Libp2pTransport, Libp2pTransport),
}

async fn pair(protocols: &[Protocol]) -> Pair {
    let (ka, kb) = (key(1), key(2));
    let (a, b) = (ka.peer_id(), kb.peer_id());
    let ta = Libp2pTransport::new(&ka, config(protocols)).unwrap();
    let tb = Libp2pTransport::new(&kb, config(protocols)).unwrap();
    let (dp, ap) = wire(a, b, b, a);
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    Pair {
        ca: ca.unwrap(),
        cb: cb.unwrap(),
        a,
        b,
        _transports: (ta, tb),
    }
}

async fn exchange(protocols: &[Protocol]) {
    let Pair {
        ca,
        cb,
        a,
        b,
        _transports,
    } = pair(protocols).await;
    assert_eq!(ca.remote(), b);
    assert_eq!(cb.remote(), a);
    for i in 0..50u32 {
        ca.send(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..50u32 {
        assert_eq!(
            cb.recv().await.unwrap(),
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }
    let big = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
    let (sent, got) = tokio::join!(cb.send(big.clone()), ca.recv());
    sent.unwrap();
    assert_eq!(got.unwrap(), big);
    cb.send(Bytes::new()).await.unwrap();
    assert_eq!(ca.recv().await.unwrap(), Bytes::new());
    ca.close().await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), cb.recv())
            .await
            .unwrap(),
        Err(ConnectionError::Closed)
    );
    assert_eq!(
        ca.send(Bytes::from_static(b"x")).await,
        Err(ConnectionError::Closed)
    );
    assert_eq!(ca.recv().await, Err(ConnectionError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_messages_both_ways_and_close() {
    exchange(&[Protocol::Tcp]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_messages_both_ways_and_close() {
    exchange(&[Protocol::Quic]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_offered() {
    exchange(&[Protocol::Quic, Protocol::Tcp]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_addresses_are_loopback_with_real_ports() {
    let t = Libp2pTransport::new(&key(1), config(&[Protocol::Tcp, Protocol::Quic])).unwrap();
    let addrs = t.listen_addrs().await.unwrap();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    for a in &addrs {
        let text = a.to_string();
        assert!(text.starts_with("/ip4/127.0.0.1/"), "{text}");
        assert!(!text.contains("/0/") && !text.ends_with("/0"), "{text}");
    }
    assert_eq!(
        n2n_transport_libp2p::identity::from_libp2p(&t.libp2p_peer_id()),
        Some(key(1).peer_id())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_locally() {
    let (ka, kb) = (key(1), key(2));
    let small = Config {
        max_message: 1024,
        ..config(&[Protocol::Tcp])
    };
    let ta = Libp2pTransport::new(&ka, small.clone()).unwrap();
    let tb = Libp2pTransport::new(&kb, small).unwrap();
    let (dp, ap) = wire(ka.peer_id(), kb.peer_id(), kb.peer_id(), ka.peer_id());
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(
        ca.send(Bytes::from(vec![0; 1025])).await,
        Err(ConnectionError::TooLarge {
            size: 1025,
            limit: 1024
        })
    );
    ca.send(Bytes::from(vec![1; 1024])).await.unwrap();
    assert_eq!(cb.recv().await.unwrap().len(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_larger_than_our_limit_loses_the_connection() {
    let (ka, kb) = (key(1), key(2));
    let ta = Libp2pTransport::new(&ka, config(&[Protocol::Tcp])).unwrap();
    let tb = Libp2pTransport::new(
        &kb,
        Config {
            max_message: 1024,
            ..config(&[Protocol::Tcp])
        },
    )
    .unwrap();
    let (dp, ap) = wire(ka.peer_id(), kb.peer_id(), kb.peer_id(), ka.peer_id());
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    ca.send(Bytes::from(vec![0; 4096])).await.unwrap();
    match cb.recv().await {
        Err(ConnectionError::Lost(why)) => assert!(why.contains("exceeds"), "{why}"),
        other => panic!("expected a lost connection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_rejects_an_acceptor_with_another_identity() {
    let (ka, kb, impostor_of) = (key(1), key(2), key(3).peer_id());
    let ta = Libp2pTransport::new(&ka, config(&[Protocol::Tcp])).unwrap();
    let tb = Libp2pTransport::new(&kb, config(&[Protocol::Tcp])).unwrap();
    // A believes the signals come from peer 3, but B answers them.
    let (dp, ap) = wire(ka.peer_id(), impostor_of, kb.peer_id(), ka.peer_id());
    let accept = tokio::spawn(async move { tb.accept(ap).await.map(|_| ()) });
    match ta.dial(dp).await {
        Err(TransportError::IdentityMismatch { expected, found }) => {
            assert_eq!(expected, impostor_of);
            assert_eq!(
                found,
                n2n_transport_libp2p::identity::to_libp2p(&kb.peer_id())
                    .unwrap()
                    .to_string()
            );
        }
        other => panic!("expected an identity mismatch, got {:?}", other.map(|_| ())),
    }
    accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_rejects_a_dialer_with_another_identity() {
    let (ka, kb, impostor_of) = (key(1), key(2), key(3).peer_id());
    let ta = Libp2pTransport::new(&ka, config(&[Protocol::Tcp])).unwrap();
    let tb = Libp2pTransport::new(&kb, config(&[Protocol::Tcp])).unwrap();
    // B believes the signals come from peer 3, but A sent them.
    let (dp, ap) = wire(ka.peer_id(), kb.peer_id(), kb.peer_id(), impostor_of);
    let (dialed, accepted) = tokio::join!(ta.dial(dp), tb.accept(ap));
    match accepted {
        Err(TransportError::IdentityMismatch { expected, found }) => {
            assert_eq!(expected, impostor_of);
            assert_eq!(found, ka.peer_id().to_string());
        }
        other => panic!("expected an identity mismatch, got {:?}", other.map(|_| ())),
    }
    assert!(dialed.is_err(), "the dialer's stream is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_acceptor_dials_back() {
    let (ka, kb) = (key(1), key(2));
    let ta = Libp2pTransport::new(&ka, config(&[Protocol::Tcp])).unwrap();
    // B announces an address where nothing listens (port 1 on loopback).
    let tb = Libp2pTransport::new(
        &kb,
        Config {
            announce: vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()],
            ..config(&[Protocol::Tcp])
        },
    )
    .unwrap();
    let (dp, ap) = wire(ka.peer_id(), kb.peer_id(), kb.peer_id(), ka.peer_id());
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    ca.send(Bytes::from_static(b"over the dial back"))
        .await
        .unwrap();
    assert_eq!(
        cb.recv().await.unwrap(),
        Bytes::from_static(b"over the dial back")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_missing_signals_are_typed_errors() {
    let (ka, kb) = (key(1), key(2));
    let tb = Libp2pTransport::new(
        &kb,
        Config {
            handshake_timeout: Duration::from_millis(300),
            ..config(&[Protocol::Tcp])
        },
    )
    .unwrap();
    // Garbage as the first signal.
    let (pipe, ends) = SignalPipe::new(kb.peer_id(), ka.peer_id());
    ends.inbound.send(vec![1, 0xff, 0xff]).await.unwrap();
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::BadSignal(_))
    ));
    // An answer where an offer belongs.
    let (pipe, ends) = SignalPipe::new(kb.peer_id(), ka.peer_id());
    ends.inbound
        .send(Signal::Answer { addrs: vec![] }.encode())
        .await
        .unwrap();
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::BadSignal(_))
    ));
    // Silence: the wait is bounded.
    let (pipe, _ends) = SignalPipe::new(kb.peer_id(), ka.peer_id());
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::Timeout(_))
    ));
    // The runtime abandons the handshake.
    let (pipe, ends) = SignalPipe::new(kb.peer_id(), ka.peer_id());
    drop(ends);
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::SignalingClosed)
    ));
    // An offer, then nobody dials: the pending handshake times out and is forgotten.
    let (pipe, ends) = SignalPipe::new(kb.peer_id(), ka.peer_id());
    ends.inbound
        .send(
            Signal::Offer {
                nonce: [9; 16],
                addrs: vec![],
            }
            .encode(),
        )
        .await
        .unwrap();
    assert!(matches!(
        tb.accept(pipe).await,
        Err(TransportError::Timeout(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_outside_a_runtime_or_with_bad_settings_fails() {
    let err = std::thread::spawn(|| Libp2pTransport::new(&key(1), Config::tcp()).unwrap_err())
        .join()
        .unwrap();
    assert!(
        matches!(err, n2n_transport_libp2p::BuildError::NoRuntime),
        "{err}"
    );
    let err = Libp2pTransport::new(
        &key(1),
        Config {
            protocols: vec![],
            ..Config::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, n2n_transport_libp2p::BuildError::Config(_)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_is_cancel_safe() {
    let Pair {
        ca,
        cb,
        _transports,
        ..
    } = pair(&[Protocol::Tcp]).await;
    let sender = tokio::spawn(async move {
        for i in 0..200u32 {
            ca.send(Bytes::from(vec![(i % 251) as u8; 4096 + i as usize]))
                .await
                .unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ca
    });
    let mut got = 0u32;
    while got < 200 {
        // Most of these waits are cut short; no message may be lost or torn.
        if let Ok(m) = tokio::time::timeout(Duration::from_micros(200), cb.recv()).await {
            let m = m.unwrap();
            assert_eq!(m.len(), 4096 + got as usize);
            assert!(m.iter().all(|b| *b == (got % 251) as u8));
            got += 1;
        }
    }
    let _ca = sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cancelled_mid_message_loses_the_connection() {
    let Pair {
        ca,
        cb,
        _transports,
        ..
    } = pair(&[Protocol::Tcp]).await;
    // B does not read: A's sends stall once the read-ahead queue and the flow
    // control windows are full, and the stalled one is cancelled.
    let big = Bytes::from(vec![1u8; 1024 * 1024]);
    let mut cancelled = false;
    for _ in 0..64 {
        if tokio::time::timeout(Duration::from_millis(300), ca.send(big.clone()))
            .await
            .is_err()
        {
            cancelled = true;
            break;
        }
    }
    assert!(cancelled, "a send stalls when the remote does not read");
    match ca.send(Bytes::from_static(b"after")).await {
        Err(ConnectionError::Lost(why)) => assert!(why.contains("cancelled"), "{why}"),
        other => panic!("expected a lost connection, got {other:?}"),
    }
    // What B did receive is whole.
    let first = cb.recv().await.unwrap();
    assert_eq!(first, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_over_the_limit_are_closed() {
    let (kx, ka, kb) = (key(1), key(2), key(3));
    let (x, a, b) = (kx.peer_id(), ka.peer_id(), kb.peer_id());
    let tx = Libp2pTransport::new(
        &kx,
        Config {
            max_inbound_connections: 1,
            ..config(&[Protocol::Tcp])
        },
    )
    .unwrap();
    let ta = Libp2pTransport::new(&ka, config(&[Protocol::Tcp])).unwrap();
    let tb = Libp2pTransport::new(&kb, config(&[Protocol::Tcp])).unwrap();
    let (dp, ap) = wire(a, x, x, a);
    let (ca, cx) = tokio::join!(ta.dial(dp), tx.accept(ap));
    let (_ca, _cx) = (ca.unwrap(), cx.unwrap());
    // A second remote gets no connection while the first holds its slot.
    let (dp, ap) = wire(b, x, x, b);
    let (cb, cx2) = tokio::join!(tb.dial(dp), tx.accept(ap));
    assert!(
        cb.is_err() || cx2.is_err(),
        "a second inbound connection was kept"
    );
}
