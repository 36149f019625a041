//! Lowercase hexadecimal, the one encoding of hashes, keys and signatures in text.

use std::fmt::Write as _;

/// `bytes` as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// Exactly `N` bytes from `2 × N` hex digits (either case); anything else is `None`.
#[cfg_attr(not(feature = "rpc"), allow(dead_code))]
pub(crate) fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut bytes = [0_u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(bytes)
}

#[cfg_attr(not(feature = "rpc"), allow(dead_code))]
fn digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(decode::<3>("00ABff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(decode::<3>("00abf"), None);
        assert_eq!(decode::<3>("00abfg"), None);
        assert_eq!(decode::<2>("00abff"), None);
        assert_eq!(decode::<1>("é"), None);
    }
}
