//! The receipt: `Payment-Receipt: <base64url(JSON)>` on a successful paid response (2xx only,
//! with `Cache-Control: private`), never on an error.
//!
//! ```json
//! {"method": "stellar", "reference": "<tx hash>", "externalId"?: "…", "status": "success",
//!  "timestamp": "2026-01-29T12:05:00.000Z", …method-specific extras…}
//! ```
//!
//! Written in mppx's key order (`method, reference, externalId?, status, timestamp`, then the
//! extras), base64url without padding. Read tolerantly: padding optional, extras kept, key order
//! free; `timestamp` must be RFC 3339.

use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::base64url;
use super::expires::Timestamp;

/// `Payment-Receipt`.
pub const PAYMENT_RECEIPT: HeaderName = HeaderName::from_static("payment-receipt");

/// The status of a successful payment, the only one a receipt carries.
pub const STATUS_SUCCESS: &str = "success";

/// Largest receipt header value read, in bytes (16 KiB).
pub const MAX_RECEIPT_BYTES: usize = 16 * 1024;

/// Why a `Payment-Receipt` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The value is longer than [`MAX_RECEIPT_BYTES`].
    #[error("Payment-Receipt is larger than {MAX_RECEIPT_BYTES} bytes")]
    TooLarge,
    /// The value is not base64url.
    #[error("Payment-Receipt is not base64url")]
    NotBase64Url,
    /// The decoded JSON is not a receipt object (missing or non-string fields).
    #[error("Payment-Receipt is not a receipt JSON object")]
    WrongShape,
    /// `timestamp` is not RFC 3339.
    #[error("Payment-Receipt timestamp is not RFC 3339")]
    InvalidTimestamp,
}

/// A payment receipt.
///
/// ```
/// use tower_paywall::mpp::{Receipt, Timestamp};
///
/// let at = Timestamp::parse("2026-01-29T12:05:00Z")?;
/// let receipt = Receipt::success("stellar", "9f2c…", at);
/// assert_eq!(Receipt::parse(&receipt.encode())?, receipt);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Receipt {
    /// `method`.
    pub method: String,
    /// `reference`: the settlement's reference (a transaction hash, a channel reference).
    pub reference: String,
    /// `externalId`, echoed from the request.
    #[serde(
        rename = "externalId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    /// `status`: [`STATUS_SUCCESS`].
    pub status: String,
    /// `timestamp`: RFC 3339 text.
    pub timestamp: String,
    /// Other members (method-specific), kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Receipt {
    /// A `success` receipt at `timestamp` (written `YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub fn success(
        method: impl Into<String>,
        reference: impl Into<String>,
        timestamp: Timestamp,
    ) -> Self {
        Self {
            method: method.into(),
            reference: reference.into(),
            external_id: None,
            status: STATUS_SUCCESS.to_owned(),
            timestamp: timestamp.format(),
            extra: Map::new(),
        }
    }

    /// The `Payment-Receipt` value: base64url (no padding) of the JSON.
    pub fn encode(&self) -> String {
        if self.extra.is_empty() {
            return encode_plain(&Plain {
                method: &self.method,
                reference: &self.reference,
                external_id: self.external_id.as_deref(),
                status: &self.status,
                timestamp: &self.timestamp,
            });
        }
        // Strings and string-keyed maps always serialize.
        base64url::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a `Payment-Receipt` value.
    pub fn parse(value: &str) -> Result<Self, ReceiptError> {
        let value = value.trim_matches([' ', '\t']);
        if value.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::TooLarge);
        }
        let json = base64url::decode(value).map_err(|_| ReceiptError::NotBase64Url)?;
        let receipt: Self = serde_json::from_slice(&json).map_err(|_| ReceiptError::WrongShape)?;
        Timestamp::parse(&receipt.timestamp).map_err(|_| ReceiptError::InvalidTimestamp)?;
        Ok(receipt)
    }

    /// The parsed `timestamp`.
    pub fn timestamp(&self) -> Result<Timestamp, ReceiptError> {
        Timestamp::parse(&self.timestamp).map_err(|_| ReceiptError::InvalidTimestamp)
    }
}

/// The receipt of a success with no extras, encoded without building a [`Receipt`]: what a
/// server sends with every paid response.
#[cfg_attr(not(feature = "rpc"), allow(dead_code))]
pub(crate) fn encode_success(method: &str, reference: &str, timestamp: Timestamp) -> String {
    encode_plain(&Plain {
        method,
        reference,
        external_id: None,
        status: STATUS_SUCCESS,
        timestamp: &timestamp,
    })
}

/// A receipt's keys in mppx's order, without the flattened map (which serde writes through a
/// slower path): a receipt with no extras.
#[derive(Serialize)]
struct Plain<'a, T: std::fmt::Display> {
    method: &'a str,
    reference: &'a str,
    #[serde(rename = "externalId", skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    status: &'a str,
    #[serde(serialize_with = "display")]
    timestamp: &'a T,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(
    value: &&T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(*value)
}

fn encode_plain<T: std::fmt::Display>(receipt: &Plain<'_, T>) -> String {
    let mut json = Vec::with_capacity(128 + receipt.reference.len());
    // Strings always serialize.
    let _ = serde_json::to_writer(&mut json, receipt);
    base64url::encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> Timestamp {
        Timestamp::parse("2026-01-29T12:05:00Z").unwrap()
    }

    #[test]
    fn writes_mppx_key_order() {
        let mut receipt = Receipt::success("stellar", "abc", at());
        receipt.external_id = Some("order-1".into());
        receipt.extra.insert("channel".into(), json!("C…"));
        let json = base64url::decode_to_string(&receipt.encode()).unwrap();
        assert_eq!(
            json,
            r#"{"method":"stellar","reference":"abc","externalId":"order-1","status":"success","timestamp":"2026-01-29T12:05:00.000Z","channel":"C…"}"#
        );
        assert_eq!(Receipt::parse(&receipt.encode()).unwrap(), receipt);
    }

    #[test]
    fn writes_the_same_keys_with_and_without_extras() {
        for external_id in [None, Some("order-1")] {
            let mut receipt = Receipt::success("stellar", "a\"b", at());
            receipt.external_id = external_id.map(str::to_owned);
            let plain = base64url::decode_to_string(&receipt.encode()).unwrap();
            // The map path, with an extra added then stripped from the text.
            receipt.extra.insert("z".into(), json!(1));
            let mapped = base64url::decode_to_string(&receipt.encode()).unwrap();
            assert_eq!(mapped, format!("{},\"z\":1}}", &plain[..plain.len() - 1]));
            receipt.extra.clear();
            assert_eq!(Receipt::parse(&receipt.encode()).unwrap(), receipt);
        }
    }

    #[test]
    fn encodes_a_success_as_the_receipt_would() {
        let receipt = Receipt::success("stellar", "a\"b", at());
        assert_eq!(encode_success("stellar", "a\"b", at()), receipt.encode());
    }

    #[test]
    fn reads_the_harness_example() {
        // HARNESS_SPEC.md's receipt.format example output.
        let receipt = Receipt::parse(
            "eyJzdGF0dXMiOiJzdWNjZXNzIiwibWV0aG9kIjoidGVtcG8iLCJ0aW1lc3RhbXAiOiIyMDI2LTAxLTI5VDEyOjAwOjAwWiIsInJlZmVyZW5jZSI6InJlZl8xMjMifQ",
        )
        .unwrap();
        assert_eq!(receipt.method, "tempo");
        assert_eq!(receipt.reference, "ref_123");
        assert_eq!(receipt.status, "success");
        assert_eq!(receipt.timestamp, "2026-01-29T12:00:00Z");
        assert_eq!(receipt.external_id, None);
        assert!(receipt.extra.is_empty());
    }

    #[test]
    fn refuses_bad_receipts() {
        let encode = |json: Value| base64url::encode(json.to_string());
        assert_eq!(Receipt::parse("e30!"), Err(ReceiptError::NotBase64Url));
        assert_eq!(
            Receipt::parse(&encode(json!({}))),
            Err(ReceiptError::WrongShape)
        );
        assert_eq!(
            Receipt::parse(&encode(json!([]))),
            Err(ReceiptError::WrongShape)
        );
        assert_eq!(
            Receipt::parse(&encode(
                json!({"method": "m", "reference": 1, "status": "success", "timestamp": "2026-01-29T12:00:00Z"})
            )),
            Err(ReceiptError::WrongShape)
        );
        assert_eq!(
            Receipt::parse(&encode(
                json!({"method": "m", "reference": "r", "status": "success", "timestamp": "yesterday"})
            )),
            Err(ReceiptError::InvalidTimestamp)
        );
        assert_eq!(
            Receipt::parse(&"A".repeat(MAX_RECEIPT_BYTES + 1)),
            Err(ReceiptError::TooLarge)
        );
    }
}
