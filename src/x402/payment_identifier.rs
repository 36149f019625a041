//! The `payment-identifier` extension: a client's idempotency key for one logical request.
//!
//! The server declares it in `PaymentRequired.extensions`:
//!
//! ```json
//! {"payment-identifier": {"info": {"required": false}, "schema": { … }}}
//! ```
//!
//! and the client echoes the declaration in `PaymentPayload.extensions`, adding `info.id`: 16
//! to 128 characters of `[A-Za-z0-9_-]` (the official helpers make `pay_` and 32 hex digits).
//! The same id with the same payment terms gets the recorded answer; the same id with other
//! terms gets 409 (see the [layer docs](crate::layer#idempotency-keys)).

use serde_json::{Map, Value, json};

use super::wire::PaymentPayload;

/// The extension's key in `extensions`.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";
/// The shortest id accepted.
pub const MIN_ID_LEN: usize = 16;
/// The longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// The reason (400) for a payload whose `id` is not of the allowed form.
pub(crate) const INVALID_REASON: &str = "invalid_payment_identifier";
/// The reason (400) for a payload without an `id` where the route requires one.
pub(crate) const REQUIRED_REASON: &str = "payment_identifier_required";

/// The declaration a server puts in `PaymentRequired.extensions["payment-identifier"]`.
pub fn declaration(required: bool) -> Value {
    json!({
        "info": { "required": required },
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "required": { "type": "boolean" },
                "id": {
                    "type": "string",
                    "minLength": MIN_ID_LEN,
                    "maxLength": MAX_ID_LEN,
                    "pattern": "^[a-zA-Z0-9_-]+$"
                }
            },
            "required": ["required"]
        }
    })
}

/// Whether `id` is a well-formed payment identifier.
pub fn is_valid(id: &str) -> bool {
    (MIN_ID_LEN..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// What a payload says about its identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentId {
    /// No `payment-identifier` extension, or one without an `id`.
    Absent,
    /// A well-formed id.
    Valid(String),
    /// An `id` that is not a string of the allowed form.
    Invalid,
}

/// Reads `extensions["payment-identifier"].info.id` from a payload.
pub fn read(payload: &PaymentPayload) -> PaymentId {
    read_extensions(payload.extensions())
}

fn read_extensions(extensions: Option<&Map<String, Value>>) -> PaymentId {
    let Some(info) = extensions
        .and_then(|extensions| extensions.get(PAYMENT_IDENTIFIER))
        .and_then(|extension| extension.get("info"))
    else {
        return PaymentId::Absent;
    };
    match info.get("id") {
        None | Some(Value::Null) => PaymentId::Absent,
        Some(Value::String(id)) if is_valid(id) => PaymentId::Valid(id.clone()),
        Some(_) => PaymentId::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extensions(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn ids_of_the_allowed_form_are_read() {
        let id = "pay_7d5d747be160e280504c099d984bcfe0";
        let text =
            format!(r#"{{"payment-identifier":{{"info":{{"required":false,"id":"{id}"}}}}}}"#);
        assert_eq!(
            read_extensions(Some(&extensions(&text))),
            PaymentId::Valid(id.into())
        );
        assert!(is_valid(&"a".repeat(16)));
        assert!(is_valid(&"A-_9".repeat(32)));
    }

    #[test]
    fn ids_out_of_form_are_invalid() {
        for id in [
            "\"short_id_15chrs\"".to_owned(),
            format!("\"{}\"", "a".repeat(129)),
            "\"pay_abc!@#defghijklmnop\"".to_owned(),
            "\"pay_ünïcødé_identifier\"".to_owned(),
            "12345678901234567".to_owned(),
            "[\"pay_7d5d747be160e280\"]".to_owned(),
        ] {
            let text = format!(r#"{{"payment-identifier":{{"info":{{"id":{id}}}}}}}"#);
            assert_eq!(
                read_extensions(Some(&extensions(&text))),
                PaymentId::Invalid,
                "{id}"
            );
        }
    }

    #[test]
    fn payloads_without_an_id_have_none() {
        for text in [
            r#"{}"#,
            r#"{"payment-identifier":1}"#,
            r#"{"payment-identifier":{}}"#,
            r#"{"payment-identifier":{"info":{"required":true}}}"#,
            r#"{"payment-identifier":{"info":{"id":null}}}"#,
            r#"{"other":{"info":{"id":"pay_7d5d747be160e280504c"}}}"#,
        ] {
            assert_eq!(
                read_extensions(Some(&extensions(text))),
                PaymentId::Absent,
                "{text}"
            );
        }
        assert_eq!(read_extensions(None), PaymentId::Absent);
    }

    #[test]
    fn the_declaration_matches_the_official_helpers() {
        // What `declarePaymentIdentifierExtension(true)` of the official extensions package
        // returns (2.27.0).
        let official = r#"{"info":{"required":true},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"required":{"type":"boolean"},"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[a-zA-Z0-9_-]+$"}},"required":["required"]}}"#;
        let official: Value = serde_json::from_str(official).unwrap();
        assert_eq!(declaration(true), official);
    }
}
