//! One identity, two spellings: the n2n [`PeerId`] (the raw ed25519 public key)
//! and the libp2p `PeerId` (an identity multihash of the same key).
//!
//! The swarm's key pair is built from the node's own ed25519 secret, so Noise
//! and QUIC/TLS authenticate the very key the node signs its signals with.

use n2n_core::{Keypair, PeerId};

/// Why an n2n identity has no libp2p spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The 32 bytes are not a valid ed25519 public key.
    #[error("peer id {0:?} is not a valid ed25519 public key")]
    InvalidKey(PeerId),
}

/// The libp2p key pair of `key`: the same ed25519 secret.
pub fn libp2p_keypair(key: &Keypair) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .expect("32 bytes are always a valid ed25519 secret")
}

/// The libp2p peer id naming the same peer as `peer`.
///
/// # Errors
/// [`IdentityError::InvalidKey`] if `peer` is not a valid ed25519 public key
/// (untrusted ids can be any 32 bytes).
pub fn to_libp2p(peer: &PeerId) -> Result<libp2p::PeerId, IdentityError> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(peer.as_bytes())
        .map_err(|_| IdentityError::InvalidKey(*peer))?;
    Ok(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// The n2n peer id of a libp2p peer id, if it names an ed25519 key (libp2p
/// inlines such keys in the id; other key types are hashed and have no n2n id).
pub fn from_libp2p(peer: &libp2p::PeerId) -> Option<PeerId> {
    const IDENTITY_MULTIHASH: u64 = 0x00;
    let hash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if hash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(hash.digest())
        .ok()?
        .try_into_ed25519()
        .ok()?;
    Some(PeerId::from_bytes(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn both_spellings_name_the_same_peer() {
        for seed in 0..20 {
            let key = Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let p2p = libp2p_keypair(&key).public().to_peer_id();
            assert_eq!(to_libp2p(&key.peer_id()).unwrap(), p2p);
            assert_eq!(from_libp2p(&p2p), Some(key.peer_id()));
        }
    }

    #[test]
    fn foreign_ids_have_no_n2n_spelling() {
        assert_eq!(from_libp2p(&libp2p::PeerId::random()), None);
        // Not every 32 bytes are a point on the curve.
        let bogus = (0u8..=255)
            .map(|b| PeerId::from_bytes([b; 32]))
            .find(|p| to_libp2p(p).is_err())
            .expect("some byte pattern is not a valid key");
        assert_eq!(to_libp2p(&bogus), Err(IdentityError::InvalidKey(bogus)));
    }
}
