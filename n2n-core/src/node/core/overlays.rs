//! The overlay driver: inputs queued for each overlay, their outputs turned
//! into arcs, bridges, messages and timers.

use tracing::{debug, warn};

use super::{BridgeOrigin, NodeCore};
use crate::identity::PeerId;
use crate::node::{ArcError, ConnectError, Event};
use crate::overlay::{Input, Output, TimerToken};
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
                    debug!(peer = %to.short(), "overlay message to a peer that is not connected dropped");
                }
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
            Output::StateChanged(state) => self.emit(Event::OverlayState { overlay: id, state }),
        }
    }
}
