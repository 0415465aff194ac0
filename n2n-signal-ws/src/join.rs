//! The client's side of the join, without a runtime: what to make of each
//! server message while joining, the hello to answer the challenge with, and
//! the backoff between attempts. The native client ([`crate::client`]) and
//! the browser's (`n2n-web`) differ only in how they move frames and wait.

use std::time::Duration;

use n2n_core::signaling::SignalingError;
use n2n_core::{Keypair, PeerId};

use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, challenge_bytes, check_key};

/// The largest frame a client accepts from the server by default.
pub const CLIENT_MAX_FRAME: usize = 256 * 1024;

/// The first delay between two attempts to join, by default.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest delay between two attempts to join, by default.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The error for a refusal by the server.
pub fn refused(code: ErrorCode, message: &str) -> SignalingError {
    SignalingError::Refused(format!("{code}: {message}"))
}

/// Whether a failed join is the server's rate limit, worth trying again
/// after a delay (many clients behind one address, several tabs of one
/// browser).
pub fn rate_limited(error: &SignalingError) -> bool {
    matches!(error, SignalingError::Refused(reason)
        if reason.starts_with(ErrorCode::JoinRateLimited.as_str()))
}

/// The nonce of the server's first message, its challenge.
///
/// # Errors
/// [`SignalingError::Refused`] for an error frame, [`SignalingError::Other`]
/// for any other message or a nonce that is not 32 hex bytes.
pub fn challenge(message: ServerMessage) -> Result<[u8; 32], SignalingError> {
    match message {
        ServerMessage::Challenge { nonce, .. } => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&nonce, &mut bytes).map_err(|_| {
                SignalingError::Other("the server's nonce is not 32 hex bytes".into())
            })?;
            Ok(bytes)
        }
        ServerMessage::Error { code, message } => Err(refused(code, &message)),
        other => Err(SignalingError::Other(format!(
            "expected a challenge, got {other:?}"
        ))),
    }
}

/// The hello frame (JSON text) that answers challenge `nonce`: `keypair`'s
/// peer id, `room`, and the signature that proves the key is ours.
pub fn hello(keypair: &Keypair, room: &str, nonce: &[u8; 32]) -> String {
    let hello = ClientMessage::Hello {
        peer: keypair.peer_id(),
        room: room.to_string(),
        signature: hex::encode(keypair.sign(&challenge_bytes(nonce, room))),
    };
    serde_json::to_string(&hello).expect("a hello is plain strings")
}

/// The contact of the server's answer to the hello, its welcome.
///
/// # Errors
/// [`SignalingError::Refused`] for an error frame, [`SignalingError::Other`]
/// for any other message, or a contact whose key is weak or invalid: a
/// server that hands out such a key would have us dial a peer anybody can
/// impersonate.
pub fn welcome(message: ServerMessage) -> Result<Option<PeerId>, SignalingError> {
    match message {
        ServerMessage::Welcome { contact } => {
            if let Some(c) = &contact
                && let Err(e) = check_key(c)
            {
                return Err(SignalingError::Other(format!(
                    "the server gave an unusable contact {c}: {e}"
                )));
            }
            Ok(contact)
        }
        ServerMessage::Error { code, message } => Err(refused(code, &message)),
        other => Err(SignalingError::Other(format!(
            "expected a welcome, got {other:?}"
        ))),
    }
}

/// Delays between attempts: `min` first, doubled after each, `max` at most.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max` (`max` below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max: max.max(min),
        }
    }

    /// The delay before the next attempt (doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The delay the next attempt would wait, without counting an attempt.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_its_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(100));
        let mut odd = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(
            (odd.next_delay(), odd.next_delay()),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
    }

    #[test]
    fn each_join_step_refuses_what_it_does_not_expect() {
        let error = ServerMessage::Error {
            code: ErrorCode::JoinRateLimited,
            message: "slow down".into(),
        };
        let e = challenge(error.clone()).unwrap_err();
        assert!(rate_limited(&e), "{e}");
        assert!(rate_limited(&welcome(error).unwrap_err()));
        let bad_nonce = ServerMessage::Challenge {
            nonce: "zz".into(),
            version: 1,
        };
        assert!(matches!(
            challenge(bad_nonce),
            Err(SignalingError::Other(_))
        ));
        let early = ServerMessage::Welcome { contact: None };
        assert!(matches!(challenge(early), Err(SignalingError::Other(_))));
        assert!(!rate_limited(&SignalingError::Timeout));
    }

    #[test]
    fn a_welcome_with_a_weak_contact_is_refused() {
        let mut weak = [0u8; 32];
        weak[0] = 1; // the identity point: a small-order key
        let contact = PeerId::from_bytes(weak);
        let e = welcome(ServerMessage::Welcome {
            contact: Some(contact),
        })
        .unwrap_err();
        assert!(e.to_string().contains("unusable contact"), "{e}");
        let good = Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(3)).peer_id();
        assert_eq!(
            welcome(ServerMessage::Welcome {
                contact: Some(good)
            })
            .unwrap(),
            Some(good)
        );
    }

    #[test]
    fn the_hello_carries_a_signature_over_the_challenge() {
        let keypair = Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(4));
        let nonce = [7u8; 32];
        let text = hello(&keypair, "room", &nonce);
        let ClientMessage::Hello {
            peer,
            room,
            signature,
        } = serde_json::from_str(&text).unwrap()
        else {
            panic!("not a hello: {text}");
        };
        assert_eq!((peer, room.as_str()), (keypair.peer_id(), "room"));
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&signature, &mut sig).unwrap();
        crate::protocol::verify_strict(&peer, &challenge_bytes(&nonce, "room"), &sig).unwrap();
    }
}
