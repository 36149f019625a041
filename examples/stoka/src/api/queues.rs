//! Mailbox queues: `push` (paid by the sender), `pop` (paid by the owner, long-poll) and `ack`
//! (wallet-signed).

use std::time::Duration;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tower_paywall::{Paid, SettleGuard};

use super::paywall::{parse_wait, valid_topic, valid_wallet, wait_from_query};
use super::wallet::authorize;
use super::{Segments, Stoka, error, json_response, unavailable};
use crate::auth::Audience;
use crate::clock::rfc3339;
use crate::storage::{Ack, Delivery, NewMessage, PopOptions, StorageError};

/// How often a long-poll looks again without a wake-up (messages whose visibility lapsed,
/// pushes through another node).
const RECHECK: Duration = Duration::from_millis(500);

/// `POST /v1/queue/{to}/{topic}/push`.
pub(super) async fn push(
    State(stoka): State<Stoka>,
    Extension(paid): Extension<Paid>,
    Extension(guard): Extension<SettleGuard>,
    Segments((to, topic)): Segments<(String, String)>,
    body: Bytes,
) -> Response {
    let limits = stoka.inner.limits;
    if !valid_wallet(&to) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_recipient",
            "bad recipient",
        );
    }
    if !valid_topic(&topic) {
        return error(StatusCode::BAD_REQUEST, "invalid_topic", "bad topic");
    }
    if body.len() as u64 > limits.max_message_bytes {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "message too large",
        );
    }
    if guard.settle().await.is_err() {
        return StatusCode::PAYMENT_REQUIRED.into_response();
    }
    let now = stoka.now();
    let message = NewMessage {
        body: &body,
        from: &paid.payer,
        sent_at: now,
        expires_at: now.saturating_add(limits.retention_seconds.saturating_mul(1000)),
    };
    let message_id = match stoka.storage().push(&to, &topic, message).await {
        Ok(id) => id,
        Err(failure) => return unavailable(&failure),
    };
    stoka.mailbox(&to, &topic).notify_waiters();
    let charged = stoka.count(&paid, body.len(), 0).await;
    json_response(
        StatusCode::OK,
        json!({
            "message_id": message_id,
            "to_pubkey": to,
            "topic": topic,
            "size_bytes": body.len(),
            "sent_at": rfc3339(now),
            "charged_atomic": charged,
        }),
    )
}

/// `POST /v1/queue/{topic}/pop`: the oldest visible message of the payer's mailbox, waiting up
/// to `wait_seconds` (query or JSON body) for one.
pub(super) async fn pop(
    State(stoka): State<Stoka>,
    Extension(paid): Extension<Paid>,
    Extension(guard): Extension<SettleGuard>,
    Segments(topic): Segments<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let limits = stoka.inner.limits;
    if !valid_topic(&topic) {
        return error(StatusCode::BAD_REQUEST, "invalid_topic", "bad topic");
    }
    let Some(wait) = wait_seconds(query.as_deref(), &body, limits.max_wait_seconds) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_wait",
            &format!(
                "wait_seconds must be a whole number from 0 to {}",
                limits.max_wait_seconds
            ),
        );
    };
    if guard.settle().await.is_err() {
        return StatusCode::PAYMENT_REQUIRED.into_response();
    }
    let delivery = match long_poll(&stoka, &paid.payer, &topic, Duration::from_secs(wait)).await {
        Ok(delivery) => delivery,
        Err(failure) => return unavailable(&failure),
    };
    let bytes_out = delivery.as_ref().map_or(0, |delivery| delivery.body.len());
    stoka.count(&paid, 0, bytes_out).await;
    let body = match delivery {
        None => json!({ "empty": true, "topic": topic }),
        Some(delivery) => delivered_json(&topic, &delivery),
    };
    json_response(StatusCode::OK, body)
}

/// A delivered message as `pop` and `stream` answer it.
fn delivered_json(topic: &str, delivery: &Delivery) -> Value {
    json!({
        "message_id": delivery.message_id,
        "topic": topic,
        "body": STANDARD.encode(&delivery.body),
        "receipt": delivery.receipt,
        "attributes": {
            "from_pubkey": delivery.from,
            "sent_at": rfc3339(delivery.sent_at),
            "receive_count": delivery.receive_count,
        },
    })
}

/// How long a stream waits for a message before it sends a keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a stream lasts at most: a client that wants more opens another.
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);

/// How many mailbox streams one payer may have open at once.
pub(crate) const STREAMS_PER_PAYER: usize = 4;

/// A payer's open stream, counted until it is dropped.
struct StreamSlot {
    stoka: Stoka,
    payer: String,
}

impl StreamSlot {
    fn take(stoka: &Stoka, payer: &str) -> Option<StreamSlot> {
        let mut streams = stoka
            .inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(payer.to_owned()).or_default();
        if *open >= STREAMS_PER_PAYER {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            stoka: stoka.clone(),
            payer: payer.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = (self.stoka.inner.streams.lock()).unwrap_or_else(|e| e.into_inner());
        if let Some(open) = streams.get_mut(&self.payer) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.payer);
            }
        }
    }
}

/// `GET /v1/queue/{topic}/stream`: the payer's mailbox as server-sent events (or WebSocket
/// messages, on upgrade), a message each as it arrives, in the `pop` answer's JSON. The layer
/// meters it: each message is charged at the pop price from the payer's channel, and goes out
/// only once paid; one popped and not sent (the stream ended first) is delivered again once its
/// visibility timeout lapses. Acks as for `pop`. A payer has at most
/// [`STREAMS_PER_PAYER`] open (429 beyond, its opening voucher left to the channel as credit);
/// a stream lasts at most an hour, and ends when the server stops.
pub(super) async fn stream(
    State(stoka): State<Stoka>,
    Extension(paid): Extension<Paid>,
    Segments(topic): Segments<String>,
) -> Response {
    if !valid_topic(&topic) {
        return error(StatusCode::BAD_REQUEST, "invalid_topic", "bad topic");
    }
    let Some(slot) = StreamSlot::take(&stoka, &paid.payer) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            &format!("at most {STREAMS_PER_PAYER} streams of a payer at once"),
        );
    };
    let ends = tokio::time::Instant::now() + STREAM_LIFETIME;
    let closing = stoka.inner.closing.subscribe();
    let state = (slot, paid, topic, closing);
    let events = futures_util::stream::unfold(state, move |state| async move {
        let (slot, paid, topic, mut closing) = state;
        let stoka = slot.stoka.clone();
        let wait = KEEP_ALIVE.min(ends.saturating_duration_since(tokio::time::Instant::now()));
        if wait.is_zero() || *closing.borrow() {
            return None;
        }
        let delivered = tokio::select! {
            delivered = long_poll(&stoka, &paid.payer, &topic, wait) => delivered,
            _ = closing.wait_for(|closing| *closing) => return None,
        };
        let event = match delivered {
            Ok(Some(delivery)) => {
                stoka.count(&paid, 0, delivery.body.len()).await;
                let data = delivered_json(&topic, &delivery);
                format!("id: {}\ndata: {data}\n\n", delivery.message_id)
            }
            Ok(None) => ": keep-alive\n\n".to_owned(),
            Err(failure) => {
                tracing::warn!(error = %failure, "a queue stream ends: storage unavailable");
                return None;
            }
        };
        let state = (slot, paid, topic, closing);
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(event)), state))
    });
    (
        [
            (http::header::CONTENT_TYPE, "text/event-stream"),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(events),
    )
        .into_response()
}

/// `wait_seconds` from the query or else a JSON body; `None` when invalid. Default 0.
fn wait_seconds(query: Option<&str>, body: &[u8], max: u64) -> Option<u64> {
    if let Some(wait) = wait_from_query(query) {
        return parse_wait(wait, max);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(0);
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    match value.get("wait_seconds") {
        None | Some(Value::Null) => Some(0),
        Some(wait) => wait.as_u64().filter(|wait| *wait <= max),
    }
}

/// Pops until a message comes or `wait` passes; a push to the mailbox wakes it at once.
async fn long_poll(
    stoka: &Stoka,
    owner: &str,
    topic: &str,
    wait: Duration,
) -> Result<Option<Delivery>, StorageError> {
    let limits = stoka.inner.limits;
    let options = PopOptions {
        visibility_ms: limits.visibility_timeout_seconds.saturating_mul(1000),
        max_receives: limits.max_receives,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mailbox = stoka.mailbox(owner, topic);
    loop {
        // Listen before looking, so a push between the look and the wait is not missed.
        let notified = mailbox.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(delivery) = stoka
            .storage()
            .pop(owner, topic, stoka.now(), options)
            .await?
        {
            return Ok(Some(delivery));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let pause = (deadline - now).min(RECHECK);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// `POST /v1/queue/{topic}/ack/{receipt}`: deletes the message if the receipt is from its
/// latest delivery. 204; 409 for a stale receipt; 404 for an unknown one.
pub(super) async fn ack(
    State(stoka): State<Stoka>,
    Segments((topic, receipt)): Segments<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let wallet = match authorize(&stoka, &headers, Audience::QueueAck).await {
        Ok(wallet) => wallet,
        Err(response) => return response,
    };
    match stoka
        .storage()
        .ack(&wallet, &topic, &receipt, stoka.now())
        .await
    {
        Ok(Ack::Deleted) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ack::Stale) => error(
            StatusCode::CONFLICT,
            "stale_receipt",
            "the message was delivered again since this receipt: ack the latest delivery",
        ),
        Ok(Ack::Unknown) => error(
            StatusCode::NOT_FOUND,
            "unknown_receipt",
            "no message waits for this receipt (acknowledged already, expired, or unknown)",
        ),
        Err(failure) => unavailable(&failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_comes_from_the_query_or_the_body() {
        assert_eq!(wait_seconds(None, b"", 20), Some(0));
        assert_eq!(wait_seconds(Some("wait_seconds=7"), b"", 20), Some(7));
        assert_eq!(wait_seconds(None, br#"{"wait_seconds": 20}"#, 20), Some(20));
        assert_eq!(wait_seconds(None, br#"{}"#, 20), Some(0));
        for bad in [
            &br#"{"wait_seconds": 21}"#[..],
            b"{",
            br#"{"wait_seconds": -1}"#,
            br#"{"wait_seconds": "5"}"#,
        ] {
            assert_eq!(
                wait_seconds(None, bad, 20),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(wait_seconds(Some("wait_seconds=99"), b"", 20), None);
    }
}
