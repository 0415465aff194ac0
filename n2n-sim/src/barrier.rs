//! The barrier the threads of a parallel run meet at between windows.
//!
//! A window lasts tens of microseconds: too short to put threads to sleep and
//! wake them each time, so a thread first spins. But a thread that spins for
//! ever is a disaster when the threads outnumber the free cores (a loaded
//! machine, or `--threads` above the core count): the last thread to arrive
//! waits for a core that the spinners hold. So a waiting thread spins a
//! little, yields its core a few times, then sleeps until it is woken.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Spins of a thread waiting before it starts yielding its core.
const SPINS: u32 = 1 << 12;
/// Yields before it sleeps.
const YIELDS: u32 = 64;
/// A sleeper wakes up this often to check whether the barrier broke.
const NAP: Duration = Duration::from_millis(5);

/// A reusable barrier for a fixed number of threads, which a panicking
/// thread breaks (see [`BreakOnPanic`]).
pub(crate) struct Barrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// A thread panicked: the others must not wait for it.
    broken: AtomicBool,
    /// Threads asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Breaks the barrier if its thread unwinds, so that the others return and
/// the panic reaches the caller instead of a deadlock.
pub(crate) struct BreakOnPanic<'a>(pub(crate) &'a Barrier);

impl Drop for BreakOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.broken.store(true, Ordering::SeqCst);
            let _guard = self.0.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.0.wake.notify_all();
        }
    }
}

impl Barrier {
    pub(crate) fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Waits for every party; `false` if one of them panicked.
    pub(crate) fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.parties {
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            // A sleeper counts itself before it checks the generation, and
            // we bump the generation before we look for sleepers: one of the
            // two sees the other (sequentially consistent), and the lock
            // keeps the wake-up from falling between its check and its sleep.
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
                self.wake.notify_all();
            }
            return true;
        }
        let passed = || self.generation.load(Ordering::SeqCst) != generation;
        for round in 0..SPINS + YIELDS {
            if passed() {
                return true;
            }
            if self.broken.load(Ordering::SeqCst) {
                return false;
            }
            if round < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while !passed() && !self.broken.load(Ordering::SeqCst) {
            guard = self
                .wake
                .wait_timeout(guard, NAP)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        passed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More threads than this machine has cores meet many times, most of
    /// them asleep at each meeting: every meeting completes.
    #[test]
    fn more_threads_than_cores_all_meet() {
        let parties = 2 * std::thread::available_parallelism().map_or(2, usize::from) + 1;
        let barrier = Barrier::new(parties);
        let count = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..parties {
                scope.spawn(|| {
                    for round in 0..200 {
                        count.fetch_add(1, Ordering::SeqCst);
                        assert!(barrier.wait());
                        // Everyone counted this round before anyone passed.
                        assert!(count.load(Ordering::SeqCst) >= (round + 1) * parties);
                        assert!(barrier.wait());
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::SeqCst), 200 * parties);
    }
}
