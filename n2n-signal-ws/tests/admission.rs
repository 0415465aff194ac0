//! A real server on 127.0.0.1:0 and clients from other loopback addresses
//! (`127.0.x.y`, told apart by `limit_loopback`): the pending pool, the
//! per-source limits, and the per-room join rate, each at its exact bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use n2n_core::Keypair;
use n2n_signal_ws::protocol::{ClientMessage, ErrorCode, ServerMessage, challenge_bytes};
use n2n_signal_ws::{Server, ServerConfig};
use rand::SeedableRng;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws = tokio_tungstenite::WebSocketStream<MaybeTlsStream<TcpStream>>;

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: Some(1),
        limit_loopback: true,
        ..ServerConfig::default()
    }
}

async fn tcp_from(src: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(src)), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

async fn recv_json(ws: &mut Ws) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
        {
            Ok(WsMessage::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Joins `room` as `k` from `src`; the socket and the server's answer.
async fn join_from(
    src: [u8; 4],
    server: &Server,
    k: &Keypair,
    room: &str,
) -> (Ws, Option<ServerMessage>) {
    let tcp = tcp_from(src, server.local_addr()).await;
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let Some(ServerMessage::Challenge { nonce, .. }) = recv_json(&mut ws).await else {
        panic!("challenge expected")
    };
    let mut n = [0u8; 32];
    hex::decode_to_slice(&nonce, &mut n).unwrap();
    let hello = ClientMessage::Hello {
        peer: k.peer_id(),
        room: room.into(),
        signature: hex::encode(k.sign(&challenge_bytes(&n, room))),
    };
    ws.send(WsMessage::text(serde_json::to_string(&hello).unwrap()))
        .await
        .unwrap();
    let answer = recv_json(&mut ws).await;
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
        ..config()
    })
    .await
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = tcp_from([127, 0, 3, 1], server.local_addr()).await;
        assert!(held_open(&mut tcp).await);
        held.push(tcp);
    }
    let mut fifth = tcp_from([127, 0, 3, 1], server.local_addr()).await;
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
        let mut tcp = tcp_from([127, 0, 3, 1], server.local_addr()).await;
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
        ..config()
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
    let mut fourth = tcp_from([127, 0, 4, 1], server.local_addr()).await;
    assert!(closed_at_once(&mut fourth).await);
    // The pool holds two pending connections of other sources, not a third.
    let mut a = tcp_from([127, 0, 4, 2], server.local_addr()).await;
    let mut b = tcp_from([127, 0, 4, 3], server.local_addr()).await;
    assert!(held_open(&mut a).await && held_open(&mut b).await);
    let mut c = tcp_from([127, 0, 4, 4], server.local_addr()).await;
    assert!(closed_at_once(&mut c).await, "the pending pool is full");
    assert_eq!(server.stats().clients, 3);
}

#[tokio::test]
async fn joins_into_one_room_are_rate_limited_across_sources() {
    let server = Server::bind(ServerConfig {
        join_burst_per_room: 3,
        joins_per_second_per_room: 1,
        ..config()
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
        ..config()
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
