//! The ws client against a hostile server (a few lines of tokio-tungstenite on
//! loopback): a weak (small-order) key handed out as contact, or as the author
//! of a signal, is refused by the client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use n2n_core::signal::{Role, Signal};
use n2n_core::signaling::{Signaling, SignalingError};
use n2n_core::{Keypair, PeerId, SignedSignal};
use n2n_signal_ws::{ClientConfig, WsSignaling};
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The identity point: signatures "verify" for it without any secret.
fn weak_key() -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    PeerId::from_bytes(bytes)
}

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

/// A server that challenges, welcomes with `welcome`, then sends `frames`
/// and stays open.
async fn hostile_server(welcome: String, frames: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let challenge = format!(
            r#"{{"type":"challenge","nonce":"{}","version":1}}"#,
            "00".repeat(32)
        );
        ws.send(WsMessage::text(challenge)).await.unwrap();
        let _hello = ws.next().await;
        ws.send(WsMessage::text(welcome)).await.unwrap();
        for f in frames {
            ws.send(WsMessage::text(f)).await.unwrap();
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    url
}

fn signal_frame(s: &SignedSignal) -> String {
    serde_json::json!({"type": "signal", "signal": s}).to_string()
}

#[tokio::test]
async fn a_weak_contact_from_the_server_is_refused() {
    let welcome = format!(r#"{{"type":"welcome","contact":"{}"}}"#, weak_key());
    let url = hostile_server(welcome, vec![]).await;
    let err = WsSignaling::connect(&url, "r", &key(1), ClientConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SignalingError::Other(m) if m.contains("weak")),
        "{err}"
    );
}

#[tokio::test]
async fn a_signal_by_a_weak_key_is_dropped_and_a_genuine_one_arrives() {
    let (us, them) = (key(2), key(3));
    // "Signed" by the identity point: R = identity, S = 0.
    let mut forged_sig = [0u8; 64];
    forged_sig[0] = 1;
    let forged = SignedSignal {
        version: n2n_core::signal::SIGNAL_VERSION,
        freshness: Box::default(),
        signal: Signal {
            from: weak_key(),
            to: us.peer_id(),
            session: 1,
            role: Role::Dialer,
            seq: 0,
            transport: "webrtc".into(),
            payload: b"forged".to_vec(),
        },
        signature: forged_sig,
    };
    let genuine = Signal {
        from: them.peer_id(),
        to: us.peer_id(),
        session: 2,
        role: Role::Dialer,
        seq: 0,
        transport: "webrtc".into(),
        payload: b"genuine".to_vec(),
    }
    .sign(&them)
    .unwrap();
    let url = hostile_server(
        r#"{"type":"welcome","contact":null}"#.into(),
        vec![signal_frame(&forged), signal_frame(&genuine)],
    )
    .await;
    let client = WsSignaling::connect(&url, "r", &us, ClientConfig::default())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .expect("a signal arrives")
        .unwrap();
    assert_eq!(got.signal.payload, b"genuine", "the forged one was dropped");
}
