//! Token amounts: non-negative atomic units with 7 decimals (stroops for XLM, the same scale for USDC).

use std::fmt;
use std::str::FromStr;

/// Why an amount was refused. The message never echoes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// The text is empty.
    #[error("amount is empty")]
    Empty,
    /// The amount is negative.
    #[error("amount is negative")]
    Negative,
    /// The text is not a plain amount (signs, whitespace, exponents, stray characters, leading zeros,
    /// a dot without digits on both sides).
    #[error("amount is malformed")]
    Malformed,
    /// The amount has more than [`Amount::DECIMALS`] fractional digits.
    #[error("amount has more than 7 decimals")]
    TooManyDecimals,
    /// The amount does not fit in an `i128` of atomic units.
    #[error("amount is too large")]
    Overflow,
}

/// A token amount in atomic units with [`Amount::DECIMALS`] (7) decimals: `Amount::from_atomic(10_000)` is
/// `0.001`. Never negative.
///
/// Two text forms:
/// - the **wire** form, atomic units as a decimal integer (`"10000"`): [`Amount::parse_atomic`] and
///   [`Amount::to_atomic_string`]; this is what x402 and MPP carry;
/// - the **display** form, a decimal number (`"0.001"`, `"$0.001"`): [`FromStr`] and [`Display`](fmt::Display).
///
/// Both are canonical and strict: ASCII digits only, no sign, no whitespace, no exponent, no leading
/// zeros (`"0"` and `"0.5"` are fine, `"00"` and `"01.5"` are not). In the display form a dot needs digits
/// on both sides (`"1."` and `".5"` are refused), trailing fractional zeros are accepted (`"1.50"`), and
/// an optional `$` prefix is allowed (`"$0.001"`), meaning nothing more than a price tag.
///
/// ```
/// use tower_paywall::stellar::Amount;
///
/// let price: Amount = "$0.001".parse()?;
/// assert_eq!(price.atomic(), 10_000);
/// assert_eq!(price.to_atomic_string(), "10000");
/// assert_eq!(price.to_string(), "0.001");
/// assert_eq!(Amount::parse_atomic("10000")?, price);
/// # Ok::<(), tower_paywall::stellar::AmountError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i128);

impl Amount {
    /// The number of decimals: one unit is `10^7` atomic units.
    pub const DECIMALS: u32 = 7;
    /// Zero.
    pub const ZERO: Amount = Amount(0);
    /// The largest amount, `i128::MAX` atomic units.
    pub const MAX: Amount = Amount(i128::MAX);

    /// Atomic units in one whole unit.
    const ONE: i128 = 10_i128.pow(Amount::DECIMALS);
    /// The number of digits of `i128::MAX`; longer digit strings are refused before parsing.
    const MAX_DIGITS: usize = 39;

    /// An amount of `atomic` units.
    ///
    /// # Errors
    ///
    /// [`AmountError::Negative`] if `atomic < 0`.
    pub const fn from_atomic(atomic: i128) -> Result<Amount, AmountError> {
        if atomic < 0 {
            Err(AmountError::Negative)
        } else {
            Ok(Amount(atomic))
        }
    }

    /// The amount in atomic units (never negative).
    #[must_use]
    pub const fn atomic(self) -> i128 {
        self.0
    }

    /// Parses the wire form: atomic units as ASCII digits (`"10000"`), canonical (no leading zeros except
    /// `"0"` itself), at most 39 digits, fitting an `i128`.
    ///
    /// # Errors
    ///
    /// [`AmountError::Empty`], [`AmountError::Malformed`] or [`AmountError::Overflow`].
    pub fn parse_atomic(text: &str) -> Result<Amount, AmountError> {
        parse_digits(text).map(Amount)
    }

    /// The wire form: atomic units as a decimal integer.
    #[must_use]
    pub fn to_atomic_string(&self) -> String {
        self.0.to_string()
    }

    /// `self + other`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, other: Amount) -> Option<Amount> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Amount(sum)),
            None => None,
        }
    }

    /// `self - other`, or `None` if the result would be negative.
    #[must_use]
    pub const fn checked_sub(self, other: Amount) -> Option<Amount> {
        // Both are non-negative, so the subtraction itself cannot overflow.
        if other.0 > self.0 {
            None
        } else {
            Some(Amount(self.0 - other.0))
        }
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses the display form: `"1"`, `"1.5"`, `"0.0000001"`, `"$0.001"` (see the type docs for the rules).
    fn from_str(text: &str) -> Result<Amount, AmountError> {
        if text.starts_with('-') || text.starts_with("$-") {
            return Err(AmountError::Negative);
        }
        let number = text.strip_prefix('$').unwrap_or(text);
        if number.is_empty() {
            return Err(AmountError::Empty);
        }
        let (whole, fraction) = match number.split_once('.') {
            Some(("", _) | (_, "")) => return Err(AmountError::Malformed),
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        let whole = parse_digits(whole)?;
        let fraction = parse_fraction(fraction)?;
        whole
            .checked_mul(Amount::ONE)
            .and_then(|atomic| atomic.checked_add(fraction))
            .map(Amount)
            .ok_or(AmountError::Overflow)
    }
}

impl fmt::Display for Amount {
    /// Writes the display form with trailing fractional zeros trimmed: `0.001`, `1`, `12.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Amount::ONE;
        let fraction = self.0 % Amount::ONE;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:07}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Parses canonical ASCII digits (no sign, no leading zero unless the text is `"0"`) into an `i128`.
fn parse_digits(text: &str) -> Result<i128, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed_or_negative(text));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(AmountError::Malformed);
    }
    if text.len() > Amount::MAX_DIGITS {
        return Err(AmountError::Overflow);
    }
    // At most 39 ASCII digits without a sign: the only way `parse` can fail now is overflow.
    text.parse::<i128>().map_err(|_| AmountError::Overflow)
}

/// Parses up to 7 fractional digits into atomic units (`"5"` → `5_000_000`). Empty means none.
fn parse_fraction(text: &str) -> Result<i128, AmountError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::Malformed);
    }
    if text.len() > Amount::DECIMALS as usize {
        return Err(AmountError::TooManyDecimals);
    }
    text.bytes()
        .chain(std::iter::repeat(b'0'))
        .take(Amount::DECIMALS as usize)
        .try_fold(0_i128, |acc, digit| Ok(acc * 10 + i128::from(digit - b'0')))
}

/// The error for text that is not all digits: `Negative` for a leading minus sign, else `Malformed`.
fn malformed_or_negative(text: &str) -> AmountError {
    if text.starts_with('-') {
        AmountError::Negative
    } else {
        AmountError::Malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn display(text: &str) -> Result<Amount, AmountError> {
        text.parse()
    }

    fn atomic(value: i128) -> Amount {
        Amount::from_atomic(value).expect("non-negative")
    }

    #[test]
    fn display_form_vectors() {
        for (text, expected) in [
            ("0", 0),
            ("1", 10_000_000),
            ("1.5", 15_000_000),
            ("0.001", 10_000),
            ("$0.001", 10_000),
            ("$1", 10_000_000),
            ("0.0000001", 1),
            ("12.5", 125_000_000),
            ("1.50", 15_000_000),
            ("0.0000000", 0),
            ("10", 100_000_000),
        ] {
            assert_eq!(display(text), Ok(atomic(expected)), "{text}");
        }
    }

    #[test]
    fn display_form_refusals() {
        use AmountError::*;
        for (text, expected) in [
            ("", Empty),
            ("$", Empty),
            ("-1", Negative),
            ("$-1", Negative),
            ("-0.5", Negative),
            ("+1", Malformed),
            ("$+1", Malformed),
            (" 1", Malformed),
            ("1 ", Malformed),
            ("1 000", Malformed),
            ("1e3", Malformed),
            ("1E3", Malformed),
            ("0x10", Malformed),
            ("1,5", Malformed),
            ("1_000", Malformed),
            (".", Malformed),
            ("1.", Malformed),
            (".5", Malformed),
            ("$.5", Malformed),
            ("1.2.3", Malformed),
            ("1.-2", Malformed),
            ("01", Malformed),
            ("00.5", Malformed),
            ("$$1", Malformed),
            ("1$", Malformed),
            ("١", Malformed),
            ("0.00000001", TooManyDecimals),
            ("1.12345678", TooManyDecimals),
            (
                "0.000000000000000000000000000000000000000001",
                TooManyDecimals,
            ),
            ("17014118346046923173168730371588410.5727", Overflow),
            ("170141183460469231731687303715884105728", Overflow),
            ("17014118346046923173168730371588.4105728", Overflow),
            ("99999999999999999999999999999999999999999999", Overflow),
            ("99999999999999999999999999999999999999999999x", Malformed),
        ] {
            assert_eq!(display(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn display_form_largest_value() {
        let max = "17014118346046923173168730371588.4105727";
        assert_eq!(display(max), Ok(Amount::MAX));
        assert_eq!(Amount::MAX.to_string(), max);
        assert_eq!(display(&format!("${max}")), Ok(Amount::MAX));
    }

    #[test]
    fn display_trims_trailing_zeros() {
        for (value, expected) in [
            (0, "0"),
            (1, "0.0000001"),
            (10_000, "0.001"),
            (10_000_000, "1"),
            (125_000_000, "12.5"),
            (15_000_001, "1.5000001"),
            (1_000_000_000_000, "100000"),
        ] {
            assert_eq!(atomic(value).to_string(), expected);
        }
    }

    #[test]
    fn wire_form_vectors() {
        assert_eq!(Amount::parse_atomic("0"), Ok(Amount::ZERO));
        assert_eq!(Amount::parse_atomic("10000000"), Ok(atomic(10_000_000)));
        assert_eq!(
            Amount::parse_atomic("170141183460469231731687303715884105727"),
            Ok(Amount::MAX)
        );
        assert_eq!(atomic(10_000).to_atomic_string(), "10000");
    }

    #[test]
    fn wire_form_refusals() {
        use AmountError::*;
        for (text, expected) in [
            ("", Empty),
            ("-1", Negative),
            ("+1", Malformed),
            (" 1", Malformed),
            ("1 ", Malformed),
            ("1.0", Malformed),
            ("1e3", Malformed),
            ("$1", Malformed),
            ("01", Malformed),
            ("00", Malformed),
            ("170141183460469231731687303715884105728", Overflow),
            ("999999999999999999999999999999999999999", Overflow),
            ("1000000000000000000000000000000000000000", Overflow),
            ("0000000000000000000000000000000000000000001", Malformed),
            ("１", Malformed),
        ] {
            assert_eq!(Amount::parse_atomic(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn negative_atomic_amounts_are_refused() {
        assert_eq!(Amount::from_atomic(-1), Err(AmountError::Negative));
        assert_eq!(Amount::from_atomic(i128::MIN), Err(AmountError::Negative));
    }

    #[test]
    fn round_trips_over_edge_values() {
        let edges = [
            0,
            1,
            9,
            10,
            9_999_999,
            10_000_000,
            10_000_001,
            123_456_789,
            i128::from(i64::MAX),
            i128::from(u64::MAX),
            i128::MAX / Amount::ONE * Amount::ONE,
            i128::MAX - 1,
            i128::MAX,
        ];
        for value in edges {
            let amount = atomic(value);
            assert_eq!(amount.atomic(), value);
            assert_eq!(
                Amount::parse_atomic(&amount.to_atomic_string()),
                Ok(amount),
                "{value}"
            );
            assert_eq!(display(&amount.to_string()), Ok(amount), "{value}");
            assert_eq!(display(&format!("${amount}")), Ok(amount), "{value}");
        }
    }

    #[test]
    fn checked_arithmetic() {
        assert_eq!(atomic(1).checked_add(atomic(2)), Some(atomic(3)));
        assert_eq!(Amount::MAX.checked_add(atomic(1)), None);
        assert_eq!(Amount::MAX.checked_add(Amount::ZERO), Some(Amount::MAX));
        assert_eq!(atomic(3).checked_sub(atomic(2)), Some(atomic(1)));
        assert_eq!(atomic(2).checked_sub(atomic(2)), Some(Amount::ZERO));
        assert_eq!(atomic(2).checked_sub(atomic(3)), None);
        assert_eq!(Amount::MAX.checked_sub(Amount::MAX), Some(Amount::ZERO));
    }

    #[test]
    fn ordering_and_default() {
        assert_eq!(Amount::default(), Amount::ZERO);
        assert!(atomic(1) < atomic(2));
        assert!(Amount::ZERO < Amount::MAX);
    }
}
