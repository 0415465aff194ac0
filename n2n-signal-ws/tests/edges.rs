//! A real server on 127.0.0.1:0 and raw WebSocket clients at the edges of the
//! protocol: close codes, fair error accounting, the largest signal, slow
//! readers, nonces across restarts, client settings, the metrics endpoint.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use n2n_core::Keypair;
use n2n_core::signal::MAX_SIGNAL_PAYLOAD;
use n2n_core::signaling::{Signaling, SignalingError};
use n2n_signal_ws::protocol::{ClientMessage, ErrorCode, ServerMessage};
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod common;
use common::*;

/// Reads until the server's close frame; its code and reason, or `None` if the
/// connection ended without one.
async fn close_frame(ws: &mut Ws) -> Option<(CloseCode, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(Some(f))))) => return Some((f.code, f.reason.to_string())),
            Ok(Some(Ok(WsMessage::Close(None)))) => {
                return Some((CloseCode::Status, String::new()));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("the server neither closed nor answered"),
        }
    }
}

async fn raw_join(url: &str, k: &Keypair, room: &str) -> (Ws, Option<ServerMessage>) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .unwrap();
    let answer = hello_over(&mut ws, k, k, room).await;
    (ws, answer)
}

async fn first_nonce(url: &str) -> String {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    match recv_json(&mut ws).await {
        Some(ServerMessage::Challenge { nonce, .. }) => nonce,
        other => panic!("challenge expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007() {
    let server = Server::bind(config()).await.unwrap();
    let k = key(1);
    let (mut ws, _) = raw_join(&server.url(), &k, "r").await;
    // FIN + text, masked with a zero key, payload 0xff 0xfe.
    let raw = [0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe];
    ws.get_mut().write_all(&raw).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (CloseCode::Invalid, "bad_frame"));
}

#[tokio::test]
async fn a_protocol_violation_is_closed_with_1002_even_before_the_hello() {
    let server = Server::bind(config()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    assert!(matches!(
        recv_json(&mut ws).await,
        Some(ServerMessage::Challenge { .. })
    ));
    // RSV1 set without an extension.
    let raw = [0xc1, 0x82, 0, 0, 0, 0, b'h', b'i'];
    ws.get_mut().write_all(&raw).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (CloseCode::Protocol, "bad_frame"));
}

#[tokio::test]
async fn a_clients_close_is_echoed() {
    let server = Server::bind(config()).await.unwrap();
    let k = key(2);
    for joined in [false, true] {
        let mut ws = if joined {
            raw_join(&server.url(), &k, "r").await.0
        } else {
            let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
                .await
                .unwrap();
            let _challenge = recv_json(&mut ws).await;
            ws
        };
        ws.close(None).await.unwrap();
        assert!(
            close_frame(&mut ws).await.is_some(),
            "the server answers a close with a close (joined: {joined})"
        );
    }
}

#[tokio::test]
async fn refusals_that_are_not_the_clients_fault_do_not_cut_it() {
    let server = Server::bind(config()).await.unwrap();
    let (ka, kb) = (key(10), key(11));
    let a = WsSignaling::connect(&server.url(), "r", &ka, ClientConfig::default())
        .await
        .unwrap();
    let (mut ws, _) = raw_join(&server.url(), &kb, "r").await;
    // Answers to peers that just left: more than the error budget.
    for i in 0..40 {
        send_json(
            &mut ws,
            &ClientMessage::Signal {
                signal: signal(&kb, key(1000 + i).peer_id(), b"answer"),
            },
        )
        .await;
        match recv_json(&mut ws).await {
            Some(ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                ..
            }) => {}
            other => panic!("unknown_peer expected, got {other:?}"),
        }
    }
    send_json(
        &mut ws,
        &ClientMessage::Signal {
            signal: signal(&kb, ka.peer_id(), b"still here"),
        },
    )
    .await;
    let got = tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.signal.payload, b"still here");
}

#[tokio::test]
async fn the_clients_own_faults_still_use_up_its_error_budget() {
    let server = Server::bind(config()).await.unwrap();
    let k = key(12);
    let (mut ws, _) = raw_join(&server.url(), &k, "r").await;
    let budget = ServerConfig::default().max_errors;
    for _ in 0..budget {
        ws.send(WsMessage::text("{}")).await.unwrap();
        assert!(matches!(
            recv_json(&mut ws).await,
            Some(ServerMessage::Error {
                code: ErrorCode::BadFrame,
                ..
            })
        ));
    }
    ws.send(WsMessage::text("{}")).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (CloseCode::Policy, "bad_frame"));
}

#[tokio::test]
async fn the_largest_signal_n2n_core_allows_is_relayed_with_the_default_limits() {
    let server = Server::bind(config()).await.unwrap();
    let (ka, kb) = (key(20), key(21));
    let a = WsSignaling::connect(&server.url(), "r", &ka, ClientConfig::default())
        .await
        .unwrap();
    let b = WsSignaling::connect(&server.url(), "r", &kb, ClientConfig::default())
        .await
        .unwrap();
    // 64 bytes of control characters: each is six bytes (\u0001) in JSON.
    let transport = "\u{1}".repeat(64);
    let big = signal_with(
        &kb,
        ka.peer_id(),
        &transport,
        vec![0xab; MAX_SIGNAL_PAYLOAD],
    );
    b.send(big.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .expect("the largest signal arrives")
        .unwrap();
    assert_eq!(got, big);
    assert_eq!(b.last_error(), None);
}

#[tokio::test]
async fn a_reader_over_its_byte_budget_is_closed_as_slow() {
    let server = Server::bind(config()).await.unwrap();
    let (kr, ks) = (key(30), key(31));
    let (mut reader, _) = raw_join(&server.url(), &kr, "r").await;
    let (mut sender, _) = raw_join(&server.url(), &ks, "r").await;
    let text = serde_json::to_string(&ClientMessage::Signal {
        signal: signal(&ks, kr.peer_id(), &[1; 60 * 1024]),
    })
    .unwrap();
    // Far more than the kernel's socket buffers and the 512 KiB queue.
    let mut busy = false;
    for _ in 0..150 {
        sender.send(WsMessage::text(text.clone())).await.unwrap();
        while let Ok(Some(Ok(WsMessage::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(1), sender.next()).await
        {
            busy |= t.contains("recipient_busy") || t.contains("unknown_peer");
        }
        if busy {
            break;
        }
    }
    assert!(busy, "the sender learns that the recipient cannot keep up");
    // More than the error budget of `recipient_busy` / `unknown_peer`: not the
    // sender's fault, so it stays connected (150 + 30 signals: within its rate).
    let small = serde_json::to_string(&ClientMessage::Signal {
        signal: signal(&ks, kr.peer_id(), b"more"),
    })
    .unwrap();
    for _ in 0..30 {
        sender.send(WsMessage::text(small.clone())).await.unwrap();
    }
    let kc = key(32);
    let c = WsSignaling::connect(&server.url(), "r", &kc, ClientConfig::default())
        .await
        .unwrap();
    sender
        .send(WsMessage::text(
            serde_json::to_string(&ClientMessage::Signal {
                signal: signal(&ks, kc.peer_id(), b"to c"),
            })
            .unwrap(),
        ))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .expect("the sender still relays")
        .unwrap();
    assert_eq!(got.signal.payload, b"to c");
    let (_, reason) = close_frame(&mut reader).await.expect("a close frame");
    assert_eq!(reason, "slow_reader");
    assert!(
        server
            .metrics()
            .contains("n2n_signal_refusals_total{code=\"slow_reader\"} 1")
    );
}

#[tokio::test]
async fn nonces_do_not_repeat_across_restarts_with_a_seed() {
    let first = Server::bind(config()).await.unwrap();
    let a = first_nonce(&first.url()).await;
    first.shutdown().await;
    let second = Server::bind(config()).await.unwrap();
    let b = first_nonce(&second.url()).await;
    assert_ne!(a, b, "the same seed gave the same challenge nonce");
}

#[tokio::test]
async fn client_settings_that_would_overflow_are_clear_errors() {
    let server = Server::bind(config()).await.unwrap();
    let huge = Duration::from_millis(u64::MAX);
    for (config, field) in [
        (
            ClientConfig {
                keepalive: huge,
                ..ClientConfig::default()
            },
            "keepalive_ms",
        ),
        (
            ClientConfig {
                backoff_max: huge,
                ..ClientConfig::default()
            },
            "backoff_max_ms",
        ),
    ] {
        let err = WsSignaling::connect(&server.url(), "r", &key(40), config)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SignalingError::Other(m) if m.contains(field)),
            "{err}"
        );
    }
    // The longest keepalive accepted works (no overflow in `keepalive * 3`).
    let (ka, kb) = (key(41), key(42));
    let day = ClientConfig {
        keepalive: Duration::from_secs(24 * 3600),
        backoff_max: Duration::from_secs(24 * 3600),
        ..ClientConfig::default()
    };
    let a = WsSignaling::connect(&server.url(), "r", &ka, day.clone())
        .await
        .unwrap();
    let b = WsSignaling::connect(&server.url(), "r", &kb, day)
        .await
        .unwrap();
    b.send(signal(&kb, ka.peer_id(), b"x")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.signal.payload, b"x");
}

#[tokio::test]
async fn the_metrics_endpoint_serves_prometheus_counters() {
    let server = Server::bind(ServerConfig {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    })
    .await
    .unwrap();
    let (ka, kb) = (key(50), key(51));
    let a = WsSignaling::connect(&server.url(), "r", &ka, ClientConfig::default())
        .await
        .unwrap();
    let b = WsSignaling::connect(&server.url(), "r", &kb, ClientConfig::default())
        .await
        .unwrap();
    b.send(signal(&kb, ka.peer_id(), b"counted")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .unwrap()
        .unwrap();
    b.send(signal(&kb, key(52).peer_id(), b"nobody"))
        .await
        .unwrap();
    let addr = server.metrics_addr().expect("a metrics address");
    let mut body = String::new();
    for _ in 0..100 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        body.clear();
        tcp.read_to_string(&mut body).await.unwrap();
        if body.contains("code=\"unknown_peer\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    for line in [
        "n2n_signal_connections_accepted_total 2",
        "n2n_signal_clients 2",
        "n2n_signal_joins_total 2",
        "n2n_signal_signals_relayed_total 1",
        "n2n_signal_refusals_total{code=\"unknown_peer\"} 1",
        "n2n_signal_connections_refused_total{reason=\"source_pending\"} 0",
        "n2n_signal_queue_drops_total 0",
        "# TYPE n2n_signal_signal_bytes_relayed_total counter",
    ] {
        assert!(body.contains(line), "{line:?} missing from\n{body}");
    }
    // Anything but `GET /metrics` is refused.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
}

#[tokio::test]
async fn clients_reconnect_after_the_server_restarts() {
    let first = Server::bind(config()).await.unwrap();
    let addr = first.local_addr();
    let url = first.url();
    let ka = key(100);
    let a = WsSignaling::connect(
        &url,
        "r",
        &ka,
        ClientConfig {
            backoff_min: Duration::from_millis(50),
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    first.shutdown().await;
    let second = Server::bind(ServerConfig {
        listen: addr,
        ..config()
    })
    .await
    .unwrap();
    // A joins again by itself; a newcomer then gets it as contact.
    let mut contact = None;
    for _ in 0..100 {
        if second.stats().clients == 1 {
            let b = WsSignaling::connect(&url, "r", &key(101), ClientConfig::default())
                .await
                .unwrap();
            contact = b.contact();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(contact, Some(ka.peer_id()));
    // The new connection relays: a signal from a newcomer reaches A.
    let kc = key(102);
    let c = WsSignaling::connect(&url, "r", &kc, ClientConfig::default())
        .await
        .unwrap();
    c.send(signal(&kc, ka.peer_id(), b"after the restart"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.signal.payload, b"after the restart");
    second.shutdown().await;
}
