//! The peer side of the namespace tests: one node on the libp2p transport,
//! driven by lines on stdin, its signals and events on stdout.

use std::sync::Arc;

use async_trait::async_trait;
use n2n_core::node::{Builder, Event};
use n2n_core::overlay::ArcCloseReason;
use n2n_core::signaling::{Signaling, SignalingError};
use std::time::Duration;

use n2n_core::overlay::Erased;
use n2n_core::{Direction, PeerId, SignedSignal, Transport};
use n2n_overlay_spray::spray;
use n2n_transport_libp2p::{Config, Libp2pTransport, Protocol};
use rand::SeedableRng;
use tokio::sync::{Mutex, mpsc};

use crate::common::{CHAT, O, key, node_config};

/// Signals written to stdout for the test process to route.
#[derive(Debug)]
struct StdioSignaling {
    incoming: Mutex<mpsc::Receiver<SignedSignal>>,
    /// The contact `join` hands out, set by the `JOIN` command.
    contact: std::sync::Mutex<Option<PeerId>>,
}

#[async_trait]
impl Signaling for StdioSignaling {
    fn name(&self) -> &str {
        "stdio"
    }

    async fn join(&self) -> Result<Option<PeerId>, SignalingError> {
        Ok(*self.contact.lock().expect("contact lock"))
    }

    async fn send(&self, signal: SignedSignal) -> Result<(), SignalingError> {
        let bytes =
            postcard::to_stdvec(&signal).map_err(|e| SignalingError::Other(e.to_string()))?;
        println!("N2N SIG {} {}", signal.signal.to, hex::encode(bytes));
        Ok(())
    }

    async fn recv(&self) -> Result<SignedSignal, SignalingError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(SignalingError::Closed)
    }
}

fn peer_id(text: &str) -> PeerId {
    text.parse().expect("a peer id")
}

pub(super) fn run() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    // libp2p enables rustls' aws-lc-rs provider and webrtc its ring one;
    // with both linked, rustls cannot pick a process default by itself.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let seed: u64 = std::env::var("N2N_NETNS_PEER").unwrap().parse().unwrap();
    let protocols_env = std::env::var("N2N_PROTOCOLS").unwrap();
    let webrtc = protocols_env == "webrtc";
    let protocols: Vec<Protocol> = if webrtc {
        Vec::new()
    } else {
        protocols_env
            .split(',')
            .map(|p| p.parse().expect("a protocol"))
            .collect()
    };
    let spray_on = std::env::var("N2N_SPRAY").as_deref() == Ok("1");
    let listen: Vec<String> = std::env::var("N2N_LISTEN")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let keypair = key(seed);
        let transport: Arc<dyn Transport> = if webrtc {
            Arc::new(
                n2n_transport_webrtc::WebRtcTransport::new(n2n_transport_webrtc::Config {
                    loopback_only: false,
                    interfaces: listen,
                    ..n2n_transport_webrtc::Config::default()
                })
                .expect("webrtc transport"),
            )
        } else {
            Arc::new(
                Libp2pTransport::new(
                    &keypair,
                    Config {
                        protocols,
                        listen: listen
                            .iter()
                            .map(|a| a.parse().expect("a multiaddr"))
                            .collect(),
                        ..Config::default()
                    },
                )
                .expect("libp2p transport"),
            )
        };
        let mut builder = Builder::new(keypair.clone())
            .config(node_config(seed))
            .transport(transport)
            .protocol(O)
            .protocol(CHAT);
        if spray_on {
            let config = spray::Config {
                delta: Duration::from_millis(300),
                exchange_timeout: Duration::from_secs(3),
                ..spray::Config::default()
            };
            let rng = rand::rngs::StdRng::seed_from_u64(seed);
            builder = builder.overlay(Box::new(Erased::new(spray::State::new(
                keypair.peer_id(),
                config,
                rng,
            ))));
        }
        let node = builder.spawn().expect("node");
        let (sig_tx, sig_rx) = mpsc::channel(256);
        let signaling = Arc::new(StdioSignaling {
            incoming: Mutex::new(sig_rx),
            contact: std::sync::Mutex::new(None),
        });
        node.handle().attach_signaling(signaling.clone()).await;
        let (line_tx, mut lines) = mpsc::channel::<String>(256);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line_tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        println!("N2N ID {}", keypair.peer_id());
        let (handle, mut events) = node.into_parts();
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    let words: Vec<&str> = line.split(' ').collect();
                    let h = handle.clone();
                    match words.as_slice() {
                        ["SIG", hex] => {
                            let bytes = hex::decode(hex).expect("hex");
                            let signal: SignedSignal = postcard::from_bytes(&bytes).expect("signal");
                            let _ = sig_tx.send(signal).await;
                        }
                        ["CONNECT", peer] => {
                            let (peer, sig, text) = (peer_id(peer), signaling.clone(), line.clone());
                            tokio::spawn(async move {
                                match h.connect(peer, sig, Some(O)).await {
                                    Ok(()) => println!("N2N OK {text}"),
                                    Err(e) => println!("N2N ERR {text}: {e}"),
                                }
                            });
                        }
                        ["OPENARC", peer] => {
                            h.open_arc(O, peer_id(peer)).await.expect("open arc");
                        }
                        ["BRIDGE", from, to] => {
                            let (from, to, text) = (peer_id(from), peer_id(to), line.clone());
                            tokio::spawn(async move {
                                match h.bridge(O, from, to).await {
                                    Ok(()) => println!("N2N OK {text}"),
                                    Err(e) => println!("N2N ERR {text}: {e}"),
                                }
                            });
                        }
                        ["SEND", peer, text] => {
                            h.send(peer_id(peer), CHAT, text.as_bytes().to_vec()).await.expect("send");
                        }
                        ["JOIN", contact @ ..] => {
                            *signaling.contact.lock().expect("contact lock") =
                                contact.first().map(|c| peer_id(c));
                            let sig = signaling.clone();
                            tokio::spawn(async move {
                                match h.join(spray::PROTOCOL, sig).await {
                                    Ok(_) => println!("N2N OK JOIN"),
                                    Err(e) => println!("N2N ERR JOIN: {e}"),
                                }
                            });
                        }
                        ["VIEW"] => {
                            let snap = h.snapshot().await;
                            let (_, outview) = snap.view(spray::PROTOCOL);
                            let arcs: Vec<String> = outview
                                .iter()
                                .map(|(p, n)| format!("{p}:{n}"))
                                .collect();
                            println!("N2N VIEW {} {}", snap.bridges_ok, arcs.join(" "));
                        }
                        ["SENDVIEW", text] => {
                            let (_, outview) = h.snapshot().await.view(spray::PROTOCOL);
                            let mut sent = Vec::new();
                            for (p, _) in outview.iter() {
                                if h.send(*p, CHAT, text.as_bytes().to_vec()).await.is_ok() {
                                    sent.push(p.to_string());
                                }
                            }
                            println!("N2N SENT {}", sent.join(" "));
                        }
                        ["QUIT"] => {
                            handle.shutdown().await;
                            println!("N2N BYE");
                            break;
                        }
                        other => panic!("unknown command {other:?}"),
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else { break };
                    let dir = |d: &Direction| match d {
                        Direction::Incoming => "in",
                        Direction::Outgoing => "out",
                    };
                    match event {
                        Event::Message { from, payload, .. } => {
                            println!("N2N MSG {from} {}", String::from_utf8_lossy(&payload));
                        }
                        Event::ArcOpened { peer, direction, .. } => {
                            println!("N2N ARCOPENED {peer} {}", dir(&direction));
                        }
                        Event::ArcClosed { peer, direction, reason, .. } => {
                            let reason = match reason {
                                ArcCloseReason::PeerDown(why) => format!("peerdown {why}"),
                                other => format!("{other:?}").to_lowercase(),
                            };
                            println!("N2N ARCCLOSED {peer} {} {reason}", dir(&direction));
                        }
                        Event::Disconnected { peer, reason } => {
                            println!("N2N DISCONNECTED {peer} {reason}");
                        }
                        _ => {}
                    }
                }
            }
        }
    });
}
