//! The Spray state machine.

use std::collections::VecDeque;
use std::fmt;

use n2n_core::arc::{Inview, Outview};
use n2n_core::overlay::{Admission, ConnectionState, Denied, Input, Output, Overlay, Views};
use n2n_core::time::Instant;
use n2n_core::wire::ProtocolId;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use super::config::Config;
use super::message::Message;
use super::view::{Mark, PartialView};

mod admission;
mod arcs;
mod exchange;
mod membership;
mod trim;

pub use admission::{MAX_JOINED, UNANNOUNCED_PER_ROUND};

/// The default protocol id of Spray's arcs and messages
/// (`ProtocolId::from_name("spray")`); another instance on the same node takes
/// another id ([`Config::protocol`]).
pub const PROTOCOL: ProtocolId = ProtocolId::from_name("spray");

/// `γ − 1/2`: the mean view of a Spray network of N peers built by joins is
/// `1 + Σ_{k=3..N} 1/k ≈ ln N + γ − 1/2`, so `N ≈ exp(mean view − (γ − 1/2))`.
const VIEW_OFFSET: f64 = 0.577_215_664_901_532_9 - 0.5;

/// How many announced `(peer, age)` arcs wait for their arc to arrive.
const MAX_INCOMING: usize = 256;

/// Output queue capacity kept once drained.
const KEEP_OUTPUTS: usize = 8;

/// Spray's timers, handed back in `Input::Timer` when they fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Time for the periodic shuffle (every [`Config::delta`]).
    Shuffle,
    /// The partner of shuffle `id` has not answered in time.
    ExchangeTimeout {
        /// The exchange.
        id: u64,
    },
    /// The linger after a graceful leave is over: close the remaining arcs.
    Leave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeavePhase {
    Member,
    Lingering,
    Left,
}

#[derive(Clone, Debug)]
struct PendingExchange<P> {
    id: u64,
    partner: P,
}

/// A Spray peer: the partial view (outview multiset with ages), the inview,
/// and the shuffle, join, leave and failure rules of the paper.
///
/// Methods follow one taxonomy: getters (`partial_view`, `size_estimate`, …);
/// [`Overlay::handle`] for every input (commands, arc events, messages,
/// timers); [`Overlay::poll_output`] for outputs, in the order produced.
///
/// # The rules, as implemented
///
/// - **Join.** The newcomer opens an arc to its contact and sends it
///   [`Message::Join`]. The contact bridges one arc from each of its outview
///   arc occurrences to the newcomer (`Bridge { from: x, to: newcomer }`). If
///   its outview is empty (a 1-peer network, or a contact left without arcs) it
///   opens one arc back to the newcomer instead, so that a 2-peer network has
///   one arc each way and the mean view of N peers is `1 + Σ_{k=3..N} 1/k`.
/// - **Shuffle**, once per period Δ, at a random point of each period (two
///   peers' rounds do not keep the same order, see `arm_shuffle`): ages
///   grow by one; `q` is the oldest arc; the
///   sample is `⌈|P|/2⌉ − 1` other arcs drawn at random plus that arc to `q`.
///   The sample is reserved and [`Message::Exchange`] goes to `q`. `q` draws
///   `⌈|P_q|/2⌉` arcs, answers, and gives them away at once (`q` answers only
///   a peer that holds an arc to it). On the answer, the
///   initiator gives its sample away. A partner with nothing to give (every
///   arc closing or reserved), waiting on an exchange of its own, or still
///   waiting for the arcs of its last exchange declines with an empty
///   answer, and the initiator keeps its sample: an exchange never gives
///   arcs away for nothing, and is sized on whole views (the paper's
///   exchanges are instant and never overlap). A peer in the same
///   situation skips its own round. Giving arc `x → s` to partner `y` means
///   `Bridge { from: y, to: s }` then `CloseArc { to: s }`; an arc to the
///   partner itself becomes an arc from the partner to us (`to: self`). This
///   replacement applies to every element of both samples: the published
///   pseudo-code replaced the initiator's id in the wrong sample. The arc
///   total is unchanged; duplicates are kept. A moved arc arrives new (age
///   0), or keeps its age with [`AgeRule::Keep`](crate::spray::AgeRule::Keep) ([`Config::age_rule`]).
/// - **Exchange timeout**: the partner is handled as down (below); the
///   reserved sample stays ours.
/// - **Peer down** (`ArcClosed { reason: PeerDown }` for every outgoing arc of
///   `q`, or an exchange timeout): with `occ` the arcs to `q` lost, the rule
///   runs `occ` times (the published loop ran `occ + 1` times): with
///   probability `1 − 1/(|P| + occ)`, duplicate an arc drawn at random from P.
/// - **Arc down** (`ConnectFailed`): always duplicate an arc drawn at random;
///   with an empty partial view, open an arc to a random peer of the inview
///   instead (already connected: no handshake), so the arc total holds and
///   the peer keeps a way out.
/// - **Leave**: bridge `|P| − 1` random (inview, outview) arc pairs through
///   us, tell the inview ([`Message::Leave`]: close your arcs to me, no crash
///   handling), and close the outview after [`Config::leave_linger`]. A
///   departure thus removes about `ln N + 1` arcs, what a join added.
// The fields are laid out by hand, those that most inputs read first, and
// the state starts on a cache line: a simulator runs a million of these and
// every input lands on a peer out of the cache, so each line it needs is a
// miss. With `u32` peer ids, an arc change reads the first two lines only.
#[repr(C, align(64))]
pub struct State<P, R> {
    inview: Inview<P>,
    outview: Outview<P>,
    view: PartialView<P>,
    outputs: VecDeque<Output<P, Timer>>,
    connection: ConnectionState,
    leave: LeavePhase,
    shuffle_armed: bool,
    /// The end of the current shuffle period (see `arm_shuffle`).
    period_end: Option<Instant>,
    /// Arcs announced by shuffle partners, waiting to arrive: `(peer, age,
    /// announced at, partner)`, oldest first.
    incoming: VecDeque<(P, u32, Instant, P)>,
    round: i64,
    down: Vec<(P, u32)>,
    exchange: Option<PendingExchange<P>>,
    rng: R,
    local: P,
    mean_view: Option<f64>,
    next_exchange: u64,
    scratch: Vec<usize>,
    config: Config,
    /// Unannounced bridge orders accepted per relay in a round.
    orders: Vec<(P, i64, u32)>,
    /// Newcomers whose join was served (see `admission`).
    joined: VecDeque<P>,
}

impl<P: fmt::Debug, R> fmt::Debug for State<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("local", &self.local)
            .field("view", &self.view)
            .field("inview", &self.inview)
            .field("connection", &self.connection)
            .field("round", &self.round)
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl<P, R> State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    /// A peer called `local`, not yet in any overlay, drawing its random
    /// choices from `rng` (seed it for reproducible runs).
    pub fn new(local: P, config: Config, rng: R) -> Self {
        Self {
            local,
            config,
            rng,
            view: PartialView::new(),
            outview: Outview::new(),
            inview: Inview::new(),
            round: 0,
            incoming: VecDeque::new(),
            outputs: VecDeque::new(),
            connection: ConnectionState::Disconnected,
            shuffle_armed: false,
            period_end: None,
            exchange: None,
            next_exchange: 0,
            down: Vec::new(),
            leave: LeavePhase::Member,
            mean_view: None,
            scratch: Vec::new(),
            orders: Vec::new(),
            joined: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The local peer id.
    pub fn local(&self) -> &P {
        &self.local
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The partial view as Spray sees it: `(peer, age)` for every arc
    /// occurrence, arcs being closed excluded, in arrival order. An age counts
    /// the shuffles since the arc arrived.
    pub fn partial_view(&self) -> impl Iterator<Item = (&P, u32)> + '_ {
        self.view
            .entries()
            .iter()
            .filter(|e| e.mark != Mark::Closing)
            .map(|e| (&e.peer, age(self.round, e.born)))
    }

    /// Size of the partial view `|P|` (arcs being closed excluded).
    pub fn view_size(&self) -> usize {
        self.view.size()
    }

    /// The connection state (from the arc mirrors).
    pub fn connection_state(&self) -> ConnectionState {
        self.connection
    }

    /// The partner and id of the shuffle this peer started and is waiting on.
    pub fn pending_exchange(&self) -> Option<(&P, u64)> {
        self.exchange.as_ref().map(|e| (&e.partner, e.id))
    }

    /// Arcs that shuffle partners announced and that have not arrived yet
    /// (forgotten when their bridge fails, or after the shorter of
    /// [`Config::exchange_timeout`] and half of [`Config::delta`]). With
    /// [`State::pending_exchange`] and the arcs being closed
    /// (`outview().len() − view_size()`), it tells whether the peer is in
    /// the middle of an exchange, its view short of arcs or holding extra.
    pub fn arcs_expected(&self) -> usize {
        self.incoming.len()
    }

    /// Whether the peer is between exchanges: none pending, no arc being
    /// closed, none announced and still on its way. Only such a view is
    /// what the last exchange left.
    pub fn is_settled(&self) -> bool {
        self.exchange.is_none()
            && self.incoming.is_empty()
            && !self.giving()
            && self.view.size() == self.outview.len()
    }

    /// Shuffles this peer started so far (answered, declined or not).
    pub fn exchanges_started(&self) -> u64 {
        self.next_exchange
    }

    /// Whether [`Input::Leave`] was received.
    pub fn is_leaving(&self) -> bool {
        self.leave != LeavePhase::Member
    }

    /// The network size estimated from the local view only: `exp(|P| − 0.077)`
    /// (the mean view is `ln N + γ − 1/2`). Within a factor of e per arc of
    /// deviation: use [`State::size_estimate`] for a usable figure.
    pub fn local_size_estimate(&self) -> f64 {
        (self.view.size() as f64 - VIEW_OFFSET).exp()
    }

    /// The running mean of view sizes, averaged with the shuffle partners'
    /// (push-pull averaging over the exchanges; at each exchange the local
    /// view size pulls it by one eighth).
    pub fn mean_view(&self) -> f64 {
        self.mean_view.unwrap_or(self.view.size() as f64)
    }

    /// The network size estimated from [`State::mean_view`].
    pub fn size_estimate(&self) -> f64 {
        (self.mean_view() - VIEW_OFFSET).exp()
    }

    /// The arcs entering this peer.
    pub fn inview(&self) -> &Inview<P> {
        &self.inview
    }

    /// The arcs leaving this peer (every arc of the partial view).
    pub fn outview(&self) -> &Outview<P> {
        &self.outview
    }

    /// Where the heap buffers that most inputs read live: the partial view,
    /// the outview, the inview and the announced arcs. A simulator running
    /// many peers prefetches them ahead of the inputs; the addresses are
    /// never read through. Only with the feature `prefetch-hook` (for
    /// `n2n-sim`): not part of Spray's API.
    #[cfg(feature = "prefetch-hook")]
    pub fn hot_buffers(&self) -> [*const u8; 4] {
        [
            self.view.entries().as_ptr().cast(),
            self.outview.as_slice().as_ptr().cast(),
            self.inview.as_slice().as_ptr().cast(),
            self.incoming.as_slices().0.as_ptr().cast(),
        ]
    }

    // ----- helpers -----

    fn push(&mut self, output: Output<P, Timer>) {
        self.outputs.push_back(output);
    }

    fn send(&mut self, to: P, message: Message<P>) {
        self.push(Output::Send {
            to,
            payload: message.encode(),
        });
    }

    /// The peer of the `k`-th arc of the partial view (closing arcs excluded).
    fn nth_in_view(&self, k: usize) -> P {
        self.view
            .entries()
            .iter()
            .filter(|e| e.mark != Mark::Closing)
            .nth(k)
            .map(|e| e.peer.clone())
            .expect("k < view size")
    }

    // ----- inputs -----

    fn handle_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Shuffle => {
                self.shuffle_armed = false;
                self.trim();
                if self.leave != LeavePhase::Member {
                    return;
                }
                self.arm_shuffle(now);
                self.shuffle(now);
            }
            Timer::ExchangeTimeout { id } => {
                if self.exchange.as_ref().is_some_and(|e| e.id == id) {
                    let partner = self.exchange.as_ref().expect("checked").partner.clone();
                    debug!(?partner, id, "spray: exchange timed out, partner down");
                    self.cancel_exchange();
                    let occ = self.close_all(&partner);
                    self.duplicate_after_down(occ);
                }
            }
            Timer::Leave => {
                if self.leave == LeavePhase::Lingering {
                    self.leave = LeavePhase::Left;
                    let peers: Vec<P> = self.outview.peers().cloned().collect();
                    for p in peers {
                        self.close_all(&p);
                    }
                }
            }
        }
    }

    fn on_message(&mut self, now: Instant, from: P, message: Message<P>) {
        match message {
            Message::Join => self.on_join(now, from),
            Message::Exchange {
                id,
                mean_view,
                sample,
            } => self.on_exchange(now, from, id, mean_view, sample),
            Message::ExchangeReply {
                id,
                mean_view,
                sample,
            } => self.on_exchange_reply(now, from, id, mean_view, sample),
            Message::Leave => self.on_leave(from),
        }
    }

    fn update_connection(&mut self) {
        let state = ConnectionState::of(self.inview.len(), self.outview.len());
        if state != self.connection {
            self.connection = state;
            self.push(Output::StateChanged(state));
        }
    }
}

impl<P, R> Overlay<P> for State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    type Timer = Timer;

    fn protocol(&self) -> ProtocolId {
        self.config.protocol
    }

    fn handle(&mut self, now: Instant, input: Input<P, Timer>) {
        match input {
            Input::Join { contact } => self.handle_join(now, contact),
            Input::Leave => self.handle_leave(now),
            Input::ArcOpened { peer, direction } => self.handle_arc_opened(now, peer, direction),
            Input::ArcClosed {
                peer,
                direction,
                reason,
            } => self.handle_arc_closed(peer, direction, reason),
            Input::ConnectFailed { peer, reason } => self.handle_arc_down(peer, &reason),
            Input::BridgeFailed { from, to, reason } => {
                // The peer that was to open the arc handles it as arc down.
                debug!(?from, ?to, reason, "spray: bridge failed");
                self.bridge_over(&from, &to, false);
            }
            Input::BridgeDone { from, to } => self.bridge_over(&from, &to, true),
            Input::Message { from, payload } => match Message::decode(&payload) {
                Ok(message) => self.on_message(now, from, message),
                Err(error) => warn!(?from, %error, "spray: invalid message dropped"),
            },
            Input::Timer(timer) => self.handle_timer(now, timer),
            // Spray keeps its own views; connections, samples and failed
            // sends need no decision.
            _ => {}
        }
        self.update_connection();
    }

    fn poll_output(&mut self) -> Option<Output<P, Timer>> {
        let output = self.outputs.pop_front();
        if output.is_none() && self.outputs.capacity() > KEEP_OUTPUTS {
            // A shuffle queues two outputs per arc given away; kept, that
            // capacity would be most of an idle peer's memory.
            self.outputs.shrink_to(KEEP_OUTPUTS);
        }
        output
    }

    /// Up to `k` distinct neighbours: drawn from the partial view first, then
    /// topped up from the inview (as the JavaScript `getPeers` did), so that a
    /// peer with a small view still offers all the neighbours it has.
    fn admit(&mut self, _now: Instant, request: &Admission<P>) -> Result<(), Denied> {
        self.admit_request(request)
    }

    fn peers(&mut self, k: usize) -> Vec<P> {
        let mut out: Vec<P> = self
            .outview
            .peers()
            .filter(|p| {
                self.view
                    .entries()
                    .iter()
                    .any(|e| &e.peer == *p && e.mark != Mark::Closing)
            })
            .cloned()
            .collect();
        pick_prefix(&mut self.rng, &mut out, k);
        if out.len() < k {
            let mut extra: Vec<P> = self
                .inview
                .peers()
                .filter(|p| !out.contains(p))
                .cloned()
                .collect();
            pick_prefix(&mut self.rng, &mut extra, k - out.len());
            out.extend(extra);
        }
        out
    }
}

impl<P, R> Views<P> for State<P, R> {
    fn inview(&self) -> &Inview<P> {
        &self.inview
    }

    fn outview(&self) -> &Outview<P> {
        &self.outview
    }
}

/// The age of an arc born in round `born`, seen in round `round`.
fn age(round: i64, born: i64) -> u32 {
    u32::try_from(round - born).unwrap_or(u32::MAX)
}

/// Keeps `k` elements of `v` drawn uniformly without replacement, in random order.
fn pick_prefix<T, R: Rng>(rng: &mut R, v: &mut Vec<T>, k: usize) {
    let k = k.min(v.len());
    for i in 0..k {
        let j = rng.random_range(i..v.len());
        v.swap(i, j);
    }
    v.truncate(k);
}
