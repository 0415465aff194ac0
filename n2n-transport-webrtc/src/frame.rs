//! How application messages travel on the data channel: cut into chunks well
//! below the sizes at which the data channel misbehaves, each chunk one SCTP
//! message with a small header, and put back together on the other side.
//!
//! Chunk layouts (integers big-endian):
//!
//! | kind | layout | meaning |
//! |---|---|---|
//! | `0` | `0, data` | a whole message (at most one chunk long) |
//! | `1` | `1, id: u32, total: u32, data` | first chunk of message `id`, `total` bytes long |
//! | `2` | `2, id: u32, data` | next chunk of message `id` |
//! | `3` | `3, id: u32` | message `id` is abandoned (its send was cancelled) |
//! | `4` | `4` | the sender closes the connection; the receiver answers with a goodbye of its own (unless it sent one already), which tells the closer that everything it sent has arrived |
//!
//! Chunks of several messages may interleave (concurrent senders take turns per
//! chunk), so a small message never waits for a whole large one. The
//! [`Reassembler`] is sans-IO: it takes chunk bytes and returns complete
//! messages, refusing whatever does not follow the rules with a [`FrameError`].

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

/// Smallest allowed chunk size.
pub const MIN_CHUNK: usize = 1024;
/// Largest allowed chunk size: well below the 64 KiB messages that closed the
/// channel and the 65,000-byte ones that stalled it, and the largest data
/// channel message every browser accepts. Every connection keeps a read buffer
/// of this size (plus a header) for as long as it lives, so it is also a
/// per-connection memory cost.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Largest chunk header.
pub const MAX_HEADER: usize = 9;
/// Largest chunk on the wire: what a receiver's read buffer must hold.
pub const MAX_WIRE_CHUNK: usize = MAX_CHUNK + MAX_HEADER;
/// Messages a remote may have in flight at once, partially received.
pub const MAX_PARTIAL: usize = 8;
/// Bytes of partially received messages held at once, in messages of the
/// largest size: with [`MAX_PARTIAL`] messages in flight, their bytes
/// together stay within twice `max_message` (and at least
/// [`MAX_PARTIAL`] chunks).
pub const PARTIAL_BUDGET_MESSAGES: usize = 2;

const WHOLE: u8 = 0;
const START: u8 = 1;
const MORE: u8 = 2;
const ABORT: u8 = 3;
const GOODBYE: u8 = 4;

/// Why a chunk from the remote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The chunk is empty or shorter than its header.
    #[error("truncated chunk of {0} bytes")]
    Truncated(usize),
    /// The chunk's kind byte is unknown.
    #[error("unknown chunk kind {0}")]
    UnknownKind(u8),
    /// The chunk carries more data than any sender may put in one.
    #[error("chunk of {0} bytes exceeds the chunk limit")]
    ChunkTooLarge(usize),
    /// A message announced more bytes than this side accepts.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// A first chunk that does not need chunking, or whose id is already in use.
    #[error("bad start of message {0}")]
    BadStart(u32),
    /// A chunk of a message that was never started.
    #[error("chunk of unknown message {0}")]
    UnknownMessage(u32),
    /// A message received more bytes than it announced.
    #[error("message {0} overflows its announced size")]
    Overflow(u32),
    /// Too many messages partially received at once.
    #[error("more than {MAX_PARTIAL} messages in flight")]
    TooManyPartial,
    /// The messages partially received hold more bytes than the budget.
    #[error("partial messages over the {0}-byte receive budget")]
    OverBudget(usize),
}

/// What a chunk completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Nothing yet (a piece of a larger message, or an abandoned one).
    Nothing,
    /// A whole message.
    Message(Bytes),
    /// The remote is closing the connection.
    Goodbye,
}

/// Cuts `message` into chunks of at most `chunk` data bytes, message id `id`.
pub fn chunks(id: u32, message: &Bytes, chunk: usize) -> impl Iterator<Item = Bytes> + '_ {
    let whole = message.len() <= chunk;
    let count = if whole {
        1
    } else {
        message.len().div_ceil(chunk)
    };
    (0..count).map(move |i| {
        let data = &message[i * chunk..((i + 1) * chunk).min(message.len())];
        let mut b = BytesMut::with_capacity(MAX_HEADER + data.len());
        if whole {
            b.put_u8(WHOLE);
        } else if i == 0 {
            b.put_u8(START);
            b.put_u32(id);
            b.put_u32(message.len() as u32);
        } else {
            b.put_u8(MORE);
            b.put_u32(id);
        }
        b.put_slice(data);
        b.freeze()
    })
}

/// The chunk abandoning message `id`.
pub fn abort(id: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(ABORT);
    b.put_u32(id);
    b.freeze()
}

/// The chunk announcing a clean close.
pub fn goodbye() -> Bytes {
    Bytes::from_static(&[GOODBYE])
}

#[derive(Debug)]
struct Partial {
    total: usize,
    data: Vec<u8>,
}

/// Puts messages back together from chunks (sans-IO).
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    partial: BTreeMap<u32, Partial>,
    /// Bytes held in `partial`, and their bound.
    buffered: usize,
    budget: usize,
}

impl Reassembler {
    /// A reassembler accepting messages up to `max_message` bytes, holding
    /// at most [`PARTIAL_BUDGET_MESSAGES`] × `max_message` bytes of partial
    /// messages (and at least [`MAX_PARTIAL`] chunks' worth).
    pub fn new(max_message: usize) -> Self {
        let budget = max_message
            .saturating_mul(PARTIAL_BUDGET_MESSAGES)
            .max(MAX_PARTIAL * MAX_CHUNK);
        Self {
            max_message,
            partial: BTreeMap::new(),
            buffered: 0,
            budget,
        }
    }

    /// Bytes held in partially received messages now.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Counts `n` more buffered bytes, or refuses them.
    fn charge(&mut self, n: usize) -> Result<(), FrameError> {
        if self.buffered + n > self.budget {
            return Err(FrameError::OverBudget(self.budget));
        }
        self.buffered += n;
        Ok(())
    }

    /// Messages partially received.
    pub fn in_flight(&self) -> usize {
        self.partial.len()
    }

    /// Handles one chunk from the remote.
    ///
    /// # Errors
    /// A [`FrameError`] if the chunk breaks the rules; the connection should then
    /// be dropped.
    pub fn handle_chunk(&mut self, chunk: &[u8]) -> Result<Received, FrameError> {
        let (&kind, rest) = chunk.split_first().ok_or(FrameError::Truncated(0))?;
        let id_of = |rest: &[u8]| -> Result<(u32, usize), FrameError> {
            let id = rest
                .get(..4)
                .ok_or(FrameError::Truncated(chunk.len()))?
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| FrameError::Truncated(chunk.len()))?;
            Ok((id, 4))
        };
        match kind {
            WHOLE => {
                if rest.len() > MAX_CHUNK {
                    return Err(FrameError::ChunkTooLarge(rest.len()));
                }
                if rest.len() > self.max_message {
                    return Err(FrameError::TooLarge {
                        size: rest.len(),
                        limit: self.max_message,
                    });
                }
                Ok(Received::Message(Bytes::copy_from_slice(rest)))
            }
            START => {
                let (id, n) = id_of(rest)?;
                let total = rest
                    .get(n..n + 4)
                    .ok_or(FrameError::Truncated(chunk.len()))?;
                let total = u32::from_be_bytes([total[0], total[1], total[2], total[3]]) as usize;
                let data = &rest[n + 4..];
                if data.len() > MAX_CHUNK {
                    return Err(FrameError::ChunkTooLarge(data.len()));
                }
                if total > self.max_message {
                    return Err(FrameError::TooLarge {
                        size: total,
                        limit: self.max_message,
                    });
                }
                if total <= data.len() || data.is_empty() || self.partial.contains_key(&id) {
                    return Err(FrameError::BadStart(id));
                }
                if self.partial.len() >= MAX_PARTIAL {
                    return Err(FrameError::TooManyPartial);
                }
                self.charge(data.len())?;
                // Grows with what actually arrives, not with what was announced.
                let mut buf = Vec::with_capacity(data.len() * 4);
                buf.extend_from_slice(data);
                self.partial.insert(id, Partial { total, data: buf });
                Ok(Received::Nothing)
            }
            MORE => {
                let (id, n) = id_of(rest)?;
                let data = &rest[n..];
                if data.len() > MAX_CHUNK {
                    return Err(FrameError::ChunkTooLarge(data.len()));
                }
                let p = self
                    .partial
                    .get_mut(&id)
                    .ok_or(FrameError::UnknownMessage(id))?;
                if p.data.len() + data.len() > p.total {
                    return Err(FrameError::Overflow(id));
                }
                let (held, total) = (p.data.len(), p.total);
                self.charge(data.len())?;
                let p = self.partial.get_mut(&id).expect("present");
                p.data.extend_from_slice(data);
                if held + data.len() == total {
                    let p = self.partial.remove(&id).expect("present");
                    self.buffered -= p.data.len();
                    Ok(Received::Message(Bytes::from(p.data)))
                } else {
                    Ok(Received::Nothing)
                }
            }
            ABORT => {
                let (id, _) = id_of(rest)?;
                if let Some(p) = self.partial.remove(&id) {
                    self.buffered -= p.data.len();
                }
                Ok(Received::Nothing)
            }
            GOODBYE => Ok(Received::Goodbye),
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize, chunk: usize) {
        let msg = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let mut r = Reassembler::new(1 << 24);
        let mut out = None;
        let mut count = 0;
        for c in chunks(7, &msg, chunk) {
            assert!(c.len() <= chunk + MAX_HEADER);
            count += 1;
            match r.handle_chunk(&c).unwrap() {
                Received::Message(m) => out = Some(m),
                Received::Nothing => {}
                Received::Goodbye => panic!(),
            }
        }
        assert_eq!(count, len.div_ceil(chunk).max(1));
        assert_eq!(out.unwrap(), msg);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn messages_of_every_shape_roundtrip() {
        for len in [0, 1, 1023, 1024, 1025, 16 * 1024, 16 * 1024 + 1, 100_000] {
            roundtrip(len, 1024);
            roundtrip(len, 16 * 1024);
        }
    }

    #[test]
    fn interleaved_messages_complete_independently() {
        let a = Bytes::from(vec![1u8; 5000]);
        let b = Bytes::from(vec![2u8; 3000]);
        let ca: Vec<_> = chunks(1, &a, 1024).collect();
        let cb: Vec<_> = chunks(2, &b, 1024).collect();
        let mut r = Reassembler::new(10_000);
        let mut got = Vec::new();
        for i in 0..ca.len().max(cb.len()) {
            for c in [ca.get(i), cb.get(i)].into_iter().flatten() {
                if let Received::Message(m) = r.handle_chunk(c).unwrap() {
                    got.push(m);
                }
            }
        }
        assert_eq!(got, vec![b, a]);
        assert_eq!(r.handle_chunk(&goodbye()).unwrap(), Received::Goodbye);
    }

    #[test]
    fn abandoned_messages_are_forgotten() {
        let a = Bytes::from(vec![1u8; 5000]);
        let mut r = Reassembler::new(10_000);
        let first = chunks(1, &a, 1024).next().unwrap();
        r.handle_chunk(&first).unwrap();
        assert_eq!(r.in_flight(), 1);
        r.handle_chunk(&abort(1)).unwrap();
        assert_eq!(r.in_flight(), 0);
        // The id can be used again.
        for c in chunks(1, &a, 1024) {
            r.handle_chunk(&c).unwrap();
        }
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn rule_breaking_chunks_are_typed_errors() {
        let mut r = Reassembler::new(4096);
        assert_eq!(r.handle_chunk(&[]), Err(FrameError::Truncated(0)));
        assert_eq!(r.handle_chunk(&[9]), Err(FrameError::UnknownKind(9)));
        assert_eq!(
            r.handle_chunk(&[START, 0, 0]),
            Err(FrameError::Truncated(3))
        );
        assert_eq!(
            r.handle_chunk(&[START, 0, 0, 0, 1, 0, 0, 0]),
            Err(FrameError::Truncated(8))
        );
        // Announces more than the limit.
        assert!(matches!(
            r.handle_chunk(&[START, 0, 0, 0, 1, 0, 1, 0, 0, 5]),
            Err(FrameError::TooLarge { .. })
        ));
        // A start that needs no chunking.
        assert_eq!(
            r.handle_chunk(&[START, 0, 0, 0, 1, 0, 0, 0, 1, 5]),
            Err(FrameError::BadStart(1))
        );
        assert_eq!(
            r.handle_chunk(&[MORE, 0, 0, 0, 3, 5]),
            Err(FrameError::UnknownMessage(3))
        );
        r.handle_chunk(&[START, 0, 0, 0, 1, 0, 0, 0, 2, 5]).unwrap();
        assert_eq!(
            r.handle_chunk(&[START, 0, 0, 0, 1, 0, 0, 0, 2, 5]),
            Err(FrameError::BadStart(1))
        );
        assert_eq!(
            r.handle_chunk(&[MORE, 0, 0, 0, 1, 5, 6]),
            Err(FrameError::Overflow(1))
        );
        let mut big = vec![WHOLE];
        big.resize(MAX_CHUNK + 2, 0);
        assert_eq!(
            r.handle_chunk(&big),
            Err(FrameError::ChunkTooLarge(MAX_CHUNK + 1))
        );
        let mut r = Reassembler::new(1 << 20);
        for id in 0..MAX_PARTIAL as u32 {
            r.handle_chunk(&[START, 0, 0, 0, id as u8, 0, 0, 0, 2, 5])
                .unwrap();
        }
        assert_eq!(
            r.handle_chunk(&[START, 0, 0, 1, 0, 0, 0, 0, 2, 5]),
            Err(FrameError::TooManyPartial)
        );
    }

    #[test]
    fn partial_messages_stay_within_the_byte_budget() {
        // The probe: eight messages of the largest size started and fed
        // but never finished held 8 × max_message. Now at most twice it.
        let max = 64 * 1024;
        let mut r = Reassembler::new(max);
        let mut refused = None;
        'feed: for round in 0..max / 1024 {
            for id in 0..MAX_PARTIAL as u32 {
                let data = vec![7u8; 1024];
                let mut c = if round == 0 {
                    let mut c = vec![START];
                    c.extend_from_slice(&id.to_be_bytes());
                    c.extend_from_slice(&(max as u32).to_be_bytes());
                    c
                } else {
                    let mut c = vec![MORE];
                    c.extend_from_slice(&id.to_be_bytes());
                    c
                };
                c.extend_from_slice(&data);
                if let Err(e) = r.handle_chunk(&c) {
                    refused = Some(e);
                    break 'feed;
                }
                assert!(r.buffered() <= PARTIAL_BUDGET_MESSAGES * max);
            }
        }
        assert_eq!(
            refused,
            Some(FrameError::OverBudget(PARTIAL_BUDGET_MESSAGES * max))
        );
    }

    #[test]
    fn completed_and_aborted_messages_give_their_bytes_back() {
        let mut r = Reassembler::new(10_000);
        let a = Bytes::from(vec![1u8; 5000]);
        for c in chunks(1, &a, 1024) {
            r.handle_chunk(&c).unwrap();
        }
        assert_eq!(r.buffered(), 0);
        r.handle_chunk(&chunks(2, &a, 1024).next().unwrap())
            .unwrap();
        assert_eq!(r.buffered(), 1024);
        r.handle_chunk(&abort(2)).unwrap();
        assert_eq!(r.buffered(), 0);
    }

    mod fuzz {
        //! The reassembler fuzzed in CI (`cargo test`): arbitrary chunks
        //! never panic, never hold more than the budget, and messages cut by
        //! `chunks` and interleaved with garbage still come out whole.
        use super::super::*;
        use proptest::prelude::*;

        fn chunk() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (
                    0u8..6,
                    any::<u32>(),
                    any::<u32>(),
                    proptest::collection::vec(any::<u8>(), 0..2048)
                )
                    .prop_map(|(kind, id, total, data)| {
                        let mut c = vec![kind];
                        c.extend_from_slice(&(id % 4).to_be_bytes());
                        if kind == START {
                            c.extend_from_slice(&(total % 20_000).to_be_bytes());
                        }
                        c.extend_from_slice(&data);
                        c
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_chunks_never_panic_nor_exceed_the_budget(
                chunks in proptest::collection::vec(chunk(), 0..64),
            ) {
                let max = 8 * 1024;
                let mut r = Reassembler::new(max);
                for c in &chunks {
                    if let Ok(Received::Message(m)) = r.handle_chunk(c) {
                        prop_assert!(m.len() <= max);
                    }
                    prop_assert!(r.buffered() <= (PARTIAL_BUDGET_MESSAGES * max).max(MAX_PARTIAL * MAX_CHUNK));
                    prop_assert!(r.in_flight() <= MAX_PARTIAL);
                }
            }

            #[test]
            fn messages_survive_chunking(
                len in 0usize..20_000,
                chunk_size in MIN_CHUNK..4096,
                byte in any::<u8>(),
            ) {
                let message = Bytes::from(vec![byte; len]);
                let mut r = Reassembler::new(20_000);
                let mut got = None;
                for c in super::super::chunks(3, &message, chunk_size) {
                    if let Received::Message(m) = r.handle_chunk(&c).unwrap() {
                        got = Some(m);
                    }
                }
                prop_assert_eq!(got, Some(message));
                prop_assert_eq!(r.buffered(), 0);
            }
        }
    }
}
