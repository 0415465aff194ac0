//! A joined client's queue of frames to write, bounded in frames and in bytes,
//! and the server-wide count of queued bytes.
//!
//! Other clients' tasks push already-encoded frames; the client's own task
//! takes them and writes them. A push that would exceed the client's budget
//! marks the client as a slow reader: it is closed with `slow_reader` and
//! takes no more frames. A push that would exceed the server-wide budget is
//! refused without blaming the recipient.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::protocol::ErrorCode;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The recipient's queue is over its budget: it is being disconnected.
    SlowReader,
    /// The queues of all clients together are over the server's budget.
    ServerBusy,
    /// The recipient is closing.
    Closing,
}

/// What the client's task writes next.
#[derive(Debug)]
pub(super) enum Next {
    /// An encoded text frame.
    Frame(String),
    /// A close with this code and message.
    Close(ErrorCode, String),
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<String>,
    bytes: usize,
    close: Option<(ErrorCode, String)>,
}

/// One client's queue.
#[derive(Debug)]
pub(super) struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    max_frames: usize,
    max_bytes: usize,
    total: Arc<AtomicUsize>,
    max_total: usize,
}

impl Outbox {
    /// A queue of at most `max_frames` frames and `max_bytes` bytes, counted in
    /// `total` (the server-wide count, at most `max_total`).
    pub(super) fn new(
        max_frames: usize,
        max_bytes: usize,
        total: Arc<AtomicUsize>,
        max_total: usize,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            max_frames,
            max_bytes,
            total,
            max_total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an encoded frame.
    pub(super) fn push(&self, frame: String) -> Result<(), Refused> {
        let len = frame.len();
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Err(Refused::Closing);
        }
        if inner.frames.len() >= self.max_frames || inner.bytes + len > self.max_bytes {
            inner.close = Some((
                ErrorCode::SlowReader,
                format!(
                    "more than {} frames or {} bytes waiting for this client",
                    self.max_frames, self.max_bytes
                ),
            ));
            drop(inner);
            self.notify.notify_one();
            return Err(Refused::SlowReader);
        }
        let reserved = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t + len <= self.max_total).then_some(t + len)
            });
        if reserved.is_err() {
            return Err(Refused::ServerBusy);
        }
        inner.bytes += len;
        inner.frames.push_back(frame);
        drop(inner);
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the client's task to close (the first reason wins); queued frames
    /// are dropped.
    pub(super) fn close(&self, code: ErrorCode, message: String) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some((code, message));
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// The next thing to write: a close before any frame.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken until it is returned.
    pub(super) async fn next(&self) -> Next {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if let Some((code, message)) = inner.close.clone() {
                    return Next::Close(code, message);
                }
                if let Some(frame) = inner.frames.pop_front() {
                    inner.bytes -= frame.len();
                    self.total.fetch_sub(frame.len(), Ordering::AcqRel);
                    return Next::Frame(frame);
                }
            }
            notified.await;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.total.fetch_sub(inner.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_and_bytes_are_both_bounded() {
        let total = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox::new(3, 10, total.clone(), 100);
        outbox.push("aaaa".into()).unwrap();
        outbox.push("bbbb".into()).unwrap();
        assert_eq!(total.load(Ordering::Acquire), 8);
        assert_eq!(outbox.push("ccc".into()), Err(Refused::SlowReader));
        assert_eq!(outbox.push("d".into()), Err(Refused::Closing));
        assert!(matches!(
            outbox.next().await,
            Next::Close(ErrorCode::SlowReader, _)
        ));
        drop(outbox);
        assert_eq!(
            total.load(Ordering::Acquire),
            0,
            "dropped frames are uncounted"
        );
    }

    #[tokio::test]
    async fn the_server_budget_refuses_without_blaming_the_recipient() {
        let total = Arc::new(AtomicUsize::new(0));
        let a = Outbox::new(10, 10, total.clone(), 12);
        let b = Outbox::new(10, 10, total.clone(), 12);
        a.push("x".repeat(8)).unwrap();
        assert_eq!(b.push("y".repeat(8)), Err(Refused::ServerBusy));
        assert!(matches!(a.next().await, Next::Frame(f) if f.len() == 8));
        b.push("y".repeat(8)).unwrap();
        assert!(matches!(b.next().await, Next::Frame(_)));
        assert_eq!(total.load(Ordering::Acquire), 0);
    }
}
