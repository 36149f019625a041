//! [`RpcError`]: why a call gave no usable answer.

use std::fmt;

use super::TransactionHash;
use crate::stellar::Address;

/// Why an RPC call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Could not connect: the request was never delivered.
    #[error("Soroban RPC unreachable: {0}")]
    Unreachable(String),
    /// No answer in time: for `sendTransaction`, the outcome is unknown.
    #[error("Soroban RPC did not answer in time")]
    Timeout,
    /// The connection failed after the request was sent: for `sendTransaction`, the outcome is
    /// unknown.
    #[error("Soroban RPC connection interrupted: {0}")]
    Interrupted(String),
    /// A non-2xx HTTP status.
    #[error("Soroban RPC answered HTTP {0}")]
    Status(u16),
    /// A JSON-RPC error object. The message is the server's, cut to 256 characters.
    #[error("Soroban RPC error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code (`-32602` invalid params, …).
        code: i64,
        /// The server's message, shortened.
        message: String,
    },
    /// The answer is not the expected JSON-RPC response, or a field does not decode (bad JSON,
    /// no `result`, an unknown status, invalid base64 or XDR).
    #[error("Soroban RPC answer malformed: {0}")]
    Malformed(String),
    /// [`wait_for_transaction`](super::wait_for_transaction) reached its deadline before the transaction was final. It may
    /// still be applied.
    #[error("transaction {0} is not final yet")]
    NotFinal(TransactionHash),
    /// [`account_sequence`](super::account_sequence): the address has no account entry (the account is not funded, or
    /// the address is a contract).
    #[error("account {0} not found")]
    AccountNotFound(Address),
}

impl RpcError {
    /// Whether the RPC server is unavailable or did not say how things ended: unreachable, no
    /// answer in time, an interrupted connection, HTTP 5xx or 429, or a transaction not final
    /// by the deadline. Callers answer 503 (retry later, with the same payment), never 402.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout | Self::Interrupted(_) | Self::NotFinal(_) => true,
            Self::Status(code) => *code == 429 || (500..600).contains(code),
            Self::Rpc { .. } | Self::Malformed(_) | Self::AccountNotFound(_) => false,
        }
    }
}

/// [`RpcError::Malformed`] for a field or frame of `method`'s answer.
pub(super) fn malformed(method: &str, what: impl fmt::Display) -> RpcError {
    RpcError::Malformed(format!("{method}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::Keypair;

    #[test]
    fn unavailability() {
        assert!(RpcError::Unreachable("refused".into()).is_unavailable());
        assert!(RpcError::Timeout.is_unavailable());
        assert!(RpcError::Interrupted("reset".into()).is_unavailable());
        assert!(RpcError::NotFinal(TransactionHash([0; 32])).is_unavailable());
        assert!(RpcError::Status(502).is_unavailable());
        assert!(!RpcError::Status(401).is_unavailable());
        assert!(!RpcError::Malformed("x".into()).is_unavailable());
        assert!(
            !RpcError::Rpc {
                code: -32603,
                message: "internal".into()
            }
            .is_unavailable()
        );
        assert!(!RpcError::AccountNotFound(Keypair::from_seed([7; 32]).address()).is_unavailable());
    }
}
