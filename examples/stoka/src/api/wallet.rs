//! Wallet-signed and account routes: challenges, the profile, usage.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::{Stoka, error, json_response};
use crate::auth::{self, Audience, AuthError, Credentials};
use crate::clock::{day_of, day_string, rfc3339};
use crate::storage::Usage;

/// The wallet that signed `headers`' `Authorization` for `audience`, or the error answer.
pub(super) async fn authorize(
    stoka: &Stoka,
    headers: &HeaderMap,
    audience: Audience,
) -> Result<String, Response> {
    let credentials = match headers.get(header::AUTHORIZATION) {
        None => Err(AuthError::Missing),
        Some(value) => Credentials::from_header_bytes(value.as_bytes()),
    };
    check(stoka, credentials, audience).await
}

async fn check(
    stoka: &Stoka,
    credentials: Result<Credentials, AuthError>,
    audience: Audience,
) -> Result<String, Response> {
    let checked = match credentials {
        Ok(credentials) => {
            auth::verify(&**stoka.storage(), &credentials, audience, stoka.now()).await
        }
        Err(refused) => Err(refused),
    };
    checked.map_err(|refused| {
        let status = match refused {
            AuthError::Audience => StatusCode::FORBIDDEN,
            AuthError::Malformed(_) => StatusCode::BAD_REQUEST,
            AuthError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        let mut response = error(status, refused.code(), &refused.to_string());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Stellar"),
            );
        }
        response
    })
}

#[derive(Deserialize)]
pub(super) struct ChallengeRequest {
    audience: String,
}

/// `POST /v1/auth/challenge`: `{audience}` → `{challenge_id, message, expires_at}`.
pub(super) async fn challenge(
    State(stoka): State<Stoka>,
    body: Result<Json<ChallengeRequest>, JsonRejection>,
) -> Response {
    let audience = body
        .ok()
        .and_then(|Json(request)| Audience::parse(&request.audience));
    let Some(audience) = audience else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_audience",
            "send {\"audience\": \"object-delete\" | \"queue-ack\" | \"profile-bind\" | \"me-usage\"}",
        );
    };
    // Every challenge is a row until it expires: their rate bounds how many there are.
    if stoka.inner.challenges.check().is_err() {
        return super::limits::rate_limited(1);
    }
    let info = &stoka.inner.info;
    let ttl_ms = stoka
        .inner
        .limits
        .challenge_ttl_seconds
        .saturating_mul(1000);
    match auth::issue(
        &**stoka.storage(),
        audience,
        &info.server_name(),
        stoka.now(),
        ttl_ms,
    )
    .await
    {
        Ok(issued) => json_response(
            StatusCode::OK,
            json!({
                "challenge_id": issued.challenge_id,
                "message": issued.message,
                "audience": audience.as_str(),
                "expires_at": rfc3339(issued.expires_at),
            }),
        ),
        Err(failure) => super::unavailable(&failure),
    }
}

#[derive(Deserialize)]
pub(super) struct ProfileRequest {
    wallet: String,
    challenge_id: String,
    signature_hex: String,
    #[serde(default)]
    email: Option<String>,
}

/// Whether `email` looks like an address: one `@`, no spaces or controls, at most 254 bytes.
fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && email.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// `POST /v1/profile`: binds (or, without `email`, clears) the wallet's email.
pub(super) async fn profile(
    State(stoka): State<Stoka>,
    body: Result<Json<ProfileRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_profile",
            "send {wallet, challenge_id, signature_hex, email?}",
        );
    };
    if let Some(email) = &request.email
        && !plausible_email(email)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_email",
            "not an email address",
        );
    }
    let credentials = Credentials::new(
        &request.wallet,
        &request.challenge_id,
        &request.signature_hex,
    );
    let wallet = match check(&stoka, credentials, Audience::ProfileBind).await {
        Ok(wallet) => wallet,
        Err(response) => return response,
    };
    match stoka
        .storage()
        .set_email(&wallet, request.email.as_deref())
        .await
    {
        Ok(()) => json_response(
            StatusCode::OK,
            json!({ "wallet": wallet, "email": request.email }),
        ),
        Err(failure) => super::unavailable(&failure),
    }
}

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    days: Option<String>,
}

/// `GET /v1/me/usage?days=N`: the wallet's counters of the last N UTC days (today included),
/// oldest first, with zero days.
pub(super) async fn usage(
    State(stoka): State<Stoka>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let max = stoka.inner.limits.max_usage_days;
    let days = match query {
        Ok(Query(UsageQuery { days: None })) => Some(7),
        Ok(Query(UsageQuery { days: Some(days) })) => days
            .parse::<u32>()
            .ok()
            .filter(|days| (1..=max).contains(days)),
        Err(_) => None,
    };
    let Some(days) = days else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_days",
            &format!("days must be a whole number from 1 to {max}"),
        );
    };
    let wallet = match authorize(&stoka, &headers, Audience::MeUsage).await {
        Ok(wallet) => wallet,
        Err(response) => return response,
    };
    let today = day_of(stoka.now());
    let first = today.saturating_sub(days - 1);
    let rows = match stoka.storage().usage(&wallet, first, today).await {
        Ok(rows) => rows,
        Err(failure) => return super::unavailable(&failure),
    };
    let mut totals = Usage::default();
    let mut listed = Vec::new();
    for day in first..=today {
        let counts = rows
            .iter()
            .find(|(row_day, _)| *row_day == day)
            .map(|(_, usage)| *usage)
            .unwrap_or_default();
        totals = totals.plus(counts);
        listed.push(json!({
            "day": day_string(day),
            "operations": counts.operations,
            "bytes_in": counts.bytes_in,
            "bytes_out": counts.bytes_out,
            "charged_atomic": counts.charged_atomic,
        }));
    }
    json_response(
        StatusCode::OK,
        json!({
            "wallet": wallet,
            "days": listed,
            "totals": {
                "operations": totals.operations,
                "bytes_in": totals.bytes_in,
                "bytes_out": totals.bytes_out,
                "charged_atomic": totals.charged_atomic,
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::plausible_email;

    #[test]
    fn emails_are_checked_loosely() {
        assert!(plausible_email("a@example.com"));
        for bad in ["", "a", "@example.com", "a@b", "a b@example.com", "a@b@c.d"] {
            assert!(!plausible_email(bad), "{bad:?}");
        }
        assert!(!plausible_email(&format!(
            "{}@example.com",
            "a".repeat(250)
        )));
    }
}
