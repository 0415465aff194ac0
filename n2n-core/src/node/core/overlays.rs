//! The overlay driver: inputs queued for each overlay, their outputs turned
//! into arcs, bridges, connections through neighbours, samples of other
//! overlays, messages and timers; the application's queries and commands to
//! an overlay; the connection state the node computes for each overlay.

use tracing::{debug, warn};

use super::{BridgeOrigin, NodeCore};
use crate::identity::PeerId;
use crate::node::{ArcError, ConnectError, Event, OverlayError};
use crate::overlay::{ConnectionState, Input, Output, TimerToken};
use crate::time::Instant;
use crate::wire::{Message, ProtocolId};

/// Inputs handled in one turn at most, so that two overlays feeding each
/// other cannot keep the core busy for ever. What is left waits for the next
/// turn ([`NodeCore::poll_timeout`] asks for one at once): nothing is dropped.
const OVERLAY_INPUT_BUDGET: usize = 100_000;

impl NodeCore {
    /// Asks `overlay` to leave the network gracefully.
    ///
    /// # Errors
    /// [`crate::node::ArcError::UnknownOverlay`] if the node runs no such overlay.
    pub fn leave(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
    ) -> Result<(), crate::node::ArcError> {
        self.now = now;
        let idx = self
            .overlay_index(overlay)
            .ok_or(crate::node::ArcError::UnknownOverlay(overlay))?;
        self.overlay_inputs.push_back((idx, Input::Leave));
        self.settle();
        Ok(())
    }

    /// Overlay `overlay`, downcast to its type `O`, if the node runs it.
    pub fn overlay<O: 'static>(&self, overlay: ProtocolId) -> Option<&O> {
        let idx = self.overlay_index(overlay)?;
        self.overlays[idx].overlay.as_any().downcast_ref::<O>()
    }

    /// Runs `f` on overlay `overlay`, downcast to its type `O` (the
    /// application's query or command), then carries out what it asked.
    ///
    /// # Errors
    /// [`OverlayError::UnknownOverlay`] if the node runs no such overlay,
    /// [`OverlayError::WrongType`] if it is not an `O`.
    pub fn with_overlay<O: 'static, R>(
        &mut self,
        now: Instant,
        overlay: ProtocolId,
        f: impl FnOnce(&mut O, Instant) -> R,
    ) -> Result<R, OverlayError> {
        self.now = now;
        let idx = self
            .overlay_index(overlay)
            .ok_or(OverlayError::UnknownOverlay(overlay))?;
        let Some(o) = self.overlays[idx].overlay.as_any_mut().downcast_mut::<O>() else {
            return Err(OverlayError::WrongType {
                overlay,
                expected: std::any::type_name::<O>(),
            });
        };
        let result = f(o, now);
        while let Some(output) = self.overlays[idx].overlay.poll_output() {
            self.on_overlay_output(idx, output);
        }
        self.settle();
        Ok(result)
    }

    /// Tells every overlay about a connection coming or going.
    pub(super) fn connection_input(&mut self, peer: PeerId, up: bool) {
        for idx in 0..self.overlays.len() {
            let input = if up {
                Input::Connected { peer }
            } else {
                Input::Disconnected { peer }
            };
            self.overlay_inputs.push_back((idx, input));
        }
    }

    /// Emits `OverlayState` when the arcs of `overlay` change its state.
    pub(super) fn refresh_overlay_state(&mut self, overlay: ProtocolId) {
        let state = self
            .views
            .get(&overlay)
            .map_or(ConnectionState::Disconnected, |v| {
                ConnectionState::of(v.inview.len(), v.outview.len())
            });
        let before = self
            .overlay_states
            .insert(overlay, state)
            .unwrap_or(ConnectionState::Disconnected);
        if before != state {
            self.emit(Event::OverlayState { overlay, state });
        }
    }

    /// Runs the queued overlay inputs; `false` when the turn's budget ran
    /// out with inputs left (they wait for the next turn).
    pub(super) fn drive_overlays(&mut self) -> bool {
        let now = self.now;
        let mut budget = OVERLAY_INPUT_BUDGET;
        while let Some((idx, input)) = self.overlay_inputs.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                self.overlay_inputs.push_front((idx, input));
                warn!(
                    left = self.overlay_inputs.len(),
                    "overlay input budget of a turn exhausted; the rest waits for the next turn"
                );
                return false;
            }
            self.overlays[idx].overlay.handle(now, input);
            while let Some(output) = self.overlays[idx].overlay.poll_output() {
                self.on_overlay_output(idx, output);
            }
        }
        true
    }

    fn on_overlay_output(&mut self, idx: usize, output: Output<PeerId, TimerToken>) {
        let id = self.overlays[idx].id;
        match output {
            Output::Send { to, payload } => {
                if self.peers.contains_key(&to) {
                    self.send_control(
                        to,
                        &Message::Overlay {
                            overlay: id,
                            payload,
                        },
                    );
                } else {
                    debug!(peer = %to.short(), "overlay message to a peer that is not connected");
                    self.overlay_inputs.push_back((
                        idx,
                        Input::SendFailed {
                            to,
                            reason: ConnectError::NotConnected(to).to_string(),
                        },
                    ));
                }
            }
            Output::Connect { via, to } => self.overlay_connect(id, via, to),
            Output::Sample { overlay, k, tag } => {
                let result = match self.overlay_index(overlay) {
                    Some(j) => Ok(self.overlays[j].overlay.peers(k)),
                    None => Err(OverlayError::UnknownOverlay(overlay).to_string()),
                };
                self.overlay_inputs.push_back((
                    idx,
                    Input::Sampled {
                        overlay,
                        tag,
                        result,
                    },
                ));
            }
            Output::OpenArc { to } => match self.add_arc(id, to) {
                Ok(()) => {}
                Err(e @ ArcError::TooManyArcs(_)) => {
                    // A local limit: told to the application, not fed back
                    // to the overlay, whose answer to a failed arc (open
                    // another) would meet the same limit again and again.
                    // The overlay's views stay exact: the arc never opened.
                    self.refusals += 1;
                    debug!(peer = %to.short(), "overlay arc refused: too many arcs to the peer");
                    self.emit(Event::ConnectFailed {
                        overlay: Some(id),
                        peer: to,
                        reason: ConnectError::from(e),
                    });
                }
                Err(e) => self.connect_failed(Some(id), to, ConnectError::from(e)),
            },
            Output::CloseArc { to } => {
                if let Err(e) = self.remove_arc(id, to) {
                    debug!(peer = %to.short(), error = %e, "overlay closed an arc it did not have");
                }
            }
            Output::Bridge { from, to } => {
                self.start_bridge(id, from, to, Some(BridgeOrigin::Overlay(idx)))
            }
            Output::SetTimer { at, timer } => {
                self.timer_seq += 1;
                self.timers.insert((at, self.timer_seq), (idx, timer));
            }
            // The node computes the state from its arc table.
            Output::StateChanged(_) => {}
        }
    }

    /// An overlay's `Connect`: an arc to `to`, through neighbour `via` if
    /// not connected; failures come back as `Input::ConnectFailed`.
    fn overlay_connect(&mut self, overlay: ProtocolId, via: PeerId, to: PeerId) {
        let early = if self.shutting_down {
            Some(ConnectError::Shutdown)
        } else if to == self.local {
            Some(ConnectError::SelfConnect)
        } else if self.peers.contains_key(&to) {
            self.add_arc(overlay, to).err().map(ConnectError::from)
        } else if !self.peers.contains_key(&via) {
            Some(ConnectError::NotConnected(via))
        } else {
            let token = self.token();
            self.request_tickets.insert(token, None);
            self.bridge.request(self.now, overlay, via, to, token);
            None
        };
        if let Some(e) = early {
            self.connect_failed(Some(overlay), to, e);
        }
    }
}
