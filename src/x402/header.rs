//! x402 header names and the codec of their values: standard base64 (with padding) over JSON.
//!
//! Decoding is strict and bounded, as the TypeScript reference is: the value must be at most
//! [`MAX_HEADER_BYTES`] long, use only the standard alphabet `A–Z a–z 0–9 + /` with canonical
//! `=` padding (so no URL-safe characters, whitespace or line breaks), and decode to JSON of the
//! expected shape. Checks run in that order and never panic; errors never echo the input.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::x402::wire::{PayloadError, PaymentPayload};

/// `PAYMENT-REQUIRED`: the 402 challenge (base64 JSON `PaymentRequired`), server to client.
pub const PAYMENT_REQUIRED: HeaderName = HeaderName::from_static("payment-required");
/// `PAYMENT-SIGNATURE`: the payment (base64 JSON `PaymentPayload`), client to server.
pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
/// `PAYMENT-RESPONSE`: the settlement result (base64 JSON `SettleResponse`), server to client.
pub const PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("payment-response");
/// `X-PAYMENT`: the legacy (x402 v1) name of the payment header.
pub const X_PAYMENT: HeaderName = HeaderName::from_static("x-payment");
/// `X-PAYMENT-RESPONSE`: the legacy (x402 v1) name of the settlement result header.
pub const X_PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("x-payment-response");

/// Largest header value accepted by the decoders, in bytes (32 KiB).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Standard alphabet; padding written on encode and required (canonically) on decode.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Why an x402 header value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value is longer than [`MAX_HEADER_BYTES`].
    #[error("header value is larger than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    /// The value is not padded standard base64.
    #[error("header value is not padded standard base64")]
    NotBase64,
    /// The decoded bytes are not a JSON document.
    #[error("header value does not decode to JSON")]
    NotJson,
    /// The decoded JSON does not have the expected shape.
    #[error("header value JSON does not have the expected shape")]
    WrongShape,
    /// The value to encode could not be serialized to JSON.
    #[error("value could not be serialized to JSON")]
    Unserializable,
}

impl HeaderError {
    fn from_json_error(error: &serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => Self::WrongShape,
            _ => Self::NotJson,
        }
    }
}

impl From<PayloadError> for HeaderError {
    fn from(error: PayloadError) -> Self {
        match error {
            PayloadError::WrongShape => Self::WrongShape,
            PayloadError::NotJson => Self::NotJson,
        }
    }
}

/// Encodes a value as an x402 header value: standard base64, with padding, of its JSON.
///
/// Fails only if the value cannot be serialized to JSON, which does not happen for the
/// [`wire`](crate::x402::wire) types.
pub fn encode<T: Serialize>(value: &T) -> Result<HeaderValue, HeaderError> {
    let json = serde_json::to_vec(value).map_err(|_| HeaderError::Unserializable)?;
    // Base64 text is always a valid header value.
    HeaderValue::from_str(&BASE64.encode(json)).map_err(|_| HeaderError::Unserializable)
}

/// Decodes a `PAYMENT-SIGNATURE` (or `X-PAYMENT`) header value into the client's payment,
/// keeping its JSON text for forwarding.
pub fn decode_payment(value: &HeaderValue) -> Result<PaymentPayload, HeaderError> {
    let json = decode_base64(value.as_bytes())?;
    Ok(PaymentPayload::from_json(&json)?)
}

/// Decodes an x402 header value into `T`, e.g. a `PaymentRequired` from `PAYMENT-REQUIRED` or
/// a `SettleResponse` from `PAYMENT-RESPONSE`.
pub fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, HeaderError> {
    let json = decode_base64(value)?;
    serde_json::from_slice(&json).map_err(|e| HeaderError::from_json_error(&e))
}

/// Checks size and alphabet, then decodes the base64 text.
fn decode_base64(value: &[u8]) -> Result<Vec<u8>, HeaderError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLarge);
    }
    if !value.len().is_multiple_of(4) || !value.iter().all(|&b| is_base64_byte(b)) {
        return Err(HeaderError::NotBase64);
    }
    BASE64.decode(value).map_err(|_| HeaderError::NotBase64)
}

fn is_base64_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::wire::{PaymentRequired, SettleResponse};
    use serde_json::Value;

    const PAYLOAD: &str = r#"{"x402Version":2,"payload":{"transaction":"AAAAAgAAAAA="},"resource":{"url":"https://api.example.com/premium-data"},"accepted":{"scheme":"exact","network":"stellar:testnet","amount":"10000000","asset":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","payTo":"GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB","maxTimeoutSeconds":60,"extra":{"areFeesSponsored":true}}}"#;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn names_are_lowercase_x402_names() {
        assert_eq!(PAYMENT_REQUIRED.as_str(), "payment-required");
        assert_eq!(PAYMENT_SIGNATURE.as_str(), "payment-signature");
        assert_eq!(PAYMENT_RESPONSE.as_str(), "payment-response");
        assert_eq!(X_PAYMENT.as_str(), "x-payment");
        assert_eq!(X_PAYMENT_RESPONSE.as_str(), "x-payment-response");
        let mut map = http::HeaderMap::new();
        map.insert(
            HeaderName::from_bytes(b"Payment-Signature").unwrap(),
            header("x"),
        );
        assert!(
            map.contains_key(PAYMENT_SIGNATURE),
            "lookups are case-insensitive"
        );
    }

    #[test]
    fn payment_round_trips_byte_for_byte() {
        let value = header(&b64(PAYLOAD.as_bytes()));
        let payment = decode_payment(&value).unwrap();
        assert_eq!(payment.raw().get(), PAYLOAD);
        assert_eq!(encode(&payment).unwrap(), value);
    }

    #[test]
    fn encode_is_padded_standard_base64_of_json() {
        let settle = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some("GABC".into()),
            transaction: "ab".repeat(32),
            network: "stellar:testnet".into(),
            amount: None,
        };
        let value = encode(&settle).unwrap();
        let expected = b64(serde_json::to_string(&settle).unwrap().as_bytes());
        assert_eq!(value.to_str().unwrap(), expected);
        assert_eq!(decode::<SettleResponse>(value.as_bytes()).unwrap(), settle);
        // `{}` is 2 bytes: encoded with `=` padding.
        assert_eq!(encode(&serde_json::json!({})).unwrap(), "e30=");
    }

    #[test]
    fn encode_reports_unserializable_values() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        assert_eq!(encode(&map).unwrap_err(), HeaderError::Unserializable);
    }

    #[test]
    fn decode_payment_required() {
        let text = r#"{"x402Version":2,"error":"Payment required","resource":{"url":"https://x/y"},"accepts":[]}"#;
        let parsed: PaymentRequired = decode(b64(text.as_bytes()).as_bytes()).unwrap();
        assert_eq!(parsed.error.as_deref(), Some("Payment required"));
    }

    #[test]
    fn explicit_bad_inputs() {
        let cases: &[(&[u8], HeaderError)] = &[
            (b"", HeaderError::NotJson),
            (b"====", HeaderError::NotBase64),
            (b"==", HeaderError::NotBase64),
            (b"e30", HeaderError::NotBase64),      // missing padding
            (b"e30==", HeaderError::NotBase64),    // too much padding
            (b"e3=0", HeaderError::NotBase64),     // padding in the middle
            (b"e31=", HeaderError::NotBase64),     // non-canonical trailing bits
            (b"e30=e30=", HeaderError::NotBase64), // padding before the end
            (b"-_-_", HeaderError::NotBase64),     // URL-safe alphabet
            (b"e30=\n", HeaderError::NotBase64),   // trailing newline
            (b"ZXl\nKeA==", HeaderError::NotBase64), // embedded newline
            (b"e3 0=", HeaderError::NotBase64),
            (b" e30=", HeaderError::NotBase64),
            (b"e30=\0", HeaderError::NotBase64),
            (b"\xc3\xa9\xc3\xa9", HeaderError::NotBase64),
            (b"aGVsbG8gd29ybGQ=", HeaderError::NotJson), // "hello world"
            (b"e30=", HeaderError::WrongShape),          // {}
            (b"W10=", HeaderError::WrongShape),          // []
            (b"bnVsbA==", HeaderError::WrongShape),      // null
        ];
        for (input, expected) in cases {
            let got = decode::<PaymentRequired>(input).unwrap_err();
            assert_eq!(&got, expected, "input {:?}", String::from_utf8_lossy(input));
            if let Ok(value) = HeaderValue::from_bytes(input) {
                let got = decode_payment(&value).unwrap_err();
                assert_eq!(
                    &got,
                    expected,
                    "payment {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn size_cap_is_checked_first() {
        let huge = vec![b'!'; 1024 * 1024];
        assert_eq!(decode::<Value>(&huge).unwrap_err(), HeaderError::TooLarge);
        let huge_valid = b64(&vec![b' '; 1024 * 1024]);
        assert_eq!(
            decode::<Value>(huge_valid.as_bytes()).unwrap_err(),
            HeaderError::TooLarge
        );
        let value = HeaderValue::from_str(&huge_valid).unwrap();
        assert_eq!(decode_payment(&value).unwrap_err(), HeaderError::TooLarge);

        let at_limit = vec![b'A'; MAX_HEADER_BYTES];
        assert_eq!(
            decode::<Value>(&at_limit).unwrap_err(),
            HeaderError::NotJson
        );
        let over_limit = vec![b'A'; MAX_HEADER_BYTES + 4];
        assert_eq!(
            decode::<Value>(&over_limit).unwrap_err(),
            HeaderError::TooLarge
        );
    }

    #[test]
    fn wrong_shape_payment() {
        let text = r#"{"x402Version":2,"accepted":{"scheme":"exact"},"payload":{}}"#;
        let value = header(&b64(text.as_bytes()));
        assert_eq!(decode_payment(&value).unwrap_err(), HeaderError::WrongShape);
    }

    #[test]
    fn errors_never_echo_input() {
        let secret = r#"{"x402Version":"SECRETSECRET"}"#;
        let value = header(&b64(secret.as_bytes()));
        let message = decode_payment(&value).unwrap_err().to_string();
        assert!(!message.contains("SECRET"), "{message}");
        let message = decode::<PaymentRequired>(value.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!message.contains("SECRET"), "{message}");
    }

    /// xorshift64: a tiny deterministic PRNG for the no-panic loop.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            usize::try_from(self.next() % n).unwrap()
        }
    }

    const ALPHABETS: [&[u8]; 3] = [
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\t",
        b"",
    ];

    fn random_input(rng: &mut XorShift) -> Vec<u8> {
        let len = match rng.below(10) {
            0 => rng.below(MAX_HEADER_BYTES as u64 + 64),
            _ => rng.below(64),
        };
        let alphabet = ALPHABETS[rng.below(3)];
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| match alphabet.len() {
                0 => rng.next() as u8,
                n => alphabet[rng.below(n as u64)],
            })
            .collect();
        // Sometimes pad like a real encoder would.
        if rng.below(2) == 0 {
            while !bytes.len().is_multiple_of(4) {
                bytes.push(b'=');
            }
        }
        bytes
    }

    fn random_json_ish(rng: &mut XorShift) -> Vec<u8> {
        let pieces: [&[u8]; 12] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"x402Version\":",
            b"2",
            b",",
            b"\"accepted\":",
            b"\"payload\":",
            b"null",
            b"\"s\"",
            b":",
        ];
        let mut out = Vec::new();
        for _ in 0..rng.below(24) {
            out.extend_from_slice(pieces[rng.below(pieces.len() as u64)]);
        }
        out
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let input = random_input(&mut rng);
            let result = decode::<Value>(&input);
            if result.is_ok() {
                assert!(input.len().is_multiple_of(4) && input.len() <= MAX_HEADER_BYTES);
            }
            let _ = decode::<PaymentRequired>(&input);
            if let Ok(value) = HeaderValue::from_bytes(&input) {
                let _ = decode_payment(&value);
            }
            // Valid base64 of random JSON-ish text reaches the JSON stage.
            let json_ish = b64(&random_json_ish(&mut rng));
            let result = decode_payment(&header(&json_ish));
            assert!(!matches!(
                result,
                Err(HeaderError::NotBase64 | HeaderError::TooLarge)
            ));
        }
    }
}
