//! The challenge: `WWW-Authenticate: Payment id="…", realm="…", method="…", intent="…", request="…"`
//! on a 402, one per offer.
//!
//! | param | | value |
//! |---|---|---|
//! | `id` | required | the binding id ([`binding`](super::binding)), echoed unchanged |
//! | `realm` | required | the protection space |
//! | `method` | required | payment method (`stellar`) |
//! | `intent` | required | `charge`, `channel`, … |
//! | `request` | required | base64url (no padding) of the JCS of the method's request object |
//! | `description` | optional | display text; not bound |
//! | `digest` | optional | request-body digest (`sha-256=…`) |
//! | `expires` | optional (mppx servers always send it) | RFC 3339 ([`Timestamp`]) |
//! | `header` | optional | `Payment-Authorization` when the credential goes in that header |
//! | `opaque` | optional | base64url of the JCS of a flat string map; echoed unchanged |
//!
//! [`Challenge::format`] writes the params in that order (mppx's), each as a quoted string, and
//! refuses control characters (CR/LF: header injection). [`Challenge::parse_all`] reads one field
//! value holding one or several challenges (RFC 9110 auth-params: token or quoted-string values,
//! case-insensitive scheme and parameter names, whitespace around `,` and `=`), skips the other
//! schemes, ignores unknown parameters and refuses duplicated ones; when any `Payment` challenge
//! is malformed, the whole list is refused, as mppx's client does.

use std::collections::{BTreeMap, HashSet};

use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::auth_param::{RawChallenge, parse_challenges};
use super::base64url;
use super::binding::{ChallengeBinding, ChallengeKeys};
use super::expires::Timestamp;
use super::jcs;

/// The auth-scheme name, `Payment` (matched case-insensitively).
pub const SCHEME: &str = "Payment";

/// Largest `request` (its base64url text) a challenge may carry: 16 KiB, as mppx.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The header a client puts its credential in, as a challenge's `header` parameter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialHeader {
    /// `Authorization`: the default, never bound into the challenge id.
    Authorization,
    /// `Payment-Authorization`: bound into the challenge id (before `opaque`).
    PaymentAuthorization,
}

impl CredentialHeader {
    /// The header's name: `Authorization` or `Payment-Authorization`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorization => "Authorization",
            Self::PaymentAuthorization => "Payment-Authorization",
        }
    }

    /// Reads a header name, case-insensitively; other names are `None`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Authorization, Self::PaymentAuthorization]
            .into_iter()
            .find(|header| header.as_str().eq_ignore_ascii_case(name))
    }
}

/// A `Payment` challenge.
///
/// Text fields hold the wire text: `request` and `opaque` stay the base64url strings they were
/// sent as, since the challenge id binds exactly that text. Build one with
/// [`Challenge::builder`] (from a request object, with an HMAC-bound id) or [`Challenge::new`]
/// (from wire text) and set the optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Challenge {
    /// `id`.
    pub id: String,
    /// `realm`.
    pub realm: String,
    /// `method`.
    pub method: String,
    /// `intent`.
    pub intent: String,
    /// `request`: base64url (no padding) of the JCS of the request object.
    pub request: String,
    /// `description`.
    pub description: Option<String>,
    /// `digest`.
    pub digest: Option<String>,
    /// `expires`, RFC 3339 text.
    pub expires: Option<String>,
    /// `header`.
    pub header: Option<CredentialHeader>,
    /// `opaque`: base64url text.
    pub opaque: Option<String>,
}

/// Why a `WWW-Authenticate` value did not give `Payment` challenges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// No `Payment` challenge in the value(s).
    #[error("no Payment challenge")]
    NoPaymentChallenge,
    /// A `Payment` challenge carries a token68 instead of auth-params.
    #[error("Payment challenge has a token68 instead of parameters")]
    Token68,
    /// A parameter appears twice in one challenge.
    #[error("Payment challenge repeats a parameter")]
    DuplicateParam,
    /// A required parameter is missing.
    #[error("Payment challenge has no `{0}` parameter")]
    MissingParam(&'static str),
    /// A required parameter is empty.
    #[error("Payment challenge has an empty `{0}` parameter")]
    EmptyParam(&'static str),
    /// A known parameter's value is neither a token nor a closed quoted string.
    #[error("Payment challenge has a malformed `{0}` parameter")]
    MalformedParam(&'static str),
    /// `method` is not a method name (`[a-z][a-z0-9:_-]*`).
    #[error("Payment challenge has an invalid method name")]
    InvalidMethod,
    /// `intent` is not an intent name (letters, digits and `-`).
    #[error("Payment challenge has an invalid intent name")]
    InvalidIntent,
    /// `request` is longer than [`MAX_REQUEST_BYTES`].
    #[error("Payment challenge request is larger than {MAX_REQUEST_BYTES} bytes")]
    RequestTooLarge,
    /// `request` is not base64url.
    #[error("Payment challenge request is not base64url")]
    RequestNotBase64Url,
    /// `request` does not decode to a JSON object.
    #[error("Payment challenge request is not a JSON object")]
    RequestNotJsonObject,
    /// `opaque` does not decode to a JSON object (from [`Challenge::opaque_json`] only).
    #[error("Payment challenge opaque is not base64url of a JSON object")]
    OpaqueNotJsonObject,
    /// `expires` is not an RFC 3339 timestamp.
    #[error("Payment challenge expires is not an RFC 3339 timestamp")]
    InvalidExpires,
    /// `header` names a header other than `Authorization` or `Payment-Authorization`.
    #[error("Payment challenge names an unsupported credential header")]
    UnsupportedCredentialHeader,
}

/// Why a challenge could not be written as a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A value holds a control character (CR or LF above all: header injection). Tabs are allowed.
    #[error("challenge `{0}` contains a control character")]
    ControlCharacter(&'static str),
    /// A required value is empty.
    #[error("challenge `{0}` is empty")]
    EmptyParam(&'static str),
}

const KNOWN_PARAMS: [&str; 10] = [
    "id",
    "realm",
    "method",
    "intent",
    "request",
    "description",
    "digest",
    "expires",
    "header",
    "opaque",
];

impl Challenge {
    /// A challenge from wire text, without optional parameters.
    pub fn new(
        id: impl Into<String>,
        realm: impl Into<String>,
        method: impl Into<String>,
        intent: impl Into<String>,
        request: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            realm: realm.into(),
            method: method.into(),
            intent: intent.into(),
            request: request.into(),
            description: None,
            digest: None,
            expires: None,
            header: None,
            opaque: None,
        }
    }

    /// Starts a challenge for a request object (encoded as base64url of its JCS).
    pub fn builder(
        realm: impl Into<String>,
        method: impl Into<String>,
        intent: impl Into<String>,
        request: &Map<String, Value>,
    ) -> ChallengeBuilder {
        ChallengeBuilder {
            challenge: Self::new(
                String::new(),
                realm,
                method,
                intent,
                encode_json_object(request),
            ),
        }
    }

    /// The parameters the id binds.
    pub fn binding(&self) -> ChallengeBinding<'_> {
        ChallengeBinding {
            realm: &self.realm,
            method: &self.method,
            intent: &self.intent,
            request: &self.request,
            expires: self.expires.as_deref(),
            digest: self.digest.as_deref(),
            opaque: self.opaque.as_deref(),
            header: self.header,
        }
    }

    /// Whether the id is bound to the parameters under one of `keys`.
    pub fn verify_id(&self, keys: &ChallengeKeys) -> bool {
        keys.verify(&self.binding(), &self.id)
    }

    /// The decoded request object.
    pub fn request_json(&self) -> Result<Map<String, Value>, ChallengeError> {
        decode_json_object(&self.request).map_err(|e| match e {
            JsonObjectError::NotBase64Url => ChallengeError::RequestNotBase64Url,
            JsonObjectError::NotJsonObject => ChallengeError::RequestNotJsonObject,
        })
    }

    /// The decoded `opaque` object, if any.
    pub fn opaque_json(&self) -> Result<Option<Map<String, Value>>, ChallengeError> {
        self.opaque
            .as_deref()
            .map(decode_json_object)
            .transpose()
            .map_err(|_| ChallengeError::OpaqueNotJsonObject)
    }

    /// The parsed `expires`, if any.
    pub fn expires_at(&self) -> Result<Option<Timestamp>, ChallengeError> {
        self.expires
            .as_deref()
            .map(Timestamp::parse)
            .transpose()
            .map_err(|_| ChallengeError::InvalidExpires)
    }

    /// The `WWW-Authenticate` value: `Payment id="…", realm="…", method="…", intent="…",
    /// request="…"` then `description`, `digest`, `expires`, `header`, `opaque` when present,
    /// each a quoted string with `\` and `"` escaped.
    ///
    /// Refuses empty required values and control characters other than tab in any value.
    pub fn format(&self) -> Result<String, FormatError> {
        let mut out = String::with_capacity(96 + self.request.len());
        out.push_str(SCHEME);
        let required = [
            ("id", self.id.as_str()),
            ("realm", &self.realm),
            ("method", &self.method),
            ("intent", &self.intent),
            ("request", &self.request),
        ];
        let optional = [
            ("description", self.description.as_deref()),
            ("digest", self.digest.as_deref()),
            ("expires", self.expires.as_deref()),
            ("header", self.header.map(CredentialHeader::as_str)),
            ("opaque", self.opaque.as_deref()),
        ];
        for (index, (name, value)) in required
            .into_iter()
            .map(|(name, value)| (name, Some(value)))
            .chain(optional)
            .filter_map(|(name, value)| Some((name, value?)))
            .enumerate()
        {
            if index < required.len() && value.is_empty() {
                return Err(FormatError::EmptyParam(name));
            }
            out.push_str(if index == 0 { " " } else { ", " });
            out.push_str(name);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' | '"' => {
                        out.push('\\');
                        out.push(c);
                    }
                    '\t' => out.push(c),
                    c if c.is_ascii_control() => return Err(FormatError::ControlCharacter(name)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Ok(out)
    }

    /// [`format`](Self::format) as a header value.
    pub fn to_header_value(&self) -> Result<HeaderValue, FormatError> {
        let text = self.format()?;
        // `format` lets no control character through, so this cannot fail.
        HeaderValue::from_str(&text).map_err(|_| FormatError::ControlCharacter("challenge"))
    }

    /// Parses the `Payment` challenges of one `WWW-Authenticate` field value (other schemes are
    /// skipped).
    ///
    /// ```
    /// use tower_paywall::mpp::Challenge;
    ///
    /// let value = r#"Bearer realm="x", Payment id="a", realm="api", method="stellar", intent="charge", request="e30", payment id="b", realm="api", method="stellar", intent="channel", request="e30""#;
    /// let challenges = Challenge::parse_all(value)?;
    /// assert_eq!(challenges.len(), 2);
    /// assert_eq!(challenges[1].intent, "channel");
    /// # Ok::<(), tower_paywall::mpp::ChallengeError>(())
    /// ```
    pub fn parse_all(value: &str) -> Result<Vec<Self>, ChallengeError> {
        Self::parse_lines([value])
    }

    /// Parses the `Payment` challenges of several `WWW-Authenticate` field lines, in order.
    pub fn parse_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Self>, ChallengeError> {
        let mut challenges = Vec::new();
        for line in lines {
            for raw in parse_challenges(line) {
                if raw.scheme.eq_ignore_ascii_case(SCHEME) {
                    challenges.push(Self::from_raw(raw)?);
                }
            }
        }
        if challenges.is_empty() {
            return Err(ChallengeError::NoPaymentChallenge);
        }
        Ok(challenges)
    }

    /// Parses the `Payment` challenges of every `WWW-Authenticate` field of `headers`.
    /// Bytes that are not UTF-8 are replaced before parsing.
    pub fn from_headers(headers: &HeaderMap) -> Result<Vec<Self>, ChallengeError> {
        let lines: Vec<String> = headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        Self::parse_lines(lines.iter().map(String::as_str))
    }

    fn from_raw(raw: RawChallenge<'_>) -> Result<Self, ChallengeError> {
        if raw.token68.is_some() {
            return Err(ChallengeError::Token68);
        }
        let mut known: [Option<String>; KNOWN_PARAMS.len()] = Default::default();
        let mut seen = HashSet::with_capacity(raw.params.len());
        for (name, value) in raw.params {
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(ChallengeError::DuplicateParam);
            }
            if let Some(index) = KNOWN_PARAMS.iter().position(|known| *known == name) {
                let value = value.ok_or(ChallengeError::MalformedParam(KNOWN_PARAMS[index]))?;
                known[index] = Some(value);
            }
            seen.insert(name);
        }
        let [
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
        ] = known;
        let required = |value: Option<String>, name: &'static str| match value {
            None => Err(ChallengeError::MissingParam(name)),
            Some(value) if value.is_empty() => Err(ChallengeError::EmptyParam(name)),
            Some(value) => Ok(value),
        };
        let challenge = Self {
            id: required(id, "id")?,
            realm: required(realm, "realm")?,
            method: required(method, "method")?,
            intent: required(intent, "intent")?,
            request: required(request, "request")?,
            description: description.filter(|v| !v.is_empty()),
            digest: digest.filter(|v| !v.is_empty()),
            expires,
            header: header
                .filter(|name| !name.is_empty())
                .map(|name| CredentialHeader::parse(&name))
                .map(|header| header.ok_or(ChallengeError::UnsupportedCredentialHeader))
                .transpose()?,
            opaque: opaque.filter(|v| !v.is_empty()),
        };
        if !is_method_name(&challenge.method) {
            return Err(ChallengeError::InvalidMethod);
        }
        if !is_intent_name(&challenge.intent) {
            return Err(ChallengeError::InvalidIntent);
        }
        if challenge.request.len() > MAX_REQUEST_BYTES {
            return Err(ChallengeError::RequestTooLarge);
        }
        challenge.request_json()?;
        challenge.expires_at()?;
        Ok(challenge)
    }
}

/// Builds a [`Challenge`] for a request object; see [`Challenge::builder`].
///
/// ```
/// use serde_json::json;
/// use tower_paywall::mpp::{Challenge, ChallengeKeys, ChallengeSecret, Timestamp};
///
/// let keys = ChallengeKeys::new(ChallengeSecret::new("test-vector-secret-minimum-32-byte-secret")?);
/// let request = json!({"amount": "1000000"});
/// let challenge = Challenge::builder("api.example.com", "tempo", "charge", request.as_object().unwrap())
///     .expires(Timestamp::parse("2025-01-06T12:00:00Z")?)
///     .description("one joke")
///     .issue(&keys);
/// assert_eq!(challenge.request, "eyJhbW91bnQiOiIxMDAwMDAwIn0");
/// assert_eq!(challenge.expires.as_deref(), Some("2025-01-06T12:00:00.000Z"));
/// assert!(challenge.verify_id(&keys));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ChallengeBuilder {
    challenge: Challenge,
}

impl ChallengeBuilder {
    /// Sets `description` (display text, not bound).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.challenge.description = Some(description.into());
        self
    }

    /// Sets `digest`.
    pub fn digest(mut self, digest: impl Into<String>) -> Self {
        self.challenge.digest = Some(digest.into());
        self
    }

    /// Sets `expires`, written as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn expires(mut self, expires: Timestamp) -> Self {
        self.challenge.expires = Some(expires.format());
        self
    }

    /// Sets `header`.
    pub fn header(mut self, header: CredentialHeader) -> Self {
        self.challenge.header = Some(header);
        self
    }

    /// Sets `opaque`: base64url of the JCS of a flat string map.
    pub fn opaque(mut self, opaque: &BTreeMap<String, String>) -> Self {
        let object: Map<String, Value> = opaque
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect();
        self.challenge.opaque = Some(encode_json_object(&object));
        self
    }

    /// The challenge, its id the HMAC of its parameters under the current secret of `keys`.
    pub fn issue(self, keys: &ChallengeKeys) -> Challenge {
        let mut challenge = self.challenge;
        challenge.id = keys.challenge_id(&challenge.binding());
        challenge
    }

    /// The challenge with an id of the caller's choosing (stateful binding).
    pub fn with_id(self, id: impl Into<String>) -> Challenge {
        let mut challenge = self.challenge;
        challenge.id = id.into();
        challenge
    }
}

/// Base64url of the JCS of a JSON object.
fn encode_json_object(object: &Map<String, Value>) -> String {
    jcs::to_base64url(&Value::Object(object.clone()))
}

pub(crate) enum JsonObjectError {
    NotBase64Url,
    NotJsonObject,
}

/// Decodes base64url text of a JSON object.
pub(crate) fn decode_json_object(text: &str) -> Result<Map<String, Value>, JsonObjectError> {
    let bytes = base64url::decode(text).map_err(|_| JsonObjectError::NotBase64Url)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(JsonObjectError::NotJsonObject),
    }
}

/// mppx's client check: `^[a-z][a-z0-9:_-]*$`.
fn is_method_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-".contains(&b))
}

/// The spec's `1*( ALPHA / DIGIT / "-" )`.
fn is_intent_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn basic() -> Challenge {
        Challenge::new("ch_1", "api.example.com", "stellar", "charge", "e30")
    }

    #[test]
    fn formats_in_mppx_order_with_escapes() {
        let mut challenge = basic();
        challenge.opaque = Some("eyJhIjoiYiJ9".into());
        challenge.expires = Some("2026-01-29T12:05:00.000Z".into());
        challenge.digest = Some("sha-256=abc=".into());
        challenge.description = Some("Pay \"now\"\tC:\\x — é".into());
        challenge.header = Some(CredentialHeader::PaymentAuthorization);
        assert_eq!(
            challenge.format().unwrap(),
            "Payment id=\"ch_1\", realm=\"api.example.com\", method=\"stellar\", intent=\"charge\", \
             request=\"e30\", description=\"Pay \\\"now\\\"\tC:\\\\x — é\", digest=\"sha-256=abc=\", \
             expires=\"2026-01-29T12:05:00.000Z\", header=\"Payment-Authorization\", opaque=\"eyJhIjoiYiJ9\""
        );
        let parsed = Challenge::parse_all(&challenge.format().unwrap()).unwrap();
        assert_eq!(parsed, vec![challenge.clone()]);
        assert!(challenge.to_header_value().is_ok());
    }

    #[test]
    fn format_refuses_cr_lf_and_other_controls() {
        for (field, text) in [
            ("description", "Line one\r\nLine two"),
            ("description", "a\nb"),
            ("description", "a\rb"),
            ("description", "a\0b"),
            ("description", "a\u{7f}b"),
        ] {
            let mut challenge = basic();
            challenge.description = Some(text.into());
            assert_eq!(
                challenge.format(),
                Err(FormatError::ControlCharacter(field)),
                "{text:?}"
            );
        }
        let mut challenge = basic();
        challenge.realm = "api\r\nSet-Cookie: x=y".into();
        assert_eq!(
            challenge.format(),
            Err(FormatError::ControlCharacter("realm"))
        );
        let mut challenge = basic();
        challenge.opaque = Some("x\ny".into());
        assert_eq!(
            challenge.to_header_value(),
            Err(FormatError::ControlCharacter("opaque"))
        );
        let mut challenge = basic();
        challenge.id.clear();
        assert_eq!(challenge.format(), Err(FormatError::EmptyParam("id")));
    }

    #[test]
    fn parses_case_insensitive_names_and_token_values() {
        let parsed = Challenge::parse_all(
            "PAYMENT ID=ch_1, Realm=\"api.example.com\", METHOD=stellar, intent=charge, request=e30",
        )
        .unwrap();
        assert_eq!(parsed, vec![basic()]);
    }

    #[test]
    fn refuses_malformed_payment_challenges() {
        let ok = r#"id="a", realm="r", method="stellar", intent="charge", request="e30""#;
        let cases: Vec<(String, ChallengeError)> = vec![
            ("Payment".into(), ChallengeError::MissingParam("id")),
            ("Payment e30".into(), ChallengeError::Token68),
            (
                format!("Payment {ok}, ID=\"b\""),
                ChallengeError::DuplicateParam,
            ),
            (
                format!("Payment {ok}, x=1, X=2"),
                ChallengeError::DuplicateParam,
            ),
            (
                format!("Payment {ok}, description=\"open"),
                ChallengeError::MalformedParam("description"),
            ),
            (
                format!("Payment {}", ok.replace("realm=\"r\"", "realm=\"\"")),
                ChallengeError::EmptyParam("realm"),
            ),
            (
                format!("Payment {}", ok.replace("stellar", "Stellar")),
                ChallengeError::InvalidMethod,
            ),
            (
                format!("Payment {}", ok.replace("charge", "char ge")),
                ChallengeError::InvalidIntent,
            ),
            (
                format!("Payment {}", ok.replace("e30", "e30!")),
                ChallengeError::RequestNotBase64Url,
            ),
            (
                format!("Payment {}", ok.replace("e30", "W10")),
                ChallengeError::RequestNotJsonObject,
            ),
            (
                format!("Payment {ok}, expires=\"tomorrow\""),
                ChallengeError::InvalidExpires,
            ),
            (
                format!("Payment {ok}, header=\"X-Pay\""),
                ChallengeError::UnsupportedCredentialHeader,
            ),
            ("Basic abc".into(), ChallengeError::NoPaymentChallenge),
            // One good offer and one bad one: the list is refused.
            (
                format!("Payment {ok}, Payment id=\"b\""),
                ChallengeError::MissingParam("realm"),
            ),
        ];
        for (value, error) in cases {
            assert_eq!(Challenge::parse_all(&value), Err(error), "{value}");
        }
        let large = base64url::encode(format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_REQUEST_BYTES)));
        assert_eq!(
            Challenge::parse_all(&format!("Payment {}", ok.replace("e30", &large))),
            Err(ChallengeError::RequestTooLarge)
        );
    }

    #[test]
    fn parses_several_field_lines() {
        let mut headers = HeaderMap::new();
        let first = basic();
        let mut second = basic();
        second.intent = "channel".into();
        second.description = Some("café".into());
        headers.append(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"x\""),
        );
        headers.append(
            http::header::WWW_AUTHENTICATE,
            first.to_header_value().unwrap(),
        );
        headers.append(
            http::header::WWW_AUTHENTICATE,
            second.to_header_value().unwrap(),
        );
        assert_eq!(
            Challenge::from_headers(&headers).unwrap(),
            vec![first, second]
        );
        assert_eq!(
            Challenge::from_headers(&HeaderMap::new()),
            Err(ChallengeError::NoPaymentChallenge)
        );
    }

    #[test]
    fn builder_encodes_jcs_and_binds_the_id() {
        let keys = ChallengeKeys::new(
            super::super::ChallengeSecret::new("test-vector-secret-minimum-32-byte-secret")
                .unwrap(),
        );
        let request = json!({"recipient": "G…", "amount": "1", "methodDetails": {"network": "stellar:testnet"}});
        let opaque = BTreeMap::from([("route".to_owned(), "/joke".to_owned())]);
        let challenge =
            Challenge::builder("api", "stellar", "charge", request.as_object().unwrap())
                .opaque(&opaque)
                .header(CredentialHeader::PaymentAuthorization)
                .digest("sha-256=x")
                .issue(&keys);
        assert_eq!(
            base64url::decode_to_string(&challenge.request).unwrap(),
            r#"{"amount":"1","methodDetails":{"network":"stellar:testnet"},"recipient":"G…"}"#
        );
        assert_eq!(
            challenge.opaque_json().unwrap().unwrap(),
            *json!({"route": "/joke"}).as_object().unwrap()
        );
        assert!(challenge.verify_id(&keys));
        let mut tampered = challenge.clone();
        tampered.digest = None;
        assert!(!tampered.verify_id(&keys));
        let fixed = Challenge::builder("api", "stellar", "charge", &Map::new()).with_id("db-row-7");
        assert_eq!(fixed.id, "db-row-7");
        assert_eq!(fixed.request, "e30");
    }

    #[test]
    fn empty_optionals_read_as_absent() {
        let value = r#"Payment id="a", realm="r", method="stellar", intent="charge", request="e30", description="", digest="", header="", opaque="""#;
        let parsed = Challenge::parse_all(value).unwrap();
        assert_eq!(
            parsed,
            [Challenge::new("a", "r", "stellar", "charge", "e30")]
        );
    }

    #[test]
    fn credential_header_names() {
        assert_eq!(
            CredentialHeader::parse("payment-authorization"),
            Some(CredentialHeader::PaymentAuthorization)
        );
        assert_eq!(
            CredentialHeader::parse("AUTHORIZATION"),
            Some(CredentialHeader::Authorization)
        );
        assert_eq!(CredentialHeader::parse("Proxy-Authorization"), None);
    }
}
