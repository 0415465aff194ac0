//! Signed signals: the envelope that carries one transport signal (an offer, an
//! answer, an ICE candidate, a list of listen addresses: opaque bytes to n2n)
//! from its author to its recipient, over any signaling path.
//!
//! The author signs the envelope; the recipient verifies it. Neither a relaying
//! neighbour nor a signaling server can forge or alter a signal without the
//! recipient rejecting it with [`SignalError`]. Since a WebRTC offer carries the
//! DTLS fingerprint, the resulting connection is authenticated end to end.

use serde::{Deserialize, Serialize};

use crate::identity::{Keypair, PeerId};

/// Largest signal payload accepted (SDP with many candidates fits easily).
pub const MAX_SIGNAL_PAYLOAD: usize = 64 * 1024;

const DOMAIN: &[u8] = b"n2n/signal/v1";

/// Which side of a handshake wrote a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The side that dials (sends the offer).
    Dialer,
    /// The side that accepts (sends the answer).
    Acceptor,
}

/// A transport signal with its routing header, before signing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The author.
    pub from: PeerId,
    /// The recipient.
    pub to: PeerId,
    /// Handshake session chosen by the dialer; both sides tag their signals with it.
    pub session: u64,
    /// Which side wrote this signal.
    pub role: Role,
    /// Position of this signal within its session and role (0, 1, 2…).
    pub seq: u32,
    /// Name of the transport the payload is meant for (`"webrtc"`, `"libp2p"`…).
    pub transport: String,
    /// The transport's opaque bytes.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
}

/// A [`Signal`] with its author's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSignal {
    /// The signed signal.
    pub signal: Signal,
    /// ed25519 signature of the signal by `signal.from`.
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

/// Why a signal was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The signature does not match the author's key: forged or altered on the way.
    #[error("signal from {from:?} has a bad signature (forged or altered in transit)")]
    BadSignature {
        /// Claimed author.
        from: PeerId,
    },
    /// The signal was addressed to another peer.
    #[error("signal addressed to {to:?}, not to us ({us:?})")]
    WrongRecipient {
        /// The recipient named in the signal.
        to: PeerId,
        /// The local peer.
        us: PeerId,
    },
    /// The payload is larger than [`MAX_SIGNAL_PAYLOAD`].
    #[error("signal payload of {0} bytes exceeds the {MAX_SIGNAL_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// The transport name is longer than 64 bytes.
    #[error("transport name too long")]
    BadTransportName,
}

impl Signal {
    /// The bytes the author signs: a domain tag, then every field, length-prefixed.
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 96 + self.payload.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&self.session.to_le_bytes());
        out.push(match self.role {
            Role::Dialer => 0,
            Role::Acceptor => 1,
        });
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&(self.transport.len() as u32).to_le_bytes());
        out.extend_from_slice(self.transport.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn check_bounds(&self) -> Result<(), SignalError> {
        if self.payload.len() > MAX_SIGNAL_PAYLOAD {
            return Err(SignalError::TooLarge(self.payload.len()));
        }
        if self.transport.len() > 64 {
            return Err(SignalError::BadTransportName);
        }
        Ok(())
    }

    /// Signs the signal with the author's key.
    ///
    /// # Errors
    /// [`SignalError::TooLarge`] or [`SignalError::BadTransportName`] if the signal
    /// exceeds the limits, and [`SignalError::BadSignature`] if `key` is not the key of
    /// `self.from` (a signal can only be signed by its author).
    pub fn sign(self, key: &Keypair) -> Result<SignedSignal, SignalError> {
        self.check_bounds()?;
        if key.peer_id() != self.from {
            return Err(SignalError::BadSignature { from: self.from });
        }
        let signature = key.sign(&self.signing_bytes());
        Ok(SignedSignal {
            signal: self,
            signature,
        })
    }
}

impl crate::bridge::RelaySize for SignedSignal {
    /// The payload and the transport name: what a relay can bound without
    /// checking the signature (the header is fixed-size).
    fn relay_size(&self) -> usize {
        self.signal.payload.len() + self.signal.transport.len()
    }
}

impl SignedSignal {
    /// Checks the signature and that the signal is addressed to `us`.
    ///
    /// # Errors
    /// See [`SignalError`].
    pub fn verify(&self, us: &PeerId) -> Result<&Signal, SignalError> {
        self.verify_signature()?;
        if &self.signal.to != us {
            return Err(SignalError::WrongRecipient {
                to: self.signal.to,
                us: *us,
            });
        }
        Ok(&self.signal)
    }

    /// Checks only the signature and bounds (what a relay or a server may check).
    ///
    /// # Errors
    /// See [`SignalError`].
    pub fn verify_signature(&self) -> Result<(), SignalError> {
        self.signal.check_bounds()?;
        self.signal
            .from
            .verify(&self.signal.signing_bytes(), &self.signature)
            .map_err(|_| SignalError::BadSignature {
                from: self.signal.from,
            })
    }
}

pub(crate) mod serde_bytes_compat {
    //! `Vec<u8>` as a byte string in binary formats and as hex in human-readable
    //! ones (JSON), bounded in size either way.
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            if text.len() > 2 * super::super::wire::MAX_FRAME {
                return Err(serde::de::Error::custom("byte string too long"));
            }
            return hex::decode(text.as_bytes()).map_err(serde::de::Error::custom);
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

mod sig_bytes {
    //! Serialize a 64-byte signature as a byte string.
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        super::serde_bytes_compat::serialize(v, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v = super::serde_bytes_compat::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn keys() -> (Keypair, Keypair) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        (Keypair::generate(&mut rng), Keypair::generate(&mut rng))
    }

    fn offer(a: &Keypair, b: &Keypair) -> SignedSignal {
        Signal {
            from: a.peer_id(),
            to: b.peer_id(),
            session: 42,
            role: Role::Dialer,
            seq: 0,
            transport: "webrtc".into(),
            payload: b"v=0 offer with fingerprint".to_vec(),
        }
        .sign(a)
        .unwrap()
    }

    #[test]
    fn verified_by_recipient() {
        let (a, b) = keys();
        let s = offer(&a, &b);
        assert_eq!(s.verify(&b.peer_id()).unwrap().session, 42);
    }

    #[test]
    fn altered_payload_is_rejected() {
        let (a, b) = keys();
        let mut s = offer(&a, &b);
        s.signal.payload[3] ^= 1;
        assert_eq!(
            s.verify(&b.peer_id()),
            Err(SignalError::BadSignature { from: a.peer_id() })
        );
    }

    #[test]
    fn altered_header_is_rejected() {
        let (a, b) = keys();
        for alter in [
            (|s: &mut SignedSignal| s.signal.session += 1) as fn(&mut SignedSignal),
            |s| s.signal.seq += 1,
            |s| s.signal.role = Role::Acceptor,
            |s| s.signal.transport.push('x'),
        ] {
            let mut s = offer(&a, &b);
            alter(&mut s);
            assert!(matches!(
                s.verify(&b.peer_id()),
                Err(SignalError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn forged_author_is_rejected() {
        let (a, b) = keys();
        // b signs a signal claiming to come from a.
        let mut s = offer(&b, &a);
        s.signal.from = a.peer_id();
        s.signal.to = b.peer_id();
        assert!(matches!(
            s.verify(&b.peer_id()),
            Err(SignalError::BadSignature { .. })
        ));
        // And signing with someone else's key is refused up front.
        let forged = Signal {
            from: a.peer_id(),
            ..offer(&b, &a).signal
        };
        assert!(forged.sign(&b).is_err());
    }

    #[test]
    fn wrong_recipient_is_rejected() {
        let (a, b) = keys();
        let s = offer(&a, &b);
        assert!(matches!(
            s.verify(&a.peer_id()),
            Err(SignalError::WrongRecipient { .. })
        ));
    }

    #[test]
    fn json_form_is_hex_and_round_trips() {
        let (a, b) = keys();
        let s = offer(&a, &b);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(&a.peer_id().to_string()), "{json}");
        assert!(json.contains(&hex::encode(&s.signal.payload)), "{json}");
        let back: SignedSignal = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        back.verify(&b.peer_id()).unwrap();
        assert!(
            serde_json::from_str::<SignedSignal>(&json.replace("\"session\":42", "\"session\":43"))
                .unwrap()
                .verify(&b.peer_id())
                .is_err()
        );
    }

    #[test]
    fn oversized_payload_is_refused() {
        let (a, b) = keys();
        let mut s = offer(&a, &b).signal;
        s.payload = vec![0; MAX_SIGNAL_PAYLOAD + 1];
        assert!(matches!(s.sign(&a), Err(SignalError::TooLarge(_))));
    }
}
