//! What the server tests share: keys, signals, and a raw client's frames.

#![allow(dead_code)] // each test binary uses its own part

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use n2n_core::signal::{Role, Signal};
use n2n_core::{Keypair, PeerId, SignedSignal};
use n2n_signal_ws::ServerConfig;
use n2n_signal_ws::protocol::{ClientMessage, ServerMessage, challenge_bytes};
use rand::SeedableRng;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A raw client's WebSocket.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The key of seed `seed`.
pub(crate) fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

/// A server on a free loopback port, its nonces seeded.
pub(crate) fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: Some(1),
        ..ServerConfig::default()
    }
}

/// A signal from `from` to `to` over `transport`.
pub(crate) fn signal_with(
    from: &Keypair,
    to: PeerId,
    transport: &str,
    payload: Vec<u8>,
) -> SignedSignal {
    Signal {
        from: from.peer_id(),
        to,
        session: 1,
        role: Role::Dialer,
        seq: 0,
        transport: transport.into(),
        payload,
    }
    .sign(from)
    .unwrap()
}

/// A signal from `from` to `to`.
pub(crate) fn signal(from: &Keypair, to: PeerId, payload: &[u8]) -> SignedSignal {
    signal_with(from, to, "test", payload.to_vec())
}

/// The next server message (pings skipped), `None` once closed or after 10 s.
pub(crate) async fn recv_json(ws: &mut Ws) -> Option<ServerMessage> {
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

/// Sends a client message.
pub(crate) async fn send_json(ws: &mut Ws, m: &ClientMessage) {
    ws.send(WsMessage::text(serde_json::to_string(m).unwrap()))
        .await
        .unwrap();
}

/// Answers the server's challenge on `ws`, claiming `key`'s id in `room`
/// with a signature by `signer`; the server's answer.
pub(crate) async fn hello_over(
    ws: &mut Ws,
    key: &Keypair,
    signer: &Keypair,
    room: &str,
) -> Option<ServerMessage> {
    let Some(ServerMessage::Challenge { nonce, .. }) = recv_json(ws).await else {
        panic!("challenge expected")
    };
    let mut n = [0u8; 32];
    hex::decode_to_slice(&nonce, &mut n).unwrap();
    let hello = ClientMessage::Hello {
        peer: key.peer_id(),
        room: room.into(),
        signature: hex::encode(signer.sign(&challenge_bytes(&n, room))),
    };
    send_json(ws, &hello).await;
    recv_json(ws).await
}

/// A TCP connection to `to` from the loopback address `src`.
pub(crate) async fn tcp_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    socket.connect(to).await.unwrap()
}
