//! The event queue: a calendar of fixed-width time buckets.
//!
//! Events come out in `(at, seq)` order, exactly as from a binary heap, but a
//! push is an append to its bucket and a pop takes the end of a small sorted
//! vector. Hop latencies are bounded (tens of milliseconds) and timers fall
//! within a shuffle period, so nearly every event lands in the ring of
//! buckets; the rare ones further away wait in a binary heap until the ring
//! reaches them. A heap of a million events costs a cache miss per level on
//! every pop; a bucket holds a few dozen events and is sorted once.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// An event with its key: virtual time, then scheduling order.
#[derive(Debug)]
pub(crate) struct Entry<E> {
    pub(crate) at: u64,
    pub(crate) seq: u64,
    pub(crate) event: E,
}

impl<E> Entry<E> {
    fn key(&self) -> (u64, u64) {
        (self.at, self.seq)
    }
}

/// Reversed order, so that the overflow heap pops the earliest.
struct Far<E>(Entry<E>);

impl<E> PartialEq for Far<E> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}
impl<E> Eq for Far<E> {}
impl<E> PartialOrd for Far<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Far<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.key().cmp(&self.0.key())
    }
}

/// Fine bucket width: 2^10 µs ≈ 1 ms.
const SHIFT: u32 = 10;
/// Fine buckets in the ring: 2^12 ms ≈ 4 s ahead, beyond any hop.
const RING: u64 = 1 << 12;
/// Coarse bucket width: 2^20 µs ≈ 1 s, 2^10 fine buckets.
const COARSE_SHIFT: u32 = 20;
/// Coarse buckets: 2^8 s ≈ 4 min ahead, beyond a shuffle period.
const COARSE: u64 = 1 << 8;
/// Largest buffer kept for reuse, in events: a coarse bucket holds a
/// second's timers of every peer, and its buffer, reused by fine buckets,
/// would be kept by thousands of them.
const SPARE_MAX: usize = 512;

/// A priority queue of events keyed by `(at, seq)`, `at` never earlier than
/// the bucket being drained (the simulator never schedules in the past).
///
/// Two rings, as in a hierarchical timing wheel: fine buckets of 1 ms for
/// the next 4 s (messages, arc changes), coarse buckets of 1 s for the next
/// 4 min (timers); a coarse bucket is spread into the fine ring once it fits
/// there. Only the buckets being filled are touched on a push, so pushes hit
/// the cache.
pub(crate) struct Calendar<E> {
    /// Fine bucket `b` (absolute index `at >> SHIFT`) lives at
    /// `fine[b % RING]` while `cur < b < cur + RING`; unsorted.
    fine: Vec<Vec<Entry<E>>>,
    /// Events in `fine`.
    in_fine: usize,
    /// Coarse bucket `c` (`at >> COARSE_SHIFT`) lives at `coarse[c % COARSE]`
    /// while `open <= c < open + COARSE`; unsorted.
    coarse: Vec<Vec<Entry<E>>>,
    /// Events in `coarse`.
    in_coarse: usize,
    /// The first coarse bucket not yet spread into the fine ring; every
    /// coarse bucket before it lies within the fine ring's window.
    open: u64,
    /// The fine bucket being drained.
    cur: u64,
    /// The events of bucket `cur`, sorted by descending key (pop from the end).
    current: Vec<Entry<E>>,
    /// Events beyond the coarse ring.
    overflow: BinaryHeap<Far<E>>,
    /// Empty buffers for the buckets: a drained bucket's buffer goes here
    /// rather than staying with its slot (every slot would end up holding
    /// the capacity of its busiest moment) or being freed (and grown again).
    spare: Vec<Vec<Entry<E>>>,
    /// Buckets loaded into `current` so far.
    loads: u64,
}

impl<E> std::fmt::Debug for Calendar<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calendar")
            .field("len", &self.len())
            .field("bucket", &self.cur)
            .finish_non_exhaustive()
    }
}

impl<E> Calendar<E> {
    pub(crate) fn new() -> Self {
        Self {
            fine: (0..RING).map(|_| Vec::new()).collect(),
            in_fine: 0,
            coarse: (0..COARSE).map(|_| Vec::new()).collect(),
            in_coarse: 0,
            open: 0,
            cur: 0,
            current: Vec::new(),
            overflow: BinaryHeap::new(),
            spare: Vec::new(),
            loads: 0,
        }
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.in_fine + self.in_coarse + self.overflow.len()
    }

    /// Adds an event; `at` must not fall in a bucket before the one being
    /// drained (it is treated as due in that bucket otherwise).
    pub(crate) fn push(&mut self, at: u64, seq: u64, event: E) {
        self.place(Entry { at, seq, event });
    }

    fn place(&mut self, entry: Entry<E>) {
        let bucket = entry.at >> SHIFT;
        if bucket <= self.cur {
            let key = entry.key();
            // Descending: the new entry goes after every larger key.
            let i = self.current.partition_point(|e| e.key() > key);
            self.current.insert(i, entry);
        } else if bucket < self.cur + RING {
            let slot = &mut self.fine[(bucket % RING) as usize];
            if slot.capacity() == 0 {
                *slot = self.spare.pop().unwrap_or_default();
            }
            slot.push(entry);
            self.in_fine += 1;
        } else if entry.at >> COARSE_SHIFT < self.open + COARSE {
            let slot = &mut self.coarse[((entry.at >> COARSE_SHIFT) % COARSE) as usize];
            if slot.capacity() == 0 {
                *slot = self.spare.pop().unwrap_or_default();
            }
            slot.push(entry);
            self.in_coarse += 1;
        } else {
            self.overflow.push(Far(entry));
        }
    }

    /// How many buckets were loaded for draining so far: when it changes,
    /// a new bucket is being drained.
    pub(crate) fn loads(&self) -> u64 {
        self.loads
    }

    /// The events of the fine bucket `ahead` buckets after the one being
    /// drained (`1 <= ahead < RING`), in no order; more may still come.
    pub(crate) fn bucket_ahead(&self, ahead: u64) -> &[Entry<E>] {
        &self.fine[((self.cur + ahead) % RING) as usize]
    }

    /// Removes and returns the earliest event if it is due at or before
    /// `until`. Never moves past the bucket of `until`, so that events
    /// scheduled later at or after `until` still sort correctly.
    pub(crate) fn pop_until(&mut self, until: u64) -> Option<Entry<E>> {
        loop {
            if let Some(last) = self.current.last() {
                return if last.at <= until {
                    self.current.pop()
                } else {
                    None
                };
            }
            if !self.advance(until >> SHIFT) {
                return None;
            }
        }
    }

    /// The time of the earliest event if it is due at or before `until`.
    /// Like [`Calendar::pop_until`], never moves past the bucket of `until`.
    pub(crate) fn next_at(&mut self, until: u64) -> Option<u64> {
        loop {
            if let Some(last) = self.current.last() {
                return (last.at <= until).then_some(last.at);
            }
            if !self.advance(until >> SHIFT) {
                return None;
            }
        }
    }

    /// Moves `cur` to the next non-empty bucket, at most to `limit`, and
    /// loads it into `current`; returns whether it loaded events.
    fn advance(&mut self, limit: u64) -> bool {
        debug_assert!(self.current.is_empty());
        loop {
            if self.in_fine == 0 {
                // Nothing near: jump to the first coarse bucket with events.
                let first = if self.in_coarse > 0 {
                    let mut c = self.open;
                    while self.coarse[(c % COARSE) as usize].is_empty() {
                        c += 1;
                    }
                    c
                } else if let Some(far) = self.overflow.peek() {
                    far.0.at >> COARSE_SHIFT
                } else {
                    return false;
                };
                let target = (first << (COARSE_SHIFT - SHIFT)).max(self.cur);
                let next = target.min(limit);
                if next > self.cur {
                    self.cur = next;
                    // The coarse buckets before `first` are empty: skip them.
                    let fits = (self.cur + RING) >> (COARSE_SHIFT - SHIFT);
                    self.open = self.open.max(first.min(fits));
                    self.refill();
                    self.spread();
                }
                if target > limit {
                    return false;
                }
                if self.take_bucket() {
                    return true;
                }
                continue;
            }
            if self.cur >= limit {
                return false;
            }
            self.cur += 1;
            self.spread();
            if self.take_bucket() {
                return true;
            }
        }
    }

    /// Spreads the coarse buckets that now fit in the fine ring's window.
    fn spread(&mut self) {
        while (self.open + 1) << (COARSE_SHIFT - SHIFT) <= self.cur + RING {
            let slot = (self.open % COARSE) as usize;
            if !self.coarse[slot].is_empty() {
                let mut taken = std::mem::take(&mut self.coarse[slot]);
                self.in_coarse -= taken.len();
                self.open += 1;
                for entry in taken.drain(..) {
                    self.place(entry);
                }
                self.recycle(taken);
            } else {
                self.open += 1;
            }
            self.refill();
        }
    }

    /// Moves the far events that entered the coarse ring's window into it.
    fn refill(&mut self) {
        let end = self.open + COARSE;
        while let Some(first) = self.overflow.peek() {
            if first.0.at >> COARSE_SHIFT >= end {
                break;
            }
            let Far(entry) = self.overflow.pop().expect("peeked");
            self.place(entry);
        }
    }

    fn recycle(&mut self, buffer: Vec<Entry<E>>) {
        debug_assert!(buffer.is_empty());
        if buffer.capacity() <= SPARE_MAX {
            self.spare.push(buffer);
        }
    }

    /// Appends fine bucket `cur` to `current` and sorts it; returns whether
    /// it holds events.
    fn take_bucket(&mut self) -> bool {
        let slot = &mut self.fine[(self.cur % RING) as usize];
        if !slot.is_empty() {
            self.in_fine -= slot.len();
            let mut taken = std::mem::take(slot);
            if self.current.is_empty() {
                std::mem::swap(&mut self.current, &mut taken);
            } else {
                self.current.append(&mut taken);
            }
            self.recycle(taken);
        }
        if self.current.is_empty() {
            return false;
        }
        self.current
            .sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
        self.loads += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimRng;
    use rand::Rng;

    /// Random pushes and pops come out exactly as from a heap keyed by
    /// `(at, seq)`, across buckets, the ring's horizon and the far heap.
    #[test]
    fn same_order_as_a_heap() {
        let mut rng = SimRng::seed_from(5);
        let mut cal = Calendar::new();
        let mut reference = BinaryHeap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for round in 0..50_000 {
            for _ in 0..rng.random_range(0..4) {
                seq += 1;
                let delay = match rng.random_range(0..10) {
                    0 => 0,
                    1 => rng.random_range(0..2_000),
                    2 => rng.random_range(5_000_000..70_000_000),
                    3 => rng.random_range(200_000_000..2_000_000_000),
                    _ => rng.random_range(10_000..50_000),
                };
                cal.push(now + delay, seq, seq);
                reference.push(std::cmp::Reverse((now + delay, seq)));
            }
            let until = if round % 7 == 0 {
                now + rng.random_range(0..500_000_000)
            } else {
                now + rng.random_range(0..30_000)
            };
            loop {
                let expected = reference.peek().filter(|r| r.0.0 <= until).map(|r| r.0);
                let got = cal.pop_until(until).map(|e| (e.at, e.seq));
                assert_eq!(got, expected);
                if got.is_none() {
                    break;
                }
                reference.pop();
            }
            now = until;
            if round % 1000 == 999 {
                // `Sim::step`: the next event, however far.
                let got = cal.pop_until(u64::MAX).map(|e| (e.at, e.seq));
                assert_eq!(got, reference.pop().map(|r| r.0));
                now = got.map_or(now, |g| g.0);
            }
            assert_eq!(cal.len(), reference.len());
        }
    }
}
