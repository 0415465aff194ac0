//! Node identity: an ed25519 key pair per node and the [`PeerId`] derived from it.
//!
//! A [`PeerId`] *is* the 32-byte ed25519 public key, so anybody holding a peer id
//! can verify what that peer signed without asking anyone else (see
//! [`crate::signal`]). The full textual form is 64 lowercase hex digits; the
//! short form ([`PeerId::short`]) keeps the first 8 for logs and tables.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};

/// The identity of a peer: its ed25519 public key.
///
/// Ordered and hashable so that peer sets iterate deterministically.
///
/// Serialized as 64 hex digits in human-readable formats (JSON, TOML) and as 32
/// raw bytes in binary ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; 32]);

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Self)
        }
    }
}

impl PeerId {
    /// Length of a peer id in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw public-key bytes.
    ///
    /// The bytes are not checked to be a valid curve point here; [`PeerId::verify`]
    /// rejects signatures for invalid keys.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Verifies `signature` over `message` against this peer's public key,
    /// strictly: a small-order key (for which a signature can be made
    /// without any secret, e.g. `0100…00`) and non-canonical signatures are
    /// refused.
    ///
    /// # Errors
    /// [`IdentityError::InvalidKey`] if the id is not a valid ed25519 key or
    /// is of small order, [`IdentityError::BadSignature`] if the signature
    /// does not match.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), IdentityError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidKey)?;
        if key.is_weak() {
            return Err(IdentityError::InvalidKey);
        }
        key.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| IdentityError::BadPeerId)?;
        Ok(Self(bytes))
    }
}

/// Errors of identity handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A peer id string is not 64 hex digits.
    #[error("a peer id is 64 hex digits")]
    BadPeerId,
    /// The bytes of a peer id are not a valid ed25519 public key.
    #[error("peer id is not a valid ed25519 public key")]
    InvalidKey,
    /// A signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file does not hold a key.
    #[error("key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A node's ed25519 key pair.
///
/// The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct Keypair {
    secret: SigningKey,
    peer_id: PeerId,
}

const KEY_FILE_HEADER: &str = "n2n-ed25519-secret-v1";

impl Keypair {
    /// Generates a key pair from `rng`: pass a seeded RNG for reproducible identities,
    /// or `rand::rngs::OsRng`-backed RNGs in production.
    pub fn generate<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_secret(seed)
    }

    /// Builds the key pair of a 32-byte secret seed.
    pub fn from_secret(seed: [u8; 32]) -> Self {
        let secret = SigningKey::from_bytes(&seed);
        let peer_id = PeerId(secret.verifying_key().to_bytes());
        Self { secret, peer_id }
    }

    /// The 32-byte secret seed (for handing the same identity to another library,
    /// such as a libp2p swarm).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.secret.sign(message).to_bytes()
    }

    /// Writes the secret to `path` as one text line (mode 0600 on Unix).
    ///
    /// # Errors
    /// [`IdentityError::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = format!(
            "{KEY_FILE_HEADER} {}\n",
            hex::encode(self.secret.to_bytes())
        );
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
    }

    /// Reads a key written by [`Keypair::save`].
    ///
    /// # Errors
    /// [`IdentityError::Io`] if the file cannot be read, [`IdentityError::BadKeyFile`]
    /// if it does not hold a key in the expected form.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let shown = || path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| IdentityError::Io {
            path: shown(),
            source,
        })?;
        if meta.len() > 4096 {
            return Err(IdentityError::BadKeyFile {
                path: shown(),
                reason: "file too large for a key",
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            path: shown(),
            source,
        })?;
        let mut words = text.split_whitespace();
        if words.next() != Some(KEY_FILE_HEADER) {
            return Err(IdentityError::BadKeyFile {
                path: shown(),
                reason: "missing header `n2n-ed25519-secret-v1`",
            });
        }
        let mut seed = [0u8; 32];
        let hex_seed = words.next().ok_or(IdentityError::BadKeyFile {
            path: shown(),
            reason: "missing secret",
        })?;
        hex::decode_to_slice(hex_seed, &mut seed).map_err(|_| IdentityError::BadKeyFile {
            path: shown(),
            reason: "secret is not 64 hex digits",
        })?;
        Ok(Self::from_secret(seed))
    }

    /// Loads the key at `path`, or generates one from the OS RNG and saves it there.
    ///
    /// # Errors
    /// As [`Keypair::load`] and [`Keypair::save`].
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate(&mut rand::rngs::OsRng.unwrap_err());
        key.save(path)?;
        Ok(key)
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn peer_id_round_trips_through_text() {
        let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let id = key.peer_id();
        let parsed: PeerId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.short().len(), 8);
        assert!(id.to_string().starts_with(&id.short()));
        assert!("zz".parse::<PeerId>().is_err());
    }

    #[test]
    fn same_seed_same_identity() {
        let a = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
        let b = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a.peer_id(), b.peer_id());
    }

    #[test]
    fn a_small_order_key_signs_nothing() {
        // The identity point: with R = identity and S = 0, a lax
        // verification accepts this "signature" over any message.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let id = PeerId::from_bytes(weak);
        assert!(matches!(
            id.verify(b"any message", &sig),
            Err(IdentityError::InvalidKey)
        ));
        use ed25519_dalek::Verifier;
        let lax = VerifyingKey::from_bytes(&weak).unwrap();
        assert!(
            lax.verify(b"any message", &Signature::from_bytes(&sig))
                .is_ok()
        );
    }

    #[test]
    fn sign_and_verify() {
        let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
        let sig = key.sign(b"hello");
        key.peer_id().verify(b"hello", &sig).unwrap();
        assert!(matches!(
            key.peer_id().verify(b"hellO", &sig),
            Err(IdentityError::BadSignature)
        ));
    }

    #[test]
    fn key_file_round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("n2n-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
        key.save(&path).unwrap();
        assert_eq!(Keypair::load(&path).unwrap().peer_id(), key.peer_id());
        assert_eq!(
            Keypair::load_or_generate(&path).unwrap().peer_id(),
            key.peer_id()
        );

        std::fs::write(&path, "garbage").unwrap();
        let err = Keypair::load(&path).unwrap_err();
        assert!(err.to_string().contains("missing header"), "{err}");
        std::fs::write(&path, "n2n-ed25519-secret-v1 abc").unwrap();
        assert!(matches!(
            Keypair::load(&path),
            Err(IdentityError::BadKeyFile { .. })
        ));
        assert!(matches!(
            Keypair::load(dir.join("missing")),
            Err(IdentityError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
