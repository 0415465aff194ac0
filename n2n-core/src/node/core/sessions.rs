//! Handshake sessions: starting them, signing and routing the local
//! transport's signals, verifying the remote's, glare, and what waits on a
//! handshake (arcs, bridge jobs, commands).

use rand::Rng;
use tracing::{debug, trace, warn};

use super::{Completion, ConnectionId, NodeCore, Output, PathId, Session, SessionId, SignalPath};
use super::{Ticket, Waiter};
use crate::identity::PeerId;
use crate::node::SignalAuth;
use crate::node::{ConnectError, Event};
use crate::overlay::Input;
use crate::signal::{Role, Signal, SignalError, SignedSignal};
use crate::time::Instant;
use crate::transport::TransportError;
use crate::wire::{BridgeFailure, ProtocolId};

impl NodeCore {
    /// Connects to `peer` through signaling path `path` and, if `overlay` is
    /// given, opens one arc to it. The outcome comes as [`Output::Done`] with
    /// `ticket` ([`Completion::Connect`]). If already connected, only the arc
    /// is added.
    pub fn connect(
        &mut self,
        now: Instant,
        peer: PeerId,
        path: PathId,
        overlay: Option<ProtocolId>,
        ticket: Option<Ticket>,
    ) {
        self.now = now;
        let mut waiters = Vec::new();
        if let Some(o) = overlay {
            waiters.push(Waiter::Arc(o));
        }
        if let Some(t) = ticket {
            waiters.push(Waiter::Ticket(t));
        }
        if self.shutting_down {
            self.fail_waiters(peer, waiters, ConnectError::Shutdown);
        } else {
            self.dial(peer, SignalPath::External(path), waiters);
        }
        self.settle();
    }

    /// The local transport produced `payload` for the remote of `session`: the
    /// core signs it and sends it on the session's path.
    pub fn handle_handshake_signal(&mut self, now: Instant, session: SessionId, payload: Vec<u8>) {
        self.now = now;
        self.send_signal(session, payload);
        self.settle();
    }

    /// The transport finished handshake `session`. On success, returns the id
    /// under which the core knows the new connection; `None` means the driver
    /// closes it (the handshake was abandoned, or another connection to the
    /// same peer won).
    pub fn handle_handshake_done(
        &mut self,
        now: Instant,
        session: SessionId,
        result: Result<(), TransportError>,
    ) -> Option<ConnectionId> {
        self.now = now;
        let s = self.sessions.remove(&session)?;
        if let SignalPath::Relay { via, job } = s.path {
            // As the target of a bridge, the job ends with the handshake.
            let outcome = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| BridgeFailure::Transport(e.to_string()));
            if !self.bridge.is_opener(&via, job) {
                self.bridge.handshake_done(&via, job, outcome);
            }
        }
        if result.is_ok()
            && !self.peers.contains_key(&s.remote)
            && self.peers.len() >= self.config.max_peers
            && let Some(idle) = self.lingering_victim()
        {
            // A lingering connection carries no arc: it makes room.
            debug!(peer = %idle.short(), "lingering connection evicted for a new one (max_peers)");
            self.close_connection(
                idle,
                crate::wire::CloseReason::Idle,
                "evicted for a new connection (max_peers)".into(),
                crate::overlay::ArcCloseReason::Closed,
            );
        }
        let conn = match result {
            Ok(())
                if !self.peers.contains_key(&s.remote)
                    && self.peers.len() >= self.config.max_peers =>
            {
                debug!(peer = %s.remote.short(), "connection refused: max_peers reached");
                self.fail_waiters(s.remote, s.waiters, ConnectError::TooManyPeers);
                None
            }
            Ok(()) if s.role == Role::Acceptor && self.peers.contains_key(&s.remote) => {
                // The neighbour dialed again: it lost (or restarted without)
                // the connection we hold. The new one replaces it.
                debug!(peer = %s.remote.short(), "connection replaced by the peer's new dial");
                self.connection_lost(s.remote, "replaced by the peer's new connection".into());
                let conn = (!self.shutting_down).then(|| self.add_connection(s.remote));
                self.serve_waiters(s.remote, s.waiters);
                conn
            }
            Ok(()) => {
                let conn = if self.peers.contains_key(&s.remote) || self.shutting_down {
                    debug!(peer = %s.remote.short(), "duplicate connection closed");
                    None
                } else {
                    Some(self.add_connection(s.remote))
                };
                self.serve_waiters(s.remote, s.waiters);
                conn
            }
            Err(e) => {
                debug!(peer = %s.remote.short(), error = %e, "handshake failed");
                self.fail_waiters(s.remote, s.waiters, ConnectError::from(e));
                self.refresh_linger(s.remote);
                None
            }
        };
        self.settle();
        conn
    }

    /// A signed signal arrived on signaling path `path`.
    pub fn handle_signal(&mut self, now: Instant, path: PathId, signal: SignedSignal) {
        self.now = now;
        if self.shutting_down {
            return;
        }
        self.on_signal(signal, SignalPath::External(path));
        self.settle();
    }

    /// Connects to `remote` (or joins a handshake in progress) and then serves `waiters`.
    pub(super) fn dial(&mut self, remote: PeerId, path: SignalPath, waiters: Vec<Waiter>) {
        if remote == self.local {
            self.fail_waiters(remote, waiters, ConnectError::SelfConnect);
            return;
        }
        if self.peers.contains_key(&remote) {
            self.serve_waiters(remote, waiters);
            return;
        }
        if let Some(session) = self.sessions.values_mut().find(|s| s.remote == remote) {
            session.waiters.extend(waiters);
            return;
        }
        if self.handshakes(Some(Role::Dialer)) >= self.config.max_handshakes {
            self.fail_waiters(remote, waiters, ConnectError::TooManyHandshakes);
            return;
        }
        if self.peers_and_handshakes(Some(Role::Dialer)) >= self.config.max_peers
            && self.lingering_victim().is_none()
        {
            self.fail_waiters(remote, waiters, ConnectError::TooManyPeers);
            return;
        }
        let wire = self.rng.random::<u64>();
        self.start_session(wire, remote, Role::Dialer, path, waiters, None);
    }

    fn start_session(
        &mut self,
        wire: u64,
        remote: PeerId,
        role: Role,
        path: SignalPath,
        waiters: Vec<Waiter>,
        first: Option<Vec<u8>>,
    ) {
        self.next_session += 1;
        let session = SessionId(self.next_session);
        debug!(peer = %remote.short(), ?role, ?path, ?session, "handshake started");
        self.sessions.insert(
            session,
            Session {
                remote,
                wire,
                role,
                path,
                next_seq: 0,
                remote_seq: (role == Role::Acceptor).then_some(0),
                deadline: self.now + self.config.handshake_timeout,
                waiters,
            },
        );
        if let Some(p) = self.peers.get_mut(&remote) {
            p.linger_until = None;
        }
        self.push(Output::StartHandshake {
            session,
            remote,
            role,
            first,
        });
    }

    fn send_signal(&mut self, session: SessionId, payload: Vec<u8>) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let signal = Signal {
            from: self.local,
            to: s.remote,
            session: s.wire,
            role: s.role,
            seq: s.next_seq,
            transport: self.transport.clone(),
            payload,
        };
        s.next_seq += 1;
        let path = s.path;
        let freshness = self.freshness();
        let signed = match self.config.signal_auth {
            SignalAuth::Ed25519 => signal.sign_fresh(&self.keypair, freshness),
            SignalAuth::UnsignedForSimulation => Ok(SignedSignal {
                version: crate::signal::SIGNAL_VERSION,
                signal,
                freshness: Box::new(freshness),
                signature: [0; 64],
            }),
        };
        let signed = match signed {
            Ok(signed) => signed,
            Err(e) => {
                self.fail_session(session, ConnectError::Transport(e.to_string()));
                return;
            }
        };
        match path {
            SignalPath::External(path) => self.push(Output::SendSignal {
                path,
                signal: signed,
            }),
            SignalPath::Relay { via, job } => self.bridge.relay_signal(via, job, signed),
        }
    }

    /// A signed signal arrived for us, from a signaling path or a relaying neighbour.
    pub(super) fn on_signal(&mut self, signed: SignedSignal, path: SignalPath) {
        let verified = match self.config.signal_auth {
            SignalAuth::Ed25519 => signed.verify(&self.local).map(|_| ()),
            SignalAuth::UnsignedForSimulation if signed.signal.to != self.local => {
                Err(SignalError::WrongRecipient {
                    to: signed.signal.to,
                    us: self.local,
                })
            }
            SignalAuth::UnsignedForSimulation => Ok(()),
        }
        .and_then(|()| self.check_freshness(&signed));
        let signal = match verified {
            Ok(()) => signed.signal,
            Err(e) => {
                self.violations += 1;
                if self.may_warn() {
                    warn!(error = %e, ?path, "signal rejected");
                }
                if let SignalPath::Relay { via, job } = path {
                    self.bridge.signal_rejected(&via, job, e.to_string());
                    // A handshake relayed by this job cannot be trusted to finish.
                    let ours: Vec<SessionId> = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.path == path)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ours {
                        self.fail_session(
                            id,
                            ConnectError::Bridge(BridgeFailure::SignalRejected(e.to_string())),
                        );
                    }
                }
                return;
            }
        };
        if signal.transport != self.transport {
            self.violations += 1;
            if self.may_warn() {
                warn!(transport = %signal.transport, "signal for another transport ignored");
            }
            return;
        }
        let remote = signal.from;
        let existing = self
            .sessions
            .iter_mut()
            .find(|(_, s)| s.remote == remote && s.wire == signal.session);
        if let Some((&session, s)) = existing {
            if s.role == signal.role {
                debug!("signal for a session of the same role ignored");
                return;
            }
            if s.remote_seq.is_some_and(|last| signal.seq <= last) {
                self.refuse_replay(&signal);
                return;
            }
            s.remote_seq = Some(signal.seq);
            self.push(Output::HandshakeSignal {
                session,
                payload: signal.payload,
            });
            return;
        }
        if signal.role != Role::Dialer || signal.seq != 0 {
            trace!(
                session = signal.session,
                "late signal of a finished handshake ignored"
            );
            return;
        }
        if !self.remember_offer(remote, signal.session) {
            self.refuse_replay(&signal);
            return;
        }
        // Glare: both sides dial at once. The dial of the smaller peer id wins.
        // A fresh offer replaces a pending acceptor session of the same
        // remote (it gave that one up: a retried dial, a restart), and a
        // connection to a neighbour is replaced once its new handshake is
        // done (see `handle_handshake_done`).
        let ours = self
            .sessions
            .iter()
            .find(|(_, s)| s.remote == remote)
            .map(|(id, s)| (*id, s.role));
        let mut waiters = Vec::new();
        if let Some((id, role)) = ours {
            if role == Role::Dialer && self.local < remote {
                debug!(peer = %remote.short(), "glare: our dial wins");
                return;
            }
            if role == Role::Acceptor {
                debug!(peer = %remote.short(), "a fresh offer replaces a pending one");
            } else {
                debug!(peer = %remote.short(), "glare: their dial wins");
            }
            if let Some(lost) = self.sessions.remove(&id) {
                waiters = lost.waiters;
                if let SignalPath::Relay { via, job } = lost.path
                    && lost.path != path
                    && !self.bridge.is_opener(&via, job)
                {
                    self.bridge.handshake_done(
                        &via,
                        job,
                        Err(BridgeFailure::Transport("replaced by a fresh offer".into())),
                    );
                }
            }
            self.push(Output::AbortHandshake { session: id });
        }
        if self.handshakes(Some(Role::Acceptor)) >= self.config.max_inbound_handshakes
            || (self.peers_and_handshakes(None) >= self.config.max_peers
                && self.lingering_victim().is_none())
        {
            self.refusals += 1;
            debug!(peer = %remote.short(), "incoming handshake refused: limits reached");
            self.fail_waiters(remote, waiters, ConnectError::TooManyHandshakes);
            return;
        }
        self.start_session(
            signal.session,
            remote,
            Role::Acceptor,
            path,
            waiters,
            Some(signal.payload),
        );
    }

    fn refuse_replay(&mut self, signal: &Signal) {
        self.refusals += 1;
        let e = SignalError::Replayed {
            session: signal.session,
            seq: signal.seq,
        };
        debug!(peer = %signal.from.short(), error = %e, "signal refused");
    }

    /// The lingering neighbour (no arc, no handshake) that lingered longest.
    fn lingering_victim(&self) -> Option<PeerId> {
        self.peers
            .iter()
            .filter_map(|(id, p)| p.linger_until.map(|t| (t, *id)))
            .filter(|(_, id)| {
                self.arc_total(id) == 0 && !self.sessions.values().any(|s| s.remote == *id)
            })
            .min()
            .map(|(_, id)| id)
    }

    /// Handshakes in flight in `role` (both roles with `None`).
    fn handshakes(&self, role: Option<Role>) -> usize {
        self.sessions
            .values()
            .filter(|s| role.is_none_or(|r| s.role == r))
            .count()
    }

    /// Neighbours plus handshakes in flight (in `role`, or both) with peers
    /// that are not neighbours yet: what `max_peers` bounds. Our dials count
    /// only our own, so that offers cannot block them.
    fn peers_and_handshakes(&self, role: Option<Role>) -> usize {
        self.peers.len()
            + self
                .sessions
                .values()
                .filter(|s| role.is_none_or(|r| s.role == r))
                .filter(|s| !self.peers.contains_key(&s.remote))
                .count()
    }

    pub(super) fn fail_session(&mut self, session: SessionId, error: ConnectError) {
        if let Some(s) = self.sessions.remove(&session) {
            self.push(Output::AbortHandshake { session });
            if let SignalPath::Relay { via, job } = s.path
                && !self.bridge.is_opener(&via, job)
            {
                self.bridge.handshake_done(
                    &via,
                    job,
                    Err(BridgeFailure::Transport(error.to_string())),
                );
            }
            self.fail_waiters(s.remote, s.waiters, error);
            self.refresh_linger(s.remote);
        }
    }

    pub(super) fn serve_waiters(&mut self, remote: PeerId, waiters: Vec<Waiter>) {
        let mut opened = false;
        for w in waiters {
            match w {
                Waiter::Arc(overlay) => match self.add_arc(overlay, remote) {
                    Ok(()) => opened = true,
                    Err(e) => self.connect_failed(Some(overlay), remote, e.into()),
                },
                Waiter::Job { relay, job } => {
                    // Reported once the arc (served before) is open.
                    let result = if opened {
                        Ok(())
                    } else {
                        Err(BridgeFailure::Transport(
                            "the arc could not be opened".into(),
                        ))
                    };
                    self.bridge.handshake_done(&relay, job, result);
                }
                Waiter::Ticket(ticket) => self.done(ticket, Completion::Connect(Ok(()))),
            }
        }
        self.refresh_linger(remote);
    }

    pub(super) fn fail_waiters(
        &mut self,
        remote: PeerId,
        waiters: Vec<Waiter>,
        error: ConnectError,
    ) {
        let mut reported = false;
        for w in waiters {
            match w {
                Waiter::Arc(overlay) => {
                    reported = true;
                    self.connect_failed(Some(overlay), remote, error.clone());
                }
                Waiter::Job { relay, job } => {
                    let failure = match &error {
                        ConnectError::Bridge(f) => f.clone(),
                        ConnectError::Timeout => BridgeFailure::Timeout,
                        other => BridgeFailure::Transport(other.to_string()),
                    };
                    self.bridge.handshake_done(&relay, job, Err(failure));
                }
                Waiter::Ticket(ticket) => {
                    self.done(ticket, Completion::Connect(Err(error.clone())));
                }
            }
        }
        if !reported {
            self.emit(Event::ConnectFailed {
                overlay: None,
                peer: remote,
                reason: error,
            });
        }
    }

    pub(super) fn connect_failed(
        &mut self,
        overlay: Option<ProtocolId>,
        peer: PeerId,
        reason: ConnectError,
    ) {
        if let Some(idx) = overlay.and_then(|o| self.overlay_index(o)) {
            self.overlay_inputs.push_back((
                idx,
                Input::ConnectFailed {
                    peer,
                    reason: reason.to_string(),
                },
            ));
        }
        self.emit(Event::ConnectFailed {
            overlay,
            peer,
            reason,
        });
    }
}
