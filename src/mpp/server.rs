//! What every MPP scheme of this crate does the same way: reading a `Payment` credential,
//! issuing and checking challenges, rendering the 402, answering problems and receipts.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::accept::AcceptPayment;
use super::binding::ChallengeKeys;
use super::challenge::Challenge as MppChallenge;
use super::credential::{Credential as MppCredential, CredentialError};
use super::expires::Timestamp;
use super::problem::{PROBLEM_JSON, Problem, ProblemCode};
use super::receipt::{PAYMENT_RECEIPT, encode_success};
use crate::price::Price;
use crate::scheme::{
    Challenge, ChallengeContext, Credential, Offer, Receipt, Rejection, RejectionKind,
};
use crate::stellar::rpc::RpcError;
use crate::store::{Fingerprint, PaymentKey};

/// The protocol name rejections carry.
pub(crate) const PROTOCOL: &str = "mpp";
/// The payment method of every scheme here.
pub(crate) const METHOD: &str = "stellar";

/// A rejection with a problem type, answered with the problem's status.
pub(crate) fn problem(code: ProblemCode) -> Rejection {
    let kind = match code.status().as_u16() {
        400 => RejectionKind::BadRequest,
        410 => RejectionKind::Gone,
        _ => RejectionKind::PaymentRequired,
    };
    Rejection::new(kind, PROTOCOL, code.as_str())
}

/// The RPC could not be reached: 503, retry with the same credential.
pub(crate) fn unavailable(error: &RpcError) -> Rejection {
    tracing::warn!(%error, "Soroban RPC unavailable");
    Rejection::new(RejectionKind::Unavailable, PROTOCOL, "rpc_unavailable")
}

/// The RPC or a store asked us to come back later: 503.
pub(crate) fn busy() -> Rejection {
    Rejection::new(RejectionKind::Unavailable, PROTOCOL, "rpc_busy")
}

/// The protection space: the configured realm, else the request's host, else `MPP Payment`.
pub(crate) fn realm(configured: Option<&str>, request: &http::request::Parts) -> String {
    if let Some(realm) = configured {
        return realm.to_owned();
    }
    let host = request.uri.host().map(str::to_owned).or_else(|| {
        let host = request.headers.get(http::header::HOST)?.to_str().ok()?;
        Some(host.split(':').next().unwrap_or(host).to_owned())
    });
    host.unwrap_or_else(|| "MPP Payment".to_owned())
}

/// The `opaque` field naming the request a challenge is for.
const ROUTE: &str = "route";

/// What binds a challenge to its request: the method and the path (not the query), as
/// base64url of the first 16 bytes of their SHA-256 (22 characters, whatever the path's
/// length). It travels in the challenge's `opaque`, which the challenge id's HMAC covers, so a
/// credential built for one route is refused on another.
pub(crate) fn route_tag(request: &http::request::Parts) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(request.method.as_str())
        .chain_update(b" ")
        .chain_update(request.uri.path())
        .finalize();
    super::base64url::encode(&digest[..16])
}

/// Reads a `Payment` credential of method `stellar` and intent `intent`; `None` when there is
/// none, or it is for another intent (another scheme reads it).
pub(crate) fn read(headers: &HeaderMap, intent: &str) -> Option<Result<Credential, Rejection>> {
    let credential = match MppCredential::from_headers(headers) {
        Ok(credential) => credential,
        Err(CredentialError::NoPaymentCredential) => return None,
        Err(CredentialError::MultiplePaymentCredentials) => {
            return Some(Err(Rejection::new(
                RejectionKind::BadRequest,
                PROTOCOL,
                ProblemCode::MalformedCredential.as_str(),
            )));
        }
        Err(_) => return Some(Err(problem(ProblemCode::MalformedCredential))),
    };
    let echo = &credential.challenge;
    if echo.method != METHOD {
        return Some(Err(problem(ProblemCode::MethodUnsupported)));
    }
    if echo.intent != intent {
        return None;
    }
    // The challenge id makes the payment single-use; the payload is what was presented.
    let key = PaymentKey::derive(&[b"mpp", echo.id.as_bytes()]);
    let fingerprint = Fingerprint::of(
        serde_json::to_string(&credential.payload)
            .unwrap_or_default()
            .as_bytes(),
    );
    let payer = credential.source.as_deref().map(claimed_account);
    Some(Ok(Credential::new(key, fingerprint, payer, credential)))
}

/// The account a credential's `source` claims, as a strkey: `did:pkh:<network>:G…` gives
/// `G…` (the form pricing hooks compare with owners); any other source is kept as sent.
fn claimed_account(source: &str) -> String {
    match source
        .strip_prefix("did:pkh:")
        .and_then(|rest| rest.rsplit_once(':'))
    {
        Some((_, account)) => account.to_owned(),
        None => source.to_owned(),
    }
}

/// The credential's MPP form, as [`read`] stored it.
pub(crate) fn credential(credential: &Credential) -> Result<&MppCredential, Rejection> {
    credential
        .detail::<MppCredential>()
        .ok_or_else(|| problem(ProblemCode::MalformedCredential))
}

/// What a scheme's challenges have in common.
pub(crate) struct Issuer<'a> {
    pub(crate) keys: &'a ChallengeKeys,
    pub(crate) realm: Option<&'a str>,
    pub(crate) intent: &'static str,
    pub(crate) ttl: Duration,
}

impl Issuer<'_> {
    /// A fresh challenge for `request`, expiring after the lifetime.
    pub(crate) fn issue(
        &self,
        price: &Price,
        parts: &http::request::Parts,
        request: &Map<String, Value>,
    ) -> Result<MppChallenge, Rejection> {
        let expires = Timestamp::now()
            .checked_add(self.ttl)
            .ok_or_else(|| problem(ProblemCode::PaymentRequired))?;
        let route = std::collections::BTreeMap::from([(ROUTE.to_owned(), route_tag(parts))]);
        let mut builder =
            MppChallenge::builder(realm(self.realm, parts), METHOD, self.intent, request)
                .expires(expires)
                .opaque(&route);
        if let Some(description) = price.description() {
            builder = builder.description(description);
        }
        let challenge = builder.issue(self.keys);
        // A challenge that cannot be written into a header (a control character in the price's
        // description or the request's host) is no offer: the 402 falls back on the others.
        if let Err(error) = challenge.format() {
            tracing::warn!(%error, "cannot format an MPP challenge; no MPP offer");
            return Err(problem(ProblemCode::PaymentRequired));
        }
        Ok(challenge)
    }

    /// The echoed challenge is ours (its id verifies), unexpired, for this realm, intent and
    /// request (method and path, [`route_tag`]), and `pinned` accepts it (its request, read as
    /// the scheme likes): the rest is up to the scheme.
    pub(crate) fn check(
        &self,
        echo: &MppChallenge,
        parts: &http::request::Parts,
        pinned: impl FnOnce(&MppChallenge) -> bool,
    ) -> Result<(), Rejection> {
        let expires = echo
            .expires_at()
            .ok()
            .flatten()
            .ok_or_else(|| problem(ProblemCode::InvalidChallenge))?;
        if expires.is_past(SystemTime::now()) {
            return Err(problem(ProblemCode::PaymentExpired));
        }
        self.check_route(echo, parts, &[route_tag(parts)], pinned)
    }

    /// As [`check`](Self::check), for a voucher paying a metered stream ahead: the echo is of
    /// the challenge that opened the stream, a `GET` or a `POST` of this path, and may have
    /// expired since (a voucher must raise the cumulative amount, so an old echo replays
    /// nothing).
    pub(crate) fn check_stream(
        &self,
        echo: &MppChallenge,
        parts: &http::request::Parts,
        pinned: impl FnOnce(&MppChallenge) -> bool,
    ) -> Result<(), Rejection> {
        let opened_by = |method: http::Method| {
            let mut request = http::Request::new(());
            *request.method_mut() = method;
            *request.uri_mut() = parts.uri.clone();
            route_tag(&request.into_parts().0)
        };
        let routes = [opened_by(http::Method::GET), opened_by(http::Method::POST)];
        self.check_route(echo, parts, &routes, pinned)
    }

    /// The echo is ours, for one of `routes`, this realm and intent, and `pinned` takes it.
    fn check_route(
        &self,
        echo: &MppChallenge,
        parts: &http::request::Parts,
        routes: &[String],
        pinned: impl FnOnce(&MppChallenge) -> bool,
    ) -> Result<(), Rejection> {
        if !echo.verify_id(self.keys) {
            return Err(problem(ProblemCode::InvalidChallenge));
        }
        let route = echo.opaque_json().ok().flatten();
        let same_route = route
            .as_ref()
            .and_then(|opaque| opaque.get(ROUTE))
            .and_then(Value::as_str)
            .is_some_and(|tag| routes.iter().any(|route| route == tag));
        let ours = echo.realm == realm(self.realm, parts)
            && same_route
            && echo.method == METHOD
            && echo.intent == self.intent
            && pinned(echo);
        if !ours {
            return Err(problem(ProblemCode::InvalidChallenge));
        }
        Ok(())
    }
}

/// Renders every MPP offer (an offer carries one challenge, or several) into the 402: one
/// `WWW-Authenticate` line per challenge in the client's `Accept-Payment` order, and the
/// Problem Details body naming the first.
pub(crate) fn render(offers: &[&Offer], context: &ChallengeContext<'_>, challenge: &mut Challenge) {
    let challenges: Vec<&MppChallenge> = offers
        .iter()
        .flat_map(|offer| {
            let one = offer.detail::<MppChallenge>().into_iter();
            let many = offer.detail::<Vec<MppChallenge>>().into_iter().flatten();
            one.chain(many)
        })
        .collect();
    let accept = AcceptPayment::from_headers(&context.request.headers);
    let ordered = accept.order(challenges, |c| (c.method.as_str(), c.intent.as_str()));
    for offer in &ordered {
        match offer.to_header_value() {
            Ok(value) => {
                challenge
                    .headers
                    .append(http::header::WWW_AUTHENTICATE, value);
            }
            Err(error) => tracing::error!(%error, "cannot format an MPP challenge"),
        }
    }
    challenge.headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    challenge.headers.append(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Payment-Receipt"),
    );
    let code = context
        .rejection
        .filter(|rejection| rejection.protocol == PROTOCOL)
        .and_then(|rejection| {
            ProblemCode::ALL
                .into_iter()
                .find(|code| code.as_str() == rejection.code)
        })
        .unwrap_or(ProblemCode::PaymentRequired);
    let mut body = Problem::new(code);
    if let Some(first) = ordered.first() {
        body = body.with_challenge_id(first.id.clone());
    }
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body.to_json()) {
        for (name, value) in fields {
            challenge.body.entry(name).or_insert(value);
        }
    }
    challenge.content_type = Some(HeaderValue::from_static(PROBLEM_JSON));
}

/// A successful payment's receipt: `Payment-Receipt` naming `reference`, `Cache-Control:
/// private`.
pub(crate) fn receipt(reference: String) -> Receipt {
    let receipt = encode_success(METHOD, &reference, Timestamp::now());
    let mut headers = Vec::with_capacity(3);
    if let Ok(value) = HeaderValue::try_from(receipt) {
        headers.push((PAYMENT_RECEIPT, value));
    }
    headers.push((
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private"),
    ));
    headers.push((
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Payment-Receipt, WWW-Authenticate"),
    ));
    Receipt { reference, headers }
}

#[cfg(test)]
mod tests {
    use super::claimed_account;

    #[test]
    fn the_claimed_payer_is_the_source_account() {
        let account = "GD2RI3SAISN75UBYW4BSVIOKCNTDZVLZ4A5FVHTJD4LH6BEKUOITCD2L";
        assert_eq!(
            claimed_account(&format!("did:pkh:stellar:testnet:{account}")),
            account
        );
        assert_eq!(claimed_account(account), account);
        assert_eq!(claimed_account("did:web:example"), "did:web:example");
    }
}
