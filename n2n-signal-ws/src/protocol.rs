//! The join protocol's frames: JSON text frames, one message each, tagged by
//! `type`. See the crate documentation for the exchange, message by message.

use n2n_core::{PeerId, SignedSignal};
use serde::{Deserialize, Serialize};

/// Version of the join protocol, sent in the challenge.
pub const PROTOCOL_VERSION: u32 = 1;

/// Domain tag of the join challenge signature.
pub const JOIN_DOMAIN: &[u8] = b"n2n/ws-join/v1";

/// The bytes a client signs to prove it owns its peer id: the domain tag, the
/// server's nonce, and the room name.
pub fn challenge_bytes(nonce: &[u8; 32], room: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOIN_DOMAIN.len() + 32 + 4 + room.len());
    out.extend_from_slice(JOIN_DOMAIN);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&(room.len() as u32).to_le_bytes());
    out.extend_from_slice(room.as_bytes());
    out
}

/// Why a key or a signature was refused by [`verify_strict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not an ed25519 public key.
    #[error("not an ed25519 public key")]
    Invalid,
    /// The key has small order: signatures "verify" for it without any secret.
    #[error("a weak (small-order) ed25519 key")]
    Weak,
    /// The signature does not verify under the strict rules.
    #[error("the signature does not verify")]
    BadSignature,
}

/// Checks that `peer` is a usable ed25519 key: a valid point, not of small
/// order (such as `0100…00`, for which signatures verify without a secret).
///
/// # Errors
/// [`KeyError::Invalid`] or [`KeyError::Weak`].
pub fn check_key(peer: &PeerId) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(peer.as_bytes()).map_err(|_| KeyError::Invalid)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

/// Verifies `signature` over `message` by `peer` strictly: a weak key is
/// refused, and so are non-canonical or small-order signature points
/// (`verify_strict`).
///
/// # Errors
/// See [`KeyError`].
pub fn verify_strict(peer: &PeerId, message: &[u8], signature: &[u8; 64]) -> Result<(), KeyError> {
    check_key(peer)?
        .verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| KeyError::BadSignature)
}

/// What a server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First frame: prove who you are by signing this nonce.
    Challenge {
        /// 32 random bytes, hex.
        nonce: String,
        /// [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// The client is in the room. `contact` is a random member, or `null` if the
    /// client is the first.
    Welcome {
        /// A member of the room to connect to.
        contact: Option<PeerId>,
    },
    /// A signal from another member of the room.
    Signal {
        /// The signal, signed by its author.
        signal: SignedSignal,
    },
    /// Something the client sent was refused. The connection stays open unless a
    /// close frame follows.
    Error {
        /// Machine-readable code (see [`ErrorCode`]).
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Answer to the challenge.
    Hello {
        /// The client's peer id (its ed25519 public key).
        peer: PeerId,
        /// The room (overlay) to join, 1 to 64 bytes.
        room: String,
        /// ed25519 signature of [`challenge_bytes`], hex (128 digits).
        signature: String,
    },
    /// A signal for another member of the room.
    Signal {
        /// The signal, signed by the client.
        signal: SignedSignal,
    },
}

/// Error codes of [`ServerMessage::Error`] and close reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a valid message.
    BadFrame,
    /// The frame exceeds the server's size limit.
    FrameTooLarge,
    /// The join signature does not match the claimed peer id.
    AuthenticationFailed,
    /// A signal's signature does not verify.
    BadSignature,
    /// A signal claims another author than the authenticated client.
    Impersonation,
    /// The recipient is not connected in this room.
    UnknownPeer,
    /// Too many signals per second.
    RateLimited,
    /// The room holds the maximum number of clients.
    RoomFull,
    /// The server holds the maximum number of clients.
    ServerFull,
    /// No frame within the idle timeout.
    IdleTimeout,
    /// The recipient cannot take more signals now.
    RecipientBusy,
    /// The same peer joined again from another connection.
    Replaced,
    /// The server is shutting down.
    ShuttingDown,
    /// A message that is not allowed now (a signal before joining, a second hello).
    Unexpected,
    /// The client's queue exceeded its budget (it reads too slowly); a close follows.
    SlowReader,
    /// Too many joins from this source address or into this room; retry later.
    JoinRateLimited,
}

impl ErrorCode {
    /// Every code, in the order of the documentation.
    pub const ALL: [Self; 16] = [
        Self::BadFrame,
        Self::FrameTooLarge,
        Self::AuthenticationFailed,
        Self::BadSignature,
        Self::Impersonation,
        Self::UnknownPeer,
        Self::RateLimited,
        Self::RoomFull,
        Self::ServerFull,
        Self::IdleTimeout,
        Self::RecipientBusy,
        Self::Replaced,
        Self::ShuttingDown,
        Self::Unexpected,
        Self::SlowReader,
        Self::JoinRateLimited,
    ];

    /// Whether a join refused with this code may succeed later unchanged (the
    /// server is full or busy), as opposed to a refusal of the client itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RoomFull
                | Self::ServerFull
                | Self::JoinRateLimited
                | Self::ShuttingDown
                | Self::IdleTimeout
        )
    }

    /// The code as written on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::AuthenticationFailed => "authentication_failed",
            Self::BadSignature => "bad_signature",
            Self::Impersonation => "impersonation",
            Self::UnknownPeer => "unknown_peer",
            Self::RateLimited => "rate_limited",
            Self::RoomFull => "room_full",
            Self::ServerFull => "server_full",
            Self::IdleTimeout => "idle_timeout",
            Self::RecipientBusy => "recipient_busy",
            Self::Replaced => "replaced",
            Self::ShuttingDown => "shutting_down",
            Self::Unexpected => "unexpected",
            Self::SlowReader => "slow_reader",
            Self::JoinRateLimited => "join_rate_limited",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = serde_json::from_str::<ClientMessage>(&s);
            let _ = serde_json::from_str::<ServerMessage>(&s);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<ClientMessage>(&b);
        }
    }

    #[test]
    fn frames_look_as_documented() {
        let m = ServerMessage::Welcome { contact: None };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"welcome","contact":null}"#
        );
        let e = ServerMessage::Error {
            code: ErrorCode::UnknownPeer,
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"unknown_peer","message":"x"}"#
        );
        // A peer id that is not 64 hex digits is a parse error, not a panic.
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"hello","peer":"abc","room":"r","signature":"00"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn small_order_keys_are_refused_and_real_ones_verify() {
        use rand::SeedableRng;
        // The identity point, and R = identity with S = 0, which a lax
        // check would accept for any message.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let weak = PeerId::from_bytes(weak);
        assert!(
            weak.verify(b"anything", &forged).is_err(),
            "n2n-core's own check is strict too"
        );
        assert_eq!(
            verify_strict(&weak, b"anything", &forged),
            Err(KeyError::Weak)
        );
        let k = n2n_core::Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let sig = k.sign(b"hello");
        assert_eq!(verify_strict(&k.peer_id(), b"hello", &sig), Ok(()));
        assert_eq!(
            verify_strict(&k.peer_id(), b"other", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn every_code_is_listed_once() {
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
        }
    }

    #[test]
    fn challenge_binds_nonce_and_room() {
        assert_ne!(
            challenge_bytes(&[1; 32], "a"),
            challenge_bytes(&[1; 32], "b")
        );
        assert_ne!(
            challenge_bytes(&[1; 32], "a"),
            challenge_bytes(&[2; 32], "a")
        );
    }
}
