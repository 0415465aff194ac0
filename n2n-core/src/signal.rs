//! Signed signals: the envelope that carries one transport signal (an offer, an
//! answer, an ICE candidate, a list of listen addresses: opaque bytes to n2n)
//! from its author to its recipient, over any signaling path.
//!
//! The author signs the envelope; the recipient verifies it. Neither a relaying
//! neighbour nor a signaling server can forge or alter a signal without the
//! recipient rejecting it with [`SignalError`]. Since a WebRTC offer carries the
//! DTLS fingerprint, the resulting connection is authenticated end to end.
//!
//! # Format v2
//!
//! The signed bytes are a domain tag (`n2n/signal/v2`), the [`Freshness`]
//! (a network id and a not-after time) and every field of the [`Signal`],
//! each length-prefixed. A signal made for one network (a room, a stack)
//! does not verify in another, and one past its not-after time is refused
//! by a recipient that knows the time; with increasing `seq` within a
//! session and a bounded replay cache of offers at the recipient (the node
//! core), an old signal cannot be played again. Signals of format v1 (no
//! version, no freshness) are refused with [`SignalError::UnsupportedVersion`].

use serde::{Deserialize, Serialize};

use crate::identity::{Keypair, PeerId};

/// Largest signal payload accepted (SDP with many candidates fits easily).
pub const MAX_SIGNAL_PAYLOAD: usize = 64 * 1024;

const DOMAIN: &[u8] = b"n2n/signal/v2";

/// The signal format this build writes and accepts.
pub const SIGNAL_VERSION: u8 = 2;

/// Longest network id accepted, in bytes.
pub const MAX_NETWORK_ID: usize = 64;

/// What keeps a signal from being played again elsewhere or later: signed
/// with it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Freshness {
    /// The network the signal is meant for (a room, a stack name): a
    /// recipient in another network refuses it.
    pub network: String,
    /// Unix time in milliseconds after which the signal is refused; `0`
    /// claims none (refused by a recipient that knows the time).
    pub not_after: u64,
}

fn v1() -> u8 {
    1
}

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
    /// The format ([`SIGNAL_VERSION`]); absent in v1 signals, read as 1.
    #[serde(default = "v1")]
    pub version: u8,
    /// The signed signal.
    pub signal: Signal,
    /// Its network and not-after time, signed with it (boxed: a signal is
    /// moved through queues and enums, and is mostly read by reference).
    #[serde(default)]
    pub freshness: Box<Freshness>,
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
    /// The signal is of another format (v1 signals carry no freshness).
    #[error("signal format v{0} is not supported (this build speaks v{SIGNAL_VERSION})")]
    UnsupportedVersion(u8),
    /// The network id is longer than [`MAX_NETWORK_ID`] bytes.
    #[error("network id too long")]
    BadNetworkId,
    /// The signal was made for another network.
    #[error("signal for network {theirs:?}, not ours ({ours:?})")]
    WrongNetwork {
        /// The network named in the signal.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The signal's not-after time has passed (or it claims none).
    #[error("signal expired at {not_after} ms (now {now} ms)")]
    Expired {
        /// Its not-after time, unix ms.
        not_after: u64,
        /// Our time, unix ms.
        now: u64,
    },
    /// The signal's not-after time is further ahead than any honest
    /// signal's lifetime.
    #[error("signal valid until {not_after} ms, too far ahead of now ({now} ms)")]
    TooFarAhead {
        /// Its not-after time, unix ms.
        not_after: u64,
        /// Our time, unix ms.
        now: u64,
    },
    /// The signal was seen before (a replay), or its `seq` does not increase.
    #[error("signal replayed (session {session}, seq {seq})")]
    Replayed {
        /// Its session.
        session: u64,
        /// Its position.
        seq: u32,
    },
}

impl Signal {
    /// The bytes the author signs: a domain tag, the freshness, then every
    /// field, length-prefixed.
    fn signing_bytes(&self, freshness: &Freshness) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 192 + self.payload.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&(freshness.network.len() as u32).to_le_bytes());
        out.extend_from_slice(freshness.network.as_bytes());
        out.extend_from_slice(&freshness.not_after.to_le_bytes());
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

    /// Signs the signal with the author's key, for no network and with no
    /// not-after time (`Freshness::default()`): for tests and for a
    /// signaling server's own checks. A node signs with
    /// [`Signal::sign_fresh`].
    ///
    /// # Errors
    /// See [`Signal::sign_fresh`].
    pub fn sign(self, key: &Keypair) -> Result<SignedSignal, SignalError> {
        self.sign_fresh(key, Freshness::default())
    }

    /// Signs the signal with the author's key, for `freshness`.
    ///
    /// # Errors
    /// [`SignalError::TooLarge`], [`SignalError::BadTransportName`] or
    /// [`SignalError::BadNetworkId`] if the signal exceeds the limits, and
    /// [`SignalError::BadSignature`] if `key` is not the key of `self.from`
    /// (a signal can only be signed by its author).
    pub fn sign_fresh(
        self,
        key: &Keypair,
        freshness: Freshness,
    ) -> Result<SignedSignal, SignalError> {
        self.check_bounds()?;
        if freshness.network.len() > MAX_NETWORK_ID {
            return Err(SignalError::BadNetworkId);
        }
        if key.peer_id() != self.from {
            return Err(SignalError::BadSignature { from: self.from });
        }
        let signature = key.sign(&self.signing_bytes(&freshness));
        Ok(SignedSignal {
            version: SIGNAL_VERSION,
            signal: self,
            freshness: Box::new(freshness),
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

    /// Checks only the format, the signature (strictly: no small-order
    /// keys) and the bounds: what a relay or a server may check.
    ///
    /// # Errors
    /// See [`SignalError`].
    pub fn verify_signature(&self) -> Result<(), SignalError> {
        if self.version != SIGNAL_VERSION {
            return Err(SignalError::UnsupportedVersion(self.version));
        }
        self.signal.check_bounds()?;
        if self.freshness.network.len() > MAX_NETWORK_ID {
            return Err(SignalError::BadNetworkId);
        }
        self.signal
            .from
            .verify(&self.signal.signing_bytes(&self.freshness), &self.signature)
            .map_err(|_| SignalError::BadSignature {
                from: self.signal.from,
            })
    }

    /// Checks the freshness against the recipient's `network` and, if it
    /// knows the time, `now_ms` (unix ms): the not-after time must not have
    /// passed, nor lie more than `max_ahead_ms` ahead.
    ///
    /// # Errors
    /// [`SignalError::WrongNetwork`], [`SignalError::Expired`],
    /// [`SignalError::TooFarAhead`].
    pub fn check_freshness(
        &self,
        network: &str,
        now_ms: Option<u64>,
        max_ahead_ms: u64,
    ) -> Result<(), SignalError> {
        if self.freshness.network != network {
            return Err(SignalError::WrongNetwork {
                theirs: self.freshness.network.clone(),
                ours: network.to_string(),
            });
        }
        let Some(now) = now_ms else {
            return Ok(());
        };
        let not_after = self.freshness.not_after;
        if not_after < now {
            return Err(SignalError::Expired { not_after, now });
        }
        if not_after - now > max_ahead_ms {
            return Err(SignalError::TooFarAhead { not_after, now });
        }
        Ok(())
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
    fn freshness_is_signed_and_checked() {
        let (a, b) = keys();
        let fresh = Freshness {
            network: "room-1".into(),
            not_after: 10_000,
        };
        let s = offer(&a, &b).signal.sign_fresh(&a, fresh.clone()).unwrap();
        s.verify(&b.peer_id()).unwrap();
        assert_eq!(s.check_freshness("room-1", Some(5_000), 60_000), Ok(()));
        assert!(matches!(
            s.check_freshness("room-2", Some(5_000), 60_000),
            Err(SignalError::WrongNetwork { .. })
        ));
        assert!(matches!(
            s.check_freshness("room-1", Some(10_001), 60_000),
            Err(SignalError::Expired { .. })
        ));
        assert!(matches!(
            s.check_freshness("room-1", Some(0), 5_000),
            Err(SignalError::TooFarAhead { .. })
        ));
        // Moving it to another network or extending its life breaks the signature.
        for alter in [
            (|s: &mut SignedSignal| s.freshness.network = "room-2".into()) as fn(&mut SignedSignal),
            |s| s.freshness.not_after += 1,
        ] {
            let mut t = s.clone();
            alter(&mut t);
            assert!(matches!(
                t.verify(&b.peer_id()),
                Err(SignalError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn a_v1_signal_is_refused_with_a_clear_error() {
        let (a, b) = keys();
        let s = offer(&a, &b);
        let mut json: serde_json::Value = serde_json::to_value(&s).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("version");
        obj.remove("freshness");
        let v1: SignedSignal = serde_json::from_value(json).unwrap();
        assert_eq!(
            v1.verify(&b.peer_id()),
            Err(SignalError::UnsupportedVersion(1))
        );
        assert!(
            SignalError::UnsupportedVersion(1)
                .to_string()
                .contains("v1 is not supported")
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
