//! The handshake signals this transport exchanges through a [`SignalPipe`].
//!
//! 1. Dialer → acceptor: [`Signal::Offer`] with a fresh session nonce and the
//!    dialer's addresses.
//! 2. Acceptor → dialer: [`Signal::Answer`] with the acceptor's addresses; the
//!    acceptor now waits for a stream that carries the nonce.
//! 3. The dialer dials, opens a stream and writes the nonce; the acceptor binds
//!    the stream to its handshake and acknowledges it.
//! 4. If the dialer cannot reach the acceptor, it sends [`Signal::DialBack`] and
//!    the acceptor dials the dialer's addresses instead; step 3 then runs over
//!    that connection.
//!
//! Signals are untrusted input: they are bounded in size and address count, and
//! decoding never panics.
//!
//! [`SignalPipe`]: n2n_core::transport::SignalPipe

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Largest signal payload accepted, in bytes.
pub const MAX_SIGNAL: usize = 8 * 1024;
/// Addresses one signal may carry at most.
pub const MAX_ADDRS: usize = 32;
/// Largest address accepted, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Length of a session nonce.
pub const NONCE_LEN: usize = 16;

/// A session nonce: binds the dialer's stream to one handshake.
pub type Nonce = [u8; NONCE_LEN];

/// Version byte that starts every signal.
const VERSION: u8 = 1;

/// One handshake signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The dialer's opening signal.
    Offer {
        /// Session nonce the dialer's stream will present.
        nonce: Nonce,
        /// Where the dialer can be reached (for a dial back).
        addrs: Vec<Multiaddr>,
    },
    /// The acceptor's reply.
    Answer {
        /// Where the acceptor can be reached.
        addrs: Vec<Multiaddr>,
    },
    /// The dialer could not reach any address of the acceptor: please dial me.
    DialBack,
}

/// Why a signal was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The payload is larger than [`MAX_SIGNAL`].
    #[error("signal of {0} bytes exceeds {MAX_SIGNAL}")]
    TooLarge(usize),
    /// The payload does not start with a known version.
    #[error("unknown signal version {0}")]
    Version(u8),
    /// The payload is empty or does not decode.
    #[error("malformed signal: {0}")]
    Malformed(String),
    /// More than [`MAX_ADDRS`] addresses, or one longer than [`MAX_ADDR_LEN`].
    #[error("signal carries too many or too long addresses")]
    Addresses,
    /// An address is not a valid multiaddr.
    #[error("invalid address in signal: {0}")]
    BadAddress(String),
}

#[derive(Serialize, Deserialize)]
enum Wire {
    Offer { nonce: Nonce, addrs: Vec<Vec<u8>> },
    Answer { addrs: Vec<Vec<u8>> },
    DialBack,
}

fn addrs_to_wire(addrs: &[Multiaddr]) -> Vec<Vec<u8>> {
    addrs.iter().take(MAX_ADDRS).map(|a| a.to_vec()).collect()
}

fn addrs_from_wire(addrs: Vec<Vec<u8>>) -> Result<Vec<Multiaddr>, SignalError> {
    if addrs.len() > MAX_ADDRS || addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
        return Err(SignalError::Addresses);
    }
    addrs
        .into_iter()
        .map(|a| Multiaddr::try_from(a).map_err(|e| SignalError::BadAddress(e.to_string())))
        .collect()
}

impl Signal {
    /// Encodes the signal (at most [`MAX_ADDRS`] addresses are written).
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Self::Offer { nonce, addrs } => Wire::Offer {
                nonce: *nonce,
                addrs: addrs_to_wire(addrs),
            },
            Self::Answer { addrs } => Wire::Answer {
                addrs: addrs_to_wire(addrs),
            },
            Self::DialBack => Wire::DialBack,
        };
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(&wire).expect("encoding to a Vec cannot fail"));
        out
    }

    /// Decodes an untrusted payload.
    ///
    /// # Errors
    /// See [`SignalError`].
    pub fn decode(payload: &[u8]) -> Result<Self, SignalError> {
        if payload.len() > MAX_SIGNAL {
            return Err(SignalError::TooLarge(payload.len()));
        }
        let (&version, body) = payload
            .split_first()
            .ok_or_else(|| SignalError::Malformed("empty".into()))?;
        if version != VERSION {
            return Err(SignalError::Version(version));
        }
        let (wire, rest): (Wire, _) =
            postcard::take_from_bytes(body).map_err(|e| SignalError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SignalError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(match wire {
            Wire::Offer { nonce, addrs } => Self::Offer {
                nonce,
                addrs: addrs_from_wire(addrs)?,
            },
            Wire::Answer { addrs } => Self::Answer {
                addrs: addrs_from_wire(addrs)?,
            },
            Wire::DialBack => Self::DialBack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip() {
        for s in [
            Signal::Offer {
                nonce: [7; NONCE_LEN],
                addrs: vec![
                    addr("/ip4/127.0.0.1/tcp/4001"),
                    addr("/ip4/127.0.0.1/udp/4001/quic-v1"),
                ],
            },
            Signal::Answer { addrs: vec![] },
            Signal::DialBack,
        ] {
            assert_eq!(Signal::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            Signal::decode(&[]),
            Err(SignalError::Malformed(_))
        ));
        assert_eq!(Signal::decode(&[9, 0]), Err(SignalError::Version(9)));
        assert_eq!(
            Signal::decode(&vec![1; MAX_SIGNAL + 1]),
            Err(SignalError::TooLarge(MAX_SIGNAL + 1))
        );
        let mut trailing = Signal::DialBack.encode();
        trailing.push(0);
        assert!(matches!(
            Signal::decode(&trailing),
            Err(SignalError::Malformed(_))
        ));
        let garbage_addr = {
            let mut v = vec![VERSION];
            v.extend(
                postcard::to_stdvec(&Wire::Answer {
                    addrs: vec![vec![0xff, 0xff]],
                })
                .unwrap(),
            );
            v
        };
        assert!(matches!(
            Signal::decode(&garbage_addr),
            Err(SignalError::BadAddress(_))
        ));
        let too_many = {
            let mut v = vec![VERSION];
            let addrs = vec![addr("/ip4/127.0.0.1/tcp/1").to_vec(); MAX_ADDRS + 1];
            v.extend(postcard::to_stdvec(&Wire::Answer { addrs }).unwrap());
            v
        };
        assert_eq!(Signal::decode(&too_many), Err(SignalError::Addresses));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Signal::decode(&bytes);
            let mut versioned = vec![VERSION];
            versioned.extend(&bytes);
            let _ = Signal::decode(&versioned);
        }
    }
}
