//! What the server says of itself and of the network: `getHealth`, `getNetwork` and
//! `getLatestLedger`.

use crate::stellar::NetworkId;

/// `getHealth`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `"healthy"` for a healthy server.
    pub status: String,
    /// The most recent ledger the server knows.
    pub latest_ledger: u32,
    /// The oldest ledger kept in history, if given.
    pub oldest_ledger: Option<u32>,
    /// The configured history retention window in ledgers, if given.
    pub ledger_retention_window: Option<u32>,
}

impl Health {
    /// Whether the status is `"healthy"`.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// `getNetwork`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The network passphrase (`Test SDF Network ; September 2015`, …).
    pub passphrase: String,
    /// The protocol version of the latest ledger.
    pub protocol_version: u32,
    /// The friendbot (test-account funding) URL, on networks that have one.
    pub friendbot_url: Option<String>,
}

impl NetworkInfo {
    /// The network id of [`passphrase`](Self::passphrase).
    #[must_use]
    pub fn network_id(&self) -> NetworkId {
        NetworkId::from_passphrase(&self.passphrase)
    }
}

/// `getLatestLedger`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestLedger {
    /// The ledger's hash, as the server sent it (hex); empty if it sent none.
    pub id: String,
    /// The ledger's protocol version.
    pub protocol_version: u32,
    /// The ledger's sequence number.
    pub sequence: u32,
}
