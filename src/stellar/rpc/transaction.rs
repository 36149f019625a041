//! Transactions: [`TransactionHash`], `sendTransaction`'s and `getTransaction`'s answers and
//! statuses.

use std::fmt;
use std::str::FromStr;

use stellar_xdr::{DiagnosticEvent, TransactionEnvelope, TransactionMeta, TransactionResult};

use crate::stellar::NetworkId;

/// `sendTransaction`'s status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendStatus {
    /// `PENDING`: accepted, waiting for a ledger. Poll `getTransaction`.
    Pending,
    /// `DUPLICATE`: already queued (an earlier send). Poll `getTransaction`.
    Duplicate,
    /// `TRY_AGAIN_LATER`: not accepted this time; send the same transaction again later.
    TryAgainLater,
    /// `ERROR`: rejected; [`SendResult::error_result`] says why.
    Error,
}

impl SendStatus {
    /// The status as RPC spells it (`PENDING`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Duplicate => "DUPLICATE",
            Self::TryAgainLater => "TRY_AGAIN_LATER",
            Self::Error => "ERROR",
        }
    }

    pub(super) fn parse(text: &str) -> Option<SendStatus> {
        match text {
            "PENDING" => Some(Self::Pending),
            "DUPLICATE" => Some(Self::Duplicate),
            "TRY_AGAIN_LATER" => Some(Self::TryAgainLater),
            "ERROR" => Some(Self::Error),
            _ => None,
        }
    }
}

impl fmt::Display for SendStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sendTransaction`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// Whether the transaction was queued.
    pub status: SendStatus,
    /// The transaction's hash.
    pub hash: TransactionHash,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// Why the transaction was rejected (`errorResultXdr`), with [`SendStatus::Error`].
    pub error_result: Option<TransactionResult>,
    /// Diagnostic events explaining a rejection (`diagnosticEventsXdr`), if any.
    pub diagnostic_events: Vec<DiagnosticEvent>,
}

/// `getTransaction`'s status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `SUCCESS`: applied successfully in a ledger.
    Success,
    /// `FAILED`: included in a ledger, and failed (the fee was charged).
    Failed,
    /// `NOT_FOUND`: not in a ledger (yet, or outside the server's history).
    NotFound,
}

impl TransactionStatus {
    /// The status as RPC spells it (`SUCCESS`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::NotFound => "NOT_FOUND",
        }
    }

    /// Whether the transaction is in a ledger: `Success` or `Failed`.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }

    pub(super) fn parse(text: &str) -> Option<TransactionStatus> {
        match text {
            "SUCCESS" => Some(Self::Success),
            "FAILED" => Some(Self::Failed),
            "NOT_FOUND" => Some(Self::NotFound),
            _ => None,
        }
    }
}

impl fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `getTransaction`'s answer. The ledger fields are set once the transaction is final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    /// Whether the transaction is in a ledger, and how it went.
    pub status: TransactionStatus,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// The ledger that included the transaction.
    pub ledger: Option<u32>,
    /// When that ledger closed (unix seconds, `createdAt`).
    pub created_at: Option<u64>,
    /// The transaction's index in that ledger.
    pub application_order: Option<u32>,
    /// Whether the transaction was a fee bump.
    pub fee_bump: bool,
    /// The transaction (`envelopeXdr`).
    pub envelope: Option<TransactionEnvelope>,
    /// The result (`resultXdr`).
    pub result: Option<TransactionResult>,
    /// The ledger changes, events and return value (`resultMetaXdr`).
    pub result_meta: Option<TransactionMeta>,
}

impl TransactionInfo {
    /// The answer for a transaction not in any ledger (yet), as of `latest_ledger`.
    #[must_use]
    pub fn not_found(latest_ledger: u32) -> Self {
        TransactionInfo {
            status: TransactionStatus::NotFound,
            latest_ledger,
            ledger: None,
            created_at: None,
            application_order: None,
            fee_bump: false,
            envelope: None,
            result: None,
            result_meta: None,
        }
    }
}

/// A transaction's hash: `sha256` of its signature payload. Displayed and parsed as 64
/// lowercase hex digits, as RPC sends it (parsing also accepts uppercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionHash(pub [u8; 32]);

impl TransactionHash {
    /// The hash of `envelope` on the network `network`: of the fee bump for a fee-bump
    /// envelope, as `sendTransaction` and `getTransaction` use it.
    ///
    /// # Errors
    ///
    /// The envelope does not encode as XDR (not expected for a well-formed value).
    pub fn of(
        envelope: &TransactionEnvelope,
        network: &NetworkId,
    ) -> Result<TransactionHash, stellar_xdr::Error> {
        envelope.hash(network.0).map(TransactionHash)
    }

    /// The 32 hash bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for TransactionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TransactionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionHash({self})")
    }
}

/// A text that is not 64 hex digits, refused as a [`TransactionHash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a transaction hash is 64 hex digits")]
pub struct TransactionHashError;

impl FromStr for TransactionHash {
    type Err = TransactionHashError;

    fn from_str(text: &str) -> Result<TransactionHash, TransactionHashError> {
        hex::FromHex::from_hex(text)
            .ok()
            .map(TransactionHash)
            .ok_or(TransactionHashError)
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use stellar_xdr::{Limits, TransactionExt, TransactionV1Envelope, WriteXdr};

    use super::*;
    use crate::stellar::Network;
    use crate::stellar::rpc::testing::envelope;

    #[test]
    fn transaction_hash_text() {
        let text = "c73c5eac58a441d4eb733c35253ae85f783e018f7be5ef974258fed067aabb36";
        let hash: TransactionHash = text.parse().unwrap();
        assert_eq!(hash.to_string(), text);
        assert_eq!(hash.as_bytes()[0], 0xc7);
        assert_eq!(text.to_uppercase().parse::<TransactionHash>(), Ok(hash));
        assert_eq!(format!("{hash:?}"), format!("TransactionHash({text})"));
        for bad in [
            "",
            "c7",
            &text[1..],
            &format!("{text}0"),
            &text.replace('c', "g"),
            &format!("é{}", &text[2..]),
        ] {
            assert_eq!(
                bad.parse::<TransactionHash>(),
                Err(TransactionHashError),
                "{bad}"
            );
        }
    }

    /// `TransactionHash::of` against an independent computation:
    /// `sha256(network id ‖ ENVELOPE_TYPE_TX ‖ transaction)`.
    #[test]
    fn transaction_hash_of_an_envelope() {
        let network = Network::testnet().id();
        let envelope = envelope();
        let TransactionEnvelope::Tx(TransactionV1Envelope { tx, .. }) = &envelope else {
            unreachable!()
        };
        let mut preimage = network.as_bytes().to_vec();
        preimage.extend_from_slice(&2_u32.to_be_bytes());
        preimage.extend(tx.to_xdr(Limits::none()).unwrap());
        let expected: [u8; 32] = Sha256::digest(&preimage).into();
        assert_eq!(
            TransactionHash::of(&envelope, &network).unwrap().0,
            expected
        );
        assert_ne!(
            TransactionHash::of(&envelope, &Network::pubnet().id())
                .unwrap()
                .0,
            expected
        );
        assert!(matches!(tx.ext, TransactionExt::V1(_)));
    }
}
