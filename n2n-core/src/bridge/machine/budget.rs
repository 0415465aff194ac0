//! Relay budgets: how large a relayed signal may be, how many signals and
//! bytes one job may carry, and how fast one neighbour may have signals
//! relayed or delivered (a token bucket per neighbour). A signal over a
//! budget fails its job, never the neighbours' connections.

use std::fmt;

use super::Bridge;
use crate::bridge::Config;
use crate::time::Instant;

/// The size of a relayed signal, as the relay budgets count it: checked
/// before any signature, from the fields a relay can see.
pub trait RelaySize {
    /// Bytes this signal counts for.
    fn relay_size(&self) -> usize;
}

impl RelaySize for String {
    fn relay_size(&self) -> usize {
        self.len()
    }
}

impl RelaySize for Vec<u8> {
    fn relay_size(&self) -> usize {
        self.len()
    }
}

/// What one job (or one endpoint of a job) carried so far.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Carried {
    signals: u32,
    bytes: usize,
}

impl Carried {
    /// Counts one signal of `size` bytes, or says which budget it breaks.
    pub(super) fn charge(&mut self, config: &Config, size: usize) -> Result<(), String> {
        if size > config.max_signal_bytes {
            return Err(format!(
                "signal of {size} bytes over the {}-byte limit",
                config.max_signal_bytes
            ));
        }
        if self.signals >= config.max_signals_per_job {
            return Err(format!(
                "more than {} signals in one job",
                config.max_signals_per_job
            ));
        }
        if self.bytes + size > config.max_bytes_per_job {
            return Err(format!(
                "more than {} signal bytes in one job",
                config.max_bytes_per_job
            ));
        }
        self.signals += 1;
        self.bytes += size;
        Ok(())
    }
}

/// A token bucket of signals, refilled at `relay_rate` per second up to
/// `relay_burst`; tokens are kept in thousandths.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    milli: u64,
    at: Instant,
}

impl Bucket {
    pub(super) fn full(config: &Config, now: Instant) -> Self {
        Self {
            milli: u64::from(config.relay_burst) * 1000,
            at: now,
        }
    }

    /// Takes one token at `now`, if there is one.
    pub(super) fn take(&mut self, config: &Config, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = (elapsed.as_millis() as u64).saturating_mul(u64::from(config.relay_rate));
        self.milli = (self.milli.saturating_add(refill)).min(u64::from(config.relay_burst) * 1000);
        self.at = now;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

impl<P, S> Bridge<P, S>
where
    P: Ord + Clone + fmt::Debug,
    S: Clone + RelaySize,
{
    /// Takes one token of `sender`'s bucket at `now`.
    pub(super) fn take_token(&mut self, now: Instant, sender: &P) -> Result<(), String> {
        let config = &self.config;
        let bucket = self
            .buckets
            .entry(sender.clone())
            .or_insert_with(|| Bucket::full(config, now));
        if bucket.take(config, now) {
            Ok(())
        } else {
            Err(format!(
                "neighbour relays more than {} signals per second",
                config.relay_rate
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let config = Config {
            relay_rate: 10,
            relay_burst: 3,
            ..Config::default()
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(&config, t0);
        assert!((0..3).all(|_| b.take(&config, t0)));
        assert!(!b.take(&config, t0));
        assert!(b.take(&config, t0 + Duration::from_millis(100)));
        assert!(!b.take(&config, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(&config, later)));
        assert!(!b.take(&config, later));
    }

    #[test]
    fn a_job_carries_at_most_its_budget() {
        let config = Config {
            max_signal_bytes: 10,
            max_signals_per_job: 3,
            max_bytes_per_job: 25,
            ..Config::default()
        };
        let mut c = Carried::default();
        assert!(c.charge(&config, 11).is_err());
        assert!(c.charge(&config, 10).is_ok());
        assert!(c.charge(&config, 10).is_ok());
        assert!(c.charge(&config, 10).is_err(), "bytes");
        assert!(c.charge(&config, 5).is_ok());
        assert!(c.charge(&config, 1).is_err(), "count");
    }
}
