//! stoka's prices and limits, in USDC atomic units (1 USDC = 10^7). One place for every
//! formula: the routes price with [`Rates`] and [`Limits`], and the manifest publishes the same
//! values, so nothing a client reads is hard-coded apart from them.

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const DAY_SECONDS: u64 = 86_400;

/// The price parameters (defaults: the published stoka rates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    /// `store`/`update`: the base.
    pub store_base: u64,
    /// `store`/`update`: per started KiB.
    pub store_per_kib: u64,
    /// `store`/`update`: per started KiB and started day of life.
    pub store_per_kib_day: u64,
    /// `retrieve`: the base.
    pub retrieve_base: u64,
    /// `retrieve`: per started KiB.
    pub retrieve_per_kib: u64,
    /// `push`: the base.
    pub push_base: u64,
    /// `push`: per started KiB.
    pub push_per_kib: u64,
    /// `pop`: flat.
    pub pop: u64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            store_base: 1000,
            store_per_kib: 100,
            store_per_kib_day: 10,
            retrieve_base: 1000,
            retrieve_per_kib: 100,
            push_base: 200,
            push_per_kib: 50,
            pop: 100,
        }
    }
}

/// Whole KiB, rounded up.
fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(KIB)
}

impl Rates {
    /// `store` and `update`: `base + ceil(bytes / 1024) × (per_kib + ttl_days × per_kib_day)`,
    /// with `ttl_days = ceil(ttl_seconds / 86400)`; saturating.
    pub fn store(&self, bytes: u64, ttl_seconds: u64) -> u64 {
        let ttl_days = ttl_seconds.div_ceil(DAY_SECONDS);
        let per_kib = self
            .store_per_kib
            .saturating_add(ttl_days.saturating_mul(self.store_per_kib_day));
        self.store_base
            .saturating_add(kib(bytes).saturating_mul(per_kib))
    }

    /// `retrieve`: `base + per_kib × ceil(bytes / 1024)`.
    pub fn retrieve(&self, bytes: u64) -> u64 {
        self.retrieve_base
            .saturating_add(self.retrieve_per_kib.saturating_mul(kib(bytes)))
    }

    /// `push`: `base + per_kib × ceil(bytes / 1024)`.
    pub fn push(&self, bytes: u64) -> u64 {
        self.push_base
            .saturating_add(self.push_per_kib.saturating_mul(kib(bytes)))
    }
}

/// The limits (defaults: the published stoka limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest blob, in bytes.
    pub max_object_bytes: u64,
    /// The largest queue message, in bytes.
    pub max_message_bytes: u64,
    /// The shortest blob life, in seconds.
    pub min_ttl_seconds: u64,
    /// The longest blob life, in seconds.
    pub max_ttl_seconds: u64,
    /// A blob's life when the request names none, in seconds.
    pub default_ttl_seconds: u64,
    /// How long a popped message stays invisible, in seconds.
    pub visibility_timeout_seconds: u64,
    /// The longest long-poll of a `pop`, in seconds.
    pub max_wait_seconds: u64,
    /// Deliveries without an acknowledgement before a message goes to the dead letters.
    pub max_receives: u32,
    /// How long a message is kept, in seconds.
    pub retention_seconds: u64,
    /// How long a wallet challenge is valid, in seconds.
    pub challenge_ttl_seconds: u64,
    /// The most days `GET /v1/me/usage` answers.
    pub max_usage_days: u32,
    /// Free requests (wallet-signed routes, challenges, discovery) one client address may make
    /// a minute, in bursts of as many.
    pub free_requests_per_minute: u32,
    /// Wallet challenges issued a second, for all clients: with their lifetime, this caps the
    /// challenges outstanding at once (`challenges_per_second × challenge_ttl_seconds`).
    pub challenges_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 350_000,
            max_message_bytes: 262_144,
            min_ttl_seconds: 3_600,
            max_ttl_seconds: 31_536_000,
            default_ttl_seconds: 2_592_000,
            visibility_timeout_seconds: 30,
            max_wait_seconds: 20,
            max_receives: 10,
            retention_seconds: 4 * DAY_SECONDS,
            challenge_ttl_seconds: 300,
            max_usage_days: 90,
            free_requests_per_minute: 120,
            challenges_per_second: 50,
        }
    }
}

/// Why a TTL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Not a whole number of seconds.
    #[error("X-Stoka-TTL-Seconds must be a whole number of seconds")]
    NotANumber,
    /// Outside the bounds.
    #[error("X-Stoka-TTL-Seconds is out of range")]
    OutOfRange,
}

impl Limits {
    /// The TTL of a write, read from its `X-Stoka-TTL-Seconds` header's value: the one reading that
    /// pricing and the handler share, so that a quote is never refused after payment.
    ///
    /// # Errors
    ///
    /// [`TtlError`] for a value that is not text, or anything but digits within the bounds.
    pub fn ttl_of(&self, header: Option<&http::HeaderValue>) -> Result<u64, TtlError> {
        match header {
            None => Ok(self.default_ttl_seconds),
            Some(value) => {
                self.ttl_seconds(Some(value.to_str().map_err(|_| TtlError::NotANumber)?))
            }
        }
    }

    /// The TTL of a write: the header's text, or the default when there is none.
    ///
    /// # Errors
    ///
    /// [`TtlError`] for anything but digits within the bounds.
    pub fn ttl_seconds(&self, header: Option<&str>) -> Result<u64, TtlError> {
        let Some(text) = header.map(str::trim) else {
            return Ok(self.default_ttl_seconds);
        };
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(TtlError::NotANumber);
        }
        let seconds: u64 = text.parse().map_err(|_| TtlError::OutOfRange)?;
        if !(self.min_ttl_seconds..=self.max_ttl_seconds).contains(&seconds) {
            return Err(TtlError::OutOfRange);
        }
        Ok(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_the_formulas_at_the_edges() {
        let rates = Rates::default();
        let limits = Limits::default();
        let thirty_days = limits.default_ttl_seconds;
        // (bytes, store for 30 days, store for 1 hour, store for 365 days, retrieve, push)
        let table = [
            (0, 1000, 1000, 1000, 1000, 200),
            (1, 1400, 1110, 4750, 1100, 250),
            (1024, 1400, 1110, 4750, 1100, 250),
            (1025, 1800, 1220, 8500, 1200, 300),
            (
                350_000,
                1000 + 342 * 400,
                1000 + 342 * 110,
                1000 + 342 * 3750,
                1000 + 34_200,
                200 + 50 * 342,
            ),
        ];
        for (bytes, store_30, store_hour, store_year, retrieve, push) in table {
            assert_eq!(rates.store(bytes, thirty_days), store_30, "{bytes} B, 30 d");
            assert_eq!(
                rates.store(bytes, limits.min_ttl_seconds),
                store_hour,
                "{bytes} B, 1 h"
            );
            assert_eq!(
                rates.store(bytes, limits.max_ttl_seconds),
                store_year,
                "{bytes} B, 365 d"
            );
            assert_eq!(rates.retrieve(bytes), retrieve, "{bytes} B");
            assert_eq!(rates.push(bytes), push, "{bytes} B");
        }
        // A day and one second is two days.
        assert_eq!(rates.store(1024, DAY_SECONDS + 1), 1000 + 120);
        // Absurd configured rates saturate rather than wrap.
        let absurd = Rates {
            store_per_kib_day: u64::MAX,
            ..Rates::default()
        };
        assert_eq!(absurd.store(1024, 86_400), u64::MAX);
    }

    #[test]
    fn a_ttl_header_that_is_not_text_is_refused_not_defaulted() {
        let limits = Limits::default();
        assert_eq!(limits.ttl_of(None), Ok(limits.default_ttl_seconds));
        let not_text = http::HeaderValue::from_bytes(b"3600\xff").unwrap();
        assert_eq!(limits.ttl_of(Some(&not_text)), Err(TtlError::NotANumber));
        let text = http::HeaderValue::from_static("7200");
        assert_eq!(limits.ttl_of(Some(&text)), Ok(7200));
    }

    #[test]
    fn ttls_are_bounded_whole_seconds() {
        let limits = Limits::default();
        assert_eq!(limits.ttl_seconds(None), Ok(2_592_000));
        assert_eq!(limits.ttl_seconds(Some("3600")), Ok(3600));
        assert_eq!(limits.ttl_seconds(Some(" 31536000 ")), Ok(31_536_000));
        assert_eq!(limits.ttl_seconds(Some("3599")), Err(TtlError::OutOfRange));
        assert_eq!(
            limits.ttl_seconds(Some("31536001")),
            Err(TtlError::OutOfRange)
        );
        assert_eq!(
            limits.ttl_seconds(Some("99999999999999999999999")),
            Err(TtlError::OutOfRange)
        );
        for bad in ["", "-3600", "+3600", "3600.0", "1e4", "one"] {
            assert_eq!(
                limits.ttl_seconds(Some(bad)),
                Err(TtlError::NotANumber),
                "{bad:?}"
            );
        }
    }
}
