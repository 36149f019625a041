//! `/metrics`: the payment layers' counters and histograms (see `tower_paywall::layer::metrics`)
//! as Prometheus text, on a listen address of its own (off unless configured; `stoka dev`
//! turns it on).

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::server::ServerError;

/// The process's Prometheus recorder, installed on first use.
///
/// # Errors
///
/// [`ServerError::Payment`] when another recorder was installed first.
pub fn recorder() -> Result<PrometheusHandle, ServerError> {
    tower_paywall::layer::metrics::prometheus()
        .map_err(|error| ServerError::Payment(format!("metrics: {error}")))
}

/// The router answering `GET /metrics` with `handle`'s Prometheus text.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        tower_paywall::layer::metrics::PROMETHEUS_CONTENT_TYPE,
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Serves `/metrics` on `listener` for as long as the runtime runs; its URL.
///
/// # Errors
///
/// [`ServerError`] when the recorder cannot be installed or the address not read.
pub fn spawn(listener: tokio::net::TcpListener) -> Result<String, ServerError> {
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let app = router(recorder()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
