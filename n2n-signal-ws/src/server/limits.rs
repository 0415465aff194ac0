//! Admission and rate limits: token buckets, the per-source table of
//! connections and joins, and the budget of log lines remotes can cause.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use super::Config;

/// Allows `rate` events per second with bursts of `burst`.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            rate: f64::from(rate),
            burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now` (it then carries no memory of
    /// past events and may be forgotten).
    fn is_full(&self, now: Instant) -> bool {
        let mut probe = self.clone();
        probe.refill(now);
        probe.tokens >= probe.burst
    }
}

/// The source a connection is counted against: an IPv4 address, or the /64
/// prefix of an IPv6 address (IPv4-mapped IPv6 addresses count as IPv4);
/// `None` for a loopback address unless `config.limit_loopback`.
pub(super) fn limited_source(ip: IpAddr, config: &Config) -> Option<IpAddr> {
    let source = source_of(ip);
    (config.limit_loopback || !source.is_loopback()).then_some(source)
}

fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Why a connection was refused before its WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// The pool of connections not yet joined is full.
    PendingFull,
    /// This source holds `max_pending_per_source` connections not yet joined.
    SourcePending,
    /// This source holds `max_connections_per_source` connections.
    SourceConnections,
}

impl Admission {
    pub(super) const ALL: [Self; 3] = [
        Self::PendingFull,
        Self::SourcePending,
        Self::SourceConnections,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::PendingFull => "pending_full",
            Self::SourcePending => "source_pending",
            Self::SourceConnections => "source_connections",
        }
    }
}

#[derive(Debug)]
struct Source {
    pending: usize,
    total: usize,
    joins: TokenBucket,
}

/// Connections and joins per source. An entry lives while its source holds a
/// connection or its join bucket is not yet full again, so the table holds at
/// most about `max_pending + max_clients` entries plus the sources that joined
/// within one refill period.
#[derive(Debug, Default)]
pub(super) struct Sources {
    table: BTreeMap<IpAddr, Source>,
    pending: usize,
    /// Table size at which the next sweep of forgettable entries runs.
    sweep_at: usize,
}

impl Sources {
    /// Connections accepted and not yet joined.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// Admits a new connection from `source` as pending, or says why not.
    /// `None`: a source exempt from the per-source limits (loopback), counted
    /// in the pending pool only.
    pub(super) fn admit(
        &mut self,
        source: Option<IpAddr>,
        config: &Config,
        now: Instant,
    ) -> Result<(), Admission> {
        if self.pending >= config.max_pending {
            return Err(Admission::PendingFull);
        }
        let Some(source) = source else {
            self.pending += 1;
            return Ok(());
        };
        if let Some(s) = self.table.get(&source) {
            if s.total >= config.max_connections_per_source {
                return Err(Admission::SourceConnections);
            }
            if s.pending >= config.max_pending_per_source {
                return Err(Admission::SourcePending);
            }
        }
        self.sweep(now);
        let entry = self.table.entry(source).or_insert_with(|| Source {
            pending: 0,
            total: 0,
            joins: TokenBucket::new(
                config.joins_per_second_per_source,
                config.join_burst_per_source,
                now,
            ),
        });
        entry.pending += 1;
        entry.total += 1;
        self.pending += 1;
        Ok(())
    }

    /// Takes one join from `source`'s budget.
    pub(super) fn take_join(&mut self, source: Option<IpAddr>, now: Instant) -> bool {
        let Some(source) = source else { return true };
        self.table
            .get_mut(&source)
            .is_some_and(|s| s.joins.take(now))
    }

    /// The connection is joined: it no longer counts as pending.
    pub(super) fn joined(&mut self, source: Option<IpAddr>) {
        let Some(source) = source else {
            self.pending = self.pending.saturating_sub(1);
            return;
        };
        if let Some(s) = self.table.get_mut(&source)
            && s.pending > 0
        {
            s.pending -= 1;
            self.pending = self.pending.saturating_sub(1);
        }
    }

    /// The connection is gone (`was_pending`: it never joined).
    pub(super) fn release(&mut self, source: Option<IpAddr>, was_pending: bool, now: Instant) {
        let Some(source) = source else {
            if was_pending {
                self.pending = self.pending.saturating_sub(1);
            }
            return;
        };
        let Some(s) = self.table.get_mut(&source) else {
            return;
        };
        if was_pending && s.pending > 0 {
            s.pending -= 1;
            self.pending = self.pending.saturating_sub(1);
        }
        s.total = s.total.saturating_sub(1);
        if s.total == 0 && s.joins.is_full(now) {
            self.table.remove(&source);
        }
    }

    /// Forgets sources without connections whose join bucket is full again;
    /// runs when the table has doubled since the last sweep, so its cost is
    /// amortized over the admissions.
    fn sweep(&mut self, now: Instant) {
        if self.table.len() < self.sweep_at {
            return;
        }
        self.table
            .retain(|_, s| s.total > 0 || !s.joins.is_full(now));
        self.sweep_at = (self.table.len() * 2).max(1024);
    }
}

/// Log lines that remote behaviour causes, at most `BURST` at once and
/// `PER_SECOND` sustained; the others are counted as suppressed.
#[derive(Debug)]
pub(super) struct LogBudget {
    bucket: std::sync::Mutex<TokenBucket>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogBudget {
    const PER_SECOND: u32 = 20;
    const BURST: u32 = 100;

    pub(super) fn new() -> Self {
        Self {
            bucket: std::sync::Mutex::new(TokenBucket::new(
                Self::PER_SECOND,
                Self::BURST,
                Instant::now(),
            )),
            suppressed: Default::default(),
        }
    }

    /// Whether one more line may be written now.
    pub(super) fn allow(&self) -> bool {
        let ok = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(Instant::now());
        if !ok {
            self.suppressed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// Lines suppressed since start.
    pub(super) fn suppressed(&self) -> u64 {
        self.suppressed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Writes a `tracing` event if the server's [`LogBudget`] allows it.
macro_rules! limited {
    ($shared:expr, $level:ident, $($arg:tt)*) => {
        if $shared.logs.allow() {
            tracing::$level!($($arg)*);
        }
    };
}
pub(super) use limited;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        assert!(!b.is_full(t0 + Duration::from_millis(100)));
        assert!(b.is_full(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn sources_count_pending_and_total_per_source() {
        let config = Config {
            max_pending: 5,
            max_pending_per_source: 2,
            max_connections_per_source: 3,
            ..Config::default()
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        let mut s = Sources::default();
        assert!(s.admit(Some(a), &config, now).is_ok());
        assert!(s.admit(Some(a), &config, now).is_ok());
        assert_eq!(
            s.admit(Some(a), &config, now),
            Err(Admission::SourcePending)
        );
        s.joined(Some(a));
        assert!(s.admit(Some(a), &config, now).is_ok());
        assert_eq!(
            s.admit(Some(a), &config, now),
            Err(Admission::SourceConnections)
        );
        assert!(s.admit(Some(b), &config, now).is_ok());
        assert!(s.admit(Some(b), &config, now).is_ok());
        assert_eq!(s.pending(), 4);
        s.release(Some(b), true, now);
        s.release(Some(b), true, now);
        assert_eq!(s.pending(), 2);
        assert!(
            !s.table.contains_key(&b),
            "a source without joins is forgotten"
        );
        for last in 3..6 {
            let other = IpAddr::from([10, 0, 0, last]);
            s.admit(Some(other), &config, now).unwrap();
        }
        assert_eq!(s.pending(), 5);
        assert_eq!(s.admit(Some(b), &config, now), Err(Admission::PendingFull));
    }

    #[test]
    fn a_source_that_joined_is_remembered_until_its_bucket_refills() {
        let config = Config {
            joins_per_second_per_source: 1,
            join_burst_per_source: 1,
            ..Config::default()
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let mut s = Sources::default();
        s.admit(Some(a), &config, now).unwrap();
        assert!(s.take_join(Some(a), now));
        s.joined(Some(a));
        s.release(Some(a), false, now);
        // Reconnecting at once does not reset the budget.
        s.admit(Some(a), &config, now).unwrap();
        assert!(!s.take_join(Some(a), now));
        assert!(s.take_join(Some(a), now + Duration::from_secs(1)));
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        let c = Config::default();
        assert_eq!(limited_source(lo, &c), None);
        let c = Config {
            limit_loopback: true,
            ..c
        };
        assert_eq!(limited_source(lo, &c), Some(lo));
        let mut s = Sources::default();
        let c = Config {
            max_pending: 2,
            ..c
        };
        let now = Instant::now();
        s.admit(None, &c, now).unwrap();
        s.admit(None, &c, now).unwrap();
        assert_eq!(s.admit(None, &c, now), Err(Admission::PendingFull));
        s.joined(None);
        s.release(None, true, now);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn ipv6_sources_are_slash_64_prefixes() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(x), source_of(y));
        assert_ne!(source_of(x), source_of(z));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
