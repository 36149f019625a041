//! stoka's HTTP service: the routes of `STOKA.md` on an axum [`Router`], behind the payment
//! layer of `tower-paywall`.
//!
//! - Paid routes are priced by [`paywall::StokaPricing`], which answers 400, 404, 409, 411 and
//!   413 before any money moves, and run in the layer's in-handler order: validate → settle
//!   through the [`SettleGuard`](tower_paywall::SettleGuard) → commit. A failed settlement
//!   leaves nothing visible; a retry of the same payment gets the recorded answer.
//! - Wallet-signed routes check a single-use challenge ([`crate::auth`]).
//! - Every JSON body, errors too, carries `"service":"stoka","audience":"agent",
//!   "api_family":"stoka-x402-v1"`.

mod blobs;
mod discovery;
mod limits;
pub mod paywall;
mod queues;
mod wallet;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tower_paywall::{Paid, PaymentLayer};

use crate::clock::{Clock, day_of};
use crate::pricing::{Limits, Rates};
use crate::storage::{Storage, StorageError, Usage};

pub use discovery::{MppInfo, ServiceInfo, X402Info};

/// How many stripes the per-key locks and the mailbox wake-ups are spread over.
const STRIPES: usize = 256;

/// The service's state, shared by every route. Cheap to clone.
#[derive(Clone)]
pub struct Stoka {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rates: Rates,
    pub(crate) limits: Limits,
    pub(crate) info: ServiceInfo,
    /// Serializes validate → settle → commit per (owner, key), so a checked key cannot change
    /// between the check and the commit on this node.
    key_locks: Vec<Mutex<()>>,
    /// Wakes long-polling `pop`s of a mailbox when a message is pushed to it.
    mailboxes: Vec<Notify>,
    /// Free requests by client address.
    pub(crate) free: limits::FreeLimiter,
    /// Wallet challenges issued, for everyone.
    pub(crate) challenges: limits::ChallengeLimiter,
    /// The mailbox streams open, by payer.
    pub(crate) streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Set when the server stops: the streams end (their credit goes back, their receipt
    /// goes out) so that connections drain.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Stoka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stoka")
            .field("info", &self.inner.info)
            .finish_non_exhaustive()
    }
}

fn stripe(parts: &[&str]) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}

impl Stoka {
    /// The service over `storage`, with its prices, limits and public description.
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        rates: Rates,
        limits: Limits,
        info: ServiceInfo,
    ) -> Stoka {
        Stoka {
            inner: Arc::new(Inner {
                storage,
                clock,
                rates,
                limits,
                info,
                key_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                mailboxes: (0..STRIPES).map(|_| Notify::new()).collect(),
                free: limits::free_limiter(limits.free_requests_per_minute),
                challenges: limits::challenge_limiter(limits.challenges_per_second),
                streams: std::sync::Mutex::default(),
                closing: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// Now, by the service's clock.
    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now()
    }

    /// The lock of `(owner, key)`.
    pub(crate) fn key_lock(&self, owner: &str, key: &str) -> &Mutex<()> {
        &self.inner.key_locks[stripe(&[owner, key])]
    }

    /// The wake-up of the mailbox `(owner, topic)`.
    pub(crate) fn mailbox(&self, owner: &str, topic: &str) -> &Notify {
        &self.inner.mailboxes[stripe(&[owner, topic])]
    }

    /// Counts one paid operation in its payer's counters of today: `bytes_in` received,
    /// `bytes_out` sent, and what was paid. Returns what was charged (atomic units). A failure
    /// to count is logged: the operation itself is done and paid.
    pub(crate) async fn count(&self, paid: &Paid, bytes_in: usize, bytes_out: usize) -> u64 {
        let charged = u64::try_from(paid.amount.atomic()).unwrap_or(0);
        let usage = Usage {
            operations: 1,
            bytes_in: bytes_in as u64,
            bytes_out: bytes_out as u64,
            charged_atomic: charged,
        };
        let day = day_of(self.now());
        if let Err(error) = self.inner.storage.add_usage(&paid.payer, day, usage).await {
            tracing::error!(%error, "cannot count usage");
        }
        charged
    }

    /// Ends the mailbox streams (the server is stopping): each sends its final receipt, and
    /// gives back to its channel what it did not draw.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Removes expired records every `period`, in batches, for as long as the runtime runs.
    pub fn spawn_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let stoka = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                stoka.forget_quiet_clients();
                loop {
                    match stoka.inner.storage.sweep_expired(stoka.now(), 1000).await {
                        Ok(1000) => continue,
                        Ok(swept) => {
                            if swept > 0 {
                                tracing::debug!(swept, "expired records removed");
                            }
                            break;
                        }
                        Err(error) => {
                            tracing::error!(%error, "sweep failed");
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// The routes. `paid` guards every paid route but `pop`; `pop_paid` guards `pop` (it may also
/// offer MPP `channel`). Build both with [`paywall::layers`].
pub fn router(stoka: Stoka, paid: PaymentLayer, pop_paid: PaymentLayer) -> Router {
    let paid_routes = Router::new()
        .route("/v1/store", post(blobs::store))
        .route("/v1/retrieve/{key}", get(blobs::retrieve))
        .route("/v1/object/{key}", put(blobs::update))
        .route("/v1/queue/{to}/{topic}/push", post(queues::push))
        .layer(paid);
    let pop_route = Router::new()
        .route("/v1/queue/{topic}/pop", post(queues::pop))
        .route(
            "/v1/queue/{topic}/stream",
            get(queues::stream).post(queues::stream),
        )
        .layer(pop_paid);
    let free = Router::new()
        .route("/v1/object/{key}", delete(blobs::remove))
        .route("/v1/queue/{topic}/ack/{receipt}", post(queues::ack))
        .route("/v1/auth/challenge", post(wallet::challenge))
        .route("/v1/profile", post(wallet::profile))
        .route("/v1/me/usage", get(wallet::usage))
        .route("/.well-known/stoka.json", get(discovery::manifest))
        .route("/.well-known/stoka", get(discovery::manifest))
        .route("/llms.txt", get(discovery::llms))
        .route("/", get(discovery::landing))
        .route("/dashboard.html", get(discovery::dashboard))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            stoka.clone(),
            limits::free_requests,
        ));
    Router::new()
        .merge(paid_routes)
        .merge(pop_route)
        .merge(free)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no_route", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route is not served for this method (the route map is in /.well-known/stoka.json)",
            )
        })
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(stoka)
}

/// The last word on errors: one the routes did not write as JSON (an extractor's rejection, a
/// body that failed or came too slowly) becomes stoka's stamped JSON, its headers kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| {
            kind.starts_with("application/json") || kind.starts_with("application/problem+json")
        });
    if json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The text of axum's rejections is short; anything longer is cut.
    let text = axum::body::to_bytes(body, 1024).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text);
    let message = match message.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        text => text.chars().take(200).collect(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        _ if status.is_client_error() => "bad_request",
        _ => "internal_error",
    };
    let mut answer = error(status, code, &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// Path parameters; a segment that is not UTF-8 once percent-decoded is stoka's JSON 400
/// `invalid_path`, not the router's plain text.
pub(crate) struct Segments<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Segments<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(segments)) => Ok(Segments(segments)),
            Err(_) => Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "a path segment is not UTF-8 once percent-decoded",
            )),
        }
    }
}

/// Adds stoka's stamp to a JSON object.
fn stamp(mut body: Value) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("service".into(), "stoka".into());
        map.insert("audience".into(), "agent".into());
        map.insert("api_family".into(), "stoka-x402-v1".into());
    }
    body
}

/// A stamped JSON answer, in the body type both the routes and the pricing hook use.
pub(crate) fn json_answer(status: StatusCode, body: Value) -> http::Response<Bytes> {
    let bytes = serde_json::to_vec(&stamp(body)).unwrap_or_default();
    let mut response = http::Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A stamped JSON error: `{error, message}`.
pub(crate) fn error_answer(status: StatusCode, code: &str, message: &str) -> http::Response<Bytes> {
    json_answer(status, json!({ "error": code, "message": message }))
}

/// A stamped JSON response.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    json_answer(status, body).map(Body::from)
}

/// A stamped JSON error response: `{error, message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    error_answer(status, code, message).map(Body::from)
}

/// The answer when the store fails: 503, so the client retries (with the same payment, which
/// is not charged twice).
pub(crate) fn unavailable(error: &StorageError) -> Response {
    tracing::error!(%error, "storage failed");
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "error": "storage_unavailable",
            "message": "the store is unavailable; retry with the same payment",
        }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    response
}
