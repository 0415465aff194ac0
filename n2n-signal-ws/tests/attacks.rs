//! The `n2n-signal` binary as a separate process, under attack from hostile
//! clients on loopback: its resident memory stays under the documented budget
//! and an honest pair still joins and signals.
//!
//! Hostile clients connect from other loopback addresses (`127.0.0.2`…) than
//! the honest ones (`127.0.0.1`), so per-source limits tell them apart as they
//! would on a real network. Frames are checked as raw JSON so that the tests
//! depend only on the documented protocol.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use n2n_core::signal::{Role, Signal};
use n2n_core::signaling::Signaling;
use n2n_core::{Keypair, PeerId, SignedSignal};
use n2n_signal_ws::protocol::challenge_bytes;
use n2n_signal_ws::{ClientConfig, WsSignaling};
use rand::SeedableRng;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// The server process; killed when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_n2n-signal"))
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            // The hostile clients come from loopback addresses too.
            .args(["--limit-loopback"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = lines.next().expect("a line").expect("readable");
        let addr = first
            .strip_prefix("listening on ws://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("an address");
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc is readable");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS is listed");
        kib * 1024
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn tcp_from(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(to).await
}

async fn ws_from(src: IpAddr, server: &Process) -> Ws {
    let tcp = tcp_from(src, server.addr).await.expect("connects");
    let (ws, _) = tokio_tungstenite::client_async(server.url(), tcp)
        .await
        .expect("upgrades");
    ws
}

/// The next JSON text frame (skipping pings), or `None` once closed.
async fn next_json(ws: &mut Ws) -> Option<serde_json::Value> {
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

fn hello(key_id: &str, signature: &str, room: &str) -> WsMessage {
    WsMessage::text(
        serde_json::json!({"type": "hello", "peer": key_id, "room": room, "signature": signature})
            .to_string(),
    )
}

/// Joins `room` as `k` from `src`; returns the socket and the server's answer.
async fn join_from(
    src: IpAddr,
    server: &Process,
    k: &Keypair,
    room: &str,
) -> (Ws, Option<serde_json::Value>) {
    let mut ws = ws_from(src, server).await;
    let Some(challenge) = next_json(&mut ws).await else {
        return (ws, None);
    };
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(challenge["nonce"].as_str().expect("a nonce"), &mut nonce)
        .expect("32 hex bytes");
    let signature = hex::encode(k.sign(&challenge_bytes(&nonce, room)));
    ws.send(hello(&k.peer_id().to_string(), &signature, room))
        .await
        .expect("sends");
    let answer = next_json(&mut ws).await;
    (ws, answer)
}

fn signal(from: &Keypair, to: PeerId, payload: Vec<u8>) -> SignedSignal {
    Signal {
        from: from.peer_id(),
        to,
        session: 1,
        role: Role::Dialer,
        seq: 0,
        transport: "test".into(),
        payload,
    }
    .sign(from)
    .expect("signs")
}

/// An honest pair joins `room` from 127.0.0.1 and exchanges a signal.
async fn honest_pair_signals(server: &Process, room: &str, seed: u64) {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(8),
        reconnect: false,
        ..ClientConfig::default()
    };
    let (ka, kb) = (key(seed), key(seed + 1));
    let a = WsSignaling::connect(&server.url(), room, &ka, config.clone())
        .await
        .expect("an honest client joins");
    let b = WsSignaling::connect(&server.url(), room, &kb, config)
        .await
        .expect("a second honest client joins");
    b.send(signal(&kb, ka.peer_id(), b"honest".to_vec()))
        .await
        .expect("sends");
    let got = tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .expect("the signal arrives")
        .expect("the client is open");
    assert_eq!(got.signal.payload, b"honest");
}

const MIB: u64 = 1024 * 1024;

/// A client ping frame with a 125-byte payload, masked with a zero key (the
/// payload reads as is).
fn ping_frame() -> Vec<u8> {
    let mut frame = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    frame.extend_from_slice(&[b'p'; 125]);
    frame
}

async fn ping_flood(tcp: &mut TcpStream, pings: usize) {
    let batch: Vec<u8> = ping_frame().repeat(1000);
    for _ in 0..pings / 1000 {
        if tcp.write_all(&batch).await.is_err() {
            // The server cut us off: that is one acceptable outcome.
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_that_are_never_read_do_not_grow_the_server() {
    let server = Process::start(&[]);
    honest_pair_signals(&server, "warm-up", 1).await;
    let before = server.rss();

    // Before its hello: pings right after the upgrade, never reading.
    let mut early = ws_from(loopback(2), &server).await;
    ping_flood(early.get_mut(), 300_000).await;
    // After joining: the pings also keep it from being idle.
    let k = key(10);
    let (mut joined, welcome) = join_from(loopback(2), &server, &k, "r").await;
    assert_eq!(welcome.expect("an answer")["type"], "welcome");
    ping_flood(joined.get_mut(), 1_000_000).await;

    honest_pair_signals(&server, "r", 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = server.rss().saturating_sub(before);
    eprintln!(
        "ping flood: server RSS {} KiB before, grew by {} KiB",
        before / 1024,
        grown / 1024
    );
    assert!(
        grown < 16 * MIB,
        "the server grew by {} KiB under 1.3 million unread pings",
        grown / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_connections_from_one_address_do_not_lock_out_newcomers() {
    let server = Process::start(&[]);
    // More than the old shared pool (max_clients + 64): TCP only, nothing sent.
    let mut bare = Vec::new();
    for _ in 0..10_100 {
        match tcp_from(loopback(2), server.addr).await {
            Ok(tcp) => bare.push(tcp),
            Err(e) => panic!("connect {} failed: {e}", bare.len()),
        }
    }
    honest_pair_signals(&server, "r", 30).await;
    let rss = server.rss();
    eprintln!(
        "{} bare connections held: server RSS {} KiB",
        bare.len(),
        rss / 1024
    );
    assert!(rss < 64 * MIB);
    drop(bare);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_pin_a_bounded_amount_of_memory() {
    let server = Process::start(&[]);
    honest_pair_signals(&server, "warm-up", 40).await;
    let before = server.rss();
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..4u64 {
        let (kr, ks) = (key(100 + 2 * i), key(101 + 2 * i));
        let (reader, welcome) = join_from(loopback(3), &server, &kr, "slow").await;
        assert_eq!(welcome.expect("an answer")["type"], "welcome");
        readers.push(reader);
        let (sender, welcome) = join_from(loopback(4), &server, &ks, "slow").await;
        assert_eq!(welcome.expect("an answer")["type"], "welcome");
        // 60 KiB payloads: under the old frame limit too.
        let text = serde_json::json!({
            "type": "signal",
            "signal": signal(&ks, kr.peer_id(), vec![7; 60 * 1024]),
        })
        .to_string();
        senders.push((sender, text));
    }
    let mut tasks = Vec::new();
    for (sender, text) in senders {
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = sender.split();
            // Read whatever the server answers, so that only the readers are slow.
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            for _ in 0..200 {
                if sink.send(WsMessage::text(text.clone())).await.is_err() {
                    break;
                }
            }
            drain.abort();
        }));
    }
    for t in tasks {
        t.await.expect("sender task");
    }
    honest_pair_signals(&server, "slow", 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = server.rss().saturating_sub(before);
    eprintln!(
        "slow readers: server RSS {} KiB before, grew by {} KiB",
        before / 1024,
        grown / 1024
    );
    assert!(
        grown < 24 * MIB,
        "four readers that never read pinned {} KiB",
        grown / 1024
    );
    drop(readers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_members_cannot_be_enumerated_by_rapid_rejoins() {
    let server = Process::start(&[]);
    let mut members = Vec::new();
    for i in 0..30u8 {
        let (ws, welcome) = join_from(
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, i + 1)),
            &server,
            &key(200 + u64::from(i)),
            "room",
        )
        .await;
        assert_eq!(welcome.expect("an answer")["type"], "welcome");
        members.push(ws);
    }
    let attacker = key(300);
    let (mut welcomes, mut limited) = (0, 0);
    let start = std::time::Instant::now();
    for _ in 0..100 {
        let (ws, answer) = join_from(loopback(2), &server, &attacker, "room").await;
        match answer {
            Some(a) if a["type"] == "welcome" => welcomes += 1,
            Some(a) if a["code"] == "join_rate_limited" => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
        drop(ws);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("re-joins: {welcomes} welcome, {limited} join_rate_limited in {secs:.2} s");
    assert!(limited > 0, "100 re-joins in {secs:.2} s were all welcome");
    // The documented per-source budget: a burst of 16, then 2 per second.
    assert!(
        f64::from(welcomes) <= 16.0 + 2.0 * secs + 1.0,
        "{welcomes} re-joins in {secs:.2} s"
    );
    // Other sources still join.
    honest_pair_signals(&server, "room", 310).await;
    drop(members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_order_key_cannot_join() {
    let server = Process::start(&[]);
    // The identity point: every signature `R = identity, S = 0` "verifies" for
    // it under the lax check, whatever the message.
    let weak = format!("01{}", "00".repeat(31));
    let forged = format!("01{}", "00".repeat(63));
    let mut ws = ws_from(loopback(2), &server).await;
    let _challenge = next_json(&mut ws).await.expect("a challenge");
    ws.send(hello(&weak, &forged, "r")).await.expect("sends");
    let answer = next_json(&mut ws).await.expect("an answer");
    assert_eq!(answer["code"], "authentication_failed", "{answer}");
    honest_pair_signals(&server, "r", 400).await;
}
