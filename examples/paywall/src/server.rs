//! Serving a [`Gateway`]: the accept loop (HTTP/1.1 and HTTP/2, a header deadline, graceful
//! shutdown), the reload on `SIGHUP`, and the background reconciliation of payments whose
//! settlement outcome is unknown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, GatewayError};
use crate::routes::{Routes, RoutesError};

/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most connections served at once (each holds a socket and its buffers).
pub const MAX_CONNECTIONS: usize = 10_000;
/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often payments whose settlement outcome is unknown are looked up on the ledger.
const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

/// Why a routes file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It cannot be read.
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// It is not a routes file.
    #[error("{0}: {1}")]
    Routes(PathBuf, RoutesError),
    /// The gateway cannot serve it.
    #[error("{0}: {1}")]
    Gateway(PathBuf, GatewayError),
}

/// Reads and checks the routes file at `path`.
///
/// # Errors
///
/// [`LoadError::Read`] or [`LoadError::Routes`].
pub fn read(path: &Path) -> Result<Routes, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.into(), e))?;
    Routes::parse(&text).map_err(|e| LoadError::Routes(path.into(), e))
}

/// Reads the routes file at `path` again and serves it; a file that is not taken leaves the
/// one served as it was.
///
/// # Errors
///
/// [`LoadError`], saying what is wrong with the file.
pub fn reload(gateway: &Gateway, path: &Path) -> Result<usize, LoadError> {
    let routes = read(path)?;
    let count = routes.routes.len();
    gateway
        .reload(routes)
        .map_err(|e| LoadError::Gateway(path.into(), e))?;
    Ok(count)
}

/// Reloads the routes file at `path` on every `SIGHUP`, logging what happened.
///
/// # Errors
///
/// When the signal cannot be listened for.
pub fn reload_on_hangup(gateway: Gateway, path: PathBuf) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match reload(&gateway, &path) {
                Ok(count) => {
                    tracing::info!(routes = count, file = %path.display(), "routes reloaded")
                }
                Err(error) => {
                    tracing::error!(%error, "routes not reloaded: the previous ones stay");
                    eprintln!("paywall: routes not reloaded, the previous ones stay: {error}");
                }
            }
        }
    });
    Ok(())
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then lets connections finish;
/// meanwhile, payments whose settlement outcome is unknown are reconciled from the ledger.
///
/// # Errors
///
/// Never, today (accept errors are logged and waited out).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let reconciler = tokio::spawn(gateway.reconciling_layer().reconciler(RECONCILE_PERIOD));
    let served = accept(
        listener,
        move |remote| crate::gateway::service(gateway.clone(), remote),
        shutdown,
    )
    .await;
    reconciler.abort();
    served
}

/// Accepts connections on `listener` until `shutdown` resolves, serving each (HTTP/1.1 or
/// HTTP/2, a deadline for a request's head, at most [`MAX_CONNECTIONS`] at once) with
/// `service(its peer)`; then lets them finish.
///
/// # Errors
///
/// Never, today (accept errors are logged and waited out).
pub async fn accept<S, B>(
    listener: TcpListener,
    service: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // An HTTP/2 connection that stops answering pings is closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At most MAX_CONNECTIONS at once: the next waits in the listener's backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (builder, watcher, service) = (builder.clone(), graceful.watcher(), service(remote));
                tokio::spawn(async move {
                    // A connection that says nothing gives its place back (the head's own
                    // deadline starts with its first byte).
                    let mut first = [0u8; 1];
                    let said = tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await;
                    if matches!(said, Ok(Ok(n)) if n > 0) {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        if let Err(error) = watcher.watch(connection.into_owned()).await {
                            tracing::debug!(%error, "connection ended");
                        }
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown were dropped");
    }
    Ok(())
}

/// Serves `GET /metrics` on `listener` until the runtime ends: the payment layers' counters
/// and histograms (`tower_paywall::layer::metrics`) as Prometheus text. Call it before the
/// gateway is built, so that the metrics' descriptions reach the recorder. Its URL.
///
/// # Errors
///
/// When another metrics recorder was installed first, or the address cannot be read.
pub fn spawn_metrics(listener: TcpListener) -> Result<String, String> {
    use tower_paywall::layer::metrics::{PROMETHEUS_CONTENT_TYPE, prometheus};
    let handle = prometheus().map_err(|error| format!("metrics: {error}"))?;
    let url = format!(
        "http://{}/metrics",
        listener.local_addr().map_err(|error| error.to_string())?
    );
    let service = move |_remote| {
        let handle = handle.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let handle = handle.clone();
            async move {
                let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                if request.uri().path() == "/metrics" {
                    *response.body_mut() = http_body_util::Full::new(handle.render().into());
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
                    );
                } else {
                    *response.status_mut() = http::StatusCode::NOT_FOUND;
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    tokio::spawn(accept(listener, service, std::future::pending()));
    Ok(url)
}

/// Resolves on Ctrl-C or `SIGTERM`.
pub async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
