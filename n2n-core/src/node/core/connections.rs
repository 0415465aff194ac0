//! The connection table: frames in and out, keepalive, idle timeout, linger,
//! purposeful closes and losses.

use bytes::Bytes;
use rand::Rng;
use tracing::{debug, info, warn};

use super::{ConnectionId, NodeCore, Output, Peer, SessionId, SignalPath};
use crate::arc::Direction;
use crate::identity::PeerId;
use crate::node::{ConnectError, Event};
use crate::overlay::{ArcCloseReason, Input};
use crate::time::Instant;
use crate::wire::{self, BridgeFailure, CloseReason, Message, ProtocolId};

impl NodeCore {
    /// A frame arrived on connection `conn`. Any byte string is accepted: one
    /// that does not decode, or breaks the protocol, is counted as a violation.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnectionId, frame: &[u8]) {
        self.now = now;
        if self.shutting_down {
            return;
        }
        let Some(peer) = self.conns.get(&conn).copied() else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_recv = now;
            p.ping_sent = false;
        }
        match wire::decode(frame) {
            Ok(message) => self.on_message(peer, message),
            Err(e) => self.violation(peer, &format!("undecodable frame: {e}")),
        }
        self.settle();
    }

    /// Connection `conn` failed or was closed by the transport.
    pub fn handle_connection_lost(&mut self, now: Instant, conn: ConnectionId, reason: String) {
        self.now = now;
        if let Some(peer) = self.conns.get(&conn).copied() {
            self.connection_lost(peer, reason);
            self.settle();
        }
    }

    pub(super) fn violation(&mut self, peer: PeerId, what: &str) {
        self.violations += 1;
        if self.may_warn() {
            warn!(peer = %peer.short(), "protocol violation: {what}");
        }
    }

    /// Whether a warning about a remote's misbehaviour may be logged now:
    /// at most [`super::WARNINGS_PER_SECOND`] per second, so that a
    /// neighbour cannot flood the logs (every anomaly is still counted in
    /// the [`crate::node::Snapshot`]). The first warning of a second says
    /// how many the last one suppressed.
    pub(super) fn may_warn(&mut self) -> bool {
        let now = self.now;
        let (start, logged, suppressed) = &mut self.warnings;
        if now.saturating_duration_since(*start) >= std::time::Duration::from_secs(1) {
            if *suppressed > 0 {
                warn!(
                    suppressed = *suppressed,
                    "warnings about remotes suppressed in the last second"
                );
            }
            *start = now;
            *logged = 0;
            *suppressed = 0;
        }
        if *logged < super::WARNINGS_PER_SECOND {
            *logged += 1;
            true
        } else {
            *suppressed += 1;
            false
        }
    }

    pub(super) fn send_control(&mut self, peer: PeerId, message: &Message) {
        let frame = match wire::encode(message) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                warn!(error = %e, "cannot encode control message");
                return;
            }
        };
        if let Some(p) = self.peers.get(&peer) {
            let conn = p.conn;
            self.push(Output::Transmit { conn, frame });
        }
    }

    /// A handshake gave a connection to `remote`: it becomes a neighbour.
    pub(super) fn add_connection(&mut self, remote: PeerId) -> ConnectionId {
        self.next_conn += 1;
        let conn = ConnectionId(self.next_conn);
        self.peers.insert(
            remote,
            Peer {
                conn,
                last_recv: self.now,
                ping_sent: false,
                linger_until: None,
            },
        );
        self.conns.insert(conn, remote);
        self.bridge.neighbour_up(remote);
        info!(peer = %remote.short(), "connected");
        self.emit(Event::Connected { peer: remote });
        self.connection_input(remote, true);
        self.refresh_linger(remote);
        conn
    }

    pub(super) fn connection_timeouts(&mut self, now: Instant) {
        let mut lost = Vec::new();
        let mut expired = Vec::new();
        let mut pings = Vec::new();
        for (id, peer) in &mut self.peers {
            if now >= peer.last_recv + self.config.idle_timeout {
                lost.push(*id);
            } else if !peer.ping_sent && now >= peer.last_recv + self.config.keepalive {
                peer.ping_sent = true;
                pings.push(*id);
            }
            if peer.linger_until.is_some_and(|t| now >= t) {
                expired.push(*id);
            }
        }
        for id in pings {
            let nonce = self.rng.random();
            self.send_control(id, &Message::Ping { nonce });
        }
        for id in lost {
            self.connection_lost(id, "no traffic within the idle timeout".into());
        }
        for id in expired {
            if self.peers.contains_key(&id) && self.arc_total(&id) == 0 {
                debug!(peer = %id.short(), "linger expired, closing connection");
                self.close_connection(
                    id,
                    CloseReason::Idle,
                    "no arcs left after linger".into(),
                    ArcCloseReason::Closed,
                );
            }
        }
    }

    /// Closes a connection on purpose: tells the remote, then closes.
    pub(super) fn close_connection(
        &mut self,
        peer: PeerId,
        why: CloseReason,
        reason: String,
        arc_reason: ArcCloseReason,
    ) {
        self.send_control(peer, &Message::Close { reason: why });
        self.drop_peer(peer, reason, arc_reason);
    }

    pub(super) fn connection_lost(&mut self, peer: PeerId, reason: String) {
        if self.may_warn() {
            warn!(peer = %peer.short(), %reason, "connection lost");
        }
        self.drop_peer(peer, reason.clone(), ArcCloseReason::PeerDown(reason));
    }

    /// Forgets a neighbour: its arcs close (one event per occurrence), the bridge
    /// jobs and handshakes that went through it fail.
    fn drop_peer(&mut self, peer: PeerId, reason: String, arc_reason: ArcCloseReason) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.conns.remove(&p.conn);
        // On a purposeful close the frames queued before (`Close` among them)
        // still go out; on a loss everything stops now.
        let flush = !matches!(arc_reason, ArcCloseReason::PeerDown(_));
        self.push(Output::Close {
            conn: p.conn,
            flush,
        });
        let overlays: Vec<ProtocolId> = self.views.keys().copied().collect();
        for overlay in overlays {
            let Some(views) = self.views.get_mut(&overlay) else {
                continue;
            };
            let out = views.outview.remove_all(&peer);
            let inn = views.inview.remove_all(&peer);
            for _ in 0..out {
                self.arc_event(overlay, peer, Direction::Outgoing, Some(arc_reason.clone()));
            }
            for _ in 0..inn {
                self.arc_event(overlay, peer, Direction::Incoming, Some(arc_reason.clone()));
            }
        }
        // Jobs relayed by or through the peer fail.
        self.bridge.neighbour_down(&peer);
        // Handshakes relayed through the peer.
        let sessions: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.path, SignalPath::Relay { via, .. } if via == peer))
            .map(|(id, _)| *id)
            .collect();
        for session in sessions {
            self.fail_session(session, ConnectError::Bridge(BridgeFailure::PeerGone(peer)));
        }
        self.emit(Event::Disconnected { peer, reason });
        self.connection_input(peer, false);
    }

    fn on_message(&mut self, from: PeerId, message: Message) {
        match message {
            Message::ArcOpen { overlay } => self.on_arc_open(from, self.named(overlay)),
            Message::ArcClose { overlay } => self.on_arc_close(from, self.named(overlay)),
            Message::ArcRefused { overlay } => self.on_arc_refused(from, self.named(overlay)),
            Message::Bridge(message) => self.bridge.handle_message(self.now, from, *message),
            Message::Overlay { overlay, payload } => match self.overlay_index(overlay) {
                Some(idx) => self
                    .overlay_inputs
                    .push_back((idx, Input::Message { from, payload })),
                None => self.violation(from, "message for an overlay this node does not run"),
            },
            Message::Data { protocol, payload } => self.emit(Event::Message {
                from,
                protocol: self.named(protocol),
                payload: Bytes::from(payload),
            }),
            Message::Ping { nonce } => self.send_control(from, &Message::Pong { nonce }),
            Message::Pong { .. } => {}
            Message::Close { reason } => self.on_close(from, reason),
        }
    }

    fn on_close(&mut self, from: PeerId, reason: CloseReason) {
        debug!(peer = %from.short(), ?reason, "remote closed the connection");
        // After an idle close, our arcs to the remote were opened after it
        // decided (it saw none): they never reached it. They failed to open;
        // the remote did not crash.
        let mut unopened = Vec::new();
        if reason == CloseReason::Idle {
            for (overlay, views) in &mut self.views {
                let n = views.outview.remove_all(&from);
                unopened.extend(std::iter::repeat_n(*overlay, n as usize));
            }
        }
        for overlay in &unopened {
            self.arc_event(
                *overlay,
                from,
                Direction::Outgoing,
                Some(ArcCloseReason::Closed),
            );
        }
        let arc_reason = match reason {
            CloseReason::Idle => ArcCloseReason::PeerDown("remote closed the connection".into()),
            CloseReason::Shutdown => ArcCloseReason::PeerDown("remote shut down".into()),
        };
        self.drop_peer(from, "closed by remote".into(), arc_reason);
        for overlay in unopened {
            self.connect_failed(
                Some(overlay),
                from,
                ConnectError::Transport(
                    "the remote closed the idle connection before the arc reached it".into(),
                ),
            );
        }
    }
}
