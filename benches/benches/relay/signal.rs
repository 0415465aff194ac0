//! `relay_signal`: the offer of a bridged handshake, stamped at each stage of
//! its trip A → B → C.

use super::*;

// ----- signal -----

/// The stages of the offer's trip, stamped once each (the first time).
const SIGNAL_STAGES: [&str; 6] = [
    "A transport: offer out",
    "A runtime: Relay frame into Connection::send",
    "B runtime: Relay frame out of Connection::recv",
    "B runtime: Relay frame into Connection::send",
    "C runtime: Relay frame out of Connection::recv",
    "C transport: offer in",
];

/// When the watched handshake's offer passed each stage, and its size.
#[derive(Debug, Default)]
struct Stamps {
    at: [Option<Instant>; SIGNAL_STAGES.len()],
    size: usize,
}

impl Stamps {
    fn first(stamps: &Mutex<Stamps>, stage: usize) {
        stamps.lock().expect("stamps").at[stage].get_or_insert_with(Instant::now);
    }
}

/// A transport that stamps the first signal of its handshakes with `watch`
/// (stage `pipe`: sent when dialing, received when accepting), and the first
/// `Relay` frame its connections send (stage `send`) and receive (`recv`).
#[derive(Debug)]
struct Stamped {
    inner: Arc<dyn Transport>,
    watch: Option<PeerId>,
    pipe: usize,
    send: Option<usize>,
    recv: Option<usize>,
    stamps: Arc<Mutex<Stamps>>,
}

#[derive(Debug)]
struct StampedConnection {
    inner: Box<dyn Connection>,
    send: Option<usize>,
    recv: Option<usize>,
    stamps: Arc<Mutex<Stamps>>,
}

fn is_relay(frame: &[u8]) -> bool {
    matches!(wire::decode(frame), Ok(Message::Bridge(m)) if matches!(*m, BridgeMessage::Relay { .. }))
}

#[async_trait]
impl Connection for StampedConnection {
    fn remote(&self) -> PeerId {
        self.inner.remote()
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if let Some(stage) = self.send
            && is_relay(&message)
        {
            Stamps::first(&self.stamps, stage);
        }
        self.inner.send(message).await
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        let m = self.inner.recv().await?;
        if let Some(stage) = self.recv
            && is_relay(&m)
        {
            Stamps::first(&self.stamps, stage);
        }
        Ok(m)
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// Passes signals between the runtime's pipe and the inner transport's,
/// stamping the first one of the transport's side (`Some(stage)`).
async fn forward(
    mut outer: SignalPipe,
    mut inner: SignalPipeEnds,
    stamps: Option<(Arc<Mutex<Stamps>>, usize)>,
) {
    loop {
        tokio::select! {
            Some(p) = inner.outbound.recv() => {
                if let Some((s, stage)) = &stamps {
                    let mut s = s.lock().expect("stamps");
                    if s.at[*stage].is_none() {
                        s.at[*stage] = Some(Instant::now());
                        s.size = p.len();
                    }
                }
                if outer.send(p).await.is_err() { break; }
            }
            Some(p) = outer.recv() => {
                if let Some((s, stage)) = &stamps {
                    Stamps::first(s, *stage);
                }
                if inner.inbound.send(p).await.is_err() { break; }
            }
            else => break,
        }
    }
}

impl Stamped {
    fn wrap_pipe(&self, outer: SignalPipe) -> SignalPipe {
        let (pipe, ends) = SignalPipe::new(outer.local(), outer.remote());
        let stamps = (Some(outer.remote()) == self.watch).then(|| (self.stamps.clone(), self.pipe));
        tokio::spawn(forward(outer, ends, stamps));
        pipe
    }

    fn wrap(&self, inner: Box<dyn Connection>) -> Box<dyn Connection> {
        Box::new(StampedConnection {
            inner,
            send: self.send,
            recv: self.recv,
            stamps: self.stamps.clone(),
        })
    }
}

#[async_trait]
impl Transport for Stamped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let pipe = self.wrap_pipe(signals);
        Ok(self.wrap(self.inner.dial(pipe).await?))
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let pipe = self.wrap_pipe(signals);
        Ok(self.wrap(self.inner.accept(pipe).await?))
    }
}

/// One bridge A → C through B on a fresh trio; returns the offer's stage
/// timestamps and its payload size.
async fn signal_stamps(seed: u64) -> ([Instant; SIGNAL_STAGES.len()], usize) {
    let (a_id, c_id) = (key(3 * seed + 1).peer_id(), key(3 * seed + 3).peer_id());
    let stamps = Arc::new(Mutex::new(Stamps::default()));
    let mut made = 0;
    let transport = || -> Arc<dyn Transport> {
        made += 1;
        let (watch, pipe, send, recv) = match made {
            1 => (Some(c_id), 0, Some(1), None),
            2 => (None, 0, Some(3), Some(2)),
            _ => (Some(a_id), 5, None, Some(4)),
        };
        Arc::new(Stamped {
            inner: webrtc(),
            watch,
            pipe,
            send,
            recv,
            stamps: stamps.clone(),
        })
    };
    let trio = Trio::new(seed, transport).await;
    // The trio's own set-up relayed nothing; start clean anyway.
    *stamps.lock().expect("stamps") = Stamps::default();
    within("bridge", trio.b.handle().bridge(OVERLAY, a_id, c_id))
        .await
        .expect("bridged");
    let s = std::mem::take(&mut *stamps.lock().expect("stamps"));
    trio.shutdown().await;
    (s.at.map(|t| t.expect("every signal stage stamped")), s.size)
}

/// The offer's relay time A → B → C and its payload size.
pub(super) async fn signal_once(seed: u64) -> (Duration, usize) {
    let (at, size) = signal_stamps(seed).await;
    (at[SIGNAL_STAGES.len() - 1] - at[0], size)
}

/// Bridges `rounds` times and prints the median time of each stage of the
/// offer's trip.
pub(super) async fn signal_stages(rounds: usize, first_seed: u64) {
    let mut per_stage = vec![Vec::new(); SIGNAL_STAGES.len()];
    for i in 0..rounds {
        let (at, _) = signal_stamps(first_seed + i as u64).await;
        for (s, w) in at.windows(2).enumerate() {
            per_stage[s + 1].push(w[1].saturating_duration_since(w[0]));
        }
        per_stage[0].push(at[SIGNAL_STAGES.len() - 1] - at[0]);
    }
    let mut per_stage = per_stage.into_iter();
    println!(
        "n2n offer relayed A -> B -> C during a bridge, median of {rounds}: total {:?}",
        median(per_stage.next().expect("total"))
    );
    for (name, v) in SIGNAL_STAGES[1..].iter().zip(per_stage) {
        println!("  {:>10.1?}  until {name}", median(v));
    }
}
