//! The signals of a WebRTC handshake, as carried (opaque, signed end to end)
//! by an n2n signaling path: the dialer's offer, the acceptor's answer, and the
//! ICE candidates each side trickles as it finds them.
//!
//! A signal is a small JSON object, e.g. `{"t":"offer","sdp":"v=0…"}`. Whatever
//! arrives is untrusted: at most [`MAX_SIGNAL`] bytes, decoded into [`Signal`]
//! or refused with a [`SignalError`].

use n2n_core::transport::TransportError;
use serde::{Deserialize, Serialize};

/// Largest signal accepted, in bytes.
pub const MAX_SIGNAL: usize = 16 * 1024;

/// One handshake signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    /// The dialer's session description (carries its DTLS fingerprint).
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// The acceptor's session description.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// One ICE candidate found by the sender.
    Candidate {
        /// The `candidate:` attribute.
        candidate: String,
        /// Media stream id the candidate belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// Media line index the candidate belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
    },
    /// The sender has no more candidates.
    EndOfCandidates,
}

/// Why a signal from the remote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The signal is larger than [`MAX_SIGNAL`].
    #[error("signal of {0} bytes exceeds {MAX_SIGNAL} bytes")]
    TooLarge(usize),
    /// The signal is not a valid encoding of [`Signal`].
    #[error("malformed signal: {0}")]
    Malformed(String),
}

impl Signal {
    /// The signal's wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a signal always serializes")
    }

    /// Decodes a signal from the remote.
    ///
    /// # Errors
    /// [`SignalError`] when the bytes are too many or not a signal.
    pub fn decode(bytes: &[u8]) -> Result<Self, SignalError> {
        if bytes.len() > MAX_SIGNAL {
            return Err(SignalError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| SignalError::Malformed(e.to_string()))
    }

    /// Decodes a signal from the remote during a handshake, a refusal being
    /// the handshake's error ([`TransportError::BadSignal`]).
    ///
    /// # Errors
    /// [`TransportError::BadSignal`] when the bytes are too many or not a signal.
    pub fn decode_remote(bytes: &[u8]) -> Result<Self, TransportError> {
        Self::decode(bytes).map_err(|e| TransportError::BadSignal(e.to_string()))
    }

    /// The SDP of the dialer's offer: the first signal an acceptor gets.
    ///
    /// # Errors
    /// [`TransportError::BadSignal`] for anything but a valid offer.
    pub fn expect_offer(bytes: &[u8]) -> Result<String, TransportError> {
        match Self::decode_remote(bytes)? {
            Signal::Offer { sdp } => Ok(sdp),
            other => Err(TransportError::BadSignal(format!(
                "expected an offer, got a {} signal",
                other.kind()
            ))),
        }
    }

    /// The signal's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::Candidate { .. } => "candidate",
            Self::EndOfCandidates => "end-of-candidates",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acceptor_takes_an_offer_and_nothing_else_first() {
        let offer = Signal::Offer {
            sdp: "v=0\r\n".into(),
        }
        .encode();
        assert_eq!(Signal::expect_offer(&offer).unwrap(), "v=0\r\n");
        let answer = Signal::Answer {
            sdp: "v=0\r\n".into(),
        }
        .encode();
        let e = Signal::expect_offer(&answer).unwrap_err();
        assert!(
            e.to_string().contains("expected an offer, got a answer"),
            "{e}"
        );
        assert!(matches!(
            Signal::expect_offer(b"{"),
            Err(TransportError::BadSignal(_))
        ));
    }

    #[test]
    fn signals_roundtrip() {
        for s in [
            Signal::Offer {
                sdp: "v=0\r\n".into(),
            },
            Signal::Answer {
                sdp: "v=0\r\n".into(),
            },
            Signal::Candidate {
                candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
            Signal::Candidate {
                candidate: "c".into(),
                sdp_mid: None,
                sdp_mline_index: None,
            },
            Signal::EndOfCandidates,
        ] {
            assert_eq!(Signal::decode(&s.encode()).unwrap(), s);
        }
        assert_eq!(
            Signal::Offer { sdp: "x".into() }.encode(),
            br#"{"t":"offer","sdp":"x"}"#
        );
    }

    #[test]
    fn bad_signals_are_typed_errors() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            br#"{"t":"offer"}"#,
            br#"{"t":"teleport","sdp":"x"}"#,
            br#"{"t":"offer","sdp":"x","extra":1}"#,
            br#"{"t":"candidate","candidate":"c","sdp_mline_index":70000}"#,
            b"[1,2,3]",
        ] {
            assert!(
                matches!(Signal::decode(bad), Err(SignalError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = vec![b' '; MAX_SIGNAL + 1];
        assert_eq!(
            Signal::decode(&huge),
            Err(SignalError::TooLarge(MAX_SIGNAL + 1))
        );
    }
}
