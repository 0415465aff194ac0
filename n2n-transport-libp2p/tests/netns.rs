//! Across hosts: three network namespaces joined by veth pairs play three
//! machines, each running one peer in its own process over libp2p (TCP, then
//! QUIC). The test process is only the signaling server (signals travel over
//! the children's stdin/stdout, signed end to end), used once per newcomer:
//! B and C join through A, then A bridges B to C (the signals go through A's
//! relay, none through the server), B and C talk directly over their own link,
//! and when C's process is killed both A and B report its arcs down.
//!
//! Needs root and iproute2 (`ip netns`), as CI has. Without them the test
//! prints why and returns early.
//!
//! The same test binary is the peer: when `N2N_NETNS_PEER` is set the test
//! function runs one peer instead (see [`peer::run`]).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TEST_NAME: &str = "overlay_across_network_namespaces";

#[test]
fn overlay_across_network_namespaces() {
    if std::env::var_os("N2N_NETNS_PEER").is_some() {
        peer::run();
        return;
    }
    let tag = format!("n2n{}", std::process::id());
    let hosts = match Hosts::create(&tag) {
        Ok(h) => h,
        Err(reason) => {
            println!("SKIPPED {TEST_NAME}: cannot create network namespaces: {reason}");
            return;
        }
    };
    for proto in ["tcp", "quic"] {
        scenario(&hosts, proto);
    }
}

/// Three namespaces, fully meshed by veth pairs: link `xy` joins hosts x and y
/// on 10.77.xy.0/24, host x being 10.77.xy.x.
struct Hosts {
    names: [String; 3],
}

const LINKS: [(usize, usize); 3] = [(1, 2), (1, 3), (2, 3)];

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}); install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    fn create(tag: &str) -> Result<Self, String> {
        let names = [1, 2, 3].map(|h| format!("{tag}-h{h}"));
        ip(&["netns", "add", &names[0]])?;
        let hosts = Self {
            names: names.clone(),
        };
        // From here on, Drop removes whatever was made.
        for n in &names[1..] {
            ip(&["netns", "add", n])?;
        }
        for n in &names {
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        for (x, y) in LINKS {
            let (nx, ny) = (&names[x - 1], &names[y - 1]);
            let (vx, vy) = (format!("v{x}{y}"), format!("v{y}{x}"));
            ip(&[
                "-n", nx, "link", "add", &vx, "type", "veth", "peer", "name", &vy, "netns", ny,
            ])?;
            ip(&[
                "-n",
                nx,
                "addr",
                "add",
                &format!("10.77.{x}{y}.{x}/24"),
                "dev",
                &vx,
            ])?;
            ip(&[
                "-n",
                ny,
                "addr",
                "add",
                &format!("10.77.{x}{y}.{y}/24"),
                "dev",
                &vy,
            ])?;
            ip(&["-n", nx, "link", "set", &vx, "up"])?;
            ip(&["-n", ny, "link", "set", &vy, "up"])?;
        }
        Ok(hosts)
    }

    /// Host `h`'s addresses (one per link).
    fn addrs(h: usize) -> Vec<String> {
        LINKS
            .iter()
            .filter(|(x, y)| *x == h || *y == h)
            .map(|(x, y)| format!("10.77.{x}{y}.{h}"))
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// One peer process in a namespace.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    id: String,
    log: Vec<String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    peers: Vec<Peer>,
    lines: mpsc::Receiver<(usize, String)>,
    /// Signals the test process carried, as the signaling server.
    server_signals: usize,
}

impl Run {
    fn start(hosts: &Hosts, proto: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let (tx, lines) = mpsc::channel();
        let mut peers = Vec::new();
        for h in 1..=3 {
            // QUIC dials from one of its listening sockets: one bound to a
            // single link's address would send to the other links with the
            // wrong source, so QUIC listens on the unspecified address (inside
            // this host's own namespace: its loopback and its links only).
            let listen: Vec<String> = match proto {
                "tcp" => Hosts::addrs(h)
                    .iter()
                    .map(|a| format!("/ip4/{a}/tcp/0"))
                    .collect(),
                _ => vec!["/ip4/0.0.0.0/udp/0/quic-v1".to_string()],
            };
            let mut child = Command::new("ip")
                .args(["netns", "exec", &hosts.names[h - 1]])
                .arg(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env("N2N_NETNS_PEER", h.to_string())
                .env("N2N_PROTOCOL", proto)
                .env("N2N_LISTEN", listen.join(","))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn a peer in its namespace");
            let stdout = child.stdout.take().expect("piped");
            let stdin = child.stdin.take().expect("piped");
            let tx = tx.clone();
            let i = h - 1;
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may print its own words before ours on a line.
                    if let Some(at) = line.find("N2N ")
                        && tx.send((i, line[at + 4..].to_string())).is_err()
                    {
                        break;
                    }
                }
            });
            peers.push(Peer {
                child,
                stdin,
                id: String::new(),
                log: Vec::new(),
            });
        }
        let mut run = Self {
            peers,
            lines,
            server_signals: 0,
        };
        for i in 0..3 {
            let line = run.wait(i, 30, |l| l.starts_with("ID "));
            run.peers[i].id = line[3..].to_string();
        }
        run
    }

    fn tell(&mut self, i: usize, command: &str) {
        let stdin = &mut self.peers[i].stdin;
        writeln!(stdin, "{command}").expect("peer alive");
        stdin.flush().expect("peer alive");
    }

    /// Routes signals between peers (as the signaling server) until peer `i`
    /// prints a line matching `pred`.
    fn wait(&mut self, i: usize, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        if let Some(pos) = self.peers[i].log.iter().position(|l| pred(l)) {
            return self.peers[i].log.remove(pos);
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (from, line) = match self.lines.recv_timeout(left) {
                Ok(x) => x,
                Err(_) => panic!(
                    "peer {} printed nothing matching within {secs} s; its log:\n{}",
                    i + 1,
                    self.peers[i].log.join("\n")
                ),
            };
            if let Some(rest) = line.strip_prefix("SIG ") {
                let (to, hex) = rest.split_once(' ').expect("SIG <to> <hex>");
                if let Some(j) = self.peers.iter().position(|p| p.id == to) {
                    self.server_signals += 1;
                    self.tell(j, &format!("SIG {hex}"));
                }
                continue;
            }
            if from == i && pred(&line) {
                return line;
            }
            self.peers[from].log.push(line);
        }
    }
}

fn scenario(hosts: &Hosts, proto: &str) {
    let mut run = Run::start(hosts, proto);
    let [a, b, c] = [0, 1, 2].map(|i| run.peers[i].id.clone());

    // B and C join through A, by the signaling server.
    run.tell(1, &format!("CONNECT {a}"));
    run.wait(1, 30, |l| l == format!("OK CONNECT {a}"));
    run.tell(2, &format!("CONNECT {a}"));
    run.wait(2, 30, |l| l == format!("OK CONNECT {a}"));
    // A has both as neighbours (its side of each handshake may finish a moment
    // after the dialer's).
    run.wait(0, 10, |l| l == format!("ARCOPENED {b} in"));
    run.wait(0, 10, |l| l == format!("ARCOPENED {c} in"));
    let joined = run.server_signals;
    assert!(
        joined >= 4,
        "offers and answers went through the server: {joined}"
    );

    // A bridges B to C: A relays their signals; the server carries none.
    run.tell(0, &format!("BRIDGE {b} {c}"));
    run.wait(0, 30, |l| l == format!("OK BRIDGE {b} {c}"));
    assert_eq!(run.server_signals, joined, "no signal through the server");
    run.wait(2, 10, |l| l == format!("ARCOPENED {b} in"));

    // B and C talk over their own link (A does not forward packets).
    run.tell(1, &format!("SEND {c} hello-from-b"));
    run.wait(2, 10, |l| l == format!("MSG {b} hello-from-b"));
    run.tell(2, &format!("OPENARC {b}"));
    run.wait(1, 10, |l| l == format!("ARCOPENED {c} in"));
    run.tell(2, &format!("SEND {b} hello-from-c"));
    run.wait(1, 10, |l| l == format!("MSG {c} hello-from-c"));

    // C's machine crashes: A and B see their arcs to it go down.
    let _ = run.peers[2].child.kill();
    run.wait(0, 30, |l| {
        l.starts_with(&format!("ARCCLOSED {c} in peerdown"))
    });
    run.wait(1, 30, |l| {
        l.starts_with(&format!("ARCCLOSED {c} out peerdown"))
    });
    run.wait(1, 30, |l| {
        l.starts_with(&format!("ARCCLOSED {c} in peerdown"))
    });
    run.wait(1, 30, |l| l.starts_with(&format!("DISCONNECTED {c}")));

    // A and B are still fine.
    run.tell(0, &format!("SEND {b} still-here"));
    run.wait(1, 10, |l| l == format!("MSG {a} still-here"));
    for i in 0..2 {
        run.tell(i, "QUIT");
        run.wait(i, 10, |l| l == "BYE");
    }
    println!(
        "{TEST_NAME} [{proto}]: 3 hosts, {} signals through the server (join only)",
        run.server_signals
    );
}

/// The peer side: one node on the libp2p transport, driven by lines on stdin.
mod peer {
    use std::sync::Arc;

    use async_trait::async_trait;
    use n2n_core::node::{Builder, Event};
    use n2n_core::overlay::ArcCloseReason;
    use n2n_core::signaling::{Signaling, SignalingError};
    use n2n_core::{Direction, PeerId, SignedSignal};
    use n2n_transport_libp2p::{Config, Libp2pTransport, Protocol};
    use tokio::sync::{Mutex, mpsc};

    use crate::common::{CHAT, O, key, node_config};

    /// Signals written to stdout for the test process to route.
    #[derive(Debug)]
    struct StdioSignaling {
        incoming: Mutex<mpsc::Receiver<SignedSignal>>,
    }

    #[async_trait]
    impl Signaling for StdioSignaling {
        fn name(&self) -> &str {
            "stdio"
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
        let host: u64 = std::env::var("N2N_NETNS_PEER").unwrap().parse().unwrap();
        let protocol: Protocol = std::env::var("N2N_PROTOCOL").unwrap().parse().unwrap();
        let listen = std::env::var("N2N_LISTEN")
            .unwrap()
            .split(',')
            .map(|a| a.parse().expect("a multiaddr"))
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let keypair = key(host);
            let transport = Libp2pTransport::new(
                &keypair,
                Config {
                    protocols: vec![protocol],
                    listen,
                    ..Config::default()
                },
            )
            .expect("transport");
            let node = Builder::new(keypair.clone())
                .config(node_config(host))
                .transport(Arc::new(transport))
                .protocol(O)
                .protocol(CHAT)
                .spawn()
                .expect("node");
            let (sig_tx, sig_rx) = mpsc::channel(256);
            let signaling = Arc::new(StdioSignaling {
                incoming: Mutex::new(sig_rx),
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
}
