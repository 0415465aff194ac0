//! Event delivery that never blocks the node: bounded queues (in events and in
//! bytes) that drop on overflow and tell the reader how much it missed
//! ([`Event::Lagged`]), one for the node's stream and one per subscription.
//!
//! The node pushes with [`EventSink::push`], which never waits: a slow
//! application loses events, never the node's liveness (nor its neighbours',
//! whose traffic would otherwise back up behind it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Event;
use crate::wire::ProtocolId;

/// The bytes an event holds, counted against the queue's byte bound.
fn size_of(event: &Event) -> usize {
    match event {
        Event::Message { payload, .. } => payload.len() + 64,
        _ => 64,
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Event>,
    bytes: usize,
    /// Events dropped since the reader last heard of a gap.
    missed: u64,
    /// The node is gone: the reader gets `None` once the queue is empty.
    closed: bool,
    /// The reader is gone: pushes are discarded.
    abandoned: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
    max_events: usize,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The node's end of an event queue.
#[derive(Debug, Clone)]
pub(crate) struct EventSink(Arc<Shared>);

impl EventSink {
    /// Queues `event`, or drops it (counted) when the queue is full. Returns
    /// `false` once the reader is gone.
    pub(crate) fn push(&self, event: Event) -> bool {
        let size = size_of(&event);
        let mut st = self.0.lock();
        if st.abandoned {
            return false;
        }
        // One event always fits in an empty queue, whatever its size.
        let full = st.queue.len() >= self.0.max_events
            || (!st.queue.is_empty() && st.bytes + size > self.0.max_bytes);
        if full {
            st.missed += 1;
        } else {
            if st.missed > 0 {
                let lagged = Event::Lagged {
                    missed: std::mem::take(&mut st.missed),
                };
                st.bytes += size_of(&lagged);
                st.queue.push_back(lagged);
            }
            st.bytes += size;
            st.queue.push_back(event);
        }
        drop(st);
        self.0.notify.notify_one();
        true
    }

    /// Whether the reader is gone.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.0.lock().abandoned
    }

    /// Ends the stream: the reader drains what is queued, then gets `None`.
    pub(crate) fn close(&self) {
        self.0.lock().closed = true;
        self.0.notify.notify_one();
    }
}

/// A stream of a node's events: the node's own ([`super::Node::next_event`])
/// or a subscription to one protocol ([`super::NodeHandle::subscribe`]).
///
/// The queue holds at most [`super::Config::event_capacity`] events and
/// [`super::Config::event_bytes`] bytes. When it is full the node drops new
/// events instead of waiting, and the reader gets one [`Event::Lagged`] with
/// the number dropped before the next event it receives.
#[derive(Debug)]
pub struct Events(Arc<Shared>);

impl Events {
    /// A queue and its sink.
    pub(crate) fn channel(max_events: usize, max_bytes: usize) -> (EventSink, Events) {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            notify: Notify::new(),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        });
        (EventSink(shared.clone()), Events(shared))
    }

    fn pop(&self) -> Result<Event, bool> {
        let mut st = self.0.lock();
        if let Some(e) = st.queue.pop_front() {
            st.bytes = st.bytes.saturating_sub(size_of(&e));
            return Ok(e);
        }
        if st.missed > 0 {
            let missed = std::mem::take(&mut st.missed);
            return Ok(Event::Lagged { missed });
        }
        Err(st.closed)
    }

    /// The next event; `None` once the node stopped and the queue is empty.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.pop() {
                Ok(e) => return Some(e),
                Err(true) => return None,
                // One reader: a wake-up sent while we were not waiting is kept
                // as a permit by `Notify`, so none is lost.
                Err(false) => self.0.notify.notified().await,
            }
        }
    }

    /// An event if one is ready now.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.pop().ok()
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.0.lock().queue.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.abandoned = true;
        st.queue.clear();
    }
}

/// The protocol an event belongs to, if any (node-wide events have none).
pub(crate) fn protocol_of(event: &Event) -> Option<ProtocolId> {
    match event {
        Event::Message { protocol, .. } => Some(*protocol),
        Event::ArcOpened { overlay, .. }
        | Event::ArcClosed { overlay, .. }
        | Event::BridgeDone { overlay, .. }
        | Event::OverlayState { overlay, .. } => Some(*overlay),
        Event::ConnectFailed { overlay, .. } => *overlay,
        _ => None,
    }
}

/// The subscriptions of a node, by protocol.
pub(crate) type Subscriptions = BTreeMap<ProtocolId, Vec<EventSink>>;

/// Sends `event` to its protocol's subscribers if it has any, otherwise to
/// the node's stream `main`.
pub(crate) fn route(subscriptions: &Mutex<Subscriptions>, main: &EventSink, event: Event) {
    if let Some(p) = protocol_of(&event) {
        let mut subs = subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = subs.get_mut(&p) {
            list.retain(|s| !s.is_abandoned());
            if let Some((last, rest)) = list.split_last() {
                for s in rest {
                    s.push(event.clone());
                }
                last.push(event);
                return;
            }
            subs.remove(&p);
        }
    }
    main.push(event);
}

/// Ends every stream.
pub(crate) fn close_all(subscriptions: &Mutex<Subscriptions>, main: &EventSink) {
    main.close();
    let subs = subscriptions.lock().unwrap_or_else(|e| e.into_inner());
    for s in subs.values().flatten() {
        s.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(n: u8) -> Event {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(n));
        Event::Message {
            from: crate::Keypair::generate(&mut rng).peer_id(),
            protocol: ProtocolId::from_hash(1),
            payload: Bytes::from(vec![n; 10]),
        }
    }

    #[tokio::test]
    async fn overflow_is_dropped_and_reported_once() {
        let (sink, mut events) = Events::channel(2, 1 << 20);
        for n in 0..5 {
            assert!(sink.push(msg(n)));
        }
        assert_eq!(events.recv().await, Some(msg(0)));
        assert_eq!(events.recv().await, Some(msg(1)));
        assert_eq!(events.recv().await, Some(Event::Lagged { missed: 3 }));
        sink.push(msg(9));
        assert_eq!(events.try_recv(), Some(msg(9)));
        sink.close();
        assert_eq!(events.recv().await, None);
    }

    #[tokio::test]
    async fn bytes_bound_the_queue_but_one_event_always_fits() {
        let (sink, mut events) = Events::channel(100, 10);
        sink.push(msg(1));
        sink.push(msg(2));
        assert_eq!(events.recv().await, Some(msg(1)));
        assert_eq!(events.recv().await, Some(Event::Lagged { missed: 1 }));
        assert!(events.is_empty());
    }

    #[test]
    fn a_dropped_reader_stops_the_queue() {
        let (sink, events) = Events::channel(4, 1 << 20);
        drop(events);
        assert!(!sink.push(msg(1)));
        assert!(sink.is_abandoned());
    }
}
