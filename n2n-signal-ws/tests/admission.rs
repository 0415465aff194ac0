//! A real server on 127.0.0.1:0 and clients from other loopback addresses
//! (`127.0.x.y`, told apart by `limit_loopback`): the pending pool, the
//! per-source limits, and the per-room join rate, each at its exact bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use n2n_core::Keypair;
use n2n_signal_ws::protocol::{ErrorCode, ServerMessage};
use n2n_signal_ws::{Server, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

mod common;
use common::*;

/// A TCP connection to `to` from `src`, one of the `127.x.y.z`.
async fn tcp4(src: [u8; 4], to: SocketAddr) -> TcpStream {
    tcp_from(IpAddr::V4(Ipv4Addr::from(src)), to).await
}

/// A server that limits loopback sources too.
fn limited() -> ServerConfig {
    ServerConfig {
        limit_loopback: true,
        ..config()
    }
}

/// Joins `room` as `k` from `src`; the socket and the server's answer.
async fn join_from(
    src: [u8; 4],
    server: &Server,
    k: &Keypair,
    room: &str,
) -> (Ws, Option<ServerMessage>) {
    let tcp = tcp4(src, server.local_addr()).await;
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let answer = hello_over(&mut ws, k, k, room).await;
    (ws, answer)
}

/// Whether the server closes `tcp` without a byte (a refused admission).
async fn closed_at_once(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Whether the server still holds `tcp` open, waiting for an upgrade.
async fn held_open(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf))
        .await
        .is_err()
}

#[tokio::test]
async fn one_source_gets_its_pending_slots_and_no_more() {
    let server = Server::bind(ServerConfig {
        max_pending_per_source: 4,
        ..limited()
    })
    .await
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = tcp4([127, 0, 3, 1], server.local_addr()).await;
        assert!(held_open(&mut tcp).await);
        held.push(tcp);
    }
    let mut fifth = tcp4([127, 0, 3, 1], server.local_addr()).await;
    assert!(
        closed_at_once(&mut fifth).await,
        "a fifth pending connection is refused"
    );
    // Another source still joins.
    let (_ws, welcome) = join_from([127, 0, 3, 2], &server, &key(1), "r").await;
    assert!(matches!(welcome, Some(ServerMessage::Welcome { .. })));
    // A slot freed is a slot again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut tcp = tcp4([127, 0, 3, 1], server.local_addr()).await;
        if held_open(&mut tcp).await {
            again = Some(tcp);
            break;
        }
    }
    assert!(again.is_some(), "the freed slot is reusable");
    let metrics = server.metrics();
    assert!(
        metrics.contains("n2n_signal_connections_refused_total{reason=\"source_pending\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("reason=\"source_pending\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn joined_clients_leave_the_pending_pool_but_count_for_their_source() {
    let server = Server::bind(ServerConfig {
        max_pending: 2,
        max_pending_per_source: 2,
        max_connections_per_source: 3,
        ..limited()
    })
    .await
    .unwrap();
    // Three joined clients of one source: the pending pool of 2 is free again
    // after each welcome.
    let mut joined = Vec::new();
    for i in 0..3 {
        let (ws, welcome) = join_from([127, 0, 4, 1], &server, &key(10 + i), "r").await;
        assert!(
            matches!(welcome, Some(ServerMessage::Welcome { .. })),
            "{welcome:?}"
        );
        joined.push(ws);
    }
    // The source is at its total: a fourth connection is refused at once.
    let mut fourth = tcp4([127, 0, 4, 1], server.local_addr()).await;
    assert!(closed_at_once(&mut fourth).await);
    // The pool holds two pending connections of other sources, not a third.
    let mut a = tcp4([127, 0, 4, 2], server.local_addr()).await;
    let mut b = tcp4([127, 0, 4, 3], server.local_addr()).await;
    assert!(held_open(&mut a).await && held_open(&mut b).await);
    let mut c = tcp4([127, 0, 4, 4], server.local_addr()).await;
    assert!(closed_at_once(&mut c).await, "the pending pool is full");
    assert_eq!(server.stats().clients, 3);
}

#[tokio::test]
async fn joins_into_one_room_are_rate_limited_across_sources() {
    let server = Server::bind(ServerConfig {
        join_burst_per_room: 3,
        joins_per_second_per_room: 1,
        ..limited()
    })
    .await
    .unwrap();
    let mut answers = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..5u8 {
        let (ws, answer) =
            join_from([127, 0, 2, i + 1], &server, &key(60 + u64::from(i)), "r").await;
        answers.push(answer);
        sockets.push(ws);
    }
    let welcomes = answers
        .iter()
        .filter(|a| matches!(a, Some(ServerMessage::Welcome { .. })))
        .count();
    let limited = answers
        .iter()
        .filter(|a| {
            matches!(
                a,
                Some(ServerMessage::Error {
                    code: ErrorCode::JoinRateLimited,
                    ..
                })
            )
        })
        .count();
    // Five sources, one room: the room's burst of 3 (and maybe one refill).
    assert!((3..=4).contains(&welcomes), "{answers:?}");
    assert_eq!(welcomes + limited, 5, "{answers:?}");
    // Another room is not affected.
    let (_ws, welcome) = join_from([127, 0, 2, 9], &server, &key(70), "other").await;
    assert!(matches!(welcome, Some(ServerMessage::Welcome { .. })));
}

#[tokio::test]
async fn the_ws_client_waits_out_a_join_rate_limit_within_its_connect_timeout() {
    use n2n_signal_ws::{ClientConfig, WsSignaling};
    let server = Server::bind(ServerConfig {
        join_burst_per_source: 1,
        joins_per_second_per_source: 4,
        ..limited()
    })
    .await
    .unwrap();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let _a = WsSignaling::connect(&server.url(), "r", &key(80), config.clone())
        .await
        .unwrap();
    // Same source, at once: refused with `join_rate_limited`, tried again.
    let b = WsSignaling::connect(&server.url(), "r", &key(81), config)
        .await
        .expect("the second join gets through after a short wait");
    assert_eq!(b.contact(), Some(key(80).peer_id()));
    assert!(
        !server
            .metrics()
            .contains("n2n_signal_refusals_total{code=\"join_rate_limited\"} 0")
    );
}
