//! The messages Spray peers exchange, and their compact binary encoding.
//!
//! A message is one tag byte followed by its fields:
//!
//! | message | bytes |
//! |---|---|
//! | [`Message::Join`] | `01` |
//! | [`Message::Exchange`] | `02`, id `u64` LE, mean view `f32` LE, sample |
//! | [`Message::ExchangeReply`] | `03`, id `u64` LE, mean view `f32` LE, sample |
//! | [`Message::Leave`] | `04` |
//!
//! A sample is the list of `(peer, age)` arcs the sender gives away in the
//! shuffle, in the `postcard` format, so that a recipient that keeps ages
//! ([`crate::spray::AgeRule::Keep`]) can. The bytes come from the
//! network: [`Message::decode`] checks every length, tag and value and returns
//! a [`DecodeError`], never panics.

/// Most arcs a sample may list (a view holds about ln N arcs; 1024 is far
/// beyond any network).
pub const MAX_SAMPLE: usize = 1024;

/// Largest encoded message accepted.
pub const MAX_MESSAGE: usize = 64 * 1024;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest mean view size a peer may announce; anything above is a lie
/// (a view of 1000 arcs would mean a network of e^1000 peers).
pub const MAX_MEAN_VIEW: f32 = 1000.0;

const TAG_JOIN: u8 = 1;
const TAG_EXCHANGE: u8 = 2;
const TAG_EXCHANGE_REPLY: u8 = 3;
const TAG_LEAVE: u8 = 4;
const HEADER_LEN: usize = 1 + 8 + 4;

/// One Spray message, over peer ids `P`.
#[derive(Clone, Debug, PartialEq)]
pub enum Message<P> {
    /// A newcomer joins through the recipient (its contact).
    Join,
    /// The sender starts a shuffle with the recipient.
    Exchange {
        /// Tags the exchange; the reply and the sender's timeout repeat it.
        id: u64,
        /// The sender's running mean of view sizes (for the size estimate).
        mean_view: f32,
        /// The arcs the sender will give once answered: `(target, age)`,
        /// an arc to the recipient already replaced by one to the sender.
        sample: Vec<(P, u32)>,
    },
    /// The recipient of an [`Message::Exchange`] answers it.
    ExchangeReply {
        /// The id of the exchange answered.
        id: u64,
        /// The mean of both peers' running means.
        mean_view: f32,
        /// The arcs the sender gives: `(target, age)`, an arc to the
        /// recipient already replaced by one to the sender. Empty: the
        /// sender declines (it has nothing to give, or an exchange of its
        /// own is pending), and the initiator keeps its sample.
        sample: Vec<(P, u32)>,
    },
    /// The sender leaves the overlay: close your arcs to it, it is no crash.
    Leave,
}

/// Why bytes are not a valid [`Message`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty spray message")]
    Empty,
    /// The first byte names no message.
    #[error("unknown spray message tag {0}")]
    UnknownTag(u8),
    /// The message is shorter or longer than its tag requires.
    #[error("spray message with tag {tag} has {actual} bytes, expected {expected}")]
    Length {
        /// The tag.
        tag: u8,
        /// The length the tag requires.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// The announced mean view is not a finite number in `[0, MAX_MEAN_VIEW]`.
    #[error("spray message announces an invalid mean view {0}")]
    MeanView(f32),
    /// The message exceeds [`MAX_MESSAGE`] bytes.
    #[error("spray message of {0} bytes is too large")]
    TooLarge(usize),
    /// The sample is not a valid list of `(peer, age)`.
    #[error("invalid sample in spray message: {0}")]
    Sample(String),
    /// The sample lists more than [`MAX_SAMPLE`] arcs.
    #[error("spray sample of {0} arcs is too large")]
    SampleTooLarge(usize),
}

impl<P: Serialize + DeserializeOwned> Message<P> {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Join => vec![TAG_JOIN],
            Message::Leave => vec![TAG_LEAVE],
            Message::Exchange {
                id,
                mean_view,
                sample,
            } => encode_exchange(TAG_EXCHANGE, *id, *mean_view, sample),
            Message::ExchangeReply {
                id,
                mean_view,
                sample,
            } => encode_exchange(TAG_EXCHANGE_REPLY, *id, *mean_view, sample),
        }
    }

    /// Decodes untrusted bytes.
    ///
    /// # Errors
    /// A [`DecodeError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let length = |expected: usize| DecodeError::Length {
            tag,
            expected,
            actual: bytes.len(),
        };
        match tag {
            TAG_JOIN | TAG_LEAVE if bytes.len() != 1 => Err(length(1)),
            TAG_JOIN => Ok(Message::Join),
            TAG_LEAVE => Ok(Message::Leave),
            TAG_EXCHANGE | TAG_EXCHANGE_REPLY => {
                if bytes.len() < HEADER_LEN + 1 {
                    return Err(length(HEADER_LEN + 1));
                }
                let mut id = [0u8; 8];
                id.copy_from_slice(&bytes[1..9]);
                let mut mean = [0u8; 4];
                mean.copy_from_slice(&bytes[9..13]);
                let id = u64::from_le_bytes(id);
                let mean_view = f32::from_le_bytes(mean);
                if !(0.0..=MAX_MEAN_VIEW).contains(&mean_view) {
                    return Err(DecodeError::MeanView(mean_view));
                }
                let (sample, rest): (Vec<(P, u32)>, &[u8]) =
                    postcard::take_from_bytes(&bytes[HEADER_LEN..])
                        .map_err(|e| DecodeError::Sample(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(DecodeError::Sample(format!(
                        "{} trailing bytes",
                        rest.len()
                    )));
                }
                if sample.len() > MAX_SAMPLE {
                    return Err(DecodeError::SampleTooLarge(sample.len()));
                }
                Ok(if tag == TAG_EXCHANGE {
                    Message::Exchange {
                        id,
                        mean_view,
                        sample,
                    }
                } else {
                    Message::ExchangeReply {
                        id,
                        mean_view,
                        sample,
                    }
                })
            }
            other => Err(DecodeError::UnknownTag(other)),
        }
    }
}

fn encode_exchange<P: Serialize>(tag: u8, id: u64, mean_view: f32, sample: &[(P, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + sample.len() * 8);
    out.push(tag);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&mean_view.to_le_bytes());
    // Serializing plain ids and integers into a Vec cannot fail.
    postcard::to_extend(sample, out).expect("postcard encodes into a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type M = Message<u32>;

    proptest! {
        /// Arbitrary bytes decode to a message or an error, never a panic, and
        /// whatever decodes re-encodes to the same bytes.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(m) = M::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        /// Every valid message survives a round trip.
        #[test]
        fn round_trip(
            id in any::<u64>(),
            mean in 0.0f32..=MAX_MEAN_VIEW,
            kind in 0u8..4,
            sample in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..20),
        ) {
            let m = match kind {
                0 => M::Join,
                1 => M::Exchange { id, mean_view: mean, sample },
                2 => M::ExchangeReply { id, mean_view: mean, sample },
                _ => M::Leave,
            };
            prop_assert_eq!(M::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert_eq!(M::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(M::decode(&[9]), Err(DecodeError::UnknownTag(9)));
        assert_eq!(
            M::decode(&[1, 0]),
            Err(DecodeError::Length {
                tag: 1,
                expected: 1,
                actual: 2
            })
        );
        assert_eq!(
            M::decode(&[2, 0, 0]),
            Err(DecodeError::Length {
                tag: 2,
                expected: 14,
                actual: 3
            })
        );
        let exchange = M::Exchange {
            id: 1,
            mean_view: 1.0,
            sample: vec![(5, 2)],
        }
        .encode();
        let mut nan = exchange.clone();
        nan[9..13].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(M::decode(&nan), Err(DecodeError::MeanView(_))));
        let mut huge = exchange.clone();
        huge[9..13].copy_from_slice(&1e9f32.to_le_bytes());
        assert_eq!(M::decode(&huge), Err(DecodeError::MeanView(1e9)));
        let mut trailing = exchange.clone();
        trailing.push(0);
        assert!(matches!(M::decode(&trailing), Err(DecodeError::Sample(_))));
        let mut truncated = exchange;
        truncated.pop();
        assert!(matches!(M::decode(&truncated), Err(DecodeError::Sample(_))));
        let big = M::ExchangeReply {
            id: 0,
            mean_view: 0.0,
            sample: vec![(1, 1); MAX_SAMPLE + 1],
        }
        .encode();
        assert_eq!(
            M::decode(&big),
            Err(DecodeError::SampleTooLarge(MAX_SAMPLE + 1))
        );
        assert_eq!(
            M::decode(&vec![2; MAX_MESSAGE + 1]),
            Err(DecodeError::TooLarge(MAX_MESSAGE + 1))
        );
    }
}
