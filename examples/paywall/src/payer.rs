//! The headers that tell the upstream who paid, and how it can trust them.
//!
//! The gateway removes every `Paywall-*` header a client sends, then adds these to a paid
//! request before it goes upstream:
//!
//! | header | value |
//! |---|---|
//! | `Paywall-Payer` | the verified payer (a Stellar `G…` address) |
//! | `Paywall-Amount` | what the request costs, in atomic units of the asset |
//! | `Paywall-Asset` | the asset's contract (`C…`) |
//! | `Paywall-Intent` | `x402/exact`, `mpp/charge` or `mpp/channel` |
//! | `Paywall-Payment` | the payment's identity: SHA-256 of its credential as presented, in hex; a retry of one payment carries the same |
//! | `Paywall-Reference` | the settlement's transaction hash, when the route settles `before` (after-success routes settle after the upstream answers) |
//! | `Paywall-Signature` | `t=<unix seconds>,v1=<hex HMAC-SHA256>`, when the gateway has an upstream secret |
//!
//! The signature is HMAC-SHA256 keyed with the shared secret over these lines, joined by
//! `\n`: `paywall-v1`, `t`, the method, the path and query as sent upstream, then the values
//! of `Paywall-Payer`, `-Amount`, `-Asset`, `-Intent`, `-Payment`, `-Reference` and
//! `Content-Length` (each empty when absent). An upstream checks it in constant time and refuses a `t` older than a few minutes;
//! [`verify`] is that check, and the demo upstreams do the same in Python and JavaScript.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_paywall::Paid;

/// The prefix of every header the gateway sets; a client's are removed.
pub const PREFIX: &str = "paywall-";
/// `Paywall-Payer`.
pub const PAYER: HeaderName = HeaderName::from_static("paywall-payer");
/// `Paywall-Amount`.
pub const AMOUNT: HeaderName = HeaderName::from_static("paywall-amount");
/// `Paywall-Asset`.
pub const ASSET: HeaderName = HeaderName::from_static("paywall-asset");
/// `Paywall-Intent`.
pub const INTENT: HeaderName = HeaderName::from_static("paywall-intent");
/// `Paywall-Payment`.
pub const PAYMENT: HeaderName = HeaderName::from_static("paywall-payment");
/// `Paywall-Reference`.
pub const REFERENCE: HeaderName = HeaderName::from_static("paywall-reference");
/// `Paywall-Signature`.
pub const SIGNATURE: HeaderName = HeaderName::from_static("paywall-signature");

/// The signed fields, in the order signed: the payer headers, and the body's declared length.
const SIGNED: [HeaderName; 7] = [
    PAYER,
    AMOUNT,
    ASSET,
    INTENT,
    PAYMENT,
    REFERENCE,
    http::header::CONTENT_LENGTH,
];

/// The shortest upstream secret taken.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secret shared with the upstream (never printed).
#[derive(Clone)]
pub struct UpstreamSecret(Vec<u8>);

impl UpstreamSecret {
    /// A secret of at least [`MIN_SECRET_BYTES`] bytes.
    ///
    /// # Errors
    ///
    /// A shorter one.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<UpstreamSecret, String> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the upstream secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        Ok(UpstreamSecret(secret))
    }

    fn mac(&self, timestamp: u64, method: &str, path: &str, headers: &HeaderMap) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(b"paywall-v1\n");
        mac.update(timestamp.to_string().as_bytes());
        for part in [method.as_bytes(), path.as_bytes()] {
            mac.update(b"\n");
            mac.update(part);
        }
        for name in &SIGNED {
            mac.update(b"\n");
            mac.update(headers.get(name).map_or(&b""[..], HeaderValue::as_bytes));
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamSecret(…)")
    }
}

/// Whether `name` reads as a `Paywall-*` header, `_` taken for `-` (CGI, WSGI, Rack and PHP
/// give `Paywall_Payer` the same variable as `Paywall-Payer`).
fn is_ours(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.len() > PREFIX.len()
        && name[..PREFIX.len() - 1] == PREFIX.as_bytes()[..PREFIX.len() - 1]
        && matches!(name[PREFIX.len() - 1], b'-' | b'_')
}

/// Removes every `Paywall-*` header (and `Paywall_*`): only the gateway sets them.
pub fn strip(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_ours(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// The payment's identity: SHA-256 of its credential as presented.
pub fn payment_id(credential: &[u8]) -> String {
    hex::encode(Sha256::digest(credential))
}

/// What the upstream is told about a paid request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayerFields {
    /// The verified payer.
    pub payer: String,
    /// The amount, in atomic units.
    pub amount: i128,
    /// The asset's contract.
    pub asset: String,
    /// `x402/exact`, `mpp/charge`, `mpp/channel`.
    pub intent: String,
    /// The payment's identity ([`payment_id`]).
    pub payment: String,
    /// The settlement's transaction hash, once the money moved.
    pub reference: Option<String>,
}

impl PayerFields {
    /// The fields of a request the layer verified (`paid`), paid with `payment`.
    pub fn of(paid: &Paid, payment: String) -> PayerFields {
        PayerFields {
            payer: paid.payer.clone(),
            amount: paid.amount.atomic(),
            asset: paid.asset.clone(),
            intent: paid.intent.to_string(),
            payment,
            reference: paid.reference.clone(),
        }
    }

    /// Adds the payer headers to a request going upstream as `method path`, signed with
    /// `secret` at `now` when there is one.
    pub fn add(
        &self,
        headers: &mut HeaderMap,
        method: &str,
        path: &str,
        secret: Option<&UpstreamSecret>,
        now: SystemTime,
    ) {
        let amount = self.amount.to_string();
        let values = [
            (PAYER, Some(self.payer.as_str())),
            (AMOUNT, Some(amount.as_str())),
            (ASSET, Some(self.asset.as_str())),
            (INTENT, Some(self.intent.as_str())),
            (PAYMENT, Some(self.payment.as_str())),
            (REFERENCE, self.reference.as_deref()),
        ];
        for (name, value) in values {
            if let Some(value) = value.and_then(|value| HeaderValue::try_from(value).ok()) {
                headers.insert(name, value);
            }
        }
        if let Some(secret) = secret {
            let timestamp = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let mac = secret.mac(timestamp, method, path, headers);
            let value = format!("t={timestamp},v1={}", hex::encode(mac));
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(SIGNATURE, value);
            }
        }
    }
}

/// Why [`verify`] refused a request's payer headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// No `Paywall-Signature`, or not of the form `t=…,v1=…`.
    #[error("no readable Paywall-Signature")]
    Missing,
    /// Signed longer ago than the age allowed (or in the future by as much).
    #[error("the signature is too old")]
    Stale,
    /// Not signed with the secret over these headers, this method and this path.
    #[error("the signature does not match")]
    Mismatch,
}

/// The payer of a request whose payer headers are signed with `secret` over `method` and
/// `path`, at most `max_age` from `now`: what an upstream written in Rust checks.
///
/// # Errors
///
/// [`Unverified`].
pub fn verify(
    headers: &HeaderMap,
    method: &str,
    path: &str,
    secret: &UpstreamSecret,
    now: SystemTime,
    max_age: Duration,
) -> Result<String, Unverified> {
    let signature = headers
        .get(SIGNATURE)
        .and_then(|value| value.to_str().ok())
        .ok_or(Unverified::Missing)?;
    let (timestamp, mac) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .ok_or(Unverified::Missing)?;
    let timestamp: u64 = timestamp.parse().map_err(|_| Unverified::Missing)?;
    let mac = hex::decode(mac).map_err(|_| Unverified::Missing)?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now.abs_diff(timestamp) > max_age.as_secs() {
        return Err(Unverified::Stale);
    }
    let expected = secret.mac(timestamp, method, path, headers);
    if !bool::from(expected.as_slice().ct_eq(&mac)) {
        return Err(Unverified::Mismatch);
    }
    headers
        .get(PAYER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or(Unverified::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> PayerFields {
        PayerFields {
            payer: "GPAYER".into(),
            amount: 10_000,
            asset: "CUSDC".into(),
            intent: "x402/exact".into(),
            payment: payment_id(b"credential"),
            reference: None,
        }
    }

    fn secret() -> UpstreamSecret {
        UpstreamSecret::new(*b"0123456789abcdef0123456789abcdef").unwrap()
    }

    const MAX_AGE: Duration = Duration::from_secs(300);

    #[test]
    fn signed_headers_verify_and_every_change_is_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let mut headers = HeaderMap::new();
        fields().add(&mut headers, "GET", "/w/paris?x=1", Some(&secret()), now);
        assert_eq!(headers[&PAYER], "GPAYER");
        assert_eq!(headers[&AMOUNT], "10000");
        assert!(headers.get(REFERENCE).is_none());
        let signature = headers[&SIGNATURE].to_str().unwrap().to_owned();
        assert!(signature.starts_with("t=1765000000,v1="), "{signature}");
        let verify = |headers: &HeaderMap, method: &str, path: &str, at: SystemTime| {
            verify(headers, method, path, &secret(), at, MAX_AGE)
        };
        assert_eq!(
            verify(&headers, "GET", "/w/paris?x=1", now),
            Ok("GPAYER".into())
        );
        // Another path, method, time, key, or any signed value changed: refused.
        assert_eq!(
            verify(&headers, "GET", "/w/rome?x=1", now),
            Err(Unverified::Mismatch)
        );
        assert_eq!(
            verify(&headers, "POST", "/w/paris?x=1", now),
            Err(Unverified::Mismatch)
        );
        let later = now + MAX_AGE + Duration::from_secs(1);
        assert_eq!(
            verify(&headers, "GET", "/w/paris?x=1", later),
            Err(Unverified::Stale)
        );
        let other = UpstreamSecret::new(vec![7; 32]).unwrap();
        let wrong_key = super::verify(&headers, "GET", "/w/paris?x=1", &other, now, MAX_AGE);
        assert_eq!(wrong_key, Err(Unverified::Mismatch));
        for name in SIGNED
            .iter()
            .filter(|name| **name != http::header::CONTENT_LENGTH)
        {
            let mut changed = headers.clone();
            changed.insert(name.clone(), HeaderValue::from_static("GOTHER"));
            assert_eq!(
                verify(&changed, "GET", "/w/paris?x=1", now),
                Err(Unverified::Mismatch),
                "{name}"
            );
        }
        // The body's declared length is signed too.
        let mut longer = headers.clone();
        longer.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(
            verify(&longer, "GET", "/w/paris?x=1", now),
            Err(Unverified::Mismatch)
        );
        let mut unsigned = headers.clone();
        unsigned.remove(SIGNATURE);
        assert_eq!(
            verify(&unsigned, "GET", "/w/paris?x=1", now),
            Err(Unverified::Missing)
        );
        unsigned.insert(SIGNATURE, HeaderValue::from_static("v1=00"));
        assert_eq!(
            verify(&unsigned, "GET", "/w/paris?x=1", now),
            Err(Unverified::Missing)
        );
    }

    #[test]
    fn client_sent_paywall_headers_are_stripped_and_short_secrets_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(PAYER, HeaderValue::from_static("GFORGED"));
        headers.insert("paywall-anything", HeaderValue::from_static("x"));
        headers.insert("paywall_payer", HeaderValue::from_static("GFORGED"));
        headers.insert("paywallx", HeaderValue::from_static("kept"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        strip(&mut headers);
        assert_eq!(headers.len(), 2);
        assert!(headers.contains_key("paywallx"));
        assert!(UpstreamSecret::new(vec![1; 31]).is_err());
        assert_eq!(format!("{:?}", secret()), "UpstreamSecret(…)");
    }
}
