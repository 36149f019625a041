//! Wallet-signed routes: a single-use challenge from `POST /v1/auth/challenge`, signed by the
//! wallet and presented as `Authorization: Stellar <G…>:<challenge_id>:<signature_hex>`.
//!
//! - A challenge names one [`Audience`]; it works for that audience only.
//! - It is taken from the store when presented, so it works once, whatever the outcome.
//! - It expires after [`Limits::challenge_ttl_seconds`](crate::pricing::Limits) (5 minutes).
//! - The signature is ed25519 (`verify_strict`) by the wallet's key, over either the SEP-53
//!   form as Stellar wallets sign messages (`SHA-256("Stellar Signed Message:\n" + message)`)
//!   or the message's bytes themselves.

use std::fmt;

use sha2::{Digest, Sha256};
use tower_paywall::stellar::{Address, verify_ed25519};

use crate::clock::rfc3339;
use crate::storage::{Challenge, Storage, StorageError};

/// What a challenge may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// `DELETE /v1/object/{key}`.
    ObjectDelete,
    /// `POST /v1/queue/{topic}/ack/{receipt}`.
    QueueAck,
    /// `POST /v1/profile`.
    ProfileBind,
    /// `GET /v1/me/usage`.
    MeUsage,
}

impl Audience {
    /// Every audience.
    pub const ALL: [Audience; 4] = [
        Audience::ObjectDelete,
        Audience::QueueAck,
        Audience::ProfileBind,
        Audience::MeUsage,
    ];

    /// The audience's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::ObjectDelete => "object-delete",
            Audience::QueueAck => "queue-ack",
            Audience::ProfileBind => "profile-bind",
            Audience::MeUsage => "me-usage",
        }
    }

    /// The audience named `name`.
    pub fn parse(name: &str) -> Option<Audience> {
        Audience::ALL
            .into_iter()
            .find(|audience| audience.as_str() == name)
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A challenge as issued to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// Its id.
    pub challenge_id: String,
    /// The message to sign.
    pub message: String,
    /// When it expires (unix milliseconds).
    pub expires_at: u64,
}

/// Why a wallet signature was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Stellar …` header (or no credentials in the body).
    #[error(
        "this route needs a wallet signature: Authorization: Stellar <G…>:<challenge_id>:<signature_hex>"
    )]
    Missing,
    /// The credentials do not parse.
    #[error("malformed wallet credentials: {0}")]
    Malformed(&'static str),
    /// The challenge is unknown, used already, or expired.
    #[error("the challenge is unknown, used already, or expired: ask for a new one")]
    Challenge,
    /// The challenge was issued for another audience.
    #[error("the challenge was issued for another audience")]
    Audience,
    /// The signature does not verify under the wallet's key.
    #[error("the signature does not verify under the wallet's key")]
    Signature,
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl AuthError {
    /// The error code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "wallet_signature_required",
            AuthError::Malformed(_) => "malformed_authorization",
            AuthError::Challenge => "challenge_invalid",
            AuthError::Audience => "wrong_audience",
            AuthError::Signature => "bad_signature",
            AuthError::Storage(_) => "storage_unavailable",
        }
    }
}

/// Wallet credentials as presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The wallet (`G…`).
    pub wallet: String,
    /// Its ed25519 key.
    pub public_key: [u8; 32],
    /// The challenge signed.
    pub challenge_id: String,
    /// The signature.
    pub signature: [u8; 64],
}

impl Credentials {
    /// Reads the value of an `Authorization` header, whatever its bytes.
    ///
    /// # Errors
    ///
    /// [`AuthError::Missing`] for another scheme, [`AuthError::Malformed`] for a bad value
    /// (bytes outside ASCII after `Stellar` among them).
    pub fn from_header_bytes(value: &[u8]) -> Result<Credentials, AuthError> {
        match std::str::from_utf8(value) {
            Ok(text) if text.is_ascii() => Credentials::from_header(text),
            // Bytes no credential has: malformed when they come in our scheme.
            _ => {
                let scheme = value.trim_ascii_start().split(|byte| *byte == b' ').next();
                match scheme {
                    Some(scheme) if scheme.eq_ignore_ascii_case(b"stellar") => {
                        Err(AuthError::Malformed("the credentials are not ASCII"))
                    }
                    _ => Err(AuthError::Missing),
                }
            }
        }
    }

    /// Reads the text of an `Authorization` header.
    ///
    /// # Errors
    ///
    /// [`AuthError::Missing`] for another scheme, [`AuthError::Malformed`] for a bad value.
    pub fn from_header(value: &str) -> Result<Credentials, AuthError> {
        let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("stellar") {
            return Err(AuthError::Missing);
        }
        let mut parts = rest.trim().splitn(3, ':');
        let (Some(wallet), Some(id), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected <G…>:<challenge_id>:<signature_hex>",
            ));
        };
        Credentials::new(wallet, id, signature)
    }

    /// Credentials from their three parts (as `POST /v1/profile` sends them).
    ///
    /// # Errors
    ///
    /// [`AuthError::Malformed`] for a bad wallet, challenge id or signature.
    pub fn new(
        wallet: &str,
        challenge_id: &str,
        signature: &str,
    ) -> Result<Credentials, AuthError> {
        let Ok(Address::Account(public_key)) = wallet.parse::<Address>() else {
            return Err(AuthError::Malformed(
                "the wallet is not a G… account address",
            ));
        };
        if challenge_id.is_empty()
            || challenge_id.len() > 64
            || !challenge_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric())
        {
            return Err(AuthError::Malformed("bad challenge id"));
        }
        let mut decoded = [0; 64];
        hex::decode_to_slice(signature, &mut decoded)
            .map_err(|_| AuthError::Malformed("the signature must be 128 hex digits"))?;
        Ok(Credentials {
            wallet: wallet.to_owned(),
            public_key,
            challenge_id: challenge_id.to_owned(),
            signature: decoded,
        })
    }
}

/// The SEP-53 digest of `message`: what Stellar wallets sign.
pub fn sep53_digest(message: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"Stellar Signed Message:\n");
    hasher.update(message.as_bytes());
    hasher.finalize().into()
}

/// Issues a challenge for `audience` at `now`, valid `ttl_ms`; `server` names the service in
/// the message.
///
/// # Errors
///
/// The store's.
pub async fn issue(
    storage: &dyn Storage,
    audience: Audience,
    server: &str,
    now: u64,
    ttl_ms: u64,
) -> Result<Issued, StorageError> {
    let mut random = [0; 16];
    getrandom::getrandom(&mut random)
        .map_err(|error| StorageError::Backend(format!("no randomness: {error}")))?;
    let challenge_id = hex::encode(random);
    let expires_at = now.saturating_add(ttl_ms);
    let message = format!(
        "stoka wallet challenge\naudience: {audience}\nserver: {server}\nchallenge: {challenge_id}\nexpires: {}",
        rfc3339(expires_at)
    );
    let challenge = Challenge {
        audience: audience.as_str().to_owned(),
        message: message.clone(),
        expires_at,
    };
    if !storage
        .issue_challenge(&challenge_id, &challenge, now)
        .await?
    {
        return Err(StorageError::Backend("a challenge id repeated".into()));
    }
    Ok(Issued {
        challenge_id,
        message,
        expires_at,
    })
}

/// Checks `credentials` for `audience` at `now`, taking the challenge; the wallet on success.
///
/// # Errors
///
/// [`AuthError::Challenge`], [`AuthError::Audience`], [`AuthError::Signature`], or the
/// store's.
pub async fn verify(
    storage: &dyn Storage,
    credentials: &Credentials,
    audience: Audience,
    now: u64,
) -> Result<String, AuthError> {
    let challenge = storage
        .take_challenge(&credentials.challenge_id, now)
        .await?
        .ok_or(AuthError::Challenge)?;
    if challenge.audience != audience.as_str() {
        return Err(AuthError::Audience);
    }
    let key = &credentials.public_key;
    let signature = &credentials.signature;
    let signed = verify_ed25519(key, &sep53_digest(&challenge.message), signature)
        || verify_ed25519(key, challenge.message.as_bytes(), signature);
    if !signed {
        return Err(AuthError::Signature);
    }
    Ok(credentials.wallet.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_paywall::stellar::Keypair;

    fn header(keypair: &Keypair, id: &str, signature: &[u8; 64]) -> String {
        format!(
            "Stellar {}:{id}:{}",
            keypair.address(),
            hex::encode(signature)
        )
    }

    #[test]
    fn credentials_that_are_not_ascii_are_malformed_in_our_scheme_only() {
        for bad in [
            b"Stellar G\xff:abc:00".as_slice(),
            "stellar Gé:abc:00".as_bytes(),
            b"  STELLAR \x80",
        ] {
            assert!(
                matches!(
                    Credentials::from_header_bytes(bad),
                    Err(AuthError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        for other in [b"Bearer \xff".as_slice(), b"\xff\xfe", b""] {
            assert!(
                matches!(
                    Credentials::from_header_bytes(other),
                    Err(AuthError::Missing)
                ),
                "{other:?}"
            );
        }
    }

    #[test]
    fn credentials_parse_or_are_refused() {
        let keypair = Keypair::from_seed([3; 32]);
        let parsed = Credentials::from_header(&header(&keypair, "abc123", &[9; 64])).unwrap();
        assert_eq!(parsed.public_key, keypair.public_key());
        assert_eq!(parsed.challenge_id, "abc123");
        assert_eq!(parsed.signature, [9; 64]);
        let good = header(&keypair, "abc123", &[9; 64]);
        for other in ["Bearer abc", "Stellar ", ""] {
            assert!(
                matches!(Credentials::from_header(other), Err(AuthError::Missing)),
                "{other:?}"
            );
        }
        let contract = good.replace(
            &keypair.address().to_string(),
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC",
        );
        for bad in [
            "Stellar GABC",
            "Stellar a:b",
            &contract,
            &good.replace("abc123", "abc-123"),
            &good.replace("abc123", ""),
            &good[..good.len() - 2],
            &format!("{good}00"),
            &format!("{}zz", &good[..good.len() - 2]),
        ] {
            assert!(
                matches!(Credentials::from_header(bad), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_sep53_digest_is_the_prefixed_sha256() {
        let expected: [u8; 32] = Sha256::digest(b"Stellar Signed Message:\nhello").into();
        assert_eq!(sep53_digest("hello"), expected);
    }
}
