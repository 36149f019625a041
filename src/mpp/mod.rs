//! MPP core: the `Payment` HTTP authentication scheme (draft-ietf-httpauth-payment), as the
//! TypeScript reference (mppx) and the cross-SDK conformance vectors speak it.
//!
//! | header | direction | content | here |
//! |---|---|---|---|
//! | `WWW-Authenticate: Payment id="…", realm="…", method="…", intent="…", request="…", …` | server → client, on 402, one per offer | the [`Challenge`] | [`challenge`] |
//! | `Authorization: Payment <base64url JSON>` | client → server | the [`Credential`]: the echoed challenge, a method payload, an optional `source` | [`credential`] |
//! | `Payment-Receipt: <base64url JSON>` | server → client, on success | the [`Receipt`] | [`receipt`] |
//! | `Accept-Payment: stellar/charge, stellar/channel;q=0.5` | client → server | the client's preferences | [`accept`] |
//!
//! A 402 also carries an RFC 9457 [`Problem`] body ([`problem`]). The challenge `id` is an
//! HMAC-SHA256 over the challenge's parameters under a server secret ([`binding`]), so the
//! server recognizes its own challenges in a credential without storing them; [`ChallengeKeys`]
//! rotates secrets. `request` (and `opaque`) are base64url ([`base64url`]) of the RFC 8785
//! canonical JSON ([`jcs`]); `expires` is an RFC 3339 [`Timestamp`] ([`expires`]).
//!
//! This module is wire only: which method verifies a payload, how the layer answers, and
//! replay protection live elsewhere.
//!
//! # Example
//!
//! A server issues a challenge, a client reads it and answers, the server checks the answer:
//!
//! ```
//! use serde_json::json;
//! use tower_paywall::mpp::{Challenge, ChallengeKeys, ChallengeSecret, Credential, Timestamp};
//!
//! // Server: issue, with an expiry, and format the header.
//! let keys = ChallengeKeys::new(ChallengeSecret::new("a server secret of at least 32 bytes")?);
//! let request = json!({
//!     "amount": "100000",
//!     "currency": "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA",
//!     "recipient": "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR",
//!     "methodDetails": {"network": "stellar:testnet"}
//! });
//! let expires = Timestamp::parse("2030-01-01T00:00:00Z")?;
//! let challenge = Challenge::builder("api.example.com", "stellar", "charge", request.as_object().unwrap())
//!     .expires(expires)
//!     .description("One joke")
//!     .issue(&keys);
//! let www_authenticate = challenge.format()?;
//! assert!(www_authenticate.starts_with(r#"Payment id=""#));
//!
//! // Client: parse the offers, pick one, answer with a method payload.
//! let offers = Challenge::parse_all(&www_authenticate)?;
//! assert_eq!(offers, [challenge.clone()]);
//! assert_eq!(offers[0].request_json()?["amount"], "100000");
//! let authorization = Credential::new(offers[0].clone(), json!({"type": "transaction", "transaction": "AAAA…"}))
//!     .encode();
//!
//! // Server: read the credential, check that it echoes a challenge of ours, unmodified.
//! let credential = Credential::parse(&authorization)?;
//! assert!(credential.challenge.verify_id(&keys));
//! let mut tampered = credential.challenge.clone();
//! tampered.expires = Some("2099-01-01T00:00:00.000Z".into());
//! assert!(!tampered.verify_id(&keys));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod accept;
mod auth_param;
pub mod base64url;
pub mod binding;
pub mod challenge;
#[cfg(feature = "rpc")]
pub mod channel;
#[cfg(feature = "rpc")]
pub mod charge;
pub mod credential;
pub mod expires;
pub mod jcs;
pub mod problem;
pub mod receipt;
#[cfg(feature = "rpc")]
mod server;
pub mod stream;

pub use accept::{ACCEPT_PAYMENT, AcceptPayment, MAX_ACCEPT_PAYMENT_LEN, PaymentRange};
pub use base64url::Base64UrlError;
pub use binding::{
    ChallengeBinding, ChallengeKeys, ChallengeSecret, MIN_SECRET_BYTES, SecretError,
};
pub use challenge::{
    Challenge, ChallengeBuilder, ChallengeError, CredentialHeader, FormatError, MAX_REQUEST_BYTES,
    SCHEME,
};
#[cfg(feature = "rpc")]
pub use channel::{
    CLOSE_LEASE, ChannelError, MAX_NAMED_CHANNELS, PAYMENT_CHANNEL, StellarChannel,
    StellarChannelBuilder, StellarChannelError, close_lease, named_channels,
};
#[cfg(feature = "rpc")]
pub use charge::{StellarCharge, StellarChargeBuilder, StellarChargeError};
pub use credential::{Credential, CredentialError, MAX_CREDENTIAL_BYTES};
pub use expires::{DEFAULT_CHALLENGE_TTL, Timestamp, TimestampError};
pub use problem::{PROBLEM_JSON, Problem, ProblemCode};
pub use receipt::{PAYMENT_RECEIPT, Receipt, ReceiptError};

/// `Payment-Authorization`: the credential header a challenge may name instead of
/// `Authorization` (its `header` parameter).
pub const PAYMENT_AUTHORIZATION: http::HeaderName =
    http::HeaderName::from_static("payment-authorization");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// xorshift64*: a small deterministic generator, enough to shake the parsers.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Pieces the grammars care about, to reach past the first check more often than bytes do.
    const PIECES: &[&str] = &[
        "Payment",
        "payment",
        "Bearer",
        " ",
        "\t",
        ",",
        "=",
        "\"",
        "\\",
        "id",
        "realm",
        "method",
        "intent",
        "request",
        "expires",
        "opaque",
        "header",
        "description",
        "digest",
        "e30",
        "eyJ",
        "stellar",
        "charge",
        "Payment-Authorization",
        "2026-01-29T12:05:00Z",
        "*",
        "/",
        ";q=0.5",
        "q",
        "+",
        "==",
        "é",
        "\u{0}",
        "\r\n",
        "W10",
        "x",
    ];

    fn random_header(rng: &mut Rng) -> String {
        let len = rng.below(64);
        if rng.below(2) == 0 {
            let bytes: Vec<u8> = (0..len * 2).map(|_| rng.next() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        }
    }

    /// A valid header with a few bytes changed, dropped or repeated.
    fn mutate(rng: &mut Rng, valid: &str) -> String {
        let mut bytes = valid.as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, b"\",=\\ "[rng.below(5)]),
                _ => {
                    let end = (at + rng.below(16)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn parsers_never_panic_on_random_headers() {
        let keys = ChallengeKeys::new(ChallengeSecret::new([9u8; 32]).unwrap());
        let request = json!({"amount": "1", "methodDetails": {"network": "stellar:testnet"}});
        let challenge =
            Challenge::builder("api", "stellar", "charge", request.as_object().unwrap())
                .description("a \"quoted\" one")
                .expires(Timestamp::parse("2030-01-01T00:00:00Z").unwrap())
                .header(CredentialHeader::PaymentAuthorization)
                .issue(&keys);
        let www_authenticate = format!("Bearer realm=\"x\", {}", challenge.format().unwrap());
        let authorization =
            Credential::new(challenge.clone(), json!({"type": "transaction"})).encode();
        let receipt = Receipt::success("stellar", "abc", Timestamp::now()).encode();

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed = [0usize; 3];
        for round in 0..20_000 {
            let input = match round % 3 {
                0 => random_header(&mut rng),
                1 => mutate(&mut rng, &www_authenticate),
                _ => mutate(&mut rng, &authorization),
            };
            if let Ok(challenges) = Challenge::parse_all(&input) {
                parsed[0] += 1;
                for challenge in challenges {
                    let _ = challenge.verify_id(&keys);
                    let _ = challenge.format();
                }
            }
            if let Ok(credential) = Credential::parse(&input) {
                parsed[1] += 1;
                let _ = credential.challenge.verify_id(&keys);
                let _ = credential.challenge.expires_at();
                let _ = Credential::parse(&credential.encode());
            }
            let _ = AcceptPayment::parse(&input).order(vec![("stellar", "charge")], |o| *o);
            let _ = Timestamp::parse(&input);
            let _ = Receipt::parse(&mutate(&mut rng, &receipt)).map(|_| parsed[2] += 1);
        }
        // The mutations keep some inputs valid, so the deep paths ran too.
        assert!(parsed.iter().all(|count| *count > 0), "{parsed:?}");
    }
}
