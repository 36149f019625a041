//! Challenge binding: the challenge `id` is an HMAC over the challenge's parameters, so a server
//! recognizes its own challenges in an echo without storing them.
//!
//! ```text
//! input = realm | method | intent | request | expires | digest | [header |] opaque
//! id    = base64url_nopad( HMAC-SHA256(key = secret bytes, message = UTF-8 of input) )
//! ```
//!
//! Seven `|`-joined slots, an empty string for an absent optional (so `…|expires||opaque`); the
//! `request` and `opaque` slots hold their base64url text exactly as on the wire; `description`
//! is not bound. A challenge that names the `Payment-Authorization` credential header gets that
//! name as an eighth slot before `opaque`; the default, `Authorization`, is never bound (mppx,
//! mpp-rs 0.18 and the `challenge-id.json` vectors).
//!
//! Verification recomputes the HMAC over the *echoed* text and compares in constant time.
//! [`ChallengeKeys`] issues with the current secret and verifies with it or any previous one, so
//! a rotated-out secret keeps its challenges valid until they expire.

use std::fmt;

use sha2::Sha256;

use super::base64url;
use super::challenge::CredentialHeader;

/// Shortest accepted secret, in bytes (what mppx and mpp-rs require).
pub const MIN_SECRET_BYTES: usize = 32;

/// Length of a challenge id: base64url without padding of a 32-byte HMAC.
const ID_LEN: usize = 43;

/// Why a secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("challenge secret must be at least {MIN_SECRET_BYTES} bytes")]
    TooShort,
}

/// A server secret that binds challenge ids. Its `Debug` output never shows the bytes.
///
/// Generate one with `openssl rand -base64 32` (and keep the text as the secret: mppx and
/// mpp-rs use the UTF-8 bytes of their secret string, so the same text gives the same ids).
#[derive(Clone)]
pub struct ChallengeSecret {
    key: Box<[u8]>,
}

impl ChallengeSecret {
    /// A secret from its bytes; at least [`MIN_SECRET_BYTES`] long.
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let key = key.into();
        if key.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort);
        }
        Ok(Self {
            key: key.into_boxed_slice(),
        })
    }

    /// The challenge id of `binding` under this secret.
    pub fn challenge_id(&self, binding: &ChallengeBinding<'_>) -> String {
        base64url::encode(self.mac(binding))
    }

    /// Whether `id` is the challenge id of `binding` under this secret. The MACs are compared in
    /// constant time.
    pub fn verify(&self, binding: &ChallengeBinding<'_>, id: &str) -> bool {
        let presented = match decode_id(id) {
            Some(presented) => presented,
            None => return false,
        };
        constant_time_eq(&self.mac(binding), &presented)
    }

    fn mac(&self, binding: &ChallengeBinding<'_>) -> [u8; 32] {
        let mut message = Vec::with_capacity(
            binding.realm.len()
                + binding.method.len()
                + binding.intent.len()
                + binding.request.len()
                + 128,
        );
        let header = binding
            .header
            .filter(|header| *header != CredentialHeader::Authorization)
            .map(CredentialHeader::as_str);
        let slots = [
            Some(binding.realm),
            Some(binding.method),
            Some(binding.intent),
            Some(binding.request),
            Some(binding.expires.unwrap_or_default()),
            Some(binding.digest.unwrap_or_default()),
            header,
            Some(binding.opaque.unwrap_or_default()),
        ];
        for (index, slot) in slots.into_iter().flatten().enumerate() {
            if index > 0 {
                message.push(b'|');
            }
            message.extend_from_slice(slot.as_bytes());
        }
        hmac_sha256(&self.key, &message)
    }
}

impl fmt::Debug for ChallengeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChallengeSecret(<redacted>)")
    }
}

/// The secrets of a server: challenges are issued with the current one and accepted under any.
///
/// ```
/// use tower_paywall::mpp::{ChallengeBinding, ChallengeKeys, ChallengeSecret};
///
/// let old = ChallengeSecret::new("an old secret, at least 32 bytes long")?;
/// let binding = ChallengeBinding::new("api.example.com", "stellar", "charge", "e30");
/// let issued_before_rotation = old.challenge_id(&binding);
///
/// let keys = ChallengeKeys::new(ChallengeSecret::new("the new secret, at least 32 bytes long")?)
///     .with_previous(old);
/// assert!(keys.verify(&binding, &issued_before_rotation));
/// assert_ne!(keys.challenge_id(&binding), issued_before_rotation);
/// # Ok::<(), tower_paywall::mpp::SecretError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChallengeKeys {
    current: ChallengeSecret,
    previous: Vec<ChallengeSecret>,
}

impl ChallengeKeys {
    /// Keys with one secret.
    pub fn new(current: ChallengeSecret) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Also accepts challenges issued with `secret` (a rotated-out secret, kept until its
    /// challenges have expired).
    #[must_use]
    pub fn with_previous(mut self, secret: ChallengeSecret) -> Self {
        self.previous.push(secret);
        self
    }

    /// The secret new challenges are issued with.
    pub fn current(&self) -> &ChallengeSecret {
        &self.current
    }

    /// The challenge id of `binding` under the current secret.
    pub fn challenge_id(&self, binding: &ChallengeBinding<'_>) -> String {
        self.current.challenge_id(binding)
    }

    /// Whether `id` is the challenge id of `binding` under the current or a previous secret.
    /// Every secret is tried, whatever the outcome, and each comparison is constant-time.
    pub fn verify(&self, binding: &ChallengeBinding<'_>, id: &str) -> bool {
        let presented = match decode_id(id) {
            Some(presented) => presented,
            None => return false,
        };
        std::iter::once(&self.current)
            .chain(&self.previous)
            .fold(false, |found, secret| {
                found | constant_time_eq(&secret.mac(binding), &presented)
            })
    }
}

impl From<ChallengeSecret> for ChallengeKeys {
    fn from(current: ChallengeSecret) -> Self {
        Self::new(current)
    }
}

/// The parameters a challenge id binds, as their wire text.
///
/// Get one from [`Challenge::binding`](super::Challenge::binding) or
/// [`Challenge::binding`](super::Challenge::binding), or build it with
/// [`new`](Self::new) and set the optional slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChallengeBinding<'a> {
    /// `realm`.
    pub realm: &'a str,
    /// `method`.
    pub method: &'a str,
    /// `intent`.
    pub intent: &'a str,
    /// `request`: the base64url text as sent (base64url of the JCS of the request object).
    pub request: &'a str,
    /// `expires`, as sent.
    pub expires: Option<&'a str>,
    /// `digest`, as sent.
    pub digest: Option<&'a str>,
    /// `opaque`: the base64url text as sent.
    pub opaque: Option<&'a str>,
    /// `header`: bound only when it names `Payment-Authorization`.
    pub header: Option<CredentialHeader>,
}

impl<'a> ChallengeBinding<'a> {
    /// The required slots; the optional ones empty.
    pub fn new(realm: &'a str, method: &'a str, intent: &'a str, request: &'a str) -> Self {
        Self {
            realm,
            method,
            intent,
            request,
            expires: None,
            digest: None,
            opaque: None,
            header: None,
        }
    }
}

fn decode_id(id: &str) -> Option<[u8; 32]> {
    if id.len() != ID_LEN {
        return None;
    }
    base64url::decode_array(id)
}

/// Compares in constant time (`subtle`): every byte is looked at, whatever differs.
fn constant_time_eq(expected: &[u8; 32], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_slice().ct_eq(presented).into()
}

/// HMAC-SHA256 (RFC 2104), through the `hmac` crate.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-vector-secret-minimum-32-byte-secret";

    use hex::encode as hex;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1: 20-byte key.
        assert_eq!(
            hex(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2: short key.
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: 131-byte key, longer than the block.
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn research_vector_required_fields_only() {
        // research/mpp.md §1.2: `api.example.com|tempo|charge|eyJhbW91bnQiOiIxMDAwMDAwIn0|||`.
        let secret = ChallengeSecret::new(SECRET).unwrap();
        let binding = ChallengeBinding::new(
            "api.example.com",
            "tempo",
            "charge",
            "eyJhbW91bnQiOiIxMDAwMDAwIn0",
        );
        let id = secret.challenge_id(&binding);
        assert_eq!(id, "6QDs0BmhrI_v67iWeCMvGqQJEFQ6ErWKlk7zi5xL6t0");
        assert!(secret.verify(&binding, &id));
    }

    #[test]
    fn research_vector_stellar_charge() {
        // research/mpp.md §1.2: the Stellar charge request, expires 2030-01-01T00:00:00.000Z.
        let request = r#"{"amount":"100000","currency":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","methodDetails":{"credentialTypes":["transaction","signedHash"],"network":"stellar:testnet"},"recipient":"GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR"}"#;
        let value: serde_json::Value = serde_json::from_str(request).unwrap();
        assert_eq!(super::super::jcs::to_string(&value), request);
        let encoded = base64url::encode(request);
        let secret = ChallengeSecret::new(SECRET).unwrap();
        let mut binding = ChallengeBinding::new("api.example.com", "stellar", "charge", &encoded);
        binding.expires = Some("2030-01-01T00:00:00.000Z");
        assert_eq!(
            secret.challenge_id(&binding),
            "hl1cmUZhWUPd4B0MPDa8aFF_iPiYwuTudJTSODEWdv8"
        );
    }

    #[test]
    fn refuses_short_secrets() {
        assert_eq!(
            ChallengeSecret::new("short").unwrap_err(),
            SecretError::TooShort
        );
        assert_eq!(
            ChallengeSecret::new(vec![7u8; MIN_SECRET_BYTES - 1]).unwrap_err(),
            SecretError::TooShort
        );
        assert!(ChallengeSecret::new(vec![7u8; MIN_SECRET_BYTES]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = ChallengeSecret::new("super-secret-value-that-is-long-enough").unwrap();
        let keys = ChallengeKeys::new(secret.clone()).with_previous(secret.clone());
        for text in [
            format!("{secret:?}"),
            format!("{keys:?}"),
            format!("{keys:#?}"),
        ] {
            assert!(!text.contains("super-secret"), "{text}");
            assert!(!text.contains("115, 117"), "{text}"); // "su" as bytes
        }
    }

    #[test]
    fn rotation_verifies_previous_ids_and_refuses_forgeries() {
        let old = ChallengeSecret::new("old-secret-old-secret-old-secret-old").unwrap();
        let new = ChallengeSecret::new("new-secret-new-secret-new-secret-new").unwrap();
        let binding = ChallengeBinding::new("api.example.com", "stellar", "charge", "e30");
        let old_id = old.challenge_id(&binding);
        let keys = ChallengeKeys::new(new.clone()).with_previous(old);
        assert!(keys.verify(&binding, &old_id));
        assert_eq!(keys.challenge_id(&binding), new.challenge_id(&binding));
        assert!(keys.verify(&binding, &keys.challenge_id(&binding)));

        // An id made with a secret the server never had.
        let stranger = ChallengeSecret::new("someone-else-someone-else-someone-else").unwrap();
        assert!(!keys.verify(&binding, &stranger.challenge_id(&binding)));
        // The right id for other parameters.
        let mut other = binding;
        other.request = "eyJhbW91bnQiOiIxIn0";
        assert!(!keys.verify(&other, &old_id));
        // One flipped character, a truncated id, a padded id, junk.
        let mut flipped = old_id.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for forged in [
            flipped.as_str(),
            &old_id[..42],
            &format!("{old_id}="),
            "",
            "not an id at all, not an id at all, not an",
        ] {
            assert!(!keys.verify(&binding, forged), "{forged:?}");
        }
    }

    #[test]
    fn default_credential_header_is_not_bound() {
        let secret = ChallengeSecret::new(SECRET).unwrap();
        let plain = ChallengeBinding::new("api.example.com", "tempo", "charge", "e30");
        let mut explicit = plain;
        explicit.header = Some(CredentialHeader::Authorization);
        let mut advertised = plain;
        advertised.header = Some(CredentialHeader::PaymentAuthorization);
        assert_eq!(secret.challenge_id(&plain), secret.challenge_id(&explicit));
        assert_ne!(
            secret.challenge_id(&plain),
            secret.challenge_id(&advertised)
        );
    }
}
