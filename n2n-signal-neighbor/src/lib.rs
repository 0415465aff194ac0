//! # n2n-signal-neighbor
//!
//! The bridge protocol: neighbours relay signaling, so that a signaling server
//! is needed only to join.
//!
//! B is connected to A and to C. To make A open an arc to C:
//!
//! 1. B → A [`Message::ConnectTo`] `{ job, to: C }` (or first A → B
//!    [`Message::BridgeRequest`], when A asks on its own).
//! 2. A's transport produces signals; each goes A → B → C as [`Message::Relay`].
//! 3. C's transport answers; its signals go C → B → A the same way.
//! 4. A reports [`Message::BridgeResult`] to B.
//!
//! If A and C are already connected, step 2 is skipped and A only opens the arc.
//! B relays only between its current neighbours and only for jobs it started;
//! every side (A, B, C) has a timeout and forgets the job after it; every
//! failure reaches the requester with a [`Failure`] reason; jobs in flight per
//! neighbour are bounded. Signals are opaque here: their authors sign them and
//! their recipients verify them (in the node runtime), so a relay that alters a
//! signal causes a rejection ([`Bridge::signal_rejected`]), not a connection.
//!
//! [`Bridge`] is a sans-IO state machine, generic over the peer id `P` and the
//! signal type `S`: it never touches a socket or a clock. Feed it inputs with
//! `now`, then drain [`Bridge::poll_output`]; call [`Bridge::handle_timeout`]
//! at [`Bridge::poll_timeout`]. The node runtime of `n2n-core` drives it, and
//! carries its [`Message`]s inside the wire protocol.
//!
//! # Example
//!
//! ```
//! use n2n_signal_neighbor::{Bridge, Config, Message, Output};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! // Peers are plain integers here; signals are strings.
//! let mut b: Bridge<u32, String> = Bridge::new(2, Config::default(), 7);
//! b.neighbour_up(1);
//! b.neighbour_up(3);
//! b.bridge(now, 0, 1, 3, Some(42));
//! let Some(Output::Send { to: 1, message: Message::ConnectTo { job, to: 3, .. } }) = b.poll_output() else {
//!     panic!("B asks A to connect to C");
//! };
//! // A's offer travels through B to C.
//! b.handle_message(now, 1, Message::Relay { job, from: 1, to: 3, signal: "offer".into() });
//! assert!(matches!(b.poll_output(), Some(Output::Send { to: 3, message: Message::Relay { .. } })));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tracing::{debug, trace, warn};

/// Identifies the overlay an arc belongs to (the runtime's protocol id).
pub type OverlayId = u32;

/// Settings of the bridge protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long a job may take, on every side (B, A and C).
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Jobs in flight per neighbour, on every side.
    pub max_jobs_per_neighbour: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            max_jobs_per_neighbour: 16,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Why a bridge (or one of its steps) failed, as told between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Failure<P> {
    /// The target is not a neighbour of the relay.
    #[error("{0:?} is not a neighbour of the relay")]
    NotNeighbour(P),
    /// A peer taking part left or its connection dropped mid-handshake.
    #[error("{0:?} went away during the bridge")]
    PeerGone(P),
    /// The job did not finish in time.
    #[error("bridge timed out")]
    Timeout,
    /// A relayed signal failed verification at its recipient.
    #[error("a relayed signal was rejected: {0}")]
    SignalRejected(String),
    /// The maximum number of jobs in flight with this neighbour is reached.
    #[error("too many bridge jobs in flight")]
    TooManyJobs,
    /// The transport handshake failed.
    #[error("transport handshake failed: {0}")]
    Transport(String),
    /// A peer cannot be bridged to itself.
    #[error("a peer cannot be bridged to itself")]
    SelfBridge,
    /// The relay has no such job (finished, timed out, or never existed).
    #[error("unknown bridge job")]
    UnknownJob,
    /// The peer does not run this overlay.
    #[error("unknown overlay")]
    UnknownOverlay,
    /// The node is shutting down.
    #[error("node shutting down")]
    ShuttingDown,
}

/// Bridge protocol messages between neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message<P, S> {
    /// B → A: "open an arc in `overlay` to my neighbour `to`, through me".
    ConnectTo {
        /// Job id chosen by B; every later message of the job repeats it.
        job: u64,
        /// Overlay of the arc to open.
        overlay: OverlayId,
        /// The peer to connect to.
        to: P,
        /// If A asked for this bridge, the id of A's request.
        request: Option<u64>,
    },
    /// A → B: "please make me open an arc to your neighbour `to`".
    BridgeRequest {
        /// Id chosen by A, repeated in the `ConnectTo` or `BridgeRefused` answer.
        request: u64,
        /// Overlay of the arc to open.
        overlay: OverlayId,
        /// The peer A wants to reach.
        to: P,
    },
    /// B → A: the request cannot be served.
    BridgeRefused {
        /// A's request id.
        request: u64,
        /// Why.
        reason: Failure<P>,
    },
    /// A signal relayed through a common neighbour (A → B → C and back).
    Relay {
        /// The bridge job.
        job: u64,
        /// The signal's author.
        from: P,
        /// The signal's recipient.
        to: P,
        /// The signal, opaque to the relay.
        signal: S,
    },
    /// B → A or C, or an endpoint → B: the job failed.
    RelayFailed {
        /// The bridge job.
        job: u64,
        /// Why.
        reason: Failure<P>,
    },
    /// A → B: outcome of a `ConnectTo`.
    BridgeResult {
        /// The bridge job.
        job: u64,
        /// `Ok` when A's arc to the target is open.
        result: Result<(), Failure<P>>,
    },
}

/// What the bridge asks of the node runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<P, S> {
    /// Send a message to a neighbour.
    Send {
        /// The neighbour.
        to: P,
        /// The message.
        message: Message<P, S>,
    },
    /// We are A: open an arc in `overlay` to `to`, through a handshake whose
    /// signals go through neighbour `via` as job `job` (or directly, if already
    /// connected to `to`). Report with [`Bridge::handshake_done`].
    Connect {
        /// The relay.
        via: P,
        /// The job.
        job: u64,
        /// Overlay of the arc.
        overlay: OverlayId,
        /// The target.
        to: P,
    },
    /// We are the recipient: verify `signal` (from `from`) and hand it to the
    /// handshake of job `job` through `via` (starting an accepting one if it is the
    /// first). If it fails verification, call [`Bridge::signal_rejected`].
    Deliver {
        /// The relay.
        via: P,
        /// The job.
        job: u64,
        /// The author.
        from: P,
        /// The signal.
        signal: S,
    },
    /// Abandon the handshake of job `job` through `via`.
    Abort {
        /// The relay.
        via: P,
        /// The job.
        job: u64,
        /// Why.
        reason: Failure<P>,
    },
    /// We are B: a bridge finished.
    BridgeDone {
        /// The job.
        job: u64,
        /// Overlay of the arc.
        overlay: OverlayId,
        /// The peer that was to open the arc.
        from: P,
        /// The arc's target.
        to: P,
        /// The caller's token given to [`Bridge::bridge`] (`None` when the bridge was
        /// requested by `from`).
        token: Option<u64>,
        /// Outcome.
        result: Result<(), Failure<P>>,
    },
    /// We are A: a request made with [`Bridge::request`] finished.
    RequestDone {
        /// The caller's token.
        token: u64,
        /// Overlay of the arc.
        overlay: OverlayId,
        /// The target.
        to: P,
        /// Outcome.
        result: Result<(), Failure<P>>,
    },
}

/// Counters of a bridge, for inspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Signals relayed for neighbours (as B).
    pub relayed_signals: u64,
    /// Bridges relayed to completion (as B).
    pub bridges_ok: u64,
    /// Bridges relayed that failed (as B).
    pub bridges_failed: u64,
    /// Messages from neighbours that broke the protocol.
    pub violations: u64,
}

#[derive(Debug)]
struct RelayJob<P> {
    overlay: OverlayId,
    from: P,
    to: P,
    deadline: Instant,
    token: Option<u64>,
}

#[derive(Debug)]
struct Request<P> {
    overlay: OverlayId,
    via: P,
    to: P,
    deadline: Instant,
    token: u64,
    /// The job B started for it, once `ConnectTo` arrived.
    job: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// We open the arc (A).
    Opener,
    /// We are the target (C).
    Target,
}

#[derive(Debug)]
struct Endpoint<P> {
    side: Side,
    remote: P,
    deadline: Instant,
}

/// The bridge protocol state of one peer, in all three roles (A, B, C).
///
/// Methods: getters; `handle_*`, `neighbour_*`, `handshake_done`,
/// `signal_rejected` for inputs; `bridge`, `request`, `relay_signal` for
/// commands; `poll_output` and `poll_timeout` for outputs.
pub struct Bridge<P, S> {
    local: P,
    config: Config,
    rng: ChaCha8Rng,
    neighbours: BTreeSet<P>,
    /// Jobs we relay (we are B).
    jobs: BTreeMap<u64, RelayJob<P>>,
    /// Requests we made (we are A).
    requests: BTreeMap<u64, Request<P>>,
    /// Jobs we take part in as A or C, by (relay, job).
    endpoints: BTreeMap<(P, u64), Endpoint<P>>,
    outputs: VecDeque<Output<P, S>>,
    stats: Stats,
}

impl<P: fmt::Debug, S> fmt::Debug for Bridge<P, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("local", &self.local)
            .field("jobs", &self.jobs.len())
            .field("requests", &self.requests.len())
            .field("endpoints", &self.endpoints.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P, S> Bridge<P, S>
where
    P: Ord + Clone + fmt::Debug,
    S: Clone,
{
    /// A bridge for peer `local`; `seed` seeds the job ids.
    pub fn new(local: P, config: Config, seed: u64) -> Self {
        Self {
            local,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            neighbours: BTreeSet::new(),
            jobs: BTreeMap::new(),
            requests: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Jobs relayed now (as B).
    pub fn relay_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Requests waiting (as A).
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Jobs taken part in as A or C.
    pub fn endpoint_jobs(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the job through `via` is one we take part in (as A or C).
    pub fn is_endpoint(&self, via: &P, job: u64) -> bool {
        self.endpoints.contains_key(&(via.clone(), job))
    }

    /// Whether we are the peer opening the arc (A) in the job through `via`.
    pub fn is_opener(&self, via: &P, job: u64) -> bool {
        self.endpoints
            .get(&(via.clone(), job))
            .is_some_and(|e| e.side == Side::Opener)
    }

    /// The next output; drain after every input.
    pub fn poll_output(&mut self) -> Option<Output<P, S>> {
        self.outputs.pop_front()
    }

    /// When [`Bridge::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let jobs = self.jobs.values().map(|j| j.deadline);
        let requests = self.requests.values().map(|r| r.deadline);
        let endpoints = self.endpoints.values().map(|e| e.deadline);
        jobs.chain(requests).chain(endpoints).min()
    }

    fn send(&mut self, to: P, message: Message<P, S>) {
        self.outputs.push_back(Output::Send { to, message });
    }

    fn busy(&self, peer: &P) -> usize {
        self.jobs
            .values()
            .filter(|j| &j.from == peer || &j.to == peer)
            .count()
    }

    fn endpoints_via(&self, via: &P) -> usize {
        self.endpoints.keys().filter(|(v, _)| v == via).count()
    }

    // ----- neighbours -----

    /// `peer` is now a neighbour (connected).
    pub fn neighbour_up(&mut self, peer: P) {
        self.neighbours.insert(peer);
    }

    /// `peer` is no longer a neighbour: every job that needs it fails.
    pub fn neighbour_down(&mut self, peer: &P) {
        if !self.neighbours.remove(peer) {
            return;
        }
        let jobs: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| &j.from == peer || &j.to == peer)
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            self.fail_job(job, Failure::PeerGone(peer.clone()), Some(peer));
        }
        let ends: Vec<(P, u64)> = self
            .endpoints
            .keys()
            .filter(|(via, _)| via == peer)
            .cloned()
            .collect();
        for (via, job) in ends {
            self.endpoints.remove(&(via.clone(), job));
            self.outputs.push_back(Output::Abort {
                via,
                job,
                reason: Failure::PeerGone(peer.clone()),
            });
        }
        let requests: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| &r.via == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in requests {
            self.finish_request(id, Err(Failure::PeerGone(peer.clone())));
        }
    }

    // ----- commands -----

    /// We are B: make neighbour `from` open an arc in `overlay` to `to` (a
    /// neighbour, or ourselves) through us. The outcome comes as
    /// [`Output::BridgeDone`] with `token`.
    pub fn bridge(&mut self, now: Instant, overlay: OverlayId, from: P, to: P, token: Option<u64>) {
        self.start_job(now, overlay, from, to, token, None);
    }

    fn start_job(
        &mut self,
        now: Instant,
        overlay: OverlayId,
        from: P,
        to: P,
        token: Option<u64>,
        request: Option<u64>,
    ) {
        let failure = if from == to {
            Some(Failure::SelfBridge)
        } else if !self.neighbours.contains(&from) {
            Some(Failure::NotNeighbour(from.clone()))
        } else if to != self.local && !self.neighbours.contains(&to) {
            Some(Failure::NotNeighbour(to.clone()))
        } else if self.busy(&from) >= self.config.max_jobs_per_neighbour
            || (to != self.local && self.busy(&to) >= self.config.max_jobs_per_neighbour)
        {
            Some(Failure::TooManyJobs)
        } else {
            None
        };
        if let Some(reason) = failure {
            debug!(?from, ?to, %reason, "bridge refused");
            self.stats.bridges_failed += 1;
            if let Some(request) = request {
                self.send(
                    from.clone(),
                    Message::BridgeRefused {
                        request,
                        reason: reason.clone(),
                    },
                );
            }
            self.outputs.push_back(Output::BridgeDone {
                job: 0,
                overlay,
                from,
                to,
                token,
                result: Err(reason),
            });
            return;
        }
        let job = loop {
            let id = self.rng.random::<u64>();
            if id != 0 && !self.jobs.contains_key(&id) {
                break id;
            }
        };
        self.jobs.insert(
            job,
            RelayJob {
                overlay,
                from: from.clone(),
                to: to.clone(),
                deadline: now + self.config.timeout,
                token,
            },
        );
        debug!(job, ?from, ?to, "bridge started");
        self.send(
            from,
            Message::ConnectTo {
                job,
                overlay,
                to,
                request,
            },
        );
    }

    /// We are A: ask neighbour `via` to connect us to its neighbour `to`. The
    /// outcome comes as [`Output::RequestDone`] with `token`. (When already
    /// connected to `to`, the runtime opens the arc without asking.)
    pub fn request(&mut self, now: Instant, overlay: OverlayId, via: P, to: P, token: u64) {
        let failure = if to == self.local {
            Some(Failure::SelfBridge)
        } else if !self.neighbours.contains(&via) {
            Some(Failure::NotNeighbour(via.clone()))
        } else if self.requests.values().filter(|r| r.via == via).count()
            >= self.config.max_jobs_per_neighbour
        {
            Some(Failure::TooManyJobs)
        } else {
            None
        };
        if let Some(reason) = failure {
            self.outputs.push_back(Output::RequestDone {
                token,
                overlay,
                to,
                result: Err(reason),
            });
            return;
        }
        let id = loop {
            let id = self.rng.random::<u64>();
            if !self.requests.contains_key(&id) {
                break id;
            }
        };
        self.requests.insert(
            id,
            Request {
                overlay,
                via: via.clone(),
                to: to.clone(),
                deadline: now + self.config.timeout,
                token,
                job: None,
            },
        );
        self.send(
            via,
            Message::BridgeRequest {
                request: id,
                overlay,
                to,
            },
        );
    }

    /// We are A or C: send a signal of job `job` to the other end through `via`.
    /// Dropped (with a log) if the job is unknown or over.
    pub fn relay_signal(&mut self, via: P, job: u64, signal: S) {
        match self.endpoints.get(&(via.clone(), job)) {
            Some(end) => {
                let to = end.remote.clone();
                let from = self.local.clone();
                self.send(
                    via,
                    Message::Relay {
                        job,
                        from,
                        to,
                        signal,
                    },
                );
            }
            None => trace!(job, "signal of a finished job dropped"),
        }
    }

    /// We are A or C: the handshake of job `job` through `via` finished (for A: the
    /// arc is open, or failed).
    pub fn handshake_done(&mut self, via: &P, job: u64, result: Result<(), Failure<P>>) {
        let Some(end) = self.endpoints.remove(&(via.clone(), job)) else {
            return;
        };
        if end.side == Side::Opener {
            self.send(
                via.clone(),
                Message::BridgeResult {
                    job,
                    result: result.clone(),
                },
            );
            let request = self
                .requests
                .iter()
                .find(|(_, r)| r.job == Some(job) && &r.via == via)
                .map(|(id, _)| *id);
            if let Some(id) = request {
                self.finish_request(id, result);
            }
        }
    }

    /// We are the recipient of a relayed signal that failed verification.
    pub fn signal_rejected(&mut self, via: &P, job: u64, reason: String) {
        warn!(job, %reason, "relayed signal rejected");
        self.send(
            via.clone(),
            Message::RelayFailed {
                job,
                reason: Failure::SignalRejected(reason.clone()),
            },
        );
        if self.endpoints.remove(&(via.clone(), job)).is_some() {
            self.outputs.push_back(Output::Abort {
                via: via.clone(),
                job,
                reason: Failure::SignalRejected(reason),
            });
        }
    }

    /// Fails every job and request (on shutdown).
    pub fn shutdown(&mut self) {
        let jobs: Vec<u64> = self.jobs.keys().copied().collect();
        for job in jobs {
            self.fail_job(job, Failure::ShuttingDown, None);
        }
        let requests: Vec<u64> = self.requests.keys().copied().collect();
        for id in requests {
            self.finish_request(id, Err(Failure::ShuttingDown));
        }
        let ends: Vec<(P, u64)> = self.endpoints.keys().cloned().collect();
        for (via, job) in ends {
            self.endpoints.remove(&(via.clone(), job));
            self.outputs.push_back(Output::Abort {
                via,
                job,
                reason: Failure::ShuttingDown,
            });
        }
    }

    // ----- inputs -----

    /// A bridge message from neighbour `sender`.
    pub fn handle_message(&mut self, now: Instant, sender: P, message: Message<P, S>) {
        self.handle_message_checked(now, sender, message, |_| true);
    }

    /// As [`Bridge::handle_message`], with `runs_overlay` telling whether this
    /// peer runs a given overlay (a `ConnectTo` for another overlay is refused).
    pub fn handle_message_checked(
        &mut self,
        now: Instant,
        sender: P,
        message: Message<P, S>,
        runs_overlay: impl Fn(OverlayId) -> bool,
    ) {
        if !self.neighbours.contains(&sender) {
            self.stats.violations += 1;
            warn!(
                ?sender,
                "bridge message from a peer that is not a neighbour"
            );
            return;
        }
        match message {
            Message::ConnectTo {
                job,
                overlay,
                to,
                request,
            } => self.on_connect_to(now, sender, job, overlay, to, request, runs_overlay),
            Message::BridgeRequest {
                request,
                overlay,
                to,
            } => self.start_job(now, overlay, sender, to, None, Some(request)),
            Message::BridgeRefused { request, reason } => {
                if self.requests.get(&request).is_some_and(|r| r.via == sender) {
                    self.finish_request(request, Err(reason));
                }
            }
            Message::Relay {
                job,
                from,
                to,
                signal,
            } => self.on_relay(now, sender, job, from, to, signal),
            Message::RelayFailed { job, reason } => self.on_relay_failed(sender, job, reason),
            Message::BridgeResult { job, result } => self.on_bridge_result(sender, job, result),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_connect_to(
        &mut self,
        now: Instant,
        relay: P,
        job: u64,
        overlay: OverlayId,
        to: P,
        request: Option<u64>,
        runs_overlay: impl Fn(OverlayId) -> bool,
    ) {
        let refuse = |this: &mut Self, reason: Failure<P>| {
            this.send(
                relay.clone(),
                Message::BridgeResult {
                    job,
                    result: Err(reason),
                },
            );
        };
        if to == self.local {
            return refuse(self, Failure::SelfBridge);
        }
        if !runs_overlay(overlay) {
            return refuse(self, Failure::UnknownOverlay);
        }
        if self.endpoints.contains_key(&(relay.clone(), job)) {
            self.stats.violations += 1;
            return;
        }
        if self.endpoints_via(&relay) >= self.config.max_jobs_per_neighbour {
            return refuse(self, Failure::TooManyJobs);
        }
        if let Some(id) = request
            && let Some(r) = self.requests.get_mut(&id)
            && r.via == relay
        {
            r.job = Some(job);
        }
        self.endpoints.insert(
            (relay.clone(), job),
            Endpoint {
                side: Side::Opener,
                remote: to.clone(),
                deadline: now + self.config.timeout,
            },
        );
        self.outputs.push_back(Output::Connect {
            via: relay,
            job,
            overlay,
            to,
        });
    }

    fn on_relay(&mut self, now: Instant, sender: P, job: u64, from: P, to: P, signal: S) {
        if to == self.local {
            // We are an endpoint: A (answer from C) or C (offer from A).
            let key = (sender.clone(), job);
            if !self.endpoints.contains_key(&key) {
                if self.endpoints_via(&sender) >= self.config.max_jobs_per_neighbour {
                    self.send(
                        sender,
                        Message::RelayFailed {
                            job,
                            reason: Failure::TooManyJobs,
                        },
                    );
                    return;
                }
                self.endpoints.insert(
                    key,
                    Endpoint {
                        side: Side::Target,
                        remote: from.clone(),
                        deadline: now + self.config.timeout,
                    },
                );
            } else if self.endpoints[&key].remote != from {
                self.stats.violations += 1;
                return;
            }
            self.outputs.push_back(Output::Deliver {
                via: sender,
                job,
                from,
                signal,
            });
            return;
        }
        // We are B.
        let Some(j) = self.jobs.get(&job) else {
            self.send(
                sender,
                Message::RelayFailed {
                    job,
                    reason: Failure::UnknownJob,
                },
            );
            return;
        };
        let other = if sender == j.from {
            j.to.clone()
        } else if sender == j.to {
            j.from.clone()
        } else {
            self.stats.violations += 1;
            warn!(job, ?sender, "relay for a job the sender is not part of");
            return;
        };
        if from != sender || to != other {
            self.stats.violations += 1;
            self.fail_job(
                job,
                Failure::SignalRejected("signal header does not match the job".into()),
                None,
            );
            return;
        }
        if !self.neighbours.contains(&other) {
            self.fail_job(job, Failure::PeerGone(other), None);
            return;
        }
        self.stats.relayed_signals += 1;
        trace!(job, ?from, ?to, "signal relayed");
        self.send(
            other,
            Message::Relay {
                job,
                from,
                to,
                signal,
            },
        );
    }

    fn on_relay_failed(&mut self, sender: P, job: u64, reason: Failure<P>) {
        // As B: an endpoint gave up (it rejected a signal, for instance).
        if self
            .jobs
            .get(&job)
            .is_some_and(|j| j.from == sender || j.to == sender)
        {
            self.fail_job(job, reason, Some(&sender));
            return;
        }
        // As an endpoint: the relay gave up.
        if self.endpoints.remove(&(sender.clone(), job)).is_some() {
            self.outputs.push_back(Output::Abort {
                via: sender.clone(),
                job,
                reason: reason.clone(),
            });
            let request = self
                .requests
                .iter()
                .find(|(_, r)| r.job == Some(job) && r.via == sender)
                .map(|(id, _)| *id);
            if let Some(id) = request {
                self.finish_request(id, Err(reason));
            }
        }
    }

    fn on_bridge_result(&mut self, sender: P, job: u64, result: Result<(), Failure<P>>) {
        if self.jobs.get(&job).is_none_or(|j| j.from != sender) {
            trace!(job, "result of an unknown or finished job ignored");
            return;
        }
        let j = self.jobs.remove(&job).expect("checked");
        if result.is_ok() {
            self.stats.bridges_ok += 1;
        } else {
            self.stats.bridges_failed += 1;
        }
        debug!(job, ok = result.is_ok(), "bridge finished");
        self.outputs.push_back(Output::BridgeDone {
            job,
            overlay: j.overlay,
            from: j.from,
            to: j.to,
            token: j.token,
            result,
        });
    }

    /// Fails a job we relay, telling both endpoints but `skip`.
    fn fail_job(&mut self, job: u64, reason: Failure<P>, skip: Option<&P>) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        self.stats.bridges_failed += 1;
        debug!(job, %reason, "bridge failed");
        for peer in [j.from.clone(), j.to.clone()] {
            if Some(&peer) != skip && peer != self.local && self.neighbours.contains(&peer) {
                self.send(
                    peer,
                    Message::RelayFailed {
                        job,
                        reason: reason.clone(),
                    },
                );
            }
        }
        self.outputs.push_back(Output::BridgeDone {
            job,
            overlay: j.overlay,
            from: j.from,
            to: j.to,
            token: j.token,
            result: Err(reason),
        });
    }

    fn finish_request(&mut self, id: u64, result: Result<(), Failure<P>>) {
        if let Some(r) = self.requests.remove(&id) {
            self.outputs.push_back(Output::RequestDone {
                token: r.token,
                overlay: r.overlay,
                to: r.to,
                result,
            });
        }
    }

    /// Expires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let jobs: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| now >= j.deadline)
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            self.fail_job(job, Failure::Timeout, None);
        }
        let ends: Vec<(P, u64)> = self
            .endpoints
            .iter()
            .filter(|(_, e)| now >= e.deadline)
            .map(|(k, _)| k.clone())
            .collect();
        for (via, job) in ends {
            let end = self.endpoints.remove(&(via.clone(), job)).expect("listed");
            if end.side == Side::Opener {
                self.send(
                    via.clone(),
                    Message::BridgeResult {
                        job,
                        result: Err(Failure::Timeout),
                    },
                );
            }
            self.outputs.push_back(Output::Abort {
                via,
                job,
                reason: Failure::Timeout,
            });
        }
        let requests: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in requests {
            self.finish_request(id, Err(Failure::Timeout));
        }
    }
}
