//! Base64url (RFC 4648 §5), the encoding of every MPP header payload.
//!
//! Encoding never pads. Decoding takes the URL-safe alphabet `A–Z a–z 0–9 - _`, with or
//! without `=` padding, and refuses anything else (whitespace, `+ /`, stray
//! characters, non-zero trailing bits). The credential decoder in
//! [`credential`](super::credential) is more lenient and also takes standard base64.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// URL-safe alphabet; no padding on encode, optional canonical padding on decode.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a base64url text could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Base64UrlError {
    /// The text is not base64url (a character outside the alphabet, a bad length or padding).
    #[error("text is not base64url")]
    NotBase64Url,
    /// The decoded bytes are not UTF-8 (only from [`decode_to_string`]).
    #[error("base64url text does not decode to UTF-8")]
    NotUtf8,
}

/// Encodes bytes as base64url without padding.
///
/// ```
/// use tower_paywall::mpp::base64url;
///
/// assert_eq!(base64url::encode(">>>???"), "Pj4-Pz8_");
/// ```
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE.encode(bytes)
}

/// Decodes base64url text (padding optional) into bytes.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64UrlError> {
    URL_SAFE
        .decode(text.as_bytes())
        .map_err(|_| Base64UrlError::NotBase64Url)
}

/// Decodes base64url text of exactly `N` bytes (`N` ≤ 48) without allocating; `None` for
/// anything else.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut buffer = [0_u8; 51];
    if N > 48 || text.len() > 68 {
        return None;
    }
    let length = URL_SAFE.decode_slice(text.as_bytes(), &mut buffer).ok()?;
    (length == N).then(|| {
        let mut bytes = [0_u8; N];
        bytes.copy_from_slice(&buffer[..N]);
        bytes
    })
}

/// Decodes base64url text into a UTF-8 string; invalid UTF-8 is an error, never replaced.
pub fn decode_to_string(text: &str) -> Result<String, Base64UrlError> {
    String::from_utf8(decode(text)?).map_err(|_| Base64UrlError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_padding() {
        for text in ["", "a", "ab", "abc", "abcd"] {
            let encoded = encode(text);
            assert!(!encoded.contains('='));
            assert_eq!(decode_to_string(&encoded).unwrap(), text);
        }
    }

    #[test]
    fn padding_is_optional() {
        assert_eq!(decode("YQ==").unwrap(), b"a");
        assert_eq!(decode("YQ=").unwrap(), b"a");
        assert_eq!(decode("YQ").unwrap(), b"a");
        assert_eq!(decode("YQ==="), Err(Base64UrlError::NotBase64Url));
        assert_eq!(decode("Y=Q="), Err(Base64UrlError::NotBase64Url));
        assert_eq!(decode("YR"), Err(Base64UrlError::NotBase64Url));
    }

    #[test]
    fn decodes_arrays_of_exactly_their_length() {
        let id = encode([7_u8; 32]);
        assert_eq!(decode_array::<32>(&id), Some([7; 32]));
        assert_eq!(decode_array::<31>(&id), None);
        assert_eq!(decode_array::<33>(&id), None);
        assert_eq!(decode_array::<48>(&encode([1_u8; 48])), Some([1; 48]));
        assert_eq!(decode_array::<32>(&"A".repeat(69)), None);
        assert_eq!(decode_array::<32>(&format!("+{}", &id[1..])), None);
        assert_eq!(decode_array::<2>("YR"), None);
    }

    #[test]
    fn refuses_the_standard_alphabet_and_junk() {
        assert_eq!(decode("Pj4+Pz8/"), Err(Base64UrlError::NotBase64Url));
        assert_eq!(decode("e30 "), Err(Base64UrlError::NotBase64Url));
        assert_eq!(decode("not-valid!!!"), Err(Base64UrlError::NotBase64Url));
        assert_eq!(decode_to_string("_w"), Err(Base64UrlError::NotUtf8));
    }
}
