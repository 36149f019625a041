//! Time as stoka sees it: unix milliseconds from a [`Clock`] (the system's, or one a test
//! moves by hand), UTC days, and RFC 3339 text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix milliseconds.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        let elapsed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told: expiry, visibility and retention are tested with it.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at `now` (unix milliseconds).
    pub fn new(now: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(now)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The UTC day (days since 1970-01-01) of `ms`.
pub fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)
}

/// `(year, month, day)` of a day number (Howard Hinnant's civil-from-days).
fn civil(day: u32) -> (i64, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A day as `YYYY-MM-DD`.
pub fn day_string(day: u32) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `ms` as RFC 3339 UTC, to the second (`2026-11-21T10:53:01Z`).
pub fn rfc3339(ms: u64) -> String {
    let seconds = ms / 1000;
    let of_day = seconds % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        day_string(day_of(ms)),
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_are_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_258_381_999), "2026-11-21T10:53:01Z");
        assert_eq!(day_string(day_of(4_107_542_399_000)), "2100-02-28");
        assert_eq!(day_string(day_of(4_107_542_400_000)), "2100-03-01");
        let clock = ManualClock::new(5);
        clock.advance(DAY_MS);
        assert_eq!(day_of(clock.now()), 1);
    }
}
