//! Serving on a hostile network: a deadline on each request's head (which is also how long a
//! kept-alive connection may sit idle), a deadline on each request's body, and a bound on the
//! connections served at once ([`HttpLimits`]). A client that trickles bytes or holds
//! connections open is let go; the others are served meanwhile.
//!
//! | limit | on expiry |
//! |---|---|
//! | `header_timeout_seconds` | the connection is closed (hyper's header read timeout) |
//! | `body_timeout_seconds` | the body fails: the handler answers 400 (JSON), nothing is charged |
//! | `max_connections` | further connections wait in the listen queue until one closes |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpLimits;

/// How long open connections are given to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then lets the open
/// connections finish (for at most 10 s).
///
/// # Errors
///
/// None so far: a failed accept is logged and retried.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let body_timeout = Duration::from_secs(limits.body_timeout_seconds);
    let router = router.layer(axum::middleware::map_request(
        move |request: axum::extract::Request| async move {
            request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)))
        },
    ));
    // HTTP/1.1 only (stoka's routes are HTTP/1.1): the head's deadline runs from the first
    // moment, where a protocol-sniffing server would first wait for bytes with none.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_seconds));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection, once shutdown starts, finishes its request and closes.
    let (draining, drain) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was taken.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Each request knows its peer (`ConnectInfo`), for the limits per client address.
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut router.clone(), request)
        });
        // Upgrades on: a queue stream may be a WebSocket (the permit goes with the HTTP
        // connection; a socket's own life is bounded by its payment).
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut drain = drain.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async { drop(drain.wait_for(|draining| *draining).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = draining.send(true);
    // Every connection has ended once all the permits are back.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period");
    }
    Ok(())
}

/// A request body that fails once its deadline passes, however its bytes trickle in.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(
                "the request body was not received in time",
            ))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
