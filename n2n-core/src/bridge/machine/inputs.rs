//! The bridge's inputs: messages from neighbours, one handler each.

use std::fmt;

use tracing::{debug, trace};

use super::{Bridge, Carried, Endpoint, RelaySize, Side};
use crate::bridge::{Failure, Message, Output};
use crate::time::Instant;
use crate::wire::ProtocolId;

impl<P, S> Bridge<P, S>
where
    P: Ord + Clone + fmt::Debug,
    S: Clone + RelaySize,
{
    // ----- inputs -----

    /// A bridge message from neighbour `sender`.
    pub fn handle_message(&mut self, now: Instant, sender: P, message: Message<P, S>) {
        if !self.neighbours.contains(&sender) {
            self.stats.violations += 1;
            // Counted (Stats::violations); logged at debug level, so that
            // a neighbour cannot flood the logs.
            debug!(
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
            } => self.on_connect_to(now, sender, job, overlay, to, request),
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
        overlay: ProtocolId,
        to: P,
        request: Option<u64>,
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
        if !self.overlays.contains(&overlay) {
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
                carried: Carried::default(),
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
        let size = signal.relay_size();
        if let Err(why) = self.take_token(now, &sender) {
            return self.over_budget(sender, job, to, why);
        }
        if to == self.local {
            // We are an endpoint: A (answer from C) or C (offer from A).
            let key = (sender.clone(), job);
            match self.endpoints.get_mut(&key) {
                Some(end) if end.remote != from => {
                    self.stats.violations += 1;
                    return;
                }
                Some(end) => {
                    if let Err(why) = end.carried.charge(&self.config, size) {
                        return self.over_budget(sender, job, to, why);
                    }
                }
                None => {
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
                    let mut carried = Carried::default();
                    if let Err(why) = carried.charge(&self.config, size) {
                        return self.over_budget(sender, job, to, why);
                    }
                    self.endpoints.insert(
                        key,
                        Endpoint {
                            side: Side::Target,
                            remote: from.clone(),
                            deadline: now + self.config.timeout,
                            carried,
                        },
                    );
                }
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
            debug!(job, ?sender, "relay for a job the sender is not part of");
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
        let config = &self.config;
        let charged = self
            .jobs
            .get_mut(&job)
            .map(|j| j.carried.charge(config, size));
        if let Some(Err(why)) = charged {
            return self.over_budget(sender, job, to, why);
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

    /// A relayed signal broke a budget: the job it belongs to fails (as B:
    /// both endpoints hear it; as an endpoint: the relay does, and our
    /// handshake of the job stops), the connections stay.
    fn over_budget(&mut self, sender: P, job: u64, to: P, why: String) {
        self.stats.relay_refusals += 1;
        debug!(job, ?sender, %why, "relayed signal over budget");
        let reason = Failure::RelayLimit(why);
        if self.jobs.contains_key(&job) && to != self.local {
            self.fail_job(job, reason, None);
            return;
        }
        let ended = self.endpoints.remove(&(sender.clone(), job));
        self.send(
            sender.clone(),
            Message::RelayFailed {
                job,
                reason: reason.clone(),
            },
        );
        if let Some(end) = ended {
            self.outputs.push_back(Output::Abort {
                via: sender.clone(),
                job,
                reason: reason.clone(),
            });
            if end.side == Side::Opener {
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
}
