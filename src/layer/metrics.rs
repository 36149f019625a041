//! What the layer counts and times, through the `metrics` facade: nothing is recorded until
//! the application installs a recorder (a Prometheus exporter, for instance).
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `tower_paywall_payment_required_total` | counter | | 402s (and 400/410s) answered with fresh offers |
//! | `tower_paywall_verifications_total` | counter | `intent`, `outcome` (`accepted`, `refused`) | credentials verified |
//! | `tower_paywall_verify_seconds` | histogram | `intent` | time to verify a credential |
//! | `tower_paywall_settlements_total` | counter | `intent`, `outcome` (`settled`, `failed`, `unknown`) | settlements ended |
//! | `tower_paywall_settle_seconds` | histogram | `intent` | time to settle |
//! | `tower_paywall_settlements_in_flight` | gauge | | settlements started and not ended |
//! | `tower_paywall_reconciliations_total` | counter | `intent`, `outcome` (`settled`, `not_settled`) | payments ended from the ledger |

use std::sync::Once;
use std::time::Duration;

use crate::scheme::Intent;

/// 402s (and 400/410s) answered with fresh offers.
pub const PAYMENT_REQUIRED: &str = "tower_paywall_payment_required_total";
/// Credentials verified, by `intent` and `outcome`.
pub const VERIFICATIONS: &str = "tower_paywall_verifications_total";
/// Time to verify a credential, by `intent`.
pub const VERIFY_SECONDS: &str = "tower_paywall_verify_seconds";
/// Settlements ended, by `intent` and `outcome`.
pub const SETTLEMENTS: &str = "tower_paywall_settlements_total";
/// Time to settle, by `intent`.
pub const SETTLE_SECONDS: &str = "tower_paywall_settle_seconds";
/// Settlements started and not ended.
pub const IN_FLIGHT: &str = "tower_paywall_settlements_in_flight";
/// Payments ended from the ledger, by `intent` and `outcome`.
pub const RECONCILIATIONS: &str = "tower_paywall_reconciliations_total";

/// The `Content-Type` of Prometheus text.
#[cfg(feature = "prometheus")]
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process's Prometheus recorder, installed on first call (the `metrics` facade has one
/// recorder a process): [`render`](metrics_exporter_prometheus::PrometheusHandle::render) is
/// what a `/metrics` route answers with ([`PROMETHEUS_CONTENT_TYPE`]). Install it before the
/// layers are built, so that the metrics' descriptions reach it.
///
/// # Errors
///
/// When another recorder was installed first.
#[cfg(feature = "prometheus")]
pub fn prometheus()
-> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Describes the metrics to the recorder, once per process.
pub(crate) fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(PAYMENT_REQUIRED, "402s answered with fresh offers");
        metrics::describe_counter!(VERIFICATIONS, "payment credentials verified");
        metrics::describe_histogram!(
            VERIFY_SECONDS,
            metrics::Unit::Seconds,
            "time to verify a payment credential"
        );
        metrics::describe_counter!(SETTLEMENTS, "payment settlements ended");
        metrics::describe_histogram!(
            SETTLE_SECONDS,
            metrics::Unit::Seconds,
            "time to settle a payment"
        );
        metrics::describe_gauge!(IN_FLIGHT, "payment settlements in flight");
        metrics::describe_counter!(RECONCILIATIONS, "payments ended from the ledger");
    });
}

/// A 402 with fresh offers.
pub(crate) fn payment_required() {
    metrics::counter!(PAYMENT_REQUIRED).increment(1);
}

/// A verification ended after `took`.
pub(crate) fn verified(intent: Intent, accepted: bool, took: Duration) {
    let intent = intent.to_string();
    let outcome = if accepted { "accepted" } else { "refused" };
    metrics::counter!(VERIFICATIONS, "intent" => intent.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(VERIFY_SECONDS, "intent" => intent).record(took.as_secs_f64());
}

/// A settlement starts.
pub(crate) fn settling() {
    metrics::gauge!(IN_FLIGHT).increment(1.0);
}

/// A settlement ended (`settled`, `failed`, `unknown`) after `took`.
pub(crate) fn settled(intent: Intent, outcome: &'static str, took: Duration) {
    let intent = intent.to_string();
    metrics::gauge!(IN_FLIGHT).decrement(1.0);
    metrics::counter!(SETTLEMENTS, "intent" => intent.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(SETTLE_SECONDS, "intent" => intent).record(took.as_secs_f64());
}

/// A payment ended from the ledger (`settled`, `not_settled`).
pub(crate) fn reconciled(intent: Intent, outcome: &'static str) {
    metrics::counter!(RECONCILIATIONS, "intent" => intent.to_string(), "outcome" => outcome)
        .increment(1);
}
