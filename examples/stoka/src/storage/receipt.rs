//! Queue receipts: `base64url(seq ‖ token)`, opaque to clients. The token is fresh random bytes
//! for every delivery, so a receipt acknowledges one delivery and no other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The random part of a receipt.
pub(crate) type Token = [u8; 16];

/// A fresh token.
pub(crate) fn token() -> Result<Token, super::StorageError> {
    let mut token = [0; 16];
    getrandom::getrandom(&mut token)
        .map_err(|error| super::StorageError::Backend(format!("no randomness: {error}")))?;
    Ok(token)
}

/// The receipt of delivery `token` of message `seq`.
pub(crate) fn encode(seq: u64, token: &Token) -> String {
    let mut bytes = [0; 24];
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    bytes[8..].copy_from_slice(token);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The message and token a receipt names; `None` for anything that is not a receipt.
pub(crate) fn decode(receipt: &str) -> Option<(u64, Token)> {
    if receipt.len() != 32 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(receipt).ok()?;
    let seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let token = bytes.get(8..)?.try_into().ok()?;
    Some((seq, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_names_its_message_and_delivery() {
        let token = [7; 16];
        let receipt = encode(42, &token);
        assert_eq!(receipt.len(), 32);
        assert_eq!(decode(&receipt), Some((42, token)));
    }

    #[test]
    fn anything_else_is_no_receipt() {
        let receipt = encode(42, &[7; 16]);
        for junk in [
            "",
            "short",
            &receipt[..31],
            &format!("{receipt}A"),
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "é",
        ] {
            assert_eq!(decode(junk), None, "{junk:?}");
        }
    }
}
