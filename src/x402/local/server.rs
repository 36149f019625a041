//! Any [`Facilitator`] served over HTTP: `POST /verify`, `POST /settle`, `GET /supported`, with
//! optional `Authorization: Bearer` authentication on all three (as the OpenZeppelin facilitator
//! requires, so clients configured for it work unchanged).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::super::checks::reason;
use super::super::facilitator::{Facilitator, FacilitatorError, FacilitatorRequest};
use super::super::wire::PaymentRequirements;

struct Service {
    facilitator: Arc<dyn Facilitator>,
    bearer: Option<Vec<u8>>,
}

/// An axum router serving `facilitator` at `/verify`, `/settle` and `/supported`. With an
/// `api_key`, every request must carry `Authorization: Bearer <api_key>` (compared in constant
/// time); others get 401.
///
/// ```
/// # #[cfg(feature = "local-facilitator")] {
/// use std::sync::Arc;
/// use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};
/// use tower_paywall::x402::{LocalFacilitator, facilitator_router};
///
/// let rpc = JsonRpcClient::builder("https://soroban-rpc.example").build()?;
/// let facilitator = LocalFacilitator::builder(rpc, Network::testnet(), Keypair::from_seed([9; 32]))
///     .build()?;
/// let app: axum::Router = facilitator_router(Arc::new(facilitator), Some("secret".into()));
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn facilitator_router(facilitator: Arc<dyn Facilitator>, api_key: Option<String>) -> Router {
    let service = Arc::new(Service {
        facilitator,
        bearer: api_key.map(|key| format!("Bearer {key}").into_bytes()),
    });
    Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route("/supported", get(supported))
        .with_state(service)
}

/// The body of `/verify` and `/settle`, with the payload kept as the client wrote it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    x402_version: u32,
    payment_payload: Box<RawValue>,
    payment_requirements: PaymentRequirements,
}

/// Constant-time equality (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Service {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        match &self.bearer {
            None => true,
            Some(expected) => headers
                .get(header::AUTHORIZATION)
                .is_some_and(|value| same(value.as_bytes(), expected)),
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": "unauthorized" })),
    )
        .into_response()
}

fn upstream(error: &FacilitatorError) -> Response {
    let status = if error.outcome_unknown() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    tracing::warn!(%error, "facilitator call failed");
    (status, axum::Json(json!({ "error": "ledger_unavailable" }))).into_response()
}

fn parse(body: &Bytes) -> Option<Body> {
    serde_json::from_slice(body).ok()
}

async fn verify(State(service): State<Arc<Service>>, headers: HeaderMap, body: Bytes) -> Response {
    if !service.authorized(&headers) {
        return unauthorized();
    }
    let Some(body) = parse(&body) else {
        let refusal = json!({ "isValid": false, "invalidReason": reason::REQUIREMENTS_MALFORMED });
        return (StatusCode::BAD_REQUEST, axum::Json(refusal)).into_response();
    };
    let request = FacilitatorRequest {
        x402_version: body.x402_version,
        payment_payload: &body.payment_payload,
        payment_requirements: &body.payment_requirements,
    };
    match service.facilitator.verify(&request).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => upstream(&error),
    }
}

async fn settle(State(service): State<Arc<Service>>, headers: HeaderMap, body: Bytes) -> Response {
    if !service.authorized(&headers) {
        return unauthorized();
    }
    let Some(body) = parse(&body) else {
        let refusal = json!({
            "success": false,
            "errorReason": reason::REQUIREMENTS_MALFORMED,
            "transaction": "",
            "network": "",
        });
        return (StatusCode::BAD_REQUEST, axum::Json(refusal)).into_response();
    };
    let request = FacilitatorRequest {
        x402_version: body.x402_version,
        payment_payload: &body.payment_payload,
        payment_requirements: &body.payment_requirements,
    };
    match service.facilitator.settle(&request).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => upstream(&error),
    }
}

async fn supported(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    if !service.authorized(&headers) {
        return unauthorized();
    }
    match service.facilitator.supported().await {
        Ok(answer) => axum::Json(&*answer).into_response(),
        Err(error) => upstream(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_comparison_is_exact() {
        assert!(same(b"Bearer k", b"Bearer k"));
        assert!(!same(b"Bearer k", b"Bearer K"));
        assert!(!same(b"Bearer k", b"Bearer kk"));
        assert!(!same(b"", b"Bearer k"));
    }
}
