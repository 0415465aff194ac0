//! The messages Spray peers exchange, and their compact binary encoding.
//!
//! A message is one tag byte followed by fixed-size little-endian fields:
//!
//! | message | bytes |
//! |---|---|
//! | [`Message::Join`] | `01` |
//! | [`Message::Exchange`] | `02`, id `u64`, mean view `f32` |
//! | [`Message::ExchangeReply`] | `03`, id `u64`, mean view `f32` |
//! | [`Message::Leave`] | `04` |
//!
//! The bytes come from the network: [`Message::decode`] checks every length,
//! tag and value and returns a [`DecodeError`], never panics.

/// Largest mean view size a peer may announce; anything above is a lie
/// (a view of 1000 arcs would mean a network of e^1000 peers).
pub const MAX_MEAN_VIEW: f32 = 1000.0;

const TAG_JOIN: u8 = 1;
const TAG_EXCHANGE: u8 = 2;
const TAG_EXCHANGE_REPLY: u8 = 3;
const TAG_LEAVE: u8 = 4;
const EXCHANGE_LEN: usize = 1 + 8 + 4;

/// One Spray message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Message {
    /// A newcomer joins through the recipient (its contact).
    Join,
    /// The sender starts a shuffle with the recipient.
    Exchange {
        /// Tags the exchange; the reply and the sender's timeout repeat it.
        id: u64,
        /// The sender's running mean of view sizes (for the size estimate).
        mean_view: f32,
    },
    /// The recipient of an [`Message::Exchange`] answers it.
    ExchangeReply {
        /// The id of the exchange answered.
        id: u64,
        /// The mean of both peers' running means.
        mean_view: f32,
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
}

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Message::Join => vec![TAG_JOIN],
            Message::Leave => vec![TAG_LEAVE],
            Message::Exchange { id, mean_view } => encode_exchange(TAG_EXCHANGE, id, mean_view),
            Message::ExchangeReply { id, mean_view } => {
                encode_exchange(TAG_EXCHANGE_REPLY, id, mean_view)
            }
        }
    }

    /// Decodes untrusted bytes.
    ///
    /// # Errors
    /// A [`DecodeError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let expect = |expected: usize| {
            if bytes.len() == expected {
                Ok(())
            } else {
                Err(DecodeError::Length {
                    tag,
                    expected,
                    actual: bytes.len(),
                })
            }
        };
        match tag {
            TAG_JOIN => expect(1).map(|()| Message::Join),
            TAG_LEAVE => expect(1).map(|()| Message::Leave),
            TAG_EXCHANGE | TAG_EXCHANGE_REPLY => {
                expect(EXCHANGE_LEN)?;
                let mut id = [0u8; 8];
                id.copy_from_slice(&bytes[1..9]);
                let mut mean = [0u8; 4];
                mean.copy_from_slice(&bytes[9..13]);
                let id = u64::from_le_bytes(id);
                let mean_view = f32::from_le_bytes(mean);
                if !(0.0..=MAX_MEAN_VIEW).contains(&mean_view) {
                    return Err(DecodeError::MeanView(mean_view));
                }
                Ok(if tag == TAG_EXCHANGE {
                    Message::Exchange { id, mean_view }
                } else {
                    Message::ExchangeReply { id, mean_view }
                })
            }
            other => Err(DecodeError::UnknownTag(other)),
        }
    }
}

fn encode_exchange(tag: u8, id: u64, mean_view: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXCHANGE_LEN);
    out.push(tag);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&mean_view.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes decode to a message or an error, never a panic, and
        /// whatever decodes re-encodes to the same bytes.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(m) = Message::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        /// Every valid message survives a round trip.
        #[test]
        fn round_trip(id in any::<u64>(), mean in 0.0f32..=MAX_MEAN_VIEW, kind in 0u8..4) {
            let m = match kind {
                0 => Message::Join,
                1 => Message::Exchange { id, mean_view: mean },
                2 => Message::ExchangeReply { id, mean_view: mean },
                _ => Message::Leave,
            };
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Message::decode(&[9]), Err(DecodeError::UnknownTag(9)));
        assert_eq!(
            Message::decode(&[1, 0]),
            Err(DecodeError::Length {
                tag: 1,
                expected: 1,
                actual: 2
            })
        );
        assert_eq!(
            Message::decode(&[2, 0, 0]),
            Err(DecodeError::Length {
                tag: 2,
                expected: 13,
                actual: 3
            })
        );
        let mut nan = Message::Exchange {
            id: 1,
            mean_view: 1.0,
        }
        .encode();
        nan[9..13].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            Message::decode(&nan),
            Err(DecodeError::MeanView(_))
        ));
        let mut huge = Message::ExchangeReply {
            id: 1,
            mean_view: 1.0,
        }
        .encode();
        huge[9..13].copy_from_slice(&1e9f32.to_le_bytes());
        assert_eq!(Message::decode(&huge), Err(DecodeError::MeanView(1e9)));
    }
}
