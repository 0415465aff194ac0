//! The bridge state machine: jobs relayed (B), requests made (A), handshakes
//! taken part in (A and C), and their timeouts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace};

use super::{Config, Failure, Message, Output, Stats};
use crate::time::Instant;
use crate::wire::ProtocolId;

mod budget;
mod inputs;

pub use budget::RelaySize;
use budget::{Bucket, Carried};

#[derive(Debug)]
struct RelayJob<P> {
    overlay: ProtocolId,
    from: P,
    to: P,
    deadline: Instant,
    token: Option<u64>,
    carried: Carried,
}

#[derive(Debug)]
struct Request<P> {
    overlay: ProtocolId,
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
    carried: Carried,
}

/// The bridge protocol state of one peer, in all three roles (A, B, C).
///
/// Methods: getters; `handle_*`, `neighbour_*`, `handshake_done`,
/// `signal_rejected` for inputs; `bridge`, `request`, `relay_signal` for
/// commands; `poll_output` and `poll_timeout` for outputs.
pub struct Bridge<P, S> {
    local: P,
    config: Config,
    /// The overlays this peer runs: arcs of any other are refused.
    overlays: BTreeSet<ProtocolId>,
    rng: ChaCha8Rng,
    neighbours: BTreeSet<P>,
    /// Jobs we relay (we are B).
    jobs: BTreeMap<u64, RelayJob<P>>,
    /// Requests we made (we are A).
    requests: BTreeMap<u64, Request<P>>,
    /// Jobs we take part in as A or C, by (relay, job).
    endpoints: BTreeMap<(P, u64), Endpoint<P>>,
    /// Relay tokens per neighbour (see [`Config::relay_rate`]).
    buckets: BTreeMap<P, Bucket>,
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
    S: Clone + RelaySize,
{
    /// A bridge for peer `local`, which runs `overlays` (a bridge for any
    /// other overlay is refused with [`Failure::UnknownOverlay`]); `seed`
    /// seeds the job ids.
    pub fn new(
        local: P,
        config: Config,
        overlays: impl IntoIterator<Item = ProtocolId>,
        seed: u64,
    ) -> Self {
        Self {
            local,
            config,
            overlays: overlays.into_iter().collect(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            neighbours: BTreeSet::new(),
            jobs: BTreeMap::new(),
            requests: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            buckets: BTreeMap::new(),
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
        self.buckets.remove(peer);
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
    pub fn bridge(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        from: P,
        to: P,
        token: Option<u64>,
    ) {
        self.start_job(now, overlay, from, to, token, None);
    }

    fn start_job(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        from: P,
        to: P,
        token: Option<u64>,
        request: Option<u64>,
    ) {
        let failure = if !self.overlays.contains(&overlay) {
            Some(Failure::UnknownOverlay)
        } else if from == to {
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
                carried: Carried::default(),
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
    pub fn request(&mut self, now: Instant, overlay: ProtocolId, via: P, to: P, token: u64) {
        let failure = if !self.overlays.contains(&overlay) {
            Some(Failure::UnknownOverlay)
        } else if to == self.local {
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
        debug!(job, %reason, "relayed signal rejected");
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
