//! Where the time of one 1 KiB relay goes, stage by stage, n2n against the
//! bare crate.

use super::*;

// ----- stages -----

/// Timestamps of one relayed message, by stage.
#[derive(Debug, Default)]
struct Probe {
    at: Mutex<[Option<Instant>; STAGES.len()]>,
}

const STAGES: [&str; 7] = [
    "A app: send called",
    "A runtime: frame into Connection::send",
    "B runtime: frame out of Connection::recv",
    "B app: Event::Message",
    "B runtime: frame into Connection::send",
    "C runtime: frame out of Connection::recv",
    "C app: Event::Message",
];

impl Probe {
    fn stamp(&self, stage: usize) {
        self.at.lock().expect("probe")[stage] = Some(Instant::now());
    }

    fn take(&self) -> [Option<Instant>; STAGES.len()] {
        std::mem::take(&mut *self.at.lock().expect("probe"))
    }
}

/// A transport whose connections stamp the application frames (at least
/// [`MESSAGE`] bytes: control frames are smaller) they send and receive.
#[derive(Debug)]
struct Probed {
    inner: Arc<dyn Transport>,
    probe: Arc<Probe>,
    send: Option<usize>,
    recv: Option<usize>,
}

#[derive(Debug)]
struct ProbedConnection {
    inner: Box<dyn Connection>,
    probe: Arc<Probe>,
    send: Option<usize>,
    recv: Option<usize>,
}

#[async_trait]
impl Connection for ProbedConnection {
    fn remote(&self) -> PeerId {
        self.inner.remote()
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if let Some(stage) = self.send
            && message.len() >= MESSAGE
        {
            self.probe.stamp(stage);
        }
        self.inner.send(message).await
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        let m = self.inner.recv().await?;
        if let Some(stage) = self.recv
            && m.len() >= MESSAGE
        {
            self.probe.stamp(stage);
        }
        Ok(m)
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

impl Probed {
    fn wrap(&self, inner: Box<dyn Connection>) -> Box<dyn Connection> {
        Box::new(ProbedConnection {
            inner,
            probe: self.probe.clone(),
            send: self.send,
            recv: self.recv,
        })
    }
}

#[async_trait]
impl Transport for Probed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        Ok(self.wrap(self.inner.dial(signals).await?))
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        Ok(self.wrap(self.inner.accept(signals).await?))
    }
}

/// Three probed nodes relaying A → B → C, B's application forwarding.
struct N2nProbe {
    trio: Trio,
    probe: Arc<Probe>,
    c_events: n2n_core::node::Events,
}

impl N2nProbe {
    async fn new() -> Self {
        let probe = Arc::new(Probe::default());
        let mut made = 0;
        let transport = || -> Arc<dyn Transport> {
            made += 1;
            let (send, recv) = match made {
                1 => (Some(1), None),
                2 => (Some(4), Some(2)),
                _ => (None, Some(5)),
            };
            Arc::new(Probed {
                inner: webrtc(),
                probe: probe.clone(),
                send,
                recv,
            })
        };
        let mut trio = Trio::new(500, transport).await;
        let (a_id, c_id) = (trio.a.local_peer_id(), trio.c.local_peer_id());
        let mut b_events = trio.b.take_events().expect("events");
        let b = trio.b.handle().clone();
        let b_probe = probe.clone();
        tokio::spawn(async move {
            while let Some(e) = b_events.recv().await {
                if let Event::Message { from, payload, .. } = e
                    && from == a_id
                {
                    b_probe.stamp(3);
                    if b.send(c_id, APP, payload.to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut a_events = trio.a.take_events().expect("events");
        tokio::spawn(async move { while a_events.recv().await.is_some() {} });
        let c_events = trio.c.take_events().expect("events");
        Self {
            trio,
            probe,
            c_events,
        }
    }

    /// One relay: the total, the time of each stage, and the `send` call.
    async fn round(&mut self, message: &[u8]) -> (Vec<Duration>, Duration) {
        let b_id = self.trio.b.local_peer_id();
        self.probe.stamp(0);
        let call = Instant::now();
        self.trio
            .a
            .handle()
            .send(b_id, APP, message.to_vec())
            .await
            .expect("A sends");
        let call = call.elapsed();
        next_message(&mut self.c_events).await;
        self.probe.stamp(6);
        let at: Vec<Instant> = self
            .probe
            .take()
            .iter()
            .map(|t| t.expect("every stage stamped"))
            .collect();
        (durations(&at), call)
    }
}

/// The bare relay with stamps when B's and C's `on_message` run.
struct BareProbe {
    ab: bare::Pair,
    bc: bare::Pair,
    probe: Arc<Probe>,
    at_c: mpsc::Receiver<Bytes>,
}

impl BareProbe {
    async fn new() -> Self {
        let api = bare::api(false);
        let ab = bare::connect(&api).await.expect("bare A–B");
        let bc = bare::connect(&api).await.expect("bare B–C");
        let probe = Arc::new(Probe::default());
        let (to_c, b_probe) = (bc.ca.clone(), probe.clone());
        ab.cb.on_message(Box::new(move |m| {
            b_probe.stamp(1);
            let to_c = to_c.clone();
            Box::pin(async move {
                let _ = to_c.send(&m.data).await;
            })
        }));
        let (tx, at_c) = mpsc::channel(16);
        let c_probe = probe.clone();
        bc.cb.on_message(Box::new(move |m| {
            c_probe.stamp(2);
            let _ = tx.try_send(m.data);
            Box::pin(async {})
        }));
        Self {
            ab,
            bc,
            probe,
            at_c,
        }
    }

    async fn round(&mut self, message: &Bytes) -> Vec<Duration> {
        self.probe.stamp(0);
        self.ab.ca.send(message).await.expect("bare A sends");
        within("bare relay", self.at_c.recv())
            .await
            .expect("bare C");
        self.probe.stamp(3);
        let at: Vec<Instant> = self.probe.take()[..4]
            .iter()
            .map(|t| t.expect("every stage stamped"))
            .collect();
        durations(&at)
    }
}

/// Relays `rounds` messages through probed n2n nodes and through the bare
/// crate, alternating (so that both see the same load), and prints the
/// median time of each stage.
pub(super) async fn relay_stages(rounds: usize) {
    let mut n2n = N2nProbe::new().await;
    let mut bare = BareProbe::new().await;
    let message = Bytes::from(vec![7u8; MESSAGE]);
    let mut n2n_stages = vec![Vec::new(); STAGES.len()];
    let mut bare_stages = vec![Vec::new(); 4];
    let (mut send_call, mut ratio) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (n, call) = n2n.round(&message).await;
        let b = bare.round(&message).await;
        ratio.push(n[0].as_secs_f64() / b[0].as_secs_f64());
        for (all, d) in n2n_stages.iter_mut().zip(n) {
            all.push(d);
        }
        for (all, d) in bare_stages.iter_mut().zip(b) {
            all.push(d);
        }
        send_call.push(call);
    }
    print_stages(
        &format!("n2n 1 KiB relay A -> B -> C, median of {rounds} (alternating with bare)"),
        &STAGES[1..],
        n2n_stages,
    );
    println!(
        "  (A's NodeHandle::send call itself: {:.1?})",
        median(send_call)
    );
    print_stages(
        &format!("bare 1 KiB relay A -> B -> C, median of {rounds}"),
        &[
            "B on_message (hop A -> B)",
            "C on_message (hop B -> C)",
            "bench task has it",
        ],
        bare_stages,
    );
    ratio.sort_by(f64::total_cmp);
    println!(
        "  median of the per-round ratios n2n / bare: {:.2}",
        ratio[ratio.len() / 2]
    );
    n2n.trio.shutdown().await;
    bare.ab.close().await;
    bare.bc.close().await;
}
