//! JSON Canonicalization Scheme (RFC 8785): the one serialization of a JSON value that MPP
//! signs and encodes (a challenge's `request` and `opaque` are base64url of it).
//!
//! - Object members are sorted by their names compared as UTF-16 code units, recursively;
//!   array order is kept.
//! - No whitespace.
//! - Strings escape only `"`, `\` and the control characters U+0000–U+001F (`\b \t \n \f \r`
//!   short forms, the others `\u00xx` in lowercase hex); everything else, non-ASCII and
//!   `<`, `>`, `&`, `/` included, is written as is (UTF-8).
//! - Numbers are written as ECMAScript's `Number.prototype.toString` writes the same IEEE 754
//!   double: `1.0` → `1`, `1e21` → `1e+21`, `0.000001` → `0.000001`, `1e-7` → `1e-7`, `-0` → `0`.
//!
//! One deliberate difference: an integer that `serde_json` holds exactly (an `i64` or `u64`) is
//! written exactly, digit for digit, even beyond 2^53 where a JavaScript implementation would
//! first round it to a double. MPP amounts are decimal strings, so the vectors and real
//! requests never carry such integers; writing them exactly keeps the value intact.
//! `serde_json` values never hold NaN or infinities, so canonicalization cannot fail.
//!
//! The output is exactly RFC 8785 for the double a `Value` holds, and canonicalization is a fixed
//! point: the canonical text parses back to the same doubles (the crate builds `serde_json` with
//! its `float_roundtrip` feature, so long decimals parse to the correctly rounded double; without
//! it a 97-digit integer parsed one ulp off and its canonical text parsed to another double,
//! which the fuzzer found). [`binding`](super::binding) still binds the `request` text as sent,
//! never a re-serialization.

use serde_json::{Number, Value};

/// The RFC 8785 canonical serialization of `value`.
///
/// ```
/// use serde_json::json;
/// use tower_paywall::mpp::jcs;
///
/// let value = json!({"b": [1.0, 2.5e-7, "é<&>"], "a": {"Z": null, "y": true}});
/// assert_eq!(jcs::to_string(&value), r#"{"a":{"Z":null,"y":true},"b":[1,2.5e-7,"é<&>"]}"#);
/// ```
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// Base64url (no padding) of the canonical serialization of `value`: the wire form of a
/// challenge's `request` and `opaque`.
///
/// ```
/// use serde_json::json;
/// use tower_paywall::mpp::jcs;
///
/// assert_eq!(jcs::to_base64url(&json!({})), "e30");
/// ```
pub fn to_base64url(value: &Value) -> String {
    super::base64url::encode(to_string(value))
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (index, (name, item)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let code = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, number: &Number) {
    if let Some(n) = number.as_u64() {
        out.push_str(&n.to_string());
    } else if let Some(n) = number.as_i64() {
        out.push_str(&n.to_string());
    } else if let Some(n) = number.as_f64() {
        write_double(out, n);
    } else {
        // Unreachable without serde_json's `arbitrary_precision`; keep its own rendering.
        out.push_str(&number.to_string());
    }
}

/// ECMAScript `Number::toString(x)` (ECMA-262 §6.1.6.1.20) for a finite double.
fn write_double(out: &mut String, x: f64) {
    if x == 0.0 || !x.is_finite() {
        // -0 prints as 0; non-finite values cannot come out of serde_json.
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    let (digits, exponent) = shortest_digits(x.abs());
    let k = digits.len() as i64;
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

/// The digits `s` and exponent `n - 1` of ECMAScript's `Number::toString` for a positive finite
/// double: the fewest digits that read back as `x`, and among those the closest to `x` (the even
/// one on a tie).
fn shortest_digits(x: f64) -> (String, i64) {
    // Rust's `{:e}` gives the fewest digits that round-trip, but on a tie between two such
    // candidates it may take the odd one; exact formatting at that precision rounds the exact
    // binary value half-to-even, which is ECMAScript's choice whenever it still reads back as `x`.
    let shortest = split_scientific(&format!("{x:e}"));
    let precision = shortest.0.len().saturating_sub(1);
    let closest_text = format!("{x:.precision$e}");
    if closest_text.parse::<f64>() == Ok(x) {
        split_scientific(&closest_text)
    } else {
        shortest
    }
}

/// `d[.ddd]e<exp>` → (`dddd`, exp).
fn split_scientific(text: &str) -> (String, i64) {
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn double(x: f64) -> String {
        to_string(&Value::from(x))
    }

    #[test]
    fn doubles_print_as_ecmascript_does() {
        // RFC 8785 appendix B and ECMA-262 Number::toString.
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (42431.0, "42431"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (123.456, "123.456"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (4.35, "4.35"),
            (-1e-7, "-1e-7"),
            (9007199254740992.0, "9007199254740992"),
            (295147905179352830000.0, "295147905179352830000"),
            (4.5, "4.5"),
            (2e-3, "0.002"),
            (333333333.3333333, "333333333.3333333"),
            (1e23, "1e+23"),
            (-5e-324, "-5e-324"),
            // A tie between two shortest candidates: ECMAScript takes the even digit.
            (f64::from_bits(0xc316_5e80_3cbe_d0d1), "-1574088588899380.2"),
            (f64::from_bits(3), "1.5e-323"),
            (2f64.powi(1023), "8.98846567431158e+307"),
        ];
        for (input, expected) in cases {
            assert_eq!(double(input), expected, "{input:e}");
        }
    }

    #[test]
    fn parsed_numbers() {
        let cases = [
            ("1.0", "1"),
            ("1e2", "100"),
            ("-0.0", "0"),
            ("42431", "42431"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
        ];
        for (input, expected) in cases {
            let value: Value = serde_json::from_str(input).unwrap();
            assert_eq!(to_string(&value), expected, "{input}");
        }
    }

    /// Found by the `jcs` fuzz target: a long integer parsed one ulp off the correctly rounded
    /// double, and its canonical text parsed to another double, so canonicalizing twice gave
    /// two texts.
    #[test]
    fn canonical_text_parses_back_to_the_same_doubles() {
        let long = format!("{}12", "6".repeat(95));
        for input in [
            long.as_str(),
            "0.30000000000000004",
            "1.7976931348623157e308",
            "5e-324",
        ] {
            let value: Value = serde_json::from_str(input).unwrap();
            let canonical = to_string(&value);
            let again: Value = serde_json::from_str(&canonical).unwrap();
            assert_eq!(to_string(&again), canonical, "{input}");
            assert_eq!(again.as_f64(), value.as_f64(), "{input}");
        }
        let value: Value = serde_json::from_str(&long).unwrap();
        assert_eq!(to_string(&value), "6.6666666666666665e+96");
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+10000 is D800 DC00 in UTF-16, below U+E000 although above it in UTF-8 and in code points.
        let value = json!({"\u{e000}": 1, "\u{10000}": 2, "a": 3, "B": 4, "": 5});
        assert_eq!(
            to_string(&value),
            "{\"\":5,\"B\":4,\"a\":3,\"\u{10000}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn strings_escape_only_what_rfc_8785_says() {
        let value = json!("\"\\\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}/<>&é\u{2028}");
        assert_eq!(
            to_string(&value),
            "\"\\\"\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}/<>&é\u{2028}\""
        );
    }

    #[test]
    fn nested_structures_have_no_whitespace() {
        let value = json!({"b": [1, {"d": null, "c": false}], "a": "x"});
        assert_eq!(
            to_string(&value),
            r#"{"a":"x","b":[1,{"c":false,"d":null}]}"#
        );
    }
}
