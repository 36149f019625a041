//! RFC 3339 timestamps as MPP writes them: a challenge's `expires` and a receipt's `timestamp`.
//!
//! Parsing takes what mppx takes (`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`),
//! with real calendar checks: months 1–12, days within the month (leap years included), hours
//! 0–23, minutes and seconds 0–59 (no leap second), offsets up to ±23:59, and a result within the
//! years 0000–9999 (UTC). Fractions are kept to the millisecond, truncated, as JavaScript's `Date`
//! does. Writing always gives `Date.prototype.toISOString()`'s form, `2026-01-29T12:05:00.000Z`.
//!
//! The value compared against the clock is the parsed instant; the *text* of `expires` is what the
//! challenge id binds, so keep the text as received when verifying an echo.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::civil::{civil_from_days, days_from_civil};

/// How long a challenge stays valid unless told otherwise: 5 minutes, like mppx and the Stellar
/// SDK's `DEFAULT_CHALLENGE_EXPIRY`.
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(300);

const MILLIS_PER_DAY: i64 = 86_400_000;
/// 0000-01-01T00:00:00.000Z.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The text does not have the `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` shape.
    #[error("timestamp is not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM))")]
    Syntax,
    /// A field is out of range (month 13, February 30, hour 24, second 60, offset ±24:00 …).
    #[error("timestamp has a field out of range")]
    OutOfRange,
    /// The instant falls outside the years 0000–9999 (UTC).
    #[error("timestamp is outside the years 0000-9999")]
    OutOfYears,
}

/// An instant with millisecond precision, between 0000-01-01 and 9999-12-31 (UTC).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_paywall::mpp::Timestamp;
///
/// let expires = Timestamp::parse("2026-01-29T13:05:00.5+01:00")?;
/// assert_eq!(expires.to_string(), "2026-01-29T12:05:00.500Z");
/// let now = UNIX_EPOCH + Duration::from_secs(1_769_688_300); // 2026-01-29T12:05:00Z
/// assert!(!expires.is_past(now));
/// # Ok::<(), tower_paywall::mpp::TimestampError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: i64,
}

impl Timestamp {
    /// Parses an RFC 3339 timestamp in the form mppx accepts (see the [module](self) docs).
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError::Syntax);
        }
        let year = digits(b, 0, 4)?;
        expect(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        expect(b, 10, b'T')?;
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let second = digits(b, 17, 2)?;
        let mut pos = 19;
        let mut millis = 0;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            if pos == start {
                return Err(TimestampError::Syntax);
            }
            // Milliseconds from the first three digits, truncated, padded on the right.
            for i in 0..3 {
                let digit = b
                    .get(start + i)
                    .filter(|_| start + i < pos)
                    .map_or(0, |d| d - b'0');
                millis = millis * 10 + i64::from(digit);
            }
        }
        let offset_minutes = match b.get(pos) {
            Some(b'Z') if pos + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
                let hours = digits(b, pos + 1, 2)?;
                expect(b, pos + 3, b':')?;
                let minutes = digits(b, pos + 4, 2)?;
                if hours > 23 || minutes > 59 {
                    return Err(TimestampError::OutOfRange);
                }
                let total = hours * 60 + minutes;
                if sign == b'-' { -total } else { total }
            }
            _ => return Err(TimestampError::Syntax),
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimestampError::OutOfRange);
        }
        let days = days_from_civil(year, month, day);
        let unix_millis = days * MILLIS_PER_DAY
            + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000
            + millis;
        Self::from_unix_millis(unix_millis).ok_or(TimestampError::OutOfYears)
    }

    /// The instant `unix_millis` milliseconds after 1970-01-01T00:00:00Z, if within the years
    /// 0000–9999.
    pub fn from_unix_millis(unix_millis: i64) -> Option<Self> {
        (MIN_MILLIS..=MAX_MILLIS)
            .contains(&unix_millis)
            .then_some(Self { unix_millis })
    }

    /// Milliseconds since 1970-01-01T00:00:00Z (negative before).
    pub fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// The instant of a system time, truncated to the millisecond and clamped to the years
    /// 0000–9999.
    pub fn from_system_time(time: SystemTime) -> Self {
        let unix_millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => {
                // Round towards the past, so that a time just before the epoch stays before it.
                let before = before.duration();
                let millis = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
                let partial = before.as_nanos() % 1_000_000 != 0;
                (-millis).saturating_sub(i64::from(partial))
            }
        };
        Self {
            unix_millis: unix_millis.clamp(MIN_MILLIS, MAX_MILLIS),
        }
    }

    /// The current time (see [`from_system_time`](Self::from_system_time)).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// This instant as a system time, if the platform's `SystemTime` reaches it (all of
    /// 0000–9999 on Unix).
    pub fn to_system_time(self) -> Option<SystemTime> {
        let magnitude = Duration::from_millis(self.unix_millis.unsigned_abs());
        if self.unix_millis >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// This instant plus `duration`, if the result is still within the years 0000–9999.
    pub fn checked_add(self, duration: Duration) -> Option<Self> {
        let millis = i64::try_from(duration.as_millis()).ok()?;
        Self::from_unix_millis(self.unix_millis.checked_add(millis)?)
    }

    /// Whether this instant is strictly before `now`: an `expires` equal to the current
    /// millisecond is still valid, as in mppx (`new Date(expires) < new Date()`).
    pub fn is_past(self, now: SystemTime) -> bool {
        self < Self::from_system_time(now)
    }

    /// The `YYYY-MM-DDTHH:MM:SS.mmmZ` form (what `Display` writes).
    pub fn format(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_millis.div_euclid(MILLIS_PER_DAY);
        let in_day = self.unix_millis.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (seconds, millis) = (in_day / 1000, in_day % 1000);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

fn digits(b: &[u8], start: usize, len: usize) -> Result<i64, TimestampError> {
    let field = b.get(start..start + len).ok_or(TimestampError::Syntax)?;
    field.iter().try_fold(0, |acc, &d| {
        if d.is_ascii_digit() {
            Ok(acc * 10 + i64::from(d - b'0'))
        } else {
            Err(TimestampError::Syntax)
        }
    })
}

fn expect(b: &[u8], pos: usize, byte: u8) -> Result<(), TimestampError> {
    if b.get(pos) == Some(&byte) {
        Ok(())
    } else {
        Err(TimestampError::Syntax)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> i64 {
        Timestamp::parse(text).unwrap().unix_millis()
    }

    #[test]
    fn parses_the_forms_mppx_writes_and_reads() {
        assert_eq!(millis("1970-01-01T00:00:00Z"), 0);
        assert_eq!(millis("1970-01-01T00:00:00.000Z"), 0);
        assert_eq!(millis("2026-01-29T12:05:00Z"), 1_769_688_300_000);
        assert_eq!(millis("2026-01-29T12:05:00.000Z"), 1_769_688_300_000);
        assert_eq!(millis("2026-01-29T13:05:00+01:00"), 1_769_688_300_000);
        assert_eq!(millis("2026-01-29T06:35:00-05:30"), 1_769_688_300_000);
        assert_eq!(millis("2030-01-01T00:00:00.000Z"), 1_893_456_000_000);
        assert_eq!(millis("2024-02-29T23:59:59.999Z"), 1_709_251_199_999);
    }

    #[test]
    fn fractions_truncate_to_the_millisecond() {
        assert_eq!(millis("1970-01-01T00:00:00.5Z"), 500);
        assert_eq!(millis("1970-01-01T00:00:00.05Z"), 50);
        assert_eq!(millis("1970-01-01T00:00:00.123999999Z"), 123);
        assert_eq!(millis("1969-12-31T23:59:59.999Z"), -1);
    }

    #[test]
    fn refuses_malformed_text() {
        for text in [
            "",
            "2026-01-29",
            "2026-01-29T12:05:00",
            "2026-01-29 12:05:00Z",
            "2026-01-29t12:05:00Z",
            "2026-01-29T12:05:00z",
            "2026-01-29T12:05Z",
            "2026-01-29T12:05:00.Z",
            "2026-01-29T12:05:00ZZ",
            "2026-01-29T12:05:00+0100",
            "2026-01-29T12:05:00+01",
            "+2026-01-29T12:05:00Z",
            "２０26-01-29T12:05:00Z",
            "2026-1-29T12:05:00Z",
            "2026-01-29T12:05:00.000Z ",
        ] {
            assert_eq!(
                Timestamp::parse(text),
                Err(TimestampError::Syntax),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_fields_out_of_range() {
        for text in [
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-29T24:00:00Z",
            "2026-01-29T12:60:00Z",
            "2016-12-31T23:59:60Z",
            "2026-01-29T12:05:00+24:00",
            "2026-01-29T12:05:00-00:60",
        ] {
            assert_eq!(
                Timestamp::parse(text),
                Err(TimestampError::OutOfRange),
                "{text:?}"
            );
        }
        assert!(Timestamp::parse("2000-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn stays_within_the_four_digit_years() {
        assert_eq!(
            Timestamp::parse("0000-01-01T00:00:00+00:01"),
            Err(TimestampError::OutOfYears)
        );
        assert_eq!(
            Timestamp::parse("9999-12-31T23:59:59-00:01"),
            Err(TimestampError::OutOfYears)
        );
        let first = Timestamp::parse("0000-01-01T00:00:00Z").unwrap();
        let last = Timestamp::parse("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(first.to_string(), "0000-01-01T00:00:00.000Z");
        assert_eq!(last.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(last.checked_add(Duration::from_millis(1)), None);
        assert_eq!(Timestamp::from_unix_millis(MAX_MILLIS + 1), None);
    }

    #[test]
    fn formats_as_to_iso_string() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_769_688_300_000, "2026-01-29T12:05:00.000Z"),
            (1_893_456_000_123, "2030-01-01T00:00:00.123Z"),
        ];
        for (millis, text) in cases {
            let timestamp = Timestamp::from_unix_millis(millis).unwrap();
            assert_eq!(timestamp.format(), text);
            assert_eq!(Timestamp::parse(text).unwrap(), timestamp);
        }
    }

    #[test]
    fn calendar_round_trips_every_day_of_four_centuries() {
        let start = days_from_civil(1900, 1, 1);
        let mut expected = (1900, 1, 1);
        for days in start..start + 146_097 {
            assert_eq!(civil_from_days(days), expected);
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn is_past_is_strict() {
        let expires = Timestamp::parse("2026-01-29T12:05:00Z").unwrap();
        let at = expires.to_system_time().unwrap();
        assert!(!expires.is_past(at));
        assert!(expires.is_past(at + Duration::from_millis(1)));
        assert!(!expires.is_past(at - Duration::from_secs(60)));
        // Sub-millisecond clock readings truncate: still the same millisecond.
        assert!(!expires.is_past(at + Duration::from_micros(999)));
    }

    #[test]
    fn system_time_conversions() {
        let before_epoch = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(Timestamp::from_system_time(before_epoch).unix_millis(), -1);
        let now = Timestamp::now();
        let later = now.checked_add(DEFAULT_CHALLENGE_TTL).unwrap();
        assert_eq!(later.unix_millis() - now.unix_millis(), 300_000);
        assert_eq!(
            Timestamp::from_system_time(later.to_system_time().unwrap()),
            later
        );
    }
}
