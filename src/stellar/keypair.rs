//! ed25519 keypairs for Stellar accounts, and signature verification.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey};
use stellar_strkey::ed25519::PrivateKey;

use super::Address;

/// Why a secret seed was refused. The message never contains the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeypairError {
    /// The text is not a valid `S…` secret seed strkey.
    #[error("invalid secret seed")]
    InvalidSeed,
}

/// An ed25519 keypair controlling a Stellar account.
///
/// The secret never shows in `Debug` (which prints `Keypair(G…)`) or in any error; the only way to get
/// it out is [`Keypair::secret_seed`]. The signing key is zeroed when the keypair is dropped.
///
/// ```
/// use tower_paywall::stellar::{Keypair, verify_ed25519};
///
/// let keypair = Keypair::from_seed([1; 32]);
/// assert_eq!(
///     keypair.address().to_string(),
///     "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR"
/// );
/// let signature = keypair.sign(b"hello");
/// assert!(verify_ed25519(&keypair.public_key(), b"hello", &signature));
/// ```
#[derive(Clone)]
pub struct Keypair {
    signing_key: SigningKey,
}

impl Keypair {
    /// The keypair with this 32-byte ed25519 seed (the payload of an `S…` strkey).
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair {
            signing_key: SigningKey::from_bytes(&seed),
        }
    }

    /// The raw ed25519 public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// The account address (`G…`).
    #[must_use]
    pub fn address(&self) -> Address {
        Address::Account(self.public_key())
    }

    /// Signs `message` (ed25519, deterministic).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing_key.sign(message).to_bytes()
    }

    /// The secret seed as an `S…` strkey.
    ///
    /// This is the only way to get the secret out of a `Keypair`: handle the returned string with care
    /// (it is not zeroed on drop).
    #[must_use]
    pub fn secret_seed(&self) -> String {
        let private_key = PrivateKey(self.signing_key.to_bytes());
        let seed = private_key.as_unredacted().to_string();
        seed.as_str().to_owned()
    }
}

impl FromStr for Keypair {
    type Err = KeypairError;

    /// Parses an `S…` secret seed strkey. The error never echoes the input.
    fn from_str(seed: &str) -> Result<Keypair, KeypairError> {
        let private_key = PrivateKey::from_string(seed).map_err(|_| KeypairError::InvalidSeed)?;
        Ok(Keypair::from_seed(private_key.0))
    }
}

impl fmt::Debug for Keypair {
    /// Prints `Keypair(G…)`: the public address only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

/// Verifies an ed25519 `signature` by `public_key` over `message`.
///
/// Uses `verify_strict`: weak public keys and non-canonical signatures are refused. An invalid public key
/// gives `false`. To check many signatures by one key, decode it once with [`VerifyingKey::new`].
#[must_use]
pub fn verify_ed25519(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::new(public_key).is_some_and(|key| key.verify(message, signature))
}

/// An ed25519 public key, decoded (decompressed) once for many verifications.
///
/// ```
/// use tower_paywall::stellar::{Keypair, VerifyingKey};
///
/// let keypair = Keypair::from_seed([1; 32]);
/// let key = VerifyingKey::new(&keypair.public_key()).unwrap();
/// assert!(key.verify(b"hello", &keypair.sign(b"hello")));
/// assert!(!key.verify(b"hello!", &keypair.sign(b"hello")));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Decodes `public_key`; `None` when it is not a point on the curve.
    #[must_use]
    pub fn new(public_key: &[u8; 32]) -> Option<VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .ok()
            .map(VerifyingKey)
    }

    /// Whether `signature` by this key over `message` verifies (`verify_strict`).
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hex::encode as hex;

    const SEED_ONES_ADDRESS: &str = "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR";
    /// The MPP `signedHash` vector (research/mpp.md §2.2).
    const SIGNED_HASH_MESSAGE: &str =
        "kM9xPqWvT2nJrHsY4aDfEb:a1b2c3d4e5f6789012345678901234567890123456789012345678901234abcd";
    const SIGNED_HASH_SIGNATURE: &str = "64e51e23b0126360ddb36b1502843b902266ba2d6651939480e6a63ac16d8a3f\
                                         c9a6641f9961229d8a8fde5abff3314d79e27320479aa766eb0c515d2ee3550b";

    #[test]
    fn seed_vector_gives_the_published_address() {
        assert_eq!(
            Keypair::from_seed([1; 32]).address().to_string(),
            SEED_ONES_ADDRESS
        );
    }

    #[test]
    fn signed_hash_vector() {
        let keypair = Keypair::from_seed([1; 32]);
        let signature = keypair.sign(SIGNED_HASH_MESSAGE.as_bytes());
        assert_eq!(hex(signature), SIGNED_HASH_SIGNATURE);
        assert!(verify_ed25519(
            &keypair.public_key(),
            SIGNED_HASH_MESSAGE.as_bytes(),
            &signature
        ));
    }

    #[test]
    fn verification_fails_on_any_change() {
        let keypair = Keypair::from_seed([1; 32]);
        let message = SIGNED_HASH_MESSAGE.as_bytes();
        let signature = keypair.sign(message);
        let mut flipped = signature;
        flipped[0] ^= 1;
        assert!(!verify_ed25519(&keypair.public_key(), message, &flipped));
        assert!(!verify_ed25519(&keypair.public_key(), b"other", &signature));
        let other = Keypair::from_seed([2; 32]);
        assert!(!verify_ed25519(&other.public_key(), message, &signature));
    }

    #[test]
    fn invalid_or_weak_public_keys_do_not_verify() {
        // All-zeros is a small-order point: `verify_strict` refuses it even with an all-zeros signature.
        assert!(!verify_ed25519(&[0; 32], b"", &[0; 64]));
        // Not a point on the curve (y = 2 has no x).
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(!verify_ed25519(&not_a_point, b"", &[0; 64]));
    }

    #[test]
    fn secret_seed_round_trips() {
        let keypair = Keypair::from_seed([1; 32]);
        let seed = keypair.secret_seed();
        assert!(seed.starts_with('S'));
        assert_eq!(seed.len(), 56);
        let parsed: Keypair = seed.parse().expect("valid seed");
        assert_eq!(parsed.public_key(), keypair.public_key());
    }

    #[test]
    fn debug_shows_only_the_address() {
        let keypair = Keypair::from_seed([1; 32]);
        let debug = format!("{keypair:?}");
        assert_eq!(debug, format!("Keypair({SEED_ONES_ADDRESS})"));
        assert!(!debug.contains(&keypair.secret_seed()));
    }

    #[test]
    fn invalid_seeds_are_refused_without_echo() {
        let seed = Keypair::from_seed([1; 32]).secret_seed();
        let mut broken = seed.clone();
        broken.pop();
        broken.push('A');
        for bad in [
            String::new(),
            SEED_ONES_ADDRESS.to_owned(),
            broken,
            format!("{seed} "),
        ] {
            let error = bad.parse::<Keypair>().expect_err("refused");
            assert_eq!(error, KeypairError::InvalidSeed);
            assert!(!error.to_string().contains(&seed[..8]));
        }
    }
}
