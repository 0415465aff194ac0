//! The glue between the node and its bridge machine: bridge commands, and
//! what the bridge asks of the node (send, connect through a relay, deliver
//! a relayed signal, abort, report).

use super::{BridgeOrigin, Completion, NodeCore, SessionId, SignalPath, Ticket, Waiter};
use crate::bridge::Output as BridgeOutput;
use crate::identity::PeerId;
use crate::node::{ConnectError, Event};
use crate::overlay::{Admission, Input};
use crate::signal::SignedSignal;
use crate::time::Instant;
use crate::wire::{BridgeFailure, Message, ProtocolId};
use tracing::debug;

impl NodeCore {
    /// Bridge, on peer B: makes neighbour `from` open an arc in `overlay` to
    /// neighbour `to` (or to this node) through this node. The outcome comes
    /// as [`super::Output::Done`] with `ticket` ([`Completion::Bridge`]), and
    /// as [`Event::BridgeDone`].
    pub fn bridge(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        from: PeerId,
        to: PeerId,
        ticket: Option<Ticket>,
    ) {
        self.now = now;
        let origin = ticket.map(BridgeOrigin::Ticket);
        if self.shutting_down {
            if let Some(ticket) = ticket {
                self.done(ticket, Completion::Bridge(Err(BridgeFailure::ShuttingDown)));
            }
        } else {
            self.start_bridge(overlay, from, to, origin);
        }
        self.settle();
    }

    /// On peer A: asks neighbour `via` to connect this node to its neighbour
    /// `to` and opens one arc to `to` in `overlay` (only the arc if already
    /// connected). The outcome comes as [`super::Output::Done`] with `ticket`
    /// ([`Completion::Connect`]).
    pub fn request_bridge(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        via: PeerId,
        to: PeerId,
        ticket: Option<Ticket>,
    ) {
        self.now = now;
        let early = if self.shutting_down {
            Some(Err(ConnectError::Shutdown))
        } else if to == self.local {
            Some(Err(ConnectError::SelfConnect))
        } else if !self.protocols.contains(&overlay) {
            Some(Err(crate::node::ArcError::UnknownOverlay(overlay).into()))
        } else if self.peers.contains_key(&to) {
            Some(self.add_arc(overlay, to).map_err(ConnectError::from))
        } else {
            None
        };
        match early {
            Some(result) => {
                if let Some(ticket) = ticket {
                    self.done(ticket, Completion::Connect(result));
                }
            }
            None => {
                let token = self.token();
                self.request_tickets.insert(token, ticket);
                self.bridge.request(now, overlay, via, to, token);
            }
        }
        self.settle();
    }

    /// We are B: make neighbour `from` open an arc to `to` through us.
    pub(super) fn start_bridge(
        &mut self,
        overlay: ProtocolId,
        from: PeerId,
        to: PeerId,
        origin: Option<BridgeOrigin>,
    ) {
        let token = self.token();
        if let Some(origin) = origin {
            self.bridge_origins.insert(token, origin);
        }
        self.bridge.bridge(self.now, overlay, from, to, Some(token));
    }

    /// Carries out what the bridge machine asks; whether it asked anything.
    pub(super) fn drain_bridge(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.bridge.poll_output() {
            any = true;
            self.on_bridge_output(output);
        }
        any
    }

    fn sessions_on(&self, path: SignalPath) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.path == path)
            .map(|(id, _)| *id)
            .collect()
    }

    fn on_bridge_output(&mut self, output: BridgeOutput<PeerId, SignedSignal>) {
        match output {
            BridgeOutput::Send { to, message } => {
                self.send_control(to, &Message::Bridge(Box::new(message)));
            }
            BridgeOutput::Connect {
                via,
                job,
                overlay,
                to,
            } => {
                let request = Admission::ConnectTo { relay: via, to };
                let verdict = match self.overlay_index(overlay) {
                    Some(idx) => self.overlays[idx].overlay.admit(self.now, &request),
                    None => Ok(()),
                };
                if let Err(denied) = verdict {
                    self.refusals += 1;
                    debug!(relay = %via.short(), to = %to.short(), %denied, "bridge order refused");
                    self.bridge
                        .handshake_done(&via, job, Err(BridgeFailure::Refused));
                    return;
                }
                let waiters = vec![Waiter::Arc(overlay), Waiter::Job { relay: via, job }];
                self.dial(to, SignalPath::Relay { via, job }, waiters);
            }
            BridgeOutput::Deliver {
                via,
                job,
                from,
                signal,
            } => {
                if signal.signal.from != from {
                    self.violations += 1;
                    self.bridge.signal_rejected(
                        &via,
                        job,
                        "signal author does not match the relay header".into(),
                    );
                    return;
                }
                let path = SignalPath::Relay { via, job };
                self.on_signal(signal, path);
                // A signal that fed no handshake (a late candidate of one that
                // finished, an offer refused or lost to glare) must not keep the
                // job the bridge opened for it until its timeout.
                if self.sessions_on(path).is_empty()
                    && self.bridge.is_endpoint(&via, job)
                    && !self.bridge.is_opener(&via, job)
                {
                    self.bridge.handshake_done(
                        &via,
                        job,
                        Err(BridgeFailure::Transport(
                            "no handshake takes this relayed signal".into(),
                        )),
                    );
                }
            }
            BridgeOutput::Abort { via, job, reason } => {
                for id in self.sessions_on(SignalPath::Relay { via, job }) {
                    self.fail_session(id, ConnectError::Bridge(reason.clone()));
                }
            }
            BridgeOutput::BridgeDone {
                job,
                overlay,
                from,
                to,
                token,
                result,
            } => {
                match token.and_then(|t| self.bridge_origins.remove(&t)) {
                    Some(BridgeOrigin::Ticket(ticket)) => {
                        self.done(ticket, Completion::Bridge(result.clone()));
                    }
                    Some(BridgeOrigin::Overlay(idx)) => {
                        let input = match &result {
                            Ok(()) => Input::BridgeDone { from, to },
                            Err(reason) => Input::BridgeFailed {
                                from,
                                to,
                                reason: reason.to_string(),
                            },
                        };
                        self.overlay_inputs.push_back((idx, input));
                    }
                    None => {}
                }
                self.emit(Event::BridgeDone {
                    job,
                    overlay,
                    from,
                    to,
                    result,
                });
            }
            BridgeOutput::RequestDone {
                token,
                overlay,
                to,
                result,
            } => {
                let result = result.map_err(ConnectError::Bridge);
                if let Err(e) = &result {
                    self.connect_failed(Some(overlay), to, e.clone());
                }
                if let Some(Some(ticket)) = self.request_tickets.remove(&token) {
                    self.done(ticket, Completion::Connect(result));
                }
            }
        }
    }
}
