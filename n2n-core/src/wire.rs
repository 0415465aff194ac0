//! The wire protocol: everything peers say to each other over a connection.
//!
//! One [`Message`] enum covers arc bookkeeping, the bridge (neighbour relay)
//! protocol, overlay messages and application data. A frame is one version byte
//! ([`VERSION`]) followed by the message in the `postcard` format. Frames are
//! bounded ([`MAX_FRAME`]); decoding arbitrary bytes never panics and never
//! allocates more than the frame holds, it returns a [`DecodeError`].

use serde::{Deserialize, Serialize};

use crate::identity::PeerId;
use crate::signal::SignedSignal;
use crate::signal::serde_bytes_compat as bytes_serde;

/// Version byte that starts every frame (2: signals of format v2, the
/// control-frame limit).
pub const VERSION: u8 = 2;

/// Largest application payload in one [`Message::Data`] (16 MiB).
pub const MAX_DATA: usize = 16 * 1024 * 1024;

/// Largest frame accepted by [`decode`]: the largest payload plus headers.
pub const MAX_FRAME: usize = MAX_DATA + 1024;

/// The default largest message of the transports (`max_message`): 1 MiB of
/// application payload plus frame headers. Configurable up to [`MAX_FRAME`];
/// a transport buffers a bounded number of messages per connection, so this
/// sets its memory per connection.
pub const DEFAULT_MAX_MESSAGE: usize = (1 << 20) + 1024;

/// Largest frame of any message but [`Message::Data`] (128 KiB): a relayed
/// signal (64 KiB of payload) or an overlay message fits; a neighbour cannot
/// make a peer decode, hold or relay megabytes of control traffic.
pub const MAX_CONTROL_FRAME: usize = 128 * 1024;

/// The postcard index of [`Message::Data`], the first byte after the version.
const DATA_TAG: u8 = 4;

/// Identifies an overlay or an application protocol on a connection.
///
/// Build one from a name with [`ProtocolId::from_name`], so that every peer
/// derives the same id without coordination. An id built from a name
/// remembers it for `Debug` and `Display` (`spray#2f5e1c6b`); only the 32-bit
/// hash travels on the wire, compares and orders.
#[derive(Clone, Copy)]
pub struct ProtocolId {
    hash: u32,
    name: Option<&'static str>,
}

impl ProtocolId {
    /// The id of a protocol name (32-bit FNV-1a of its UTF-8 bytes).
    pub const fn from_name(name: &'static str) -> Self {
        Self {
            hash: Self::hash(name),
            name: Some(name),
        }
    }

    /// The id of a name known only at run time (a stack file's
    /// `protocol = "…"`). The name is kept for display in a process-wide
    /// table (one copy per distinct name, at most 4096 names; later ones are
    /// displayed by hash only).
    pub fn from_runtime_name(name: &str) -> Self {
        const MAX_NAMES: usize = 4096;
        static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
            std::sync::Mutex::new(std::collections::BTreeSet::new());
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let kept = match names.get(name) {
            Some(n) => Some(*n),
            None if names.len() < MAX_NAMES => {
                let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
                names.insert(leaked);
                Some(leaked)
            }
            None => None,
        };
        Self {
            hash: Self::hash(name),
            name: kept,
        }
    }

    /// The id with hash `hash` (as read from the wire), with no name.
    pub const fn from_hash(hash: u32) -> Self {
        Self { hash, name: None }
    }

    /// The 32-bit hash that identifies the protocol on the wire.
    pub const fn as_u32(self) -> u32 {
        self.hash
    }

    /// The name this id was built from, if known here.
    pub const fn name(self) -> Option<&'static str> {
        self.name
    }

    /// This id with the name of `known` if both are the same protocol (an id
    /// read from the wire gets its name back).
    pub fn named_like(self, known: ProtocolId) -> Self {
        if self == known { known } else { self }
    }

    const fn hash(name: &str) -> u32 {
        let bytes = name.as_bytes();
        let mut hash: u32 = 0x811c_9dc5;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u32;
            hash = hash.wrapping_mul(0x0100_0193);
            i += 1;
        }
        hash
    }
}

impl PartialEq for ProtocolId {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}

impl Eq for ProtocolId {}

impl PartialOrd for ProtocolId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProtocolId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash)
    }
}

impl std::hash::Hash for ProtocolId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

impl std::fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name {
            Some(name) => write!(f, "{name}#{:08x}", self.hash),
            None => write!(f, "#{:08x}", self.hash),
        }
    }
}

impl std::fmt::Debug for ProtocolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProtocolId({self})")
    }
}

impl Serialize for ProtocolId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.hash)
    }
}

impl<'de> Deserialize<'de> for ProtocolId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Self::from_hash)
    }
}

/// Why a bridge (or one of its steps) failed, as told between peers.
pub type BridgeFailure = crate::bridge::Failure<PeerId>;

/// A message of the bridge (neighbour relay) protocol.
pub type BridgeMessage = crate::bridge::Message<PeerId, SignedSignal>;

/// Why a peer closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// The connection carried no arc for the linger time. An arc the receiver
    /// opened meanwhile never reached the sender: the receiver reports it as not
    /// opened (`ConnectFailed`), not as a crash of the sender.
    Idle,
    /// The sender is shutting down.
    Shutdown,
}

/// One message between two connected peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// The sender added one arc `sender → receiver` in `overlay`.
    ArcOpen {
        /// The overlay the arc belongs to.
        overlay: ProtocolId,
    },
    /// The sender removed one arc `sender → receiver` in `overlay`.
    ArcClose {
        /// The overlay the arc belongs to.
        overlay: ProtocolId,
    },
    /// The bridge protocol: connect-to orders, requests, relayed signals and results.
    Bridge(Box<BridgeMessage>),
    /// A message of an overlay protocol.
    Overlay {
        /// The overlay.
        overlay: ProtocolId,
        /// Overlay-defined bytes.
        #[serde(with = "bytes_serde")]
        payload: Vec<u8>,
    },
    /// Application data.
    Data {
        /// Application protocol tag.
        protocol: ProtocolId,
        /// Application bytes.
        #[serde(with = "bytes_serde")]
        payload: Vec<u8>,
    },
    /// Liveness probe.
    Ping {
        /// Echoed by the `Pong`.
        nonce: u64,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The sender is about to close the connection.
    Close {
        /// Why.
        reason: CloseReason,
    },
    /// The sender's overlay refused the arc `receiver → sender` in `overlay`
    /// that the receiver's `ArcOpen` announced (see
    /// [`crate::overlay::Admission::ArcOpen`]): the receiver removes it.
    ArcRefused {
        /// The overlay the arc belongs to.
        overlay: ProtocolId,
    },
}

/// Why a frame could not be decoded. The connection that sent it misbehaved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero-length frame.
    #[error("empty frame")]
    Empty,
    /// The frame is larger than the limit.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The frame was written by an unknown protocol version.
    #[error("unsupported wire version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes follow a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message would exceed [`MAX_FRAME`].
    #[error("message of {size} bytes exceeds the {limit}-byte frame limit")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Serialization failed.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Encodes `message` into one frame.
///
/// # Errors
/// [`EncodeError::TooLarge`] if the frame would exceed [`MAX_FRAME`].
pub fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let out = postcard::to_extend(message, vec![VERSION])
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if out.len() > MAX_FRAME {
        return Err(EncodeError::TooLarge {
            size: out.len(),
            limit: MAX_FRAME,
        });
    }
    Ok(out)
}

/// Decodes one frame, with the default limit [`MAX_FRAME`].
///
/// # Errors
/// See [`DecodeError`].
pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    decode_with_limit(frame, MAX_FRAME)
}

/// Decodes one frame of at most `limit` bytes ([`Message::Data`]) or of at
/// most [`MAX_CONTROL_FRAME`] and `limit` (every other message).
///
/// # Errors
/// See [`DecodeError`].
pub fn decode_with_limit(frame: &[u8], limit: usize) -> Result<Message, DecodeError> {
    let (&version, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    if frame.len() > limit {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            limit,
        });
    }
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if body.first() != Some(&DATA_TAG) && frame.len() > MAX_CONTROL_FRAME.min(limit) {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            limit: MAX_CONTROL_FRAME.min(limit),
        });
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::signal::{Role, Signal};
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn signed() -> SignedSignal {
        let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        Signal {
            from: key.peer_id(),
            to: peer(2),
            session: 9,
            role: Role::Acceptor,
            seq: 3,
            transport: "memory".into(),
            payload: vec![1, 2, 3],
        }
        .sign(&key)
        .unwrap()
    }

    fn samples() -> Vec<Message> {
        let o = ProtocolId::from_name("spray");
        vec![
            Message::ArcOpen { overlay: o },
            Message::ArcClose { overlay: o },
            Message::ArcRefused { overlay: o },
            Message::Bridge(Box::new(BridgeMessage::ConnectTo {
                job: 1,
                overlay: o,
                to: peer(3),
                request: Some(4),
            })),
            Message::Bridge(Box::new(BridgeMessage::BridgeRequest {
                request: 5,
                overlay: o,
                to: peer(4),
            })),
            Message::Bridge(Box::new(BridgeMessage::BridgeRefused {
                request: 5,
                reason: BridgeFailure::NotNeighbour(peer(4)),
            })),
            Message::Bridge(Box::new(BridgeMessage::Relay {
                job: 1,
                from: peer(1),
                to: peer(2),
                signal: signed(),
            })),
            Message::Bridge(Box::new(BridgeMessage::RelayFailed {
                job: 1,
                reason: BridgeFailure::Timeout,
            })),
            Message::Bridge(Box::new(BridgeMessage::BridgeResult {
                job: 1,
                result: Err(BridgeFailure::Transport("ice failed".into())),
            })),
            Message::Bridge(Box::new(BridgeMessage::BridgeResult {
                job: 2,
                result: Ok(()),
            })),
            Message::Overlay {
                overlay: o,
                payload: vec![9; 10],
            },
            Message::Data {
                protocol: ProtocolId::from_hash(7),
                payload: vec![0xab; 1000],
            },
            Message::Ping { nonce: 77 },
            Message::Pong { nonce: 77 },
            Message::Close {
                reason: CloseReason::Idle,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let frame = encode(&m).unwrap();
            assert_eq!(frame[0], VERSION);
            assert_eq!(decode(&frame).unwrap(), m);
        }
    }

    #[test]
    fn relayed_signal_still_verifies_after_round_trip() {
        let m = Message::Bridge(Box::new(BridgeMessage::Relay {
            job: 1,
            from: peer(1),
            to: peer(2),
            signal: signed(),
        }));
        let Message::Bridge(relay) = decode(&encode(&m).unwrap()).unwrap() else {
            panic!("wrong variant");
        };
        let BridgeMessage::Relay { signal, .. } = *relay else {
            panic!("wrong variant");
        };
        signal.verify(&peer(2)).unwrap();
    }

    #[test]
    fn typed_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[1, 0]), Err(DecodeError::UnsupportedVersion(1)));
        assert!(matches!(
            decode(&[VERSION, 200]),
            Err(DecodeError::Malformed(_))
        ));
        let mut frame = encode(&Message::Close {
            reason: CloseReason::Shutdown,
        })
        .unwrap();
        frame.push(0);
        assert_eq!(decode(&frame), Err(DecodeError::TrailingBytes(1)));
        assert!(matches!(
            decode_with_limit(&[1; 100], 10),
            Err(DecodeError::TooLarge { size: 100, .. })
        ));
        let big = Message::Data {
            protocol: ProtocolId::from_hash(0),
            payload: vec![0; MAX_FRAME],
        };
        assert!(matches!(encode(&big), Err(EncodeError::TooLarge { .. })));
    }

    #[test]
    fn control_frames_are_bounded_apart_from_data() {
        let data = Message::Data {
            protocol: ProtocolId::from_hash(1),
            payload: vec![0; MAX_CONTROL_FRAME],
        };
        assert_eq!(decode(&encode(&data).unwrap()).unwrap(), data);
        let overlay = Message::Overlay {
            overlay: ProtocolId::from_hash(1),
            payload: vec![0; MAX_CONTROL_FRAME],
        };
        assert!(matches!(
            decode(&encode(&overlay).unwrap()),
            Err(DecodeError::TooLarge {
                limit: MAX_CONTROL_FRAME,
                ..
            })
        ));
        assert_eq!(
            encode(&Message::Data {
                protocol: ProtocolId::from_hash(0),
                payload: vec![]
            })
            .unwrap()[1],
            DATA_TAG
        );
    }

    #[test]
    fn protocol_ids_are_stable() {
        assert_eq!(
            ProtocolId::from_name(""),
            ProtocolId::from_hash(0x811c_9dc5)
        );
        assert_eq!(
            format!("{:?}", ProtocolId::from_name("spray")),
            format!(
                "ProtocolId(spray#{:08x})",
                ProtocolId::from_name("spray").as_u32()
            )
        );
        let runtime = ProtocolId::from_runtime_name(&String::from("ring-7"));
        assert_eq!(runtime, ProtocolId::from_name("ring-7"));
        assert_eq!(runtime.name(), Some("ring-7"));
        assert_eq!(
            ProtocolId::from_hash(runtime.as_u32()).to_string(),
            format!("#{:08x}", runtime.as_u32())
        );
        assert_ne!(
            ProtocolId::from_name("spray"),
            ProtocolId::from_name("cyclon")
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoding_versioned_arbitrary_bodies_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut frame = vec![VERSION];
            frame.extend(bytes);
            if let Ok(m) = decode(&frame) {
                // Anything that decodes re-encodes to a frame that decodes the same.
                prop_assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
            }
        }

        #[test]
        fn mutated_valid_frames_never_panic(idx in 0usize..14, pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let m = &samples()[idx];
            let mut frame = encode(m).unwrap();
            let p = pos % frame.len();
            frame[p] = byte;
            let _ = decode(&frame);
            frame.truncate(cut % (frame.len() + 1));
            let _ = decode(&frame);
        }

        #[test]
        fn data_round_trips(protocol in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let m = Message::Data { protocol: ProtocolId::from_hash(protocol), payload };
            prop_assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
        }
    }
}
