//! The ledger's entries as the host reads them: a [`SnapshotSource`] for recording mode, and the
//! encoded footprint entries for enforcing mode.
//!
//! Liveness is decided here, once: a temporary entry whose live-until ledger is before the ledger
//! being read is absent (so expired nonces and signatures behave as on the network). Persistent
//! entries never expire: the ledger extends them at close.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use soroban_env_host::budget::Budget;
use soroban_env_host::e2e_invoke::{TtlLedgerEntryMeta, entry_size_for_rent};
use soroban_env_host::storage::{EntryWithLiveUntil, SnapshotSource};
use soroban_env_host::xdr::{ScErrorCode, ScErrorType};
use soroban_env_host::{Error, HostError};
use stellar_xdr::{
    ContractDataDurability, LedgerEntry, LedgerEntryData, LedgerFootprint, LedgerKey, Limits,
    WriteXdr,
};

use super::invoke::FootprintEntries;

/// The ledger's entries.
pub(super) type Entries = BTreeMap<LedgerKey, StoredEntry>;

/// One entry and, for contract data and code, the last ledger it lives in.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredEntry {
    /// The entry.
    pub(super) entry: Rc<LedgerEntry>,
    /// The last ledger it lives in (contract data and code only).
    pub(super) live_until: Option<u32>,
}

/// Whether an entry under `key` that lives until `live_until` can be read in ledger `ledger`.
pub(super) fn is_live(key: &LedgerKey, live_until: Option<u32>, ledger: u32) -> bool {
    match (key, live_until) {
        (LedgerKey::ContractData(data), Some(until))
            if data.durability == ContractDataDurability::Temporary =>
        {
            until >= ledger
        }
        _ => true,
    }
}

/// Whether the key is of a persistent entry: persistent contract data, or contract code.
pub(super) fn is_persistent(key: &LedgerKey) -> bool {
    match key {
        LedgerKey::ContractData(data) => data.durability == ContractDataDurability::Persistent,
        LedgerKey::ContractCode(_) => true,
        LedgerKey::Account(_)
        | LedgerKey::Trustline(_)
        | LedgerKey::Offer(_)
        | LedgerKey::Data(_)
        | LedgerKey::ClaimableBalance(_)
        | LedgerKey::LiquidityPool(_)
        | LedgerKey::ConfigSetting(_)
        | LedgerKey::Ttl(_) => false,
    }
}

/// The live entry under `key` in ledger `ledger`.
pub(super) fn live_entry(entries: &Entries, key: &LedgerKey, ledger: u32) -> Option<StoredEntry> {
    entries
        .get(key)
        .filter(|stored| is_live(key, stored.live_until, ledger))
        .cloned()
}

/// The Wasm code of the live contract code entries in `footprint`.
pub(super) fn footprint_wasm(
    entries: &Entries,
    footprint: &LedgerFootprint,
    ledger: u32,
) -> Vec<Vec<u8>> {
    footprint
        .read_only
        .iter()
        .chain(footprint.read_write.iter())
        .filter_map(|key| match (key, live_entry(entries, key, ledger)) {
            (LedgerKey::ContractCode(_), Some(stored)) => match &stored.entry.data {
                LedgerEntryData::ContractCode(code) => Some(code.code.to_vec()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The entries as of ledger `ledger`, for recording mode.
pub(super) struct Snapshot {
    entries: Rc<RefCell<Entries>>,
    ledger: u32,
}

impl Snapshot {
    /// A snapshot of `entries` read in ledger `ledger` (the ledger being simulated).
    pub(super) fn new(entries: Rc<RefCell<Entries>>, ledger: u32) -> Snapshot {
        Snapshot { entries, ledger }
    }
}

impl SnapshotSource for Snapshot {
    fn get(&self, key: &Rc<LedgerKey>) -> Result<Option<EntryWithLiveUntil>, HostError> {
        let entries = self.entries.try_borrow().map_err(|_| {
            HostError::from(Error::from_type_and_code(
                ScErrorType::Storage,
                ScErrorCode::InternalError,
            ))
        })?;
        Ok(live_entry(&entries, key, self.ledger).map(|stored| (stored.entry, stored.live_until)))
    }
}

/// The footprint's entries as [`enforce`](super::invoke::enforce) takes them, and the bytes of
/// the classic ones (what counts against the declared disk-read bytes).
///
/// # Errors
///
/// An entry that does not encode (not expected: the ledger only holds well-formed entries).
pub(super) fn footprint_entries(
    entries: &Entries,
    footprint: &LedgerFootprint,
    ledger: u32,
) -> Result<(FootprintEntries, u32), stellar_xdr::Error> {
    let budget = Budget::default();
    let mut out = Vec::with_capacity(footprint.read_only.len() + footprint.read_write.len());
    let mut disk_read_bytes = 0_u32;
    for key in footprint
        .read_only
        .iter()
        .chain(footprint.read_write.iter())
    {
        let Some(stored) = live_entry(entries, key, ledger) else {
            out.push((None, None));
            continue;
        };
        let encoded = stored.entry.to_xdr(Limits::none())?;
        let size = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
        let ttl = match key {
            LedgerKey::ContractData(_) | LedgerKey::ContractCode(_) => {
                let size_for_rent =
                    entry_size_for_rent(&budget, &stored.entry, size).unwrap_or(size);
                Some(TtlLedgerEntryMeta {
                    // Persistent entries are kept live by the ledger; a missing TTL is read as
                    // "lives in this ledger".
                    live_until_ledger: stored.live_until.unwrap_or(ledger).max(ledger),
                    entry_size_for_rent: size_for_rent,
                })
            }
            LedgerKey::Account(_)
            | LedgerKey::Trustline(_)
            | LedgerKey::Offer(_)
            | LedgerKey::Data(_)
            | LedgerKey::ClaimableBalance(_)
            | LedgerKey::LiquidityPool(_)
            | LedgerKey::ConfigSetting(_)
            | LedgerKey::Ttl(_) => {
                disk_read_bytes = disk_read_bytes.saturating_add(size);
                None
            }
        };
        out.push((Some(encoded), ttl));
    }
    Ok((out, disk_read_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        ContractDataEntry, ContractId, ExtensionPoint, Hash, LedgerEntryData, LedgerEntryExt,
        LedgerKeyContractData, ScAddress, ScNonceKey, ScVal,
    };

    fn nonce(durability: ContractDataDurability) -> (LedgerKey, StoredEntry) {
        let contract = ScAddress::Contract(ContractId(Hash([9; 32])));
        let key_val = ScVal::LedgerKeyNonce(ScNonceKey { nonce: 1 });
        let key = LedgerKey::ContractData(LedgerKeyContractData {
            contract: contract.clone(),
            key: key_val.clone(),
            durability,
        });
        let entry = LedgerEntry {
            last_modified_ledger_seq: 1,
            data: LedgerEntryData::ContractData(ContractDataEntry {
                ext: ExtensionPoint::V0,
                contract,
                key: key_val,
                durability,
                val: ScVal::Void,
            }),
            ext: LedgerEntryExt::V0,
        };
        (
            key,
            StoredEntry {
                entry: Rc::new(entry),
                live_until: Some(10),
            },
        )
    }

    #[test]
    fn expired_temporary_entries_read_as_absent() {
        let (key, stored) = nonce(ContractDataDurability::Temporary);
        let entries: Entries = [(key.clone(), stored)].into_iter().collect();
        assert!(live_entry(&entries, &key, 10).is_some());
        assert!(live_entry(&entries, &key, 11).is_none());
        let snapshot = Snapshot::new(Rc::new(RefCell::new(entries.clone())), 11);
        assert!(snapshot.get(&Rc::new(key.clone())).unwrap().is_none());

        let footprint = LedgerFootprint {
            read_only: Default::default(),
            read_write: vec![key].try_into().unwrap(),
        };
        let (encoded, disk) = footprint_entries(&entries, &footprint, 11).unwrap();
        assert_eq!(encoded, vec![(None, None)]);
        assert_eq!(disk, 0);
    }

    #[test]
    fn persistent_entries_stay_live() {
        let (key, stored) = nonce(ContractDataDurability::Persistent);
        let entries: Entries = [(key.clone(), stored)].into_iter().collect();
        assert!(live_entry(&entries, &key, 1_000).is_some());
        let footprint = LedgerFootprint {
            read_only: vec![key].try_into().unwrap(),
            read_write: Default::default(),
        };
        let (encoded, _) = footprint_entries(&entries, &footprint, 1_000).unwrap();
        assert_eq!(encoded[0].1.unwrap().live_until_ledger, 1_000);
    }
}
