//! Two peers join a room of a real signaling server (127.0.0.1:0, real
//! WebSocket clients) and complete a real WebRTC handshake (loopback ICE, DTLS,
//! SCTP) whose offer and answer travel through the server.

use std::sync::Arc;
use std::time::Duration;

use n2n_core::node::{Builder, Event};
use n2n_core::{Keypair, ProtocolId};
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use n2n_transport_webrtc::WebRtcTransport;
use rand::SeedableRng;

const O: ProtocolId = ProtocolId::from_name("ws-webrtc-test");
const CHAT: ProtocolId = ProtocolId::from_name("ws-webrtc-chat");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_join_through_the_server_over_real_webrtc() {
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: Some(1),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let mut nodes = Vec::new();
    let mut contacts = Vec::new();
    for seed in [1u64, 2] {
        let keypair = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let signaling =
            WsSignaling::connect(&server.url(), "webrtc", &keypair, ClientConfig::default())
                .await
                .unwrap();
        let transport =
            WebRtcTransport::new(n2n_transport_webrtc::Config::default()).expect("webrtc");
        let node = Builder::new(keypair)
            .transport(Arc::new(transport))
            .protocol(O)
            .protocol(CHAT)
            .spawn()
            .unwrap();
        contacts.push(node.handle().join(O, signaling).await.unwrap());
        nodes.push(node);
    }
    let (a, b) = (nodes[0].local_peer_id(), nodes[1].local_peer_id());
    assert_eq!(contacts, vec![None, Some(a)]);
    assert!(
        server.stats().signals >= 2,
        "offer and answer went through the server"
    );

    // The data channel carries application messages both ways.
    nodes[1]
        .handle()
        .send(a, CHAT, b"hello over webrtc".to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match nodes[0].next_event().await {
                Some(Event::Message {
                    from,
                    protocol,
                    payload,
                    ..
                }) if from == b && protocol == CHAT => break payload,
                Some(_) => continue,
                None => panic!("node A stopped"),
            }
        }
    })
    .await
    .expect("A receives B's message");
    assert_eq!(&got[..], b"hello over webrtc");
    let snap = nodes[0].handle().snapshot().await;
    assert_eq!(snap.view(O).0.count(&b), 1, "A's inview holds B's arc");
    for node in nodes {
        node.shutdown().await;
    }
    server.shutdown().await;
}
