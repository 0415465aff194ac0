//! The partial view with ages: one entry per outgoing arc occurrence.
//!
//! The outview multiset of `n2n-core` counts arcs; Spray also needs each arc's
//! age (to pick the oldest neighbour) and to know which arcs are promised away
//! in a shuffle. An age is stored as the shuffle round the arc was born in, so
//! ageing every arc costs nothing.

/// What is happening to an arc occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// In the view, free to be sampled.
    Live,
    /// In the sample of our pending shuffle: it moves once the partner answers.
    Reserved,
    /// Given away in a shuffle, its bridge not done yet (with
    /// [`crate::spray::Config::await_bridges`]): closed once the partner
    /// opened its arc, live again if that failed.
    Giving,
    /// We asked to close it (given away, or its peer handled as down); gone
    /// from the view as Spray sees it, it waits for the close to be confirmed.
    Closing,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry<P> {
    pub(crate) peer: P,
    /// The shuffle round the arc was born in (negative for an arc that
    /// arrived older than this peer's rounds).
    pub(crate) born: i64,
    pub(crate) mark: Mark,
}

#[derive(Clone, Debug)]
pub(crate) struct PartialView<P> {
    entries: Vec<Entry<P>>,
}

impl<P: PartialEq + Clone> PartialView<P> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    pub(crate) fn entries(&self) -> &[Entry<P>] {
        &self.entries
    }

    pub(crate) fn push(&mut self, peer: P, born: i64) {
        self.entries.push(Entry {
            peer,
            born,
            mark: Mark::Live,
        });
    }

    /// Arcs in the view as Spray sees it (live or reserved).
    pub(crate) fn size(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.mark != Mark::Closing)
            .count()
    }

    /// Index of the oldest live arc (the first one among equals).
    pub(crate) fn oldest_live(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.mark == Mark::Live && best.is_none_or(|b| e.born < self.entries[b].born) {
                best = Some(i);
            }
        }
        best
    }

    pub(crate) fn set_mark(&mut self, i: usize, mark: Mark) {
        self.entries[i].mark = mark;
    }

    /// Turns every `from` mark into `to`.
    pub(crate) fn remark(&mut self, from: Mark, to: Mark) {
        for e in &mut self.entries {
            if e.mark == from {
                e.mark = to;
            }
        }
    }

    /// Removes one occurrence of `peer`: a closing one first, else the oldest.
    /// Returns the mark of the removed occurrence.
    pub(crate) fn remove_one(&mut self, peer: &P) -> Option<Mark> {
        let mut pick: Option<usize> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if &e.peer != peer {
                continue;
            }
            let better = match pick {
                None => true,
                Some(b) => {
                    let cur = &self.entries[b];
                    match (cur.mark == Mark::Closing, e.mark == Mark::Closing) {
                        (false, true) => true,
                        (true, false) => false,
                        _ => e.born < cur.born,
                    }
                }
            };
            if better {
                pick = Some(i);
            }
        }
        pick.map(|i| self.entries.remove(i).mark)
    }

    /// The entries the view can hold without allocating.
    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Gives back memory, keeping room for at least `min` entries.
    pub(crate) fn shrink_to(&mut self, min: usize) {
        self.entries.shrink_to(min);
    }

    /// Whether any occurrence of `peer` is left.
    pub(crate) fn contains(&self, peer: &P) -> bool {
        self.entries.iter().any(|e| &e.peer == peer)
    }
}
