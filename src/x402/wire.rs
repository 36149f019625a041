//! x402 v2 wire types: the JSON objects carried (base64-encoded) in the `PAYMENT-REQUIRED`,
//! `PAYMENT-SIGNATURE` and `PAYMENT-RESPONSE` headers, and exchanged with a facilitator on
//! `/verify`, `/settle` and `/supported`.
//!
//! Field names are camelCase on the wire. Parsing is lenient where the ecosystem is: `null` means
//! "absent" for optional fields and unknown fields are ignored. A [`PaymentPayload`] keeps the
//! client's JSON text so it can be forwarded to a facilitator byte for byte.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The x402 protocol version spoken here (`x402Version`). Stellar supports v2 only.
pub const X402_VERSION: u32 = 2;

/// One way to pay for a resource (`PaymentRequirements`): an entry of `accepts` in a 402
/// challenge, and the `accepted` offer a client echoes back in its payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Payment scheme, e.g. `"exact"`.
    pub scheme: String,
    /// CAIP-2 network, e.g. `"stellar:testnet"` or `"stellar:pubnet"`.
    pub network: String,
    /// Amount in the asset's atomic units, as a decimal string.
    pub amount: String,
    /// The asset: on Stellar, the `C…` address of the token (SAC / SEP-41) contract.
    pub asset: String,
    /// The recipient address (`payTo`).
    pub pay_to: String,
    /// How long the payment authorization may stay valid, in seconds (`maxTimeoutSeconds`).
    pub max_timeout_seconds: u64,
    /// Scheme-specific data, e.g. `{"areFeesSponsored": true}` for Stellar `exact`.
    ///
    /// Always serialized (the TypeScript client requires the key); absent or `null` parses as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: Map<String, Value>,
}

impl PaymentRequirements {
    /// Whether a client's `accepted` offer is this offer, as the x402 server rule has it.
    ///
    /// `scheme`, `network`, `amount`, `asset`, `payTo` and `maxTimeoutSeconds` must be equal, and
    /// every key of our `extra` must be present in `accepted.extra` with an equal value (the
    /// client may add keys). Numbers compare by value, as in JavaScript (`1` equals `1.0`).
    pub fn matches_accepted(&self, accepted: &PaymentRequirements) -> bool {
        self.scheme == accepted.scheme
            && self.network == accepted.network
            && self.amount == accepted.amount
            && self.asset == accepted.asset
            && self.pay_to == accepted.pay_to
            && self.max_timeout_seconds == accepted.max_timeout_seconds
            && is_subset(&self.extra, &accepted.extra)
    }
}

/// Whether every entry of `ours` is in `theirs` with a JSON-equal value.
fn is_subset(ours: &Map<String, Value>, theirs: &Map<String, Value>) -> bool {
    ours.iter()
        .all(|(key, value)| theirs.get(key).is_some_and(|other| json_eq(value, other)))
}

/// Deep JSON equality with JavaScript number semantics (`1 == 1.0`); object key order is ignored.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => xs.len() == ys.len() && is_subset(xs, ys),
        _ => a == b,
    }
}

/// The protected resource a 402 challenge is about (`ResourceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Absolute URL of the resource.
    pub url: String,
    /// Human-readable description of what is sold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the resource's response (`mimeType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// The 402 challenge (`PaymentRequired`), base64-encoded in the `PAYMENT-REQUIRED` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Protocol version: [`X402_VERSION`].
    pub x402_version: u32,
    /// Why payment is required, e.g. `"Payment required"` or a facilitator's `invalidReason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource being sold.
    pub resource: ResourceInfo,
    /// The offers, preferred first (clients take the first one they can pay).
    pub accepts: Vec<PaymentRequirements>,
    /// Protocol extensions declared by the server; omitted when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// Why a `PaymentPayload` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The bytes are not a JSON document.
    #[error("payment payload is not valid JSON")]
    NotJson,
    /// The JSON is not an x402 v2 `PaymentPayload` object.
    #[error("payment payload JSON does not have the PaymentPayload shape")]
    WrongShape,
}

impl PayloadError {
    fn from_json_error(error: &serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => Self::WrongShape,
            _ => Self::NotJson,
        }
    }
}

/// A client's payment (`PaymentPayload`), decoded from the `PAYMENT-SIGNATURE` header.
///
/// It keeps the client's JSON text as received ([`raw`](Self::raw)), so it can be forwarded to a
/// facilitator byte for byte, unknown fields included, next to a typed view used for matching
/// and pre-checks. Serializing it writes the raw JSON unchanged.
#[derive(Debug, Clone)]
pub struct PaymentPayload {
    raw: Box<RawValue>,
    x402_version: u32,
    accepted: PaymentRequirements,
    payload: Map<String, Value>,
    resource: Option<ResourceInfo>,
    extensions: Option<Map<String, Value>>,
}

/// The typed fields of a `PaymentPayload` this crate reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayloadView {
    x402_version: u32,
    accepted: PaymentRequirements,
    payload: Map<String, Value>,
    #[serde(default)]
    resource: Option<ResourceInfo>,
    /// Any JSON: only an object is read, anything else is ignored as before this was read.
    #[serde(default)]
    extensions: Option<Value>,
}

impl PaymentPayload {
    /// Parses a `PaymentPayload` from its JSON text (the decoded `PAYMENT-SIGNATURE` header).
    ///
    /// Requires `x402Version` (any number; check it against [`X402_VERSION`]), `accepted` and
    /// `payload`; `resource` and `extensions` may be absent or `null`; unknown fields are kept in
    /// the raw text and otherwise ignored.
    pub fn from_json(bytes: &[u8]) -> Result<PaymentPayload, PayloadError> {
        let raw: Box<RawValue> =
            serde_json::from_slice(bytes).map_err(|e| PayloadError::from_json_error(&e))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Result<PaymentPayload, PayloadError> {
        let view: PayloadView =
            serde_json::from_str(raw.get()).map_err(|e| PayloadError::from_json_error(&e))?;
        Ok(PaymentPayload {
            raw,
            x402_version: view.x402_version,
            accepted: view.accepted,
            payload: view.payload,
            resource: view.resource,
            extensions: match view.extensions {
                Some(Value::Object(extensions)) => Some(extensions),
                _ => None,
            },
        })
    }

    /// The client's JSON exactly as received (surrounding whitespace aside).
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// The `x402Version` the client claims.
    pub fn x402_version(&self) -> u32 {
        self.x402_version
    }

    /// The offer the client chose (`accepted`), as echoed by the client.
    pub fn accepted(&self) -> &PaymentRequirements {
        &self.accepted
    }

    /// The scheme-specific payload object (`payload`).
    pub fn payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    /// The extensions the client echoed or filled in (`extensions`), if it sent any.
    pub fn extensions(&self) -> Option<&Map<String, Value>> {
        self.extensions.as_ref()
    }

    /// The resource the client says it is paying for, if it sent one.
    pub fn resource(&self) -> Option<&ResourceInfo> {
        self.resource.as_ref()
    }

    /// The Stellar `exact` transaction: `payload.transaction`, a base64 `TransactionEnvelope` XDR.
    pub fn transaction(&self) -> Option<&str> {
        self.payload.get("transaction").and_then(Value::as_str)
    }
}

impl Serialize for PaymentPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PaymentPayload {
    /// Reads the raw JSON, then the typed view. Works with `serde_json` deserializers only.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

/// A facilitator's answer to `/verify` (`VerifyResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment would settle (`isValid`).
    pub is_valid: bool,
    /// Machine-readable reason when invalid, an opaque code such as `"insufficient_funds"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Human-readable detail when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The paying address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// A facilitator's answer to `/settle` (`SettleResponse`); also the JSON of the
/// `PAYMENT-RESPONSE` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the payment was settled on chain.
    pub success: bool,
    /// Machine-readable reason on failure, an opaque code (`errorReason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Human-readable detail on failure (`errorMessage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The paying address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// The transaction hash (on Stellar, 64 hex digits); `""` on failure.
    #[serde(default, deserialize_with = "null_as_default")]
    pub transaction: String,
    /// CAIP-2 network the payment was settled on; may be `""` on failure.
    #[serde(default, deserialize_with = "null_as_default")]
    pub network: String,
    /// Amount settled, in atomic units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

/// A facilitator's capabilities (`/supported`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportedResponse {
    /// The (version, scheme, network) triples the facilitator can verify and settle.
    pub kinds: Vec<SupportedKind>,
    /// Extensions the facilitator supports; absent or `null` parses as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extensions: Vec<Value>,
    /// The facilitator's signing addresses, keyed by CAIP-2 network (`"stellar:testnet"`) or
    /// by network family (`"stellar:*"`); absent or `null` parses as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub signers: BTreeMap<String, Vec<String>>,
}

/// One entry of `/supported` `kinds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Protocol version of this kind.
    pub x402_version: u32,
    /// Payment scheme, e.g. `"exact"`.
    pub scheme: String,
    /// CAIP-2 network.
    pub network: String,
    /// Scheme-specific data, e.g. `{"areFeesSponsored": true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

impl SupportedResponse {
    /// The v2 ([`X402_VERSION`]) kind for this scheme and network, if the facilitator supports it.
    pub fn kind(&self, scheme: &str, network: &str) -> Option<&SupportedKind> {
        self.kinds.iter().find(|kind| {
            kind.x402_version == X402_VERSION && kind.scheme == scheme && kind.network == network
        })
    }

    /// Whether the facilitator pays the network fees for this scheme and network
    /// (`extra.areFeesSponsored`); `None` if the kind or the flag is missing.
    pub fn fees_sponsored(&self, scheme: &str, network: &str) -> Option<bool> {
        self.kind(scheme, network)?
            .extra
            .as_ref()?
            .get("areFeesSponsored")?
            .as_bool()
    }

    /// The facilitator's signing addresses for a network: those listed under the exact network
    /// (`"stellar:testnet"`) and under its family wildcard (`"stellar:*"`).
    pub fn signers_for<'a>(&'a self, network: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let exact = self.signers.get(network);
        let family = network
            .split_once(':')
            .map(|(namespace, _)| format!("{namespace}:*"))
            .filter(|wildcard| wildcard != network)
            .and_then(|wildcard| self.signers.get(&wildcard));
        exact
            .into_iter()
            .chain(family)
            .flatten()
            .map(String::as_str)
    }
}

/// Deserializes `null` or an absent field as `T::default()`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + DeserializeOwned,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REQUIREMENTS: &str = r#"{ "scheme": "exact", "network": "stellar:testnet", "amount": "10000000",
  "asset": "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA",
  "payTo": "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB",
  "maxTimeoutSeconds": 60, "extra": { "areFeesSponsored": true } }"#;

    fn requirements() -> PaymentRequirements {
        serde_json::from_str(REQUIREMENTS).unwrap()
    }

    #[test]
    fn requirements_vector_parses() {
        let r = requirements();
        assert_eq!(r.scheme, "exact");
        assert_eq!(r.network, "stellar:testnet");
        assert_eq!(r.amount, "10000000");
        assert_eq!(
            r.asset,
            "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA"
        );
        assert_eq!(
            r.pay_to,
            "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB"
        );
        assert_eq!(r.max_timeout_seconds, 60);
        assert_eq!(r.extra.get("areFeesSponsored"), Some(&json!(true)));
    }

    #[test]
    fn requirements_serialize_camel_case_in_field_order() {
        let text = serde_json::to_string(&requirements()).unwrap();
        assert_eq!(
            text,
            r#"{"scheme":"exact","network":"stellar:testnet","amount":"10000000","asset":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","payTo":"GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB","maxTimeoutSeconds":60,"extra":{"areFeesSponsored":true}}"#
        );
    }

    #[test]
    fn requirements_extra_always_serialized_and_absent_or_null_is_empty() {
        let mut r = requirements();
        r.extra.clear();
        let value = serde_json::to_value(&r).unwrap();
        assert_eq!(value["extra"], json!({}));

        let mut absent: Value = serde_json::from_str(REQUIREMENTS).unwrap();
        absent.as_object_mut().unwrap().remove("extra");
        let parsed: PaymentRequirements = serde_json::from_value(absent).unwrap();
        assert!(parsed.extra.is_empty());

        let mut null: Value = serde_json::from_str(REQUIREMENTS).unwrap();
        null["extra"] = Value::Null;
        let parsed: PaymentRequirements = serde_json::from_value(null).unwrap();
        assert!(parsed.extra.is_empty());
    }

    #[test]
    fn requirements_ignore_unknown_fields() {
        let mut value: Value = serde_json::from_str(REQUIREMENTS).unwrap();
        value["outputSchema"] = json!({"type": "object"});
        let parsed: PaymentRequirements = serde_json::from_value(value).unwrap();
        assert_eq!(parsed, requirements());
    }

    #[test]
    fn matches_accepted_identical() {
        assert!(requirements().matches_accepted(&requirements()));
    }

    #[test]
    fn matches_accepted_each_field_differs() {
        let ours = requirements();
        let changes: [fn(&mut PaymentRequirements); 6] = [
            |r| r.scheme = "upto".into(),
            |r| r.network = "stellar:pubnet".into(),
            |r| r.amount = "10000001".into(),
            |r| r.asset = "CCW67TSZV3SSS2HXMBQ5JFGCKJNXKZM7UQUWUZPUTHXSTZLEO7SJMI75".into(),
            |r| r.pay_to = "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF".into(),
            |r| r.max_timeout_seconds = 61,
        ];
        for change in changes {
            let mut accepted = requirements();
            change(&mut accepted);
            assert!(!ours.matches_accepted(&accepted), "{accepted:?}");
        }
    }

    #[test]
    fn matches_accepted_extra_superset_ok_subset_not() {
        let ours = requirements();
        let mut superset = requirements();
        superset.extra.insert("clientHint".into(), json!("x"));
        assert!(ours.matches_accepted(&superset));

        let mut subset = requirements();
        subset.extra.clear();
        assert!(!ours.matches_accepted(&subset));
        // ...but the other way round, an accepted with more keys than ours is fine.
        assert!(subset.matches_accepted(&ours));

        let mut changed = requirements();
        changed
            .extra
            .insert("areFeesSponsored".into(), json!(false));
        assert!(!ours.matches_accepted(&changed));

        let mut null = requirements();
        null.extra.insert("areFeesSponsored".into(), Value::Null);
        assert!(!ours.matches_accepted(&null));
    }

    #[test]
    fn matches_accepted_deep_values_and_numbers() {
        let mut ours = requirements();
        ours.extra.insert("n".into(), json!(1));
        ours.extra
            .insert("o".into(), json!({"a": [1, {"b": 2}], "c": "d"}));
        let mut accepted: PaymentRequirements = serde_json::from_value(json!({
            "scheme": "exact", "network": "stellar:testnet", "amount": "10000000",
            "asset": "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA",
            "payTo": "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB",
            "maxTimeoutSeconds": 60,
            "extra": {"o": {"c": "d", "a": [1.0, {"b": 2}]}, "n": 1.0, "areFeesSponsored": true}
        }))
        .unwrap();
        assert!(ours.matches_accepted(&accepted));
        accepted
            .extra
            .insert("o".into(), json!({"a": [1, {"b": 2}]}));
        assert!(!ours.matches_accepted(&accepted));
        accepted
            .extra
            .insert("o".into(), json!({"a": [1, {"b": 2}], "c": "d", "e": 0}));
        assert!(
            !ours.matches_accepted(&accepted),
            "nested objects compare exactly"
        );
    }

    #[test]
    fn resource_info_omits_none_and_reads_null() {
        let info = ResourceInfo {
            url: "https://api.example.com/premium-data".into(),
            description: None,
            mime_type: None,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"url":"https://api.example.com/premium-data"}"#
        );
        let parsed: ResourceInfo = serde_json::from_str(
            r#"{"url":"u","description":null,"mimeType":null,"serviceName":"s"}"#,
        )
        .unwrap();
        assert_eq!(parsed.description, None);
        assert_eq!(parsed.mime_type, None);
        let parsed: ResourceInfo =
            serde_json::from_str(r#"{"url":"u","description":"d","mimeType":"application/json"}"#)
                .unwrap();
        assert_eq!(parsed.mime_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn payment_required_serializes_like_the_spec() {
        let required = PaymentRequired {
            x402_version: X402_VERSION,
            error: Some("Payment required".into()),
            resource: ResourceInfo {
                url: "https://api.example.com/premium-data".into(),
                description: Some("Premium".into()),
                mime_type: Some("application/json".into()),
            },
            accepts: vec![requirements()],
            extensions: None,
        };
        let value = serde_json::to_value(&required).unwrap();
        assert_eq!(
            value,
            json!({
                "x402Version": 2,
                "error": "Payment required",
                "resource": {"url": "https://api.example.com/premium-data", "description": "Premium", "mimeType": "application/json"},
                "accepts": [serde_json::from_str::<Value>(REQUIREMENTS).unwrap()]
            })
        );
        let back: PaymentRequired = serde_json::from_value(value).unwrap();
        assert_eq!(back, required);

        let minimal = PaymentRequired {
            error: None,
            ..required
        };
        let value = serde_json::to_value(&minimal).unwrap();
        assert!(value.get("error").is_none());
        assert!(value.get("extensions").is_none());
        let parsed: PaymentRequired = serde_json::from_str(
            r#"{"x402Version":2,"error":null,"resource":{"url":"u"},"accepts":[],"extensions":null}"#,
        )
        .unwrap();
        assert_eq!(parsed.error, None);
        assert_eq!(parsed.extensions, None);
    }

    /// A payload with keys in the order the TypeScript client sends them, odd spacing and an
    /// unknown field: the raw text must survive unchanged.
    const PAYLOAD: &str = r#"{"x402Version":2,"payload":{"transaction":"AAAAAgAAAAA="},"resource":{"url":"https://api.example.com/premium-data","description":"…","mimeType":"application/json"},"accepted":{"scheme":"exact","network":"stellar:testnet","amount":"10000000","asset":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","payTo":"GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB","maxTimeoutSeconds":60,"extra":{"areFeesSponsored":true}},  "future" : [1.50, 2e3]}"#;

    #[test]
    fn payload_keeps_raw_text_and_typed_view() {
        let payload = PaymentPayload::from_json(PAYLOAD.as_bytes()).unwrap();
        assert_eq!(payload.raw().get(), PAYLOAD);
        assert_eq!(serde_json::to_string(&payload).unwrap(), PAYLOAD);
        assert_eq!(payload.x402_version(), 2);
        assert_eq!(payload.accepted(), &requirements());
        assert_eq!(payload.transaction(), Some("AAAAAgAAAAA="));
        assert_eq!(
            payload.resource().map(|r| r.url.as_str()),
            Some("https://api.example.com/premium-data")
        );
        assert!(requirements().matches_accepted(payload.accepted()));
    }

    #[test]
    fn payload_deserialize_impl_matches_from_json() {
        let wrapped = format!(r#"{{"p": {PAYLOAD}}}"#);
        #[derive(Deserialize)]
        struct Wrapper {
            p: PaymentPayload,
        }
        let w: Wrapper = serde_json::from_str(&wrapped).unwrap();
        assert_eq!(w.p.raw().get(), PAYLOAD);
    }

    #[test]
    fn payload_resource_and_extensions_absent_or_null() {
        let text = r#"{"x402Version":2,"accepted":{"scheme":"exact","network":"stellar:testnet","amount":"1","asset":"C","payTo":"G","maxTimeoutSeconds":60,"extra":{}},"payload":{"transaction":"x"},"resource":null,"extensions":null}"#;
        let payload = PaymentPayload::from_json(text.as_bytes()).unwrap();
        assert!(payload.resource().is_none());
        let text = r#"{"x402Version":2,"accepted":{"scheme":"exact","network":"stellar:testnet","amount":"1","asset":"C","payTo":"G","maxTimeoutSeconds":60},"payload":{}}"#;
        let payload = PaymentPayload::from_json(text.as_bytes()).unwrap();
        assert!(payload.resource().is_none());
        assert!(payload.accepted().extra.is_empty());
        assert_eq!(payload.transaction(), None);
    }

    #[test]
    fn payload_transaction_must_be_a_string() {
        let text = r#"{"x402Version":2,"accepted":{"scheme":"exact","network":"n","amount":"1","asset":"C","payTo":"G","maxTimeoutSeconds":60},"payload":{"transaction":42}}"#;
        let payload = PaymentPayload::from_json(text.as_bytes()).unwrap();
        assert_eq!(payload.transaction(), None);
    }

    #[test]
    fn payload_errors() {
        assert_eq!(
            PaymentPayload::from_json(b"").unwrap_err(),
            PayloadError::NotJson
        );
        assert_eq!(
            PaymentPayload::from_json(b"{\"x402Version\":").unwrap_err(),
            PayloadError::NotJson
        );
        assert_eq!(
            PaymentPayload::from_json(b"\xff\xfe").unwrap_err(),
            PayloadError::NotJson
        );
        assert_eq!(
            PaymentPayload::from_json(b"[1,2]").unwrap_err(),
            PayloadError::WrongShape
        );
        assert_eq!(
            PaymentPayload::from_json(
                b"{\"x402Version\":1,\"scheme\":\"exact\",\"network\":\"base\",\"payload\":{}}"
            )
            .unwrap_err(),
            PayloadError::WrongShape,
            "a v1 payload has no `accepted`"
        );
        assert_eq!(
            PaymentPayload::from_json(b"{\"x402Version\":-2,\"accepted\":{},\"payload\":{}}")
                .unwrap_err(),
            PayloadError::WrongShape
        );
    }

    #[test]
    fn payload_error_messages_do_not_echo_input() {
        let secret = "SECRETSECRET";
        let text = format!(r#"{{"x402Version":"{secret}"}}"#);
        let err = PaymentPayload::from_json(text.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains(secret));
    }

    #[test]
    fn settle_response_spec_examples() {
        let ok: SettleResponse = serde_json::from_str(
            r#"{"success":true,"transaction":"0x…","network":"eip155:84532","payer":"0x857b…"}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                payer: Some("0x857b…".into()),
                transaction: "0x…".into(),
                network: "eip155:84532".into(),
                amount: None,
            }
        );
        let failed: SettleResponse = serde_json::from_str(
            r#"{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"eip155:84532","payer":"0x857b…"}"#,
        )
        .unwrap();
        assert!(!failed.success);
        assert_eq!(failed.error_reason.as_deref(), Some("insufficient_funds"));
        assert_eq!(failed.transaction, "");
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"success":false,"errorReason":"insufficient_funds","payer":"0x857b…","transaction":"","network":"eip155:84532"}"#
        );
    }

    #[test]
    fn settle_response_lenient() {
        let parsed: SettleResponse = serde_json::from_str(
            r#"{"success":false,"errorReason":null,"errorMessage":null,"payer":null,"transaction":null,"network":null,"amount":null,"extensions":{"x":1},"unknown":true}"#,
        )
        .unwrap();
        assert_eq!(parsed.transaction, "");
        assert_eq!(parsed.network, "");
        assert_eq!(parsed.error_reason, None);
        assert_eq!(parsed.amount, None);
        let parsed: SettleResponse = serde_json::from_str(r#"{"success":true}"#).unwrap();
        assert_eq!(parsed.transaction, "");
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"success":true,"transaction":"","network":""}"#
        );
        assert!(serde_json::from_str::<SettleResponse>(r#"{"transaction":"t"}"#).is_err());
        assert!(serde_json::from_str::<SettleResponse>(r#"{"success":null}"#).is_err());
    }

    #[test]
    fn verify_response_lenient_and_omits_none() {
        let parsed: VerifyResponse = serde_json::from_str(
            r#"{"isValid":false,"invalidReason":"invalid_exact_payload_malformed","invalidMessage":null,"payer":null,"extensions":{},"more":1}"#,
        )
        .unwrap();
        assert!(!parsed.is_valid);
        assert_eq!(
            parsed.invalid_reason.as_deref(),
            Some("invalid_exact_payload_malformed")
        );
        assert_eq!(parsed.invalid_message, None);
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"isValid":false,"invalidReason":"invalid_exact_payload_malformed"}"#
        );
        let parsed: VerifyResponse =
            serde_json::from_str(r#"{"isValid":true,"payer":"GABC"}"#).unwrap();
        assert!(parsed.is_valid);
        assert_eq!(parsed.payer.as_deref(), Some("GABC"));
        assert!(serde_json::from_str::<VerifyResponse>("{}").is_err());
    }

    #[test]
    fn supported_typescript_shape() {
        let parsed: SupportedResponse = serde_json::from_str(
            r#"{ "kinds": [ { "x402Version": 2, "scheme": "exact", "network": "stellar:testnet",
               "extra": { "areFeesSponsored": true } } ],
  "extensions": [],
  "signers": { "stellar:*": ["GFACILITATOR"] } }"#,
        )
        .unwrap();
        assert_eq!(parsed.kinds.len(), 1);
        assert!(parsed.kind("exact", "stellar:testnet").is_some());
        assert!(parsed.kind("exact", "stellar:pubnet").is_none());
        assert_eq!(
            parsed.fees_sponsored("exact", "stellar:testnet"),
            Some(true)
        );
        assert_eq!(parsed.fees_sponsored("exact", "stellar:pubnet"), None);
        assert_eq!(
            parsed.signers_for("stellar:testnet").collect::<Vec<_>>(),
            ["GFACILITATOR"]
        );
        assert_eq!(
            parsed.signers_for("stellar:pubnet").collect::<Vec<_>>(),
            ["GFACILITATOR"]
        );
        assert_eq!(parsed.signers_for("eip155:8453").count(), 0);
        assert_eq!(parsed.signers_for("stellar").count(), 0);
    }

    #[test]
    fn supported_openzeppelin_shape() {
        let parsed: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":true}}]}"#,
        )
        .unwrap();
        assert!(parsed.extensions.is_empty());
        assert!(parsed.signers.is_empty());
        assert_eq!(parsed.signers_for("stellar:testnet").count(), 0);

        let parsed: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":true}}],"signers":{"stellar:testnet":["GOZ1","GOZ2"]}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.signers_for("stellar:testnet").collect::<Vec<_>>(),
            ["GOZ1", "GOZ2"]
        );
        assert_eq!(parsed.signers_for("stellar:pubnet").count(), 0);
    }

    #[test]
    fn supported_exact_and_family_signers_combine() {
        let parsed: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[],"signers":{"stellar:*":["GFAMILY"],"stellar:testnet":["GEXACT"],"eip155:*":["0xabc"]}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.signers_for("stellar:testnet").collect::<Vec<_>>(),
            ["GEXACT", "GFAMILY"]
        );
        assert_eq!(
            parsed.signers_for("stellar:*").collect::<Vec<_>>(),
            ["GFAMILY"]
        );
    }

    #[test]
    fn supported_nulls_unknowns_and_versions() {
        let parsed: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[{"x402Version":1,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":false}},{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":null,"future":1}],"extensions":null,"signers":null,"other":{}}"#,
        )
        .unwrap();
        assert!(parsed.extensions.is_empty());
        assert!(parsed.signers.is_empty());
        let kind = parsed.kind("exact", "stellar:testnet").unwrap();
        assert_eq!(kind.x402_version, 2);
        assert_eq!(kind.extra, None);
        assert_eq!(parsed.fees_sponsored("exact", "stellar:testnet"), None);

        let parsed: SupportedResponse = serde_json::from_str(
            r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":"yes"}}]}"#,
        )
        .unwrap();
        assert_eq!(parsed.fees_sponsored("exact", "stellar:testnet"), None);
        assert!(serde_json::from_str::<SupportedResponse>("{}").is_err());
    }
}
