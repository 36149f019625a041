//! `getLedgerEntries`' answer.

use stellar_xdr::{LedgerEntryData, LedgerKey};

/// `getLedgerEntries`' answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntries {
    /// The entries found; keys without an entry are left out.
    pub entries: Vec<LedgerEntryResult>,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
}

/// One ledger entry of [`LedgerEntries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntryResult {
    /// The entry's key (`key`).
    pub key: LedgerKey,
    /// The entry's current value (`xdr`).
    pub data: LedgerEntryData,
    /// The ledger that last changed the entry (`lastModifiedLedgerSeq`).
    pub last_modified_ledger: u32,
    /// The last ledger a contract data or code entry lives until (`liveUntilLedgerSeq`).
    pub live_until_ledger: Option<u32>,
}
