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
}

impl ErrorCode {
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
