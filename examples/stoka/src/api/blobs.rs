//! Blobs: `store`, `retrieve` and `update` (paid), `delete` (wallet-signed).

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_paywall::{Paid, SettleGuard};

use super::paywall::valid_key;
use super::wallet::authorize;
use super::{Segments, Stoka, error, json_response, unavailable};
use crate::auth::Audience;
use crate::clock::rfc3339;
use crate::storage::{Put, PutMode, StorageError};

/// `POST /v1/store`: a new blob under `X-Stoka-Key`.
pub(super) async fn store(
    State(stoka): State<Stoka>,
    Extension(paid): Extension<Paid>,
    Extension(guard): Extension<SettleGuard>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("x-stoka-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    write(&stoka, &paid, &guard, &headers, key, body, PutMode::Create).await
}

/// `PUT /v1/object/{key}`: replaces the payer's blob, with a new life.
pub(super) async fn update(
    State(stoka): State<Stoka>,
    Extension(paid): Extension<Paid>,
    Extension(guard): Extension<SettleGuard>,
    Segments(key): Segments<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(&stoka, &paid, &guard, &headers, key, body, PutMode::Replace).await
}

/// Validate → settle → commit, under the key's lock.
async fn write(
    stoka: &Stoka,
    paid: &Paid,
    guard: &SettleGuard,
    headers: &HeaderMap,
    key: String,
    body: Bytes,
    mode: PutMode,
) -> Response {
    let limits = stoka.inner.limits;
    if !valid_key(&key) {
        return error(StatusCode::BAD_REQUEST, "invalid_key", "bad key");
    }
    let ttl = match limits.ttl_of(headers.get("x-stoka-ttl-seconds")) {
        Ok(ttl) => ttl,
        Err(refused) => {
            return error(StatusCode::BAD_REQUEST, "invalid_ttl", &refused.to_string());
        }
    };
    if body.len() as u64 > limits.max_object_bytes {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "blob too large");
    }
    let owner = paid.payer.as_str();
    let storage = stoka.storage();
    let _locked = stoka.key_lock(owner, &key).lock().await;
    let now = stoka.now();
    match (mode, storage.blob_size(owner, &key, now).await) {
        (_, Err(failure)) => return unavailable(&failure),
        (PutMode::Create, Ok(Some(_))) => return key_exists(),
        (PutMode::Replace, Ok(None)) => return not_found(),
        _ => {}
    }
    if guard.settle().await.is_err() {
        // The layer answers for the payment (402, or 503 while the outcome is unknown).
        return StatusCode::PAYMENT_REQUIRED.into_response();
    }
    // The money moved: the write happens whatever changed since the check (the blob expired
    // during the settlement, another node wrote the key): it is the payer's own key either
    // way, and a business refusal now would keep the money without the service.
    let now = stoka.now();
    let expires_at = now.saturating_add(ttl.saturating_mul(1000));
    let other = match mode {
        PutMode::Create => PutMode::Replace,
        PutMode::Replace => PutMode::Create,
    };
    for mode in [mode, other] {
        match storage
            .put_blob(owner, &key, &body, expires_at, mode, now)
            .await
        {
            Ok(Put::Created | Put::Replaced) => break,
            Ok(Put::Exists | Put::NotFound) if mode != other => {}
            Ok(Put::Exists | Put::NotFound) => {
                return unavailable(&StorageError::Backend("the key changed twice".into()));
            }
            Err(failure) => return unavailable(&failure),
        }
    }
    let charged = stoka.count(paid, body.len(), 0).await;
    let id = hex::encode(Sha256::digest(&body));
    json_response(
        StatusCode::OK,
        json!({
            "id": id,
            "key": key,
            "owner_pubkey": owner,
            "size_bytes": body.len(),
            "expires_at": rfc3339(expires_at),
            "ttl_seconds": ttl,
            "charged_atomic": charged,
        }),
    )
}

/// `GET /v1/retrieve/{key}`: the payer's blob, as raw bytes.
pub(super) async fn retrieve(
    State(stoka): State<Stoka>,
    Extension(paid): Extension<Paid>,
    Extension(guard): Extension<SettleGuard>,
    Segments(key): Segments<String>,
) -> Response {
    let owner = paid.payer.as_str();
    let blob = match stoka.storage().get_blob(owner, &key, stoka.now()).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return not_found(),
        Err(failure) => return unavailable(&failure),
    };
    if guard.settle().await.is_err() {
        return StatusCode::PAYMENT_REQUIRED.into_response();
    }
    stoka.count(&paid, 0, blob.body.len()).await;
    let mut response = (StatusCode::OK, blob.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(owner) = HeaderValue::from_str(owner) {
        headers.insert("x-stoka-owner-pubkey", owner);
    }
    if let Ok(expires) = HeaderValue::from_str(&rfc3339(blob.expires_at)) {
        headers.insert("x-stoka-expires-at", expires);
    }
    response
}

/// `DELETE /v1/object/{key}`: 204 whether or not there was a blob (existence is never
/// revealed).
pub(super) async fn remove(
    State(stoka): State<Stoka>,
    Segments(key): Segments<String>,
    headers: HeaderMap,
) -> Response {
    let wallet = match authorize(&stoka, &headers, Audience::ObjectDelete).await {
        Ok(wallet) => wallet,
        Err(response) => return response,
    };
    let _locked = stoka.key_lock(&wallet, &key).lock().await;
    match stoka.storage().delete_blob(&wallet, &key).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => unavailable(&failure),
    }
}

fn key_exists() -> Response {
    error(
        StatusCode::CONFLICT,
        "key_exists",
        "you already store a blob under this key: use PUT /v1/object/{key}",
    )
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such blob")
}
