//! A real server on 127.0.0.1:0 and real WebSocket clients: joining, relaying,
//! every kind of bad input, limits, room isolation, reconnection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use n2n_core::memory::MemoryNetwork;
use n2n_core::node::Builder;
use n2n_core::signaling::{Signaling, SignalingError};
use n2n_core::{Keypair, ProtocolId};
use n2n_signal_ws::protocol::{ClientMessage, ErrorCode, ServerMessage};
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use tokio_tungstenite::tungstenite::Message as WsMessage;

mod common;
use common::*;

async fn server(config: ServerConfig) -> Server {
    Server::bind(config).await.expect("binds")
}

/// Reads until the server closes; returns the close reason.
async fn close_reason(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(Some(frame))))) => return frame.reason.to_string(),
            Ok(Some(Ok(WsMessage::Close(None)))) | Ok(None) => return String::new(),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return format!("error: {e}"),
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

/// Connects a raw client and joins `room` as `key` (signing with `signer`).
async fn raw_join(
    url: &str,
    key: &Keypair,
    signer: &Keypair,
    room: &str,
) -> (Ws, Option<ServerMessage>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let answer = hello_over(&mut ws, key, signer, room).await;
    (ws, answer)
}

fn expect_error(m: Option<ServerMessage>, code: ErrorCode) {
    match m {
        Some(ServerMessage::Error { code: c, .. }) if c == code => {}
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// Two well-behaved clients in `room` still exchange a signal.
async fn pair_still_works(url: &str, room: &str, seed: u64) {
    let (ka, kb) = (key(seed), key(seed + 1));
    let a = WsSignaling::connect(url, room, &ka, ClientConfig::default())
        .await
        .unwrap();
    let b = WsSignaling::connect(url, room, &kb, ClientConfig::default())
        .await
        .unwrap();
    b.send(signal(&kb, ka.peer_id(), b"still works"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.signal.payload, b"still works");
    got.verify(&ka.peer_id()).unwrap();
}

/// Waits (at most 10 s) until `check` holds.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_peers_join_a_room_and_connect_through_the_server() {
    let server = server(config()).await;
    let overlay = ProtocolId::from_name("ws-test");
    let network = MemoryNetwork::new();
    let mut nodes = Vec::new();
    let mut contacts = Vec::new();
    for seed in [1, 2] {
        let k = key(seed);
        let sig = WsSignaling::connect(&server.url(), "room", &k, ClientConfig::default())
            .await
            .unwrap();
        let node = Builder::new(k)
            .transport(Arc::new(network.transport()))
            .protocol(overlay)
            .spawn()
            .unwrap();
        contacts.push(node.handle().join(overlay, sig).await.unwrap());
        nodes.push(node);
    }
    let (a, b) = (nodes[0].local_peer_id(), nodes[1].local_peer_id());
    assert_eq!(
        contacts,
        vec![None, Some(a)],
        "the first peer has no contact; the second gets the first"
    );
    let handle = nodes[0].handle().clone();
    eventually("A's inview holds B's arc", || {
        let handle = handle.clone();
        async move { handle.snapshot().await.view(overlay).0.count(&b) == 1 }
    })
    .await;
    let snap = nodes[1].handle().snapshot().await;
    assert_eq!(
        snap.view(overlay).1.count(&a),
        1,
        "B's outview holds its arc to A"
    );
    let stats = server.stats();
    assert_eq!(stats.clients, 2);
    assert!(
        stats.signals >= 2,
        "offer and answer went through the server"
    );
    for node in nodes {
        node.shutdown().await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn plugin_ws_builds_from_a_stack_file() {
    use n2n_core::plugin::StackConfig;
    let server = server(config()).await;
    assert!(n2n_core::plugin::signalings().contains(&"ws"));
    let overlay = ProtocolId::from_name("ws-stack");
    let stack = StackConfig::from_toml_str(&format!(
        "[transport]\nname = \"memory\"\n\n[signaling]\nname = \"ws\"\nurl = \"{}\"\nroom = \"stack\"\nconnect_timeout_ms = 3000\nkeepalive_ms = 1000\n",
        server.url()
    ))
    .unwrap();
    let mut nodes = Vec::new();
    let mut contacts = Vec::new();
    for seed in [200, 201] {
        let (builder, sig) = Builder::from_stack(key(seed), &stack).await.unwrap();
        let node = builder.protocol(overlay).spawn().unwrap();
        let sig = sig.expect("the stack names a signaling plugin");
        assert_eq!(sig.name(), "ws");
        contacts.push(node.handle().join(overlay, sig).await.unwrap());
        nodes.push(node);
    }
    assert_eq!(contacts, vec![None, Some(nodes[0].local_peer_id())]);
    assert_eq!(server.stats().clients, 2);

    // Bad settings and an unreachable server are clear errors.
    let bad = StackConfig::from_toml_str(
        "[transport]\nname = \"memory\"\n[signaling]\nname = \"ws\"\nroom = \"x\"\n",
    )
    .unwrap();
    let err = Builder::from_stack(key(202), &bad).await.unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
    let bad = StackConfig::from_toml_str(&format!(
        "[transport]\nname = \"memory\"\n[signaling]\nname = \"ws\"\nurl = \"{}\"\nconnect_timeout = 5\n",
        server.url()
    ))
    .unwrap();
    let err = Builder::from_stack(key(203), &bad).await.unwrap_err();
    assert!(err.to_string().contains("connect_timeout"), "{err}");
    let port = free_port();
    let unreachable = StackConfig::from_toml_str(&format!(
        "[transport]\nname = \"memory\"\n[signaling]\nname = \"ws\"\nurl = \"ws://127.0.0.1:{port}\"\n"
    ))
    .unwrap();
    let err = Builder::from_stack(key(204), &unreachable)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("ws: unreachable: ws://127.0.0.1:"), "{err}");
    for node in nodes {
        node.shutdown().await;
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn garbage_frames_get_an_error_and_hurt_nobody() {
    let server = server(config()).await;
    let k = key(10);
    let (mut ws, welcome) = raw_join(&server.url(), &k, &k, "r").await;
    assert!(matches!(welcome, Some(ServerMessage::Welcome { .. })));
    ws.send(WsMessage::text("not json at all")).await.unwrap();
    expect_error(recv_json(&mut ws).await, ErrorCode::BadFrame);
    ws.send(WsMessage::text(r#"{"type":"signal","signal":{"nope":1}}"#))
        .await
        .unwrap();
    expect_error(recv_json(&mut ws).await, ErrorCode::BadFrame);
    ws.send(WsMessage::binary(vec![0u8, 1, 2])).await.unwrap();
    expect_error(recv_json(&mut ws).await, ErrorCode::BadFrame);
    pair_still_works(&server.url(), "r", 11).await;
}

#[tokio::test]
async fn oversized_frames_close_the_connection_with_a_reason() {
    let server = server(config()).await;
    let k = key(20);
    let (mut ws, _) = raw_join(&server.url(), &k, &k, "r").await;
    let _ = ws
        .send(WsMessage::text(
            "x".repeat(ServerConfig::default().max_frame + 1),
        ))
        .await;
    let reason = close_reason(&mut ws).await;
    assert_eq!(reason, "frame_too_large");
    pair_still_works(&server.url(), "r", 21).await;
}

#[tokio::test]
async fn claiming_someone_elses_peer_id_is_refused() {
    let server = server(config()).await;
    let (victim, thief) = (key(30), key(31));
    let (mut ws, answer) = raw_join(&server.url(), &victim, &thief, "r").await;
    expect_error(answer, ErrorCode::AuthenticationFailed);
    assert_eq!(close_reason(&mut ws).await, "authentication_failed");
    pair_still_works(&server.url(), "r", 32).await;
}

#[tokio::test]
async fn bad_signatures_and_impersonated_signals_are_refused() {
    let server = server(config()).await;
    let (ka, kb, kc) = (key(40), key(41), key(42));
    let a = WsSignaling::connect(&server.url(), "r", &ka, ClientConfig::default())
        .await
        .unwrap();
    let (mut ws, _) = raw_join(&server.url(), &kb, &kb, "r").await;
    // Altered after signing.
    let mut forged = signal(&kb, ka.peer_id(), b"offer");
    forged.signal.payload[0] ^= 1;
    send_json(&mut ws, &ClientMessage::Signal { signal: forged }).await;
    expect_error(recv_json(&mut ws).await, ErrorCode::BadSignature);
    // Validly signed by C, but sent by B.
    let replayed = signal(&kc, ka.peer_id(), b"offer");
    send_json(&mut ws, &ClientMessage::Signal { signal: replayed }).await;
    expect_error(recv_json(&mut ws).await, ErrorCode::Impersonation);
    // Nothing reached A; a good signal still does.
    send_json(
        &mut ws,
        &ClientMessage::Signal {
            signal: signal(&kb, ka.peer_id(), b"good"),
        },
    )
    .await;
    let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.signal.payload, b"good");
}

#[tokio::test]
async fn a_signal_to_an_unknown_peer_gets_an_error() {
    let server = server(config()).await;
    let k = key(50);
    let (mut ws, _) = raw_join(&server.url(), &k, &k, "r").await;
    send_json(
        &mut ws,
        &ClientMessage::Signal {
            signal: signal(&k, key(51).peer_id(), b"x"),
        },
    )
    .await;
    expect_error(recv_json(&mut ws).await, ErrorCode::UnknownPeer);
    pair_still_works(&server.url(), "r", 52).await;
}

#[tokio::test]
async fn signals_are_rate_limited_per_client() {
    let server = server(ServerConfig {
        signals_per_second: 2,
        signal_burst: 3,
        ..config()
    })
    .await;
    let (ka, kb) = (key(60), key(61));
    let _a = WsSignaling::connect(&server.url(), "r", &ka, ClientConfig::default())
        .await
        .unwrap();
    let (mut ws, _) = raw_join(&server.url(), &kb, &kb, "r").await;
    for _ in 0..6 {
        send_json(
            &mut ws,
            &ClientMessage::Signal {
                signal: signal(&kb, ka.peer_id(), b"x"),
            },
        )
        .await;
    }
    expect_error(recv_json(&mut ws).await, ErrorCode::RateLimited);
    pair_still_works(&server.url(), "r", 62).await;
}

#[tokio::test]
async fn full_rooms_and_full_servers_refuse_newcomers() {
    let server = server(ServerConfig {
        max_room_clients: 2,
        max_clients: 3,
        ..config()
    })
    .await;
    let url = server.url();
    let _a = WsSignaling::connect(&url, "r", &key(70), ClientConfig::default())
        .await
        .unwrap();
    let _b = WsSignaling::connect(&url, "r", &key(71), ClientConfig::default())
        .await
        .unwrap();
    let err = WsSignaling::connect(&url, "r", &key(72), ClientConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalingError::Refused(m) if m.contains("room_full")),
        "{err}"
    );
    let _c = WsSignaling::connect(&url, "other", &key(73), ClientConfig::default())
        .await
        .unwrap();
    let err = WsSignaling::connect(&url, "third", &key(74), ClientConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalingError::Refused(m) if m.contains("server_full")),
        "{err}"
    );
}

#[tokio::test]
async fn idle_clients_are_disconnected() {
    let server = server(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let k = key(80);
    let (mut ws, _) = raw_join(&server.url(), &k, &k, "r").await;
    expect_error(recv_json(&mut ws).await, ErrorCode::IdleTimeout);
    assert_eq!(close_reason(&mut ws).await, "idle_timeout");
    eventually("the server forgot the idle client", || async {
        server.stats().clients == 0
    })
    .await;
}

#[tokio::test]
async fn keepalive_pings_keep_a_quiet_client_joined() {
    let server = server(ServerConfig {
        idle_timeout: Duration::from_millis(1000),
        ..config()
    })
    .await;
    let quiet = ClientConfig {
        keepalive: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let (ka, kb) = (key(85), key(86));
    let a = WsSignaling::connect(&server.url(), "r", &ka, quiet.clone())
        .await
        .unwrap();
    let b = WsSignaling::connect(&server.url(), "r", &kb, quiet)
        .await
        .unwrap();
    // Three idle timeouts without a single signal.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let stats = server.stats();
    assert_eq!(
        (stats.clients, stats.joins),
        (2, 2),
        "nobody was dropped or had to rejoin"
    );
    b.send(signal(&kb, ka.peer_id(), b"after a quiet while"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.signal.payload, b"after a quiet while");
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = server(config()).await;
    let (ka, kb) = (key(90), key(91));
    let a = WsSignaling::connect(&server.url(), "one", &ka, ClientConfig::default())
        .await
        .unwrap();
    let b = WsSignaling::connect(&server.url(), "two", &kb, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(b.contact(), None, "no contact from another room");
    b.send(signal(&kb, ka.peer_id(), b"across rooms"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(b.last_error(), Some((ErrorCode::UnknownPeer, _))));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = free_port();
    let err = WsSignaling::connect(
        &format!("ws://127.0.0.1:{port}"),
        "r",
        &key(1),
        ClientConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SignalingError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn bad_hellos_are_refused_with_a_reason() {
    let server = server(config()).await;
    let url = server.url();
    let k = key(110);
    // A room name longer than allowed.
    let (mut ws, answer) = raw_join(&url, &k, &k, &"x".repeat(65)).await;
    expect_error(answer, ErrorCode::BadFrame);
    assert_eq!(close_reason(&mut ws).await, "bad_frame");
    // Garbage instead of a hello.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert!(matches!(
        recv_json(&mut ws).await,
        Some(ServerMessage::Challenge { .. })
    ));
    ws.send(WsMessage::text("{\"type\":\"hello\""))
        .await
        .unwrap();
    expect_error(recv_json(&mut ws).await, ErrorCode::BadFrame);
    assert_eq!(close_reason(&mut ws).await, "bad_frame");
    // A signal before joining.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let _ = recv_json(&mut ws).await;
    send_json(
        &mut ws,
        &ClientMessage::Signal {
            signal: signal(&k, key(111).peer_id(), b"x"),
        },
    )
    .await;
    expect_error(recv_json(&mut ws).await, ErrorCode::Unexpected);
    assert_eq!(close_reason(&mut ws).await, "unexpected");
    // The room is still usable.
    pair_still_works(&url, "r", 112).await;
    assert_eq!(server.stats().clients, 2);
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_closed() {
    let server = server(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url().as_str())
        .await
        .unwrap();
    assert!(matches!(
        recv_json(&mut ws).await,
        Some(ServerMessage::Challenge { .. })
    ));
    expect_error(recv_json(&mut ws).await, ErrorCode::IdleTimeout);
    assert_eq!(close_reason(&mut ws).await, "idle_timeout");
    pair_still_works(&server.url(), "r", 120).await;
}

#[tokio::test]
async fn the_same_peer_joining_twice_replaces_its_first_connection() {
    let server = server(config()).await;
    let k = key(130);
    let (mut first, _) = raw_join(&server.url(), &k, &k, "r").await;
    let (second, welcome) = raw_join(&server.url(), &k, &k, "r").await;
    assert!(matches!(
        welcome,
        Some(ServerMessage::Welcome { contact: None })
    ));
    expect_error(recv_json(&mut first).await, ErrorCode::Replaced);
    assert_eq!(close_reason(&mut first).await, "replaced");
    // Until the server drops the first socket.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), first.next()).await {}
    assert_eq!(server.stats().clients, 1, "the peer is still joined once");
    drop(second);
    eventually("the server forgot the peer", || async {
        server.stats().clients == 0
    })
    .await;
    pair_still_works(&server.url(), "r", 131).await;
    assert_eq!(server.stats().clients, 2);
}
