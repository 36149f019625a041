//! Idempotency keys: a client's name for one logical request, so that a retry made with a new
//! credential gets the first answer instead of paying twice.
//!
//! Where keys come from and what each case answers: the [layer docs](super#idempotency-keys).

use http::request::Parts;
use http::{HeaderValue, Method};

use super::binding::RequestBinding;
use super::builder::Shared;
use crate::price::{Amount, PaymentIdentifier};
use crate::scheme::{Credential, Intent, Rejection, RejectionKind};
use crate::store::{Fingerprint, PaymentKey, Reservation, StoreError};
use crate::x402::payment_identifier;

/// The request header carrying an idempotency key.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest `Idempotency-Key` accepted, quotes aside.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Layer-level reasons.
pub(crate) mod code {
    /// The `Idempotency-Key` header is malformed.
    pub(crate) const INVALID_KEY: &str = "invalid_idempotency_key";
    /// The idempotency key was used for a payment with other terms.
    pub(crate) const KEY_REUSED: &str = "idempotency_key_reused";
}

/// A payment made under an idempotency key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idempotent {
    /// Where the payment is recorded (with its [`terms`]).
    pub(crate) key: PaymentKey,
    /// The presented credential's own payment, reserved for the key.
    pub(crate) credential_key: PaymentKey,
    /// How that reservation names its holder: this key and this exact credential.
    pub(crate) holder: Fingerprint,
}

/// Why a request's idempotency key is refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A protocol's refusal, rendered with a fresh challenge.
    Rejection(Rejection),
    /// A malformed `Idempotency-Key`: 400 with this code.
    Header(&'static str),
}

/// The idempotency key of a request paid with `credential` of `intent` on a route that
/// declares `declared` (x402's `payment-identifier`), if it has one.
pub(crate) fn of_request(
    request: &Parts,
    declared: PaymentIdentifier,
    intent: Intent,
    credential: &Credential,
) -> Result<Option<Idempotent>, Refused> {
    let from_payload = match (declared, credential.payment_identifier()) {
        (PaymentIdentifier::Off, _) => None,
        (_, Some(Ok(id))) => Some(("payment-identifier", id.to_owned())),
        (_, Some(Err(rejection))) => return Err(Refused::Rejection(rejection.clone())),
        (PaymentIdentifier::Required, None) if intent == Intent::X402_EXACT => {
            return Err(Refused::Rejection(Rejection::new(
                RejectionKind::BadRequest,
                intent.protocol,
                payment_identifier::REQUIRED_REASON,
            )));
        }
        _ => None,
    };
    let (source, id) = match from_payload {
        Some(found) => found,
        None => match header_key(request)? {
            Some(id) => ("idempotency-key", id),
            None => return Ok(None),
        },
    };
    let payer = credential.payer().unwrap_or_default();
    let key = PaymentKey::derive(&[
        b"idempotency",
        source.as_bytes(),
        payer.as_bytes(),
        id.as_bytes(),
    ]);
    let holder = PaymentKey::derive(&[b"held for", &key.0, &credential.fingerprint().0]);
    Ok(Some(Idempotent {
        key,
        credential_key: credential.key(),
        holder: Fingerprint(holder.0),
    }))
}

/// The terms a key is used for: the intent, the amount, and the request (its method, path and
/// query, and the headers pricing read: [`RequestBinding`]).
pub(crate) fn terms(intent: Intent, amount: Amount, binding: RequestBinding) -> Fingerprint {
    let terms = PaymentKey::derive(&[
        b"terms",
        intent.protocol.as_bytes(),
        intent.name.as_bytes(),
        &amount.atomic().to_be_bytes(),
        binding.as_bytes(),
    ]);
    Fingerprint(terms.0)
}

impl Shared {
    /// Holds the credential's own payment for the key: `false` when another payment holds it
    /// (it was used without the key, or under another).
    pub(crate) async fn hold_credential(
        &self,
        idempotent: &Idempotent,
    ) -> Result<bool, StoreError> {
        let reserved = self
            .store
            .reserve(
                idempotent.credential_key,
                idempotent.holder,
                self.record_ttl,
            )
            .await?;
        // `Busy`: held for this key and credential already, by an attempt that was let go
        // after its settlement began.
        Ok(matches!(reserved, Reservation::New | Reservation::Busy))
    }

    /// Whether the credential presented is the one whose payment the key holds.
    pub(crate) async fn holds(&self, idempotent: &Idempotent) -> bool {
        matches!(
            self.store.record(idempotent.credential_key).await,
            Ok(Some(record)) if record.fingerprint == idempotent.holder
        )
    }
}

/// The `Idempotency-Key` of a `POST` or `PATCH` (other methods are idempotent already): a
/// Structured Fields string (`"…"`) or the bare token most clients send, 1 to 255 visible
/// ASCII characters without quotes or backslashes. More than one field line is malformed.
fn header_key(request: &Parts) -> Result<Option<String>, Refused> {
    if request.method != Method::POST && request.method != Method::PATCH {
        return Ok(None);
    }
    let mut values = request.headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refused::Header(code::INVALID_KEY));
    }
    parse_header(value)
        .map(Some)
        .ok_or(Refused::Header(code::INVALID_KEY))
}

fn parse_header(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let inner = match text.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => text,
    };
    let well_formed = (1..=MAX_KEY_LEN).contains(&inner.len())
        && inner
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\');
    well_formed.then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Option<String> {
        parse_header(&HeaderValue::from_bytes(text).unwrap())
    }

    #[test]
    fn keys_are_read_bare_or_quoted() {
        assert_eq!(parse(b"order-12345").as_deref(), Some("order-12345"));
        assert_eq!(
            parse(b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(parse(b"  spaced  ").as_deref(), Some("spaced"));
        assert_eq!(parse(&[b'k'; 255]).map(|k| k.len()), Some(255));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            b"".as_slice(),
            b"\"\"",
            b"\"unterminated",
            b"two words",
            b"quo\"te",
            b"back\\slash",
            "non-ascii-\u{e9}".as_bytes(),
            &[b'k'; 256],
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
