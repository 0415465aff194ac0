//! Running windows of the latency engine on several threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use n2n_core::overlay::{Overlay, Views};

use crate::barrier::{Barrier, BreakOnPanic};
use crate::queue::Entry;

use super::Sim;
use super::env::*;
use super::shard::*;

impl<O: Overlay<u32> + Views<u32> + Send> Sim<O>
where
    O::Timer: Send,
{
    /// [`Sim::run_until_us`] on [`Sim::threads`] threads, through windows
    /// `[start, start + width)` from now to `until`: in each, the threads
    /// take the shards one by one (whoever is free takes the next, so that a
    /// busy shard does not hold the others up), each shard takes its mail,
    /// runs the window and posts its mail for the others; then the threads
    /// meet at a barrier. A window's events for other shards land at its end
    /// or later (every hop is at least the width), so a shard runs a window
    /// once it has the mail of the previous one. Mail goes to two sets of
    /// slots in turn (odd and even windows), so that a window's posts never
    /// meet the takes of the mail of the window before. What a shard
    /// computes depends on its events only, never on the thread that runs
    /// it: the results match the one-thread path's. The mail of the last
    /// window is left in `mail`.
    pub(super) fn parallel(&mut self, until: u64) {
        let width = self.env.min_hop().max(1);
        let first = self.now;
        // Window `w` takes its mail from set `(w + 1) % 2` and posts to set
        // `w % 2`; in a set, as in `mail`, slot `d * SHARDS + s` goes from
        // shard `s` to shard `d`. Mail from before goes to set 1.
        const SET: usize = SHARDS * SHARDS;
        let boxes: Vec<Mutex<Mail<O::Timer>>> = (0..SET)
            .map(|_| Vec::new())
            .chain(self.mail.drain(..))
            .map(Mutex::new)
            .collect();
        let cells: Vec<Mutex<&mut Shard<O>>> = self.shards.iter_mut().map(Mutex::new).collect();
        let barrier = Barrier::new(self.threads);
        // Shards taken so far, over all windows: window `w` hands out
        // tickets `w * SHARDS .. (w + 1) * SHARDS`.
        let tickets = AtomicUsize::new(0);
        let env = &self.env;
        let (barrier, mail, cells, tickets) = (&barrier, &boxes, &cells, &tickets);
        let run = move || {
            let _guard = BreakOnPanic(barrier);
            let mut start = first;
            let mut window = 0;
            while start <= until {
                let end = start.saturating_add(width - 1).min(until);
                let last = (window + 1) * SHARDS;
                let mut ticket = tickets.load(Ordering::Relaxed);
                while ticket < last {
                    if let Err(now) = tickets.compare_exchange_weak(
                        ticket,
                        ticket + 1,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        ticket = now;
                        continue;
                    }
                    let d = ticket - window * SHARDS;
                    let mut shard = cells[d].lock().unwrap_or_else(PoisonError::into_inner);
                    let (takes, posts) = ((window + 1) % 2 * SET, window % 2 * SET);
                    for s in 0..SHARDS {
                        let mut slot = mail[takes + d * SHARDS + s]
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        for e in slot.drain(..) {
                            shard.queue.push(e.at, e.seq, e.event);
                        }
                    }
                    shard.run(env, end);
                    for (to, out) in shard.outbox.iter_mut().enumerate() {
                        if !out.is_empty() {
                            mail[posts + to * SHARDS + d]
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .append(out);
                        }
                    }
                    drop(shard);
                    ticket = tickets.load(Ordering::Relaxed);
                }
                if !barrier.wait() || end == until {
                    break;
                }
                start = end + 1;
                window += 1;
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..self.threads {
                scope.spawn(run);
            }
            run();
        });
        let mut boxes: Vec<Mail<O::Timer>> = boxes
            .into_iter()
            .map(|b| b.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let odd = boxes.split_off(SET);
        self.mail = boxes;
        for (slot, mut more) in self.mail.iter_mut().zip(odd) {
            slot.append(&mut more);
        }
    }

    /// Clears the bits of the join connections over before `now`.
    pub(super) fn expire_links(&mut self, now: u64) {
        while let Some(&(until, peer)) = self.expiring.front() {
            if until >= now {
                break;
            }
            self.expiring.pop_front();
            // A peer that joined again has a later expiry, queued behind.
            if self.env.links[peer as usize].1 < now {
                self.env.link_bits[peer as usize / 64] &= !(1 << (peer % 64));
            }
        }
    }

    /// Moves every outbox into the mail slots (empty ones come back).
    pub(super) fn collect_mail(&mut self) {
        for (s, shard) in self.shards.iter_mut().enumerate() {
            for (d, out) in shard.outbox.iter_mut().enumerate() {
                if !out.is_empty() {
                    std::mem::swap(out, &mut self.mail[d * SHARDS + s]);
                }
            }
        }
    }
}

/// Puts the events mailed to `shard` (one slot per sender) in its queue.
pub(super) fn deliver_mail<O: Overlay<u32> + Views<u32>>(
    shard: &mut Shard<O>,
    mail: &mut [Vec<Entry<Kind<O::Timer>>>],
) {
    for slot in mail {
        for e in slot.drain(..) {
            shard.queue.push(e.at, e.seq, e.event);
        }
    }
}
