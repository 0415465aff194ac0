//! The arc views: `ArcOpen` / `ArcClose` both ways, per-peer limits, and the
//! linger of connections that carry no arc.

use super::NodeCore;
use crate::arc::Direction;
use crate::identity::PeerId;
use crate::node::{ArcError, Event};
use crate::overlay::{Admission, ArcCloseReason, Input};
use crate::time::Instant;
use crate::wire::{Message, ProtocolId};
use tracing::debug;

impl NodeCore {
    /// Opens one more arc in `overlay` to the connected neighbour `peer` (no
    /// handshake: an `ArcOpen` keeps the neighbour's inview exact).
    ///
    /// # Errors
    /// [`ArcError::NotConnected`], [`ArcError::UnknownOverlay`],
    /// [`ArcError::TooManyArcs`], [`ArcError::Shutdown`].
    pub fn open_arc(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        peer: PeerId,
    ) -> Result<(), ArcError> {
        self.arc_command(now, |core| core.add_arc(overlay, peer))
    }

    /// Closes one arc in `overlay` to `peer` and tells it (`ArcClose`). The
    /// connection lingers when no arc is left.
    ///
    /// # Errors
    /// [`ArcError::NoSuchArc`] if there is none.
    pub fn close_arc(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        peer: PeerId,
    ) -> Result<(), ArcError> {
        self.arc_command(now, |core| core.remove_arc(overlay, peer))
    }

    /// Hands `contact`, a connected neighbour, to `overlay` as its way into the
    /// network (`Input::Join`). For an application protocol with no overlay
    /// driver, opens one arc to the contact instead.
    ///
    /// # Errors
    /// [`ArcError::NotConnected`] if `contact` is not a neighbour; see
    /// [`NodeCore::open_arc`].
    pub fn join_overlay(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        contact: PeerId,
    ) -> Result<(), ArcError> {
        self.arc_command(now, |core| {
            if !core.peers.contains_key(&contact) {
                Err(ArcError::NotConnected(contact))
            } else if let Some(idx) = core.overlay_index(overlay) {
                core.overlay_inputs
                    .push_back((idx, Input::Join { contact }));
                Ok(())
            } else {
                core.add_arc(overlay, contact)
            }
        })
    }

    /// Runs an arc command at `now` (refused once shut down), then settles.
    fn arc_command(
        &mut self,
        now: Instant,
        command: impl FnOnce(&mut Self) -> Result<(), ArcError>,
    ) -> Result<(), ArcError> {
        self.now = now;
        if self.shutting_down {
            return Err(ArcError::Shutdown);
        }
        let result = command(self);
        self.settle();
        result
    }

    pub(super) fn arc_total(&self, peer: &PeerId) -> u32 {
        self.views
            .values()
            .map(|v| v.inview.count(peer) + v.outview.count(peer))
            .sum()
    }

    pub(super) fn refresh_linger(&mut self, peer: PeerId) {
        let idle = self.arc_total(&peer) == 0 && !self.sessions.values().any(|s| s.remote == peer);
        let until = self.now + self.config.linger;
        if let Some(p) = self.peers.get_mut(&peer) {
            if idle {
                if p.linger_until.is_none() {
                    p.linger_until = Some(until);
                }
            } else {
                p.linger_until = None;
            }
        }
    }

    pub(super) fn add_arc(&mut self, overlay: ProtocolId, peer: PeerId) -> Result<(), ArcError> {
        if !self.protocols.contains(&overlay) {
            return Err(ArcError::UnknownOverlay(overlay));
        }
        if !self.peers.contains_key(&peer) {
            return Err(ArcError::NotConnected(peer));
        }
        let views = self.views.entry(overlay).or_default();
        if views.outview.count(&peer) >= self.config.max_arcs_per_peer {
            return Err(ArcError::TooManyArcs(peer));
        }
        views.outview.insert(peer);
        self.send_control(peer, &Message::ArcOpen { overlay });
        self.refresh_linger(peer);
        self.arc_event(overlay, peer, Direction::Outgoing, None);
        Ok(())
    }

    pub(super) fn remove_arc(&mut self, overlay: ProtocolId, peer: PeerId) -> Result<(), ArcError> {
        let removed = self
            .views
            .get_mut(&overlay)
            .is_some_and(|v| v.outview.remove(&peer));
        if !removed {
            return Err(ArcError::NoSuchArc(peer));
        }
        self.send_control(peer, &Message::ArcClose { overlay });
        self.refresh_linger(peer);
        self.arc_event(
            overlay,
            peer,
            Direction::Outgoing,
            Some(ArcCloseReason::Closed),
        );
        Ok(())
    }

    /// Reports one arc opening (`reason == None`) or closing, to the overlay
    /// and the application.
    pub(super) fn arc_event(
        &mut self,
        overlay: ProtocolId,
        peer: PeerId,
        direction: Direction,
        reason: Option<ArcCloseReason>,
    ) {
        let input = match &reason {
            None => Input::ArcOpened { peer, direction },
            Some(r) => Input::ArcClosed {
                peer,
                direction,
                reason: r.clone(),
            },
        };
        if let Some(idx) = self.overlay_index(overlay) {
            self.overlay_inputs.push_back((idx, input));
        }
        self.emit(match reason {
            None => Event::ArcOpened {
                overlay,
                peer,
                direction,
            },
            Some(reason) => Event::ArcClosed {
                overlay,
                peer,
                direction,
                reason,
            },
        });
        if self.overlay_index(overlay).is_some() {
            self.refresh_overlay_state(overlay);
        }
    }

    pub(super) fn on_arc_open(&mut self, from: PeerId, overlay: ProtocolId) {
        if !self.protocols.contains(&overlay) {
            self.violation(from, "ArcOpen for an overlay this node does not run");
            return;
        }
        let views = self.views.entry(overlay).or_default();
        if views.inview.count(&from) >= self.config.max_arcs_per_peer {
            self.violation(from, "too many arcs");
            return;
        }
        if let Some(idx) = self.overlay_index(overlay) {
            let request = Admission::ArcOpen { from };
            if let Err(denied) = self.overlays[idx].overlay.admit(self.now, &request) {
                self.refusals += 1;
                debug!(peer = %from.short(), %denied, "incoming arc refused by the overlay");
                self.send_control(from, &Message::ArcRefused { overlay });
                return;
            }
        }
        let views = self.views.entry(overlay).or_default();
        views.inview.insert(from);
        self.refresh_linger(from);
        self.arc_event(overlay, from, Direction::Incoming, None);
    }

    pub(super) fn on_arc_close(&mut self, from: PeerId, overlay: ProtocolId) {
        let removed = self
            .views
            .get_mut(&overlay)
            .is_some_and(|v| v.inview.remove(&from));
        if !removed {
            self.violation(from, "ArcClose for an arc that does not exist");
            return;
        }
        self.refresh_linger(from);
        self.arc_event(
            overlay,
            from,
            Direction::Incoming,
            Some(ArcCloseReason::Closed),
        );
    }

    /// Our arc `self → from` in `overlay` was refused by `from`'s overlay.
    pub(super) fn on_arc_refused(&mut self, from: PeerId, overlay: ProtocolId) {
        let removed = self
            .views
            .get_mut(&overlay)
            .is_some_and(|v| v.outview.remove(&from));
        if !removed {
            self.violation(from, "ArcRefused for an arc that does not exist");
            return;
        }
        self.refresh_linger(from);
        self.arc_event(
            overlay,
            from,
            Direction::Outgoing,
            Some(ArcCloseReason::Refused(
                "refused by the remote's overlay".into(),
            )),
        );
    }
}
