//! The overlay driver: inputs queued for each overlay, their outputs turned
//! into arcs, bridges, messages and timers.

use tracing::{debug, warn};

use super::{BridgeOrigin, NodeCore};
use crate::identity::PeerId;
use crate::node::{ConnectError, Event};
use crate::overlay::{Input, Output, TimerToken};
use crate::time::Instant;
use crate::wire::{Message, ProtocolId};

/// Inputs handled in one turn at most, so that two overlays feeding each
/// other cannot keep the core busy for ever.
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

    pub(super) fn drive_overlays(&mut self) {
        let now = self.now;
        let mut budget = OVERLAY_INPUT_BUDGET;
        while let Some((idx, input)) = self.overlay_inputs.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                warn!("overlay input budget exhausted; remaining inputs dropped");
                self.overlay_inputs.clear();
                break;
            }
            self.overlays[idx].overlay.handle(now, input);
            while let Some(output) = self.overlays[idx].overlay.poll_output() {
                self.on_overlay_output(idx, output);
            }
        }
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
            Output::OpenArc { to } => {
                if let Err(e) = self.add_arc(id, to) {
                    self.connect_failed(Some(id), to, ConnectError::from(e));
                }
            }
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
