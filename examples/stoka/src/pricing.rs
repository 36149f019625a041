//! stoka's prices and limits, in USDC atomic units (1 USDC = 10^7). One place for every
//! formula: the routes price with these, and the manifest publishes them.

/// The largest blob, in bytes.
pub const MAX_OBJECT_BYTES: u64 = 350_000;
/// The largest queue message, in bytes.
pub const MAX_MESSAGE_BYTES: u64 = 262_144;
/// The shortest blob life, in seconds (1 hour).
pub const MIN_TTL_SECONDS: u64 = 3_600;
/// The longest blob life, in seconds (365 days).
pub const MAX_TTL_SECONDS: u64 = 31_536_000;
/// A blob's life when the request names none, in seconds (30 days).
pub const DEFAULT_TTL_SECONDS: u64 = 2_592_000;
/// The price of a `pop`, flat.
pub const POP_PRICE: i128 = 100;

const KIB: u64 = 1024;
const DAY_SECONDS: u64 = 86_400;

/// Why a TTL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Not a whole number of seconds.
    #[error("X-Stoka-TTL-Seconds must be a whole number of seconds")]
    NotANumber,
    /// Outside 3600..=31536000.
    #[error("X-Stoka-TTL-Seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}")]
    OutOfRange,
}

/// The TTL of a write: the `X-Stoka-TTL-Seconds` header's value, or the default.
///
/// # Errors
///
/// [`TtlError`] for anything but digits within the bounds.
pub fn ttl_seconds(header: Option<&str>) -> Result<u64, TtlError> {
    let Some(text) = header.map(str::trim) else {
        return Ok(DEFAULT_TTL_SECONDS);
    };
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(TtlError::NotANumber);
    }
    let seconds: u64 = text.parse().map_err(|_| TtlError::OutOfRange)?;
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(TtlError::OutOfRange);
    }
    Ok(seconds)
}

/// Whole KiB, rounded up.
fn kib(bytes: u64) -> i128 {
    i128::from(bytes.div_ceil(KIB))
}

/// `store` and `update`: `1000 + ceil(bytes / 1024) × (100 + ttl_days × 10)`, with
/// `ttl_days = ceil(ttl_seconds / 86400)`.
pub fn store_price(bytes: u64, ttl_seconds: u64) -> i128 {
    let ttl_days = i128::from(ttl_seconds.div_ceil(DAY_SECONDS));
    1000 + kib(bytes) * (100 + ttl_days * 10)
}

/// `retrieve`: `1000 + 100 × ceil(bytes / 1024)`.
pub fn retrieve_price(bytes: u64) -> i128 {
    1000 + 100 * kib(bytes)
}

/// `push`: `200 + 50 × ceil(bytes / 1024)`.
pub fn push_price(bytes: u64) -> i128 {
    200 + 50 * kib(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_the_formulas_at_the_edges() {
        let thirty_days = DEFAULT_TTL_SECONDS;
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
            assert_eq!(store_price(bytes, thirty_days), store_30, "{bytes} B, 30 d");
            assert_eq!(
                store_price(bytes, MIN_TTL_SECONDS),
                store_hour,
                "{bytes} B, 1 h"
            );
            assert_eq!(
                store_price(bytes, MAX_TTL_SECONDS),
                store_year,
                "{bytes} B, 365 d"
            );
            assert_eq!(retrieve_price(bytes), retrieve, "{bytes} B");
            assert_eq!(push_price(bytes), push, "{bytes} B");
        }
        // A day and one second is two days.
        assert_eq!(store_price(1024, DAY_SECONDS + 1), 1000 + 120);
    }

    #[test]
    fn ttls_are_bounded_whole_seconds() {
        assert_eq!(ttl_seconds(None), Ok(DEFAULT_TTL_SECONDS));
        assert_eq!(ttl_seconds(Some("3600")), Ok(3600));
        assert_eq!(ttl_seconds(Some(" 31536000 ")), Ok(MAX_TTL_SECONDS));
        assert_eq!(ttl_seconds(Some("3599")), Err(TtlError::OutOfRange));
        assert_eq!(ttl_seconds(Some("31536001")), Err(TtlError::OutOfRange));
        assert_eq!(
            ttl_seconds(Some("99999999999999999999999")),
            Err(TtlError::OutOfRange)
        );
        for bad in ["", "-3600", "+3600", "3600.0", "1e4", "one"] {
            assert_eq!(ttl_seconds(Some(bad)), Err(TtlError::NotANumber), "{bad:?}");
        }
    }
}
