//! The credential: `Authorization: Payment <base64url(JSON)>`, the client's answer to a challenge.
//!
//! ```json
//! {"challenge": {"id", "realm", "method", "intent", "request", "description"?, "digest"?,
//!                "expires"?, "header"?, "opaque"?},
//!  "payload": {…method-specific…},
//!  "source"?: "did:…"}
//! ```
//!
//! Reading is tolerant where real clients differ and strict where it matters:
//!
//! - the `Payment` credential is found case-insensitively among comma-separated schemes; more
//!   than one is [`CredentialError::MultiplePaymentCredentials`] (the spec's 400);
//! - the token is at most [`MAX_CREDENTIAL_BYTES`], checked before decoding; base64url with or
//!   without `=` padding, and standard base64 (`+ /`) too, as mppx and mpp-rs accept;
//! - `challenge.opaque` may be the base64url string or (older mppx) the object itself, which is
//!   normalized to base64url of its JCS; an echoed `description` is kept; unknown keys are
//!   ignored; key order never matters;
//! - `challenge.request` must be base64url of a JSON object, and is kept as sent: the challenge
//!   id binds that text.
//!
//! `expires` is kept as text and not checked here: a missing or malformed `expires` is the
//! server's `invalid-challenge`, a past one its `payment-expired`.

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth_param::split_list;

use super::challenge::{Challenge, CredentialHeader, SCHEME};
use super::{base64url, jcs};

/// Largest credential token accepted, in bytes (16 KiB): room for a Stellar transaction
/// (≤ 8 KiB of XDR) and its challenge echo.
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

/// Why an `Authorization` value did not give one `Payment` credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// No `Payment` credential in the value(s).
    #[error("no Payment credential")]
    NoPaymentCredential,
    /// More than one `Payment` credential (answer 400).
    #[error("more than one Payment credential")]
    MultiplePaymentCredentials,
    /// The token is longer than [`MAX_CREDENTIAL_BYTES`].
    #[error("Payment credential is larger than {MAX_CREDENTIAL_BYTES} bytes")]
    TooLarge,
    /// The token is not base64url (nor base64).
    #[error("Payment credential is not base64url")]
    NotBase64,
    /// The decoded bytes are not JSON.
    #[error("Payment credential does not decode to JSON")]
    NotJson,
    /// A required field is missing.
    #[error("Payment credential has no `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("Payment credential has an invalid `{0}`")]
    InvalidField(&'static str),
}

/// A `Payment` credential.
///
/// ```
/// use serde_json::json;
/// use tower_paywall::mpp::{Challenge, Credential};
///
/// let echo = Challenge::new("ch_1", "api.example.com", "stellar", "charge", "e30");
/// let mut credential = Credential::new(echo, json!({"type": "transaction", "transaction": "AAAA…"}));
/// credential.source = Some("did:pkh:stellar:testnet:GB…".into());
/// let header = credential.encode();
/// assert!(header.starts_with("Payment ey"));
/// assert_eq!(Credential::parse(&header)?, credential);
/// # Ok::<(), tower_paywall::mpp::CredentialError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credential {
    /// The echoed challenge.
    pub challenge: Challenge,
    /// `source`: the payer's identifier (a DID), if given.
    pub source: Option<String>,
    /// `payload`: the method-specific proof (a JSON object).
    pub payload: Value,
}

impl Credential {
    /// A credential without `source`.
    pub fn new(challenge: Challenge, payload: Value) -> Self {
        Self {
            challenge,
            source: None,
            payload,
        }
    }

    /// Reads the one `Payment` credential of an `Authorization` field value.
    pub fn parse(value: &str) -> Result<Self, CredentialError> {
        Self::parse_lines([value])
    }

    /// Reads the one `Payment` credential across several field lines (of `Authorization`, or of
    /// `Payment-Authorization` when the challenge named it).
    pub fn parse_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, CredentialError> {
        let mut found = None;
        for line in lines {
            for element in split_list(line) {
                if let Some(token) = payment_token(element)
                    && found.replace(token).is_some()
                {
                    return Err(CredentialError::MultiplePaymentCredentials);
                }
            }
        }
        let token = found.ok_or(CredentialError::NoPaymentCredential)?;
        let json = decode_token(token)?;
        // The common case read straight into its fields; anything unusual (and every error)
        // takes the general path, which names the field at fault.
        if let Some(credential) = Self::from_fields(&json) {
            return Ok(credential);
        }
        let value: Value = serde_json::from_slice(&json).map_err(|_| CredentialError::NotJson)?;
        Self::from_json(value)
    }

    /// Reads the one `Payment` credential of the given field values (`headers.get_all(…)`).
    /// Bytes that are not UTF-8 are replaced before parsing.
    pub fn from_header_values<'a>(
        values: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Result<Self, CredentialError> {
        let lines: Vec<std::borrow::Cow<'_, str>> = values
            .into_iter()
            .map(|value| match std::str::from_utf8(value.as_bytes()) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(value.as_bytes()),
            })
            .collect();
        Self::parse_lines(lines.iter().map(|line| line.as_ref()))
    }

    /// Reads the one `Payment` credential of the `Authorization` fields of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, CredentialError> {
        Self::from_header_values(headers.get_all(http::header::AUTHORIZATION))
    }

    /// The `Authorization` value a client sends: `Payment ` and base64url (no padding) of
    /// `{"challenge": {…}, "payload": …, "source"?: …}` in JCS form (RFC 8785: members sorted,
    /// no whitespace), which is byte for byte what mppx's `Credential.serialize` writes for a
    /// challenge without `opaque` and a payload whose members it lists in sorted order.
    pub fn encode(&self) -> String {
        let echo = &self.challenge;
        let wire = WireCredential {
            challenge: WireEcho {
                id: &echo.id,
                realm: &echo.realm,
                method: &echo.method,
                intent: &echo.intent,
                request: &echo.request,
                description: echo.description.as_deref(),
                digest: echo.digest.as_deref(),
                expires: echo.expires.as_deref(),
                header: echo.header.map(CredentialHeader::as_str),
                opaque: echo.opaque.as_deref(),
            },
            payload: &self.payload,
            source: self.source.as_deref(),
        };
        // Strings and a `Value` (string keys only) always serialize.
        let json = serde_json::to_value(&wire).unwrap_or_default();
        format!("{SCHEME} {}", base64url::encode(jcs::to_string(&json)))
    }

    /// A well-formed credential whose members have their usual types (strings, an object
    /// payload, a string `opaque`), read without building maps; `None` otherwise.
    fn from_fields(json: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Fields {
            challenge: Echo,
            payload: Value,
            source: Option<String>,
        }
        #[derive(Deserialize)]
        struct Echo {
            id: String,
            realm: String,
            method: String,
            intent: String,
            request: String,
            description: Option<String>,
            digest: Option<String>,
            expires: Option<String>,
            header: Option<String>,
            opaque: Option<String>,
        }
        let Fields {
            challenge: echo,
            payload,
            source,
        } = serde_json::from_slice(json).ok()?;
        let required = [
            &echo.id,
            &echo.realm,
            &echo.method,
            &echo.intent,
            &echo.request,
        ];
        if !payload.is_object() || required.iter().any(|text| text.is_empty()) {
            return None;
        }
        let header = match echo.header.as_deref() {
            None | Some("") => None,
            Some(name) => Some(CredentialHeader::parse(name)?),
        };
        if !is_json_object(&echo.request) {
            return None;
        }
        Some(Self {
            challenge: Challenge {
                id: echo.id,
                realm: echo.realm,
                method: echo.method,
                intent: echo.intent,
                request: echo.request,
                description: echo.description,
                digest: echo.digest,
                expires: echo.expires,
                header,
                opaque: echo.opaque,
            },
            source,
            payload,
        })
    }

    fn from_json(value: Value) -> Result<Self, CredentialError> {
        let Value::Object(mut root) = value else {
            return Err(CredentialError::InvalidField("credential"));
        };
        let mut echo = match root.remove("challenge") {
            Some(Value::Object(echo)) => echo,
            Some(_) => return Err(CredentialError::InvalidField("challenge")),
            None => return Err(CredentialError::MissingField("challenge")),
        };
        let payload = match root.remove("payload") {
            Some(payload @ Value::Object(_)) => payload,
            Some(_) => return Err(CredentialError::InvalidField("payload")),
            None => return Err(CredentialError::MissingField("payload")),
        };
        let source = optional_string(&mut root, "source", "source")?;

        let mut required = |key: &str, field: &'static str| match echo.remove(key) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text),
            Some(_) => Err(CredentialError::InvalidField(field)),
            None => Err(CredentialError::MissingField(field)),
        };
        let id = required("id", "challenge.id")?;
        let realm = required("realm", "challenge.realm")?;
        let method = required("method", "challenge.method")?;
        let intent = required("intent", "challenge.intent")?;
        let request = required("request", "challenge.request")?;
        let description = match echo.remove("description") {
            Some(Value::String(text)) => Some(text),
            _ => None, // display only: anything else is ignored
        };
        let digest = optional_string(&mut echo, "digest", "challenge.digest")?;
        let expires = optional_string(&mut echo, "expires", "challenge.expires")?;
        let header = optional_string(&mut echo, "header", "challenge.header")?
            .filter(|name| !name.is_empty())
            .map(|name| {
                CredentialHeader::parse(&name)
                    .ok_or(CredentialError::InvalidField("challenge.header"))
            })
            .transpose()?;
        let opaque = match echo.remove("opaque") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(object @ Value::Object(_)) => Some(jcs::to_base64url(&object)),
            Some(_) => return Err(CredentialError::InvalidField("challenge.opaque")),
        };
        let challenge = Challenge {
            id,
            realm,
            method,
            intent,
            request,
            description,
            digest,
            expires,
            header,
            opaque,
        };
        if !is_json_object(&challenge.request) {
            return Err(CredentialError::InvalidField("challenge.request"));
        }
        Ok(Self {
            challenge,
            source,
            payload,
        })
    }
}

#[derive(Serialize)]
struct WireCredential<'a> {
    challenge: WireEcho<'a>,
    payload: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

#[derive(Serialize)]
struct WireEcho<'a> {
    id: &'a str,
    realm: &'a str,
    method: &'a str,
    intent: &'a str,
    request: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    opaque: Option<&'a str>,
}

/// Whether `request` is base64url of a JSON object: checked without building it (the scheme
/// that pins the request reads it as it needs).
fn is_json_object(request: &str) -> bool {
    let Ok(bytes) = base64url::decode(request) else {
        return false;
    };
    let opens_object = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    opens_object && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
}

/// A string member, `null` and absence both meaning `None`.
fn optional_string(
    object: &mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<String>, CredentialError> {
    match object.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(CredentialError::InvalidField(field)),
    }
}

/// Splits field lines (of `Authorization`) into the tokens of their `Payment` credentials and
/// their other credentials, each as written: what a proxy in front of the layer keeps, and what
/// it forwards (`Bearer …` to the service behind it).
///
/// ```
/// use tower_paywall::mpp::credential::split_payment;
///
/// let (payment, others) = split_payment(["Bearer t0k, Payment\teyJ4IjoxfQ", "Basic YTpi"]);
/// assert_eq!(payment, ["eyJ4IjoxfQ"]);
/// assert_eq!(others, ["Bearer t0k", "Basic YTpi"]);
/// ```
pub fn split_payment<'a>(lines: impl IntoIterator<Item = &'a str>) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut payment, mut others) = (Vec::new(), Vec::new());
    for line in lines {
        for element in split_list(line) {
            match payment_token(element) {
                Some(token) => payment.push(token),
                None => others.push(element),
            }
        }
    }
    (payment, others)
}

/// The token of a list element whose scheme is `Payment` (`Payment` alone gives an empty token).
fn payment_token(element: &str) -> Option<&str> {
    let scheme_end = element.find([' ', '\t']).unwrap_or(element.len());
    let (scheme, rest) = element.split_at(scheme_end);
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| rest.trim_matches([' ', '\t']))
}

/// Size check first, then base64url or base64, padded or not.
fn decode_token(token: &str) -> Result<Vec<u8>, CredentialError> {
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::TooLarge);
    }
    let unpadded = token.trim_end_matches('=');
    if token.len() - unpadded.len() > 2 {
        return Err(CredentialError::NotBase64);
    }
    // Standard base64 is tolerated: its two letters become base64url's.
    if !unpadded.bytes().any(|byte| byte == b'+' || byte == b'/') {
        return base64url::decode(unpadded).map_err(|_| CredentialError::NotBase64);
    }
    let normalized = unpadded.replace('+', "-").replace('/', "_");
    base64url::decode(&normalized).map_err(|_| CredentialError::NotBase64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::binding::ChallengeKeys;
    use base64::Engine as _;
    use serde_json::json;

    fn sample() -> Credential {
        let mut echo = Challenge::new("ch_1", "api.example.com", "stellar", "charge", "e30");
        echo.expires = Some("2026-01-29T12:05:00.000Z".into());
        echo.opaque = Some(jcs::to_base64url(&json!({"route": "/joke"})));
        let mut credential =
            Credential::new(echo, json!({"type": "transaction", "transaction": "AAAA"}));
        credential.source = Some("did:pkh:stellar:testnet:GABC".into());
        credential
    }

    #[test]
    fn the_field_reader_agrees_with_the_general_one_or_leaves_it_the_case() {
        let request = jcs::to_base64url(&json!({"amount": "1"}));
        let echo = |extra: Value| {
            let mut echo = json!({"id": "a", "realm": "r", "method": "stellar", "intent": "charge", "request": request});
            echo.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            echo
        };
        let cases = [
            (
                json!({"challenge": echo(json!({})), "payload": {"a": 1}}),
                true,
            ),
            (
                json!({"challenge": echo(json!({"description": "d", "digest": null, "expires": "2030-01-01T00:00:00Z", "header": "", "opaque": "e30"})), "payload": {}, "source": "did:x"}),
                true,
            ),
            (
                json!({"challenge": echo(json!({"header": "Payment-Authorization"})), "payload": {}}),
                true,
            ),
            // Unusual shapes: left to the general reader.
            (
                json!({"challenge": echo(json!({"description": 5})), "payload": {}}),
                false,
            ),
            (
                json!({"challenge": echo(json!({"opaque": {"route": "/x"}})), "payload": {}}),
                false,
            ),
            (
                json!({"challenge": echo(json!({"id": ""})), "payload": {}}),
                false,
            ),
            (
                json!({"challenge": echo(json!({"header": "X-Other"})), "payload": {}}),
                false,
            ),
            (
                json!({"challenge": echo(json!({"request": "bm90IGpzb24"})), "payload": {}}),
                false,
            ),
            (
                json!({"challenge": echo(json!({})), "payload": "text"}),
                false,
            ),
            (
                json!({"challenge": echo(json!({})), "payload": {}, "source": 1}),
                false,
            ),
        ];
        for (value, fast) in cases {
            let bytes = serde_json::to_vec(&value).unwrap();
            let read = Credential::from_fields(&bytes);
            assert_eq!(read.is_some(), fast, "{value}");
            let general = Credential::from_json(value.clone());
            if let Some(read) = read {
                assert_eq!(Ok(read), general, "{value}");
            }
        }
    }

    fn wire(json: &Value) -> String {
        format!("Payment {}", base64url::encode(json.to_string()))
    }

    #[test]
    fn round_trips() {
        let credential = sample();
        assert_eq!(Credential::parse(&credential.encode()).unwrap(), credential);
    }

    #[test]
    fn encodes_byte_for_byte_as_mppx() {
        // mppx 0.6.31: `Credential.serialize(Credential.from({challenge:
        // Challenge.deserialize(header), payload, source}))`, payload members listed sorted.
        let header = "Payment id=\"hl1cmUZhWUPd4B0MPDa8aFF_iPiYwuTudJTSODEWdv8\", \
            realm=\"api.example.com\", method=\"stellar\", intent=\"charge\", \
            request=\"eyJhbW91bnQiOiIxMDAwMDAiLCJjdXJyZW5jeSI6IkNCSUVMVEs2WUJaSlU1VVAyV1dRRVVDWUtMUFU2QVVOWjJCUTRXV0ZFSUUzVVNDSUhNWFFEQU1BIiwibWV0aG9kRGV0YWlscyI6eyJjcmVkZW50aWFsVHlwZXMiOlsidHJhbnNhY3Rpb24iLCJzaWduZWRIYXNoIl0sIm5ldHdvcmsiOiJzdGVsbGFyOnRlc3RuZXQifSwicmVjaXBpZW50IjoiR0NGSVJZNjVPUUU3REZQNUtMTlMyUEYyTFZaTVVaWUpYNE9aSUVRMzZOMklRQU5VQjVYVllPSlIifQ\", \
            description=\"a joke\", expires=\"2030-01-01T00:00:00.000Z\"";
        let challenge = Challenge::parse_all(header).unwrap().remove(0);
        let mut credential = Credential::new(
            challenge,
            json!({"type": "signedHash", "sourceSignature": "cd".repeat(64), "hash": "ab".repeat(32)}),
        );
        credential.source = Some(
            "did:pkh:stellar:testnet:GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR"
                .into(),
        );
        let mppx = "Payment eyJjaGFsbGVuZ2UiOnsiZGVzY3JpcHRpb24iOiJhIGpva2UiLCJleHBpcmVzIjoiMjAzMC0wMS0wMVQwMDowMDowMC4wMDBaIiwiaWQiOiJobDFjbVVaaFdVUGQ0QjBNUERhOGFGRl9pUGlZd3VUdWRKVFNPREVXZHY4IiwiaW50ZW50IjoiY2hhcmdlIiwibWV0aG9kIjoic3RlbGxhciIsInJlYWxtIjoiYXBpLmV4YW1wbGUuY29tIiwicmVxdWVzdCI6ImV5SmhiVzkxYm5RaU9pSXhNREF3TURBaUxDSmpkWEp5Wlc1amVTSTZJa05DU1VWTVZFczJXVUphU2xVMVZWQXlWMWRSUlZWRFdVdE1VRlUyUVZWT1dqSkNVVFJYVjBaRlNVVXpWVk5EU1VoTldGRkVRVTFCSWl3aWJXVjBhRzlrUkdWMFlXbHNjeUk2ZXlKamNtVmtaVzUwYVdGc1ZIbHdaWE1pT2xzaWRISmhibk5oWTNScGIyNGlMQ0p6YVdkdVpXUklZWE5vSWwwc0ltNWxkSGR2Y21zaU9pSnpkR1ZzYkdGeU9uUmxjM1J1WlhRaWZTd2ljbVZqYVhCcFpXNTBJam9pUjBOR1NWSlpOalZQVVVVM1JFWlFOVXRNVGxNeVVFWXlURlphVFZWYVdVcFlORTlhU1VWUk16Wk9Na2xSUVU1VlFqVllWbGxQU2xJaWZRIn0sInBheWxvYWQiOnsiaGFzaCI6ImFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWIiLCJzb3VyY2VTaWduYXR1cmUiOiJjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZGNkY2RjZCIsInR5cGUiOiJzaWduZWRIYXNoIn0sInNvdXJjZSI6ImRpZDpwa2g6c3RlbGxhcjp0ZXN0bmV0OkdDRklSWTY1T1FFN0RGUDVLTE5TMlBGMkxWWk1VWllKWDRPWklFUTM2TjJJUUFOVUI1WFZZT0pSIn0";
        assert_eq!(credential.encode(), mppx);
    }

    #[test]
    fn finds_payment_among_other_schemes() {
        let token = sample().encode();
        for value in [
            format!("Bearer abc, {token}"),
            format!("{token} , Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            format!(
                "Digest a=\"x, Payment y\", {}",
                token.replacen("Payment", "pAyMeNt", 1)
            ),
            format!("  {token}  "),
        ] {
            assert_eq!(Credential::parse(&value).unwrap(), sample(), "{value}");
        }
        assert_eq!(
            Credential::parse("Bearer abc, Basic xyz"),
            Err(CredentialError::NoPaymentCredential)
        );
        assert_eq!(
            Credential::parse("PaymentX abc"),
            Err(CredentialError::NoPaymentCredential)
        );
    }

    #[test]
    fn several_payment_credentials_are_refused() {
        let token = sample().encode();
        assert_eq!(
            Credential::parse(&format!("{token}, {token}")),
            Err(CredentialError::MultiplePaymentCredentials)
        );
        assert_eq!(
            Credential::parse(&format!("{token}, Payment")),
            Err(CredentialError::MultiplePaymentCredentials)
        );
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&token).unwrap(),
        );
        assert_eq!(Credential::from_headers(&headers).unwrap(), sample());
        headers.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&token).unwrap(),
        );
        assert_eq!(
            Credential::from_headers(&headers),
            Err(CredentialError::MultiplePaymentCredentials)
        );
    }

    #[test]
    fn size_is_capped_before_decoding() {
        let json = json!({"challenge": {}, "payload": {"pad": "x".repeat(MAX_CREDENTIAL_BYTES)}});
        assert_eq!(
            Credential::parse(&wire(&json)),
            Err(CredentialError::TooLarge)
        );
        // Not even base64: the size check still comes first.
        let junk = format!("Payment {}", "!".repeat(MAX_CREDENTIAL_BYTES + 1));
        assert_eq!(Credential::parse(&junk), Err(CredentialError::TooLarge));
        // At the cap exactly, decoding happens.
        let at_cap = format!("Payment {}", "A".repeat(MAX_CREDENTIAL_BYTES));
        assert_eq!(Credential::parse(&at_cap), Err(CredentialError::NotJson));
    }

    #[test]
    fn accepts_padding_and_standard_base64() {
        let credential = sample();
        let json = serde_json::to_vec(&json!({
            "challenge": {"id": "ch_1", "realm": "api.example.com", "method": "stellar", "intent": "charge",
                          "request": "e30", "expires": "2026-01-29T12:05:00.000Z",
                          "opaque": jcs::to_base64url(&json!({"route": "/joke"}))},
            "payload": {"type": "transaction", "transaction": "AAAA"},
            "source": "did:pkh:stellar:testnet:GABC",
            // Bytes whose base64 has `+` and `/`.
            "unknown": "\u{fb}\u{ff}\u{fe}>>>???"
        }))
        .unwrap();
        let standard = base64::engine::general_purpose::STANDARD.encode(&json);
        assert!(standard.contains('+') || standard.contains('/'));
        let url_padded = base64::engine::general_purpose::URL_SAFE.encode(&json);
        for token in [standard, url_padded, base64url::encode(&json)] {
            assert_eq!(
                Credential::parse(&format!("Payment {token}")).unwrap(),
                credential
            );
        }
        assert_eq!(
            Credential::parse("Payment e30==="),
            Err(CredentialError::NotBase64)
        );
        assert_eq!(
            Credential::parse("Payment e3 0"),
            Err(CredentialError::NotBase64)
        );
    }

    #[test]
    fn tolerates_object_opaque_description_and_unknown_keys() {
        let json = json!({
            "challenge": {"request": "e30", "intent": "charge", "method": "stellar", "realm": "r", "id": "i",
                          "opaque": {"route": "/joke"}, "description": "a joke", "future": [1, 2]},
            "payload": {},
            "source": null,
            "extra": true
        });
        let credential = Credential::parse(&wire(&json)).unwrap();
        assert_eq!(
            credential.challenge.opaque.as_deref(),
            Some(jcs::to_base64url(&json!({"route": "/joke"})).as_str())
        );
        assert_eq!(credential.challenge.description.as_deref(), Some("a joke"));
        assert_eq!(credential.source, None);
        let mut odd = json.clone();
        odd["challenge"]["description"] = json!(7);
        assert_eq!(
            Credential::parse(&wire(&odd))
                .unwrap()
                .challenge
                .description,
            None
        );
    }

    #[test]
    fn refuses_wrong_shapes() {
        let good = json!({
            "challenge": {"id": "i", "realm": "r", "method": "stellar", "intent": "charge", "request": "e30"},
            "payload": {}
        });
        let edit = |path: &[&str], value: Option<Value>| {
            let mut json = good.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut target = &mut json;
            for key in parents {
                target = &mut target[*key];
            }
            match value {
                Some(value) => target[*last] = value,
                None => {
                    target.as_object_mut().unwrap().remove(*last);
                }
            }
            json
        };
        let cases = [
            (json!([]), CredentialError::InvalidField("credential")),
            (
                edit(&["challenge"], None),
                CredentialError::MissingField("challenge"),
            ),
            (
                edit(&["challenge"], Some(json!("x"))),
                CredentialError::InvalidField("challenge"),
            ),
            (
                edit(&["payload"], None),
                CredentialError::MissingField("payload"),
            ),
            (
                edit(&["payload"], Some(json!("x"))),
                CredentialError::InvalidField("payload"),
            ),
            (
                edit(&["source"], Some(json!(1))),
                CredentialError::InvalidField("source"),
            ),
            (
                edit(&["challenge", "id"], None),
                CredentialError::MissingField("challenge.id"),
            ),
            (
                edit(&["challenge", "id"], Some(json!(""))),
                CredentialError::InvalidField("challenge.id"),
            ),
            (
                edit(&["challenge", "realm"], Some(json!(1))),
                CredentialError::InvalidField("challenge.realm"),
            ),
            (
                edit(&["challenge", "request"], Some(json!("W10"))),
                CredentialError::InvalidField("challenge.request"),
            ),
            (
                edit(&["challenge", "request"], Some(json!({}))),
                CredentialError::InvalidField("challenge.request"),
            ),
            (
                edit(&["challenge", "expires"], Some(json!(5))),
                CredentialError::InvalidField("challenge.expires"),
            ),
            (
                edit(&["challenge", "header"], Some(json!("X-Pay"))),
                CredentialError::InvalidField("challenge.header"),
            ),
            (
                edit(&["challenge", "opaque"], Some(json!([]))),
                CredentialError::InvalidField("challenge.opaque"),
            ),
        ];
        for (json, error) in cases {
            assert_eq!(Credential::parse(&wire(&json)), Err(error), "{json}");
        }
        assert_eq!(
            Credential::parse("Payment bm90IGpzb24"),
            Err(CredentialError::NotJson)
        );
        assert_eq!(Credential::parse("Payment"), Err(CredentialError::NotJson));
    }

    #[test]
    fn echo_verifies_against_the_keys_that_issued_it() {
        let keys = ChallengeKeys::new(
            super::super::ChallengeSecret::new("test-vector-secret-minimum-32-byte-secret")
                .unwrap(),
        );
        let challenge = super::super::Challenge::builder(
            "api.example.com",
            "stellar",
            "charge",
            json!({"amount": "1"}).as_object().unwrap(),
        )
        .description("not bound")
        .issue(&keys);
        let credential = Credential::new(challenge.clone(), json!({}));
        let parsed = Credential::parse(&credential.encode()).unwrap();
        assert!(parsed.challenge.verify_id(&keys));
        let mut changed = parsed.challenge.clone();
        changed.description = Some("changed".into());
        assert!(changed.verify_id(&keys));
        changed.realm = "evil.example.com".into();
        assert!(!changed.verify_id(&keys));
    }
}
