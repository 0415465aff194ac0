//! The arc model: directed logical edges of an overlay, kept as multisets.
//!
//! An arc `A → B` is in A's [`Outview`] and in B's [`Inview`]. A peer may hold
//! several arcs to the same neighbour, so both views count occurrences. Views
//! iterate in peer order (never hash order) and draw random elements only from a
//! caller-supplied RNG, so that a seeded run is reproducible.

use std::fmt;

use rand::Rng;

/// Direction of an arc as seen from the local peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// The arc leaves the local peer (it is in the outview).
    Outgoing,
    /// The arc enters the local peer (it is in the inview).
    Incoming,
}

/// A multiset of peers: how many arcs go to (or come from) each peer.
///
/// Stored as a vector sorted by peer, which is compact and fast for the
/// O(ln N) sizes overlays keep, and iterates deterministically.
#[derive(Clone, PartialEq, Eq)]
pub struct ArcSet<P> {
    entries: Vec<(P, u32)>,
    total: usize,
}

/// The arcs entering the local peer, counted per remote peer.
pub type Inview<P = crate::PeerId> = ArcSet<P>;
/// The arcs leaving the local peer, counted per remote peer.
pub type Outview<P = crate::PeerId> = ArcSet<P>;

impl<P> Default for ArcSet<P> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            total: 0,
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for ArcSet<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(p, n)| (p, n)))
            .finish()
    }
}

impl<P: Ord + Clone> ArcSet<P> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, peer: &P) -> Result<usize, usize> {
        self.entries.binary_search_by(|(p, _)| p.cmp(peer))
    }

    /// Adds one arc to `peer`; returns the new count for `peer`.
    pub fn insert(&mut self, peer: P) -> u32 {
        self.insert_n(peer, 1)
    }

    /// Adds `n` arcs to `peer`; returns the new count for `peer`.
    pub fn insert_n(&mut self, peer: P, n: u32) -> u32 {
        if n == 0 {
            return self.count(&peer);
        }
        self.total += n as usize;
        match self.position(&peer) {
            Ok(i) => {
                self.entries[i].1 += n;
                self.entries[i].1
            }
            Err(i) => {
                self.entries.insert(i, (peer, n));
                n
            }
        }
    }

    /// Removes one arc to `peer`. Returns `false` (and changes nothing) if there is none.
    pub fn remove(&mut self, peer: &P) -> bool {
        match self.position(peer) {
            Ok(i) => {
                self.total -= 1;
                if self.entries[i].1 == 1 {
                    self.entries.remove(i);
                } else {
                    self.entries[i].1 -= 1;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Removes every arc to `peer`; returns how many there were.
    pub fn remove_all(&mut self, peer: &P) -> u32 {
        match self.position(peer) {
            Ok(i) => {
                let (_, n) = self.entries.remove(i);
                self.total -= n as usize;
                n
            }
            Err(_) => 0,
        }
    }

    /// Number of arcs to `peer`.
    pub fn count(&self, peer: &P) -> u32 {
        self.position(peer).map_or(0, |i| self.entries[i].1)
    }

    /// Whether at least one arc goes to `peer`.
    pub fn contains(&self, peer: &P) -> bool {
        self.position(peer).is_ok()
    }

    /// Total number of arcs, occurrences included.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the set holds no arc.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Number of distinct peers.
    pub fn distinct(&self) -> usize {
        self.entries.len()
    }

    /// `(peer, count)` pairs in peer order, as stored.
    pub fn as_slice(&self) -> &[(P, u32)] {
        &self.entries
    }

    /// `(peer, count)` pairs in peer order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&P, u32)> + '_ {
        self.entries.iter().map(|(p, n)| (p, *n))
    }

    /// Distinct peers in peer order.
    pub fn peers(&self) -> impl ExactSizeIterator<Item = &P> + '_ {
        self.entries.iter().map(|(p, _)| p)
    }

    /// Every arc occurrence in peer order (a peer with 3 arcs appears 3 times).
    pub fn occurrences(&self) -> impl Iterator<Item = &P> + '_ {
        self.entries
            .iter()
            .flat_map(|(p, n)| std::iter::repeat_n(p, *n as usize))
    }

    /// One arc drawn uniformly among all occurrences (a peer with 2 arcs is twice as likely).
    pub fn pick_arc<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<&P> {
        if self.total == 0 {
            return None;
        }
        let mut k = rng.random_range(0..self.total);
        for (p, n) in &self.entries {
            let n = *n as usize;
            if k < n {
                return Some(p);
            }
            k -= n;
        }
        unreachable!("total counts every occurrence")
    }

    /// One peer drawn uniformly among distinct peers.
    pub fn pick_peer<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<&P> {
        if self.entries.is_empty() {
            return None;
        }
        Some(&self.entries[rng.random_range(0..self.entries.len())].0)
    }

    /// Distinct peers the set can hold without allocating.
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Gives back memory, keeping room for at least `min` distinct peers
    /// (and for those it holds), as [`Vec::shrink_to`].
    pub fn shrink_to(&mut self, min: usize) {
        self.entries.shrink_to(min);
    }

    /// Removes every arc.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.total = 0;
    }
}

impl<P: Ord + Clone> FromIterator<P> for ArcSet<P> {
    fn from_iter<I: IntoIterator<Item = P>>(iter: I) -> Self {
        let mut set = Self::new();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        InsertN(u8, u8),
        Remove(u8),
        RemoveAll(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8).prop_map(Op::Insert),
            (0u8..8, 0u8..4).prop_map(|(p, n)| Op::InsertN(p, n)),
            (0u8..8).prop_map(Op::Remove),
            (0u8..8).prop_map(Op::RemoveAll),
        ]
    }

    proptest! {
        /// The multiset behaves exactly as a reference map of counts, iterates in
        /// order, keeps its total in step, and never keeps a zero count.
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut set = ArcSet::new();
            let mut model: BTreeMap<u8, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(p) => { set.insert(p); *model.entry(p).or_default() += 1; }
                    Op::InsertN(p, n) => {
                        set.insert_n(p, n as u32);
                        if n > 0 { *model.entry(p).or_default() += n as u32; }
                    }
                    Op::Remove(p) => {
                        let had = model.get(&p).copied().unwrap_or(0) > 0;
                        prop_assert_eq!(set.remove(&p), had);
                        if had {
                            let c = model.get_mut(&p).unwrap();
                            *c -= 1;
                            if *c == 0 { model.remove(&p); }
                        }
                    }
                    Op::RemoveAll(p) => {
                        prop_assert_eq!(set.remove_all(&p), model.remove(&p).unwrap_or(0));
                    }
                }
                let listed: Vec<(u8, u32)> = set.iter().map(|(p, n)| (*p, n)).collect();
                let expected: Vec<(u8, u32)> = model.iter().map(|(p, n)| (*p, *n)).collect();
                prop_assert_eq!(listed, expected);
                prop_assert_eq!(set.len(), model.values().map(|n| *n as usize).sum::<usize>());
                prop_assert_eq!(set.occurrences().count(), set.len());
                prop_assert!(set.iter().all(|(_, n)| n > 0));
            }
        }

        /// Random picks always return a member, and the same seed gives the same picks.
        #[test]
        fn picks_are_members_and_reproducible(
            peers in proptest::collection::vec(0u8..16, 1..40), seed in any::<u64>()
        ) {
            let set: ArcSet<u8> = peers.iter().copied().collect();
            let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..20 {
                let a = *set.pick_arc(&mut r1).unwrap();
                prop_assert!(set.contains(&a));
                prop_assert_eq!(Some(&a), set.pick_arc(&mut r2));
                let b = *set.pick_peer(&mut r1).unwrap();
                prop_assert!(set.contains(&b));
                prop_assert_eq!(Some(&b), set.pick_peer(&mut r2));
            }
        }
    }

    #[test]
    fn pick_arc_weights_by_occurrence() {
        let mut set = ArcSet::new();
        set.insert_n(1u8, 3);
        set.insert(2u8);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let ones = (0..4000)
            .filter(|_| *set.pick_arc(&mut rng).unwrap() == 1)
            .count();
        // Expect 3000; 5 sigma is about 140.
        assert!((2850..3150).contains(&ones), "{ones}");
        assert!(ArcSet::<u8>::new().pick_arc(&mut rng).is_none());
    }
}
