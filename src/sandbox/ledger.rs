//! The ledger: its entries, its header (sequence, close time, hash), the queue of transactions
//! waiting for the next close, and the history of applied ones. Single-threaded: it lives on the
//! sandbox thread with the host.
//!
//! Writes go through a [`Delta`] (an overlay of changed entries) that is committed as one unit,
//! which is also where a transaction's meta changes come from.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use soroban_env_host::LedgerInfo;
use stellar_xdr::{
    AccountEntry, AccountId, Asset, LedgerEntry, LedgerEntryChange, LedgerEntryData,
    LedgerEntryExt, LedgerKey,
};

use super::account::account_ledger_key;
use super::apply::Applied;
use super::events::EventLog;
use super::invoke::{self, Change, PROTOCOL_VERSION};
use super::snapshot::{Entries, Snapshot, StoredEntry, live_entry};
use super::submit::Queued;
use crate::stellar::rpc::{
    Events, EventsRequest, Health, LatestLedger, LedgerEntries, LedgerEntryResult, NetworkInfo,
    RpcError, TransactionHash, TransactionInfo, TransactionStatus,
};
use crate::stellar::{Address, Keypair, Network};

/// The latest closed ledger's header.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// Its sequence number.
    pub(super) sequence: u32,
    /// When it closed (unix seconds).
    pub(super) close_time: u64,
    /// Its hash (a digest of the previous hash, the sequence, the close time and the
    /// transactions: unique, not the network's header hash).
    pub(super) hash: [u8; 32],
}

/// The two Stellar Asset Contracts deployed at genesis.
#[derive(Clone, Debug)]
pub(super) struct Assets {
    /// The USDC issuer account.
    pub(super) usdc_issuer: AccountId,
    /// `USDC:issuer`.
    pub(super) usdc_asset: Asset,
    /// USDC's SAC.
    pub(super) usdc: Address,
    /// The native asset's SAC.
    pub(super) xlm: Address,
}

/// The ledger.
pub(super) struct Ledger {
    /// The network (its id signs everything).
    pub(super) network: Network,
    /// The entries, shared with host snapshots while an invocation runs.
    pub(super) entries: Rc<RefCell<Entries>>,
    /// The latest closed ledger.
    pub(super) header: Header,
    /// The inclusion fee per operation, in stroops.
    pub(super) base_fee: u32,
    /// Transactions accepted by `sendTransaction`, applied at the next close, in order.
    pub(super) queue: Vec<Queued>,
    /// Applied transactions by hash, for `getTransaction`.
    pub(super) history: HashMap<TransactionHash, Applied>,
    /// The contract events of the applied transactions, for `getEvents`.
    pub(super) events: EventLog,
    /// How many ledgers of transactions and events are kept, the latest included.
    pub(super) retention_window: u32,
    /// The deployed asset contracts.
    pub(super) assets: Assets,
    /// The root (friendbot) account's key: `sha256(passphrase)` as seed, as on standalone
    /// networks.
    pub(super) root: Keypair,
    /// Invocations so far (varies the PRNG seed of each).
    invocations: u64,
    /// Drawn from the OS when the ledger starts, for simulations only (see
    /// [`simulation_seed`](Self::simulation_seed)).
    instance: [u8; 32],
}

/// 32 random bytes from the OS (the same, and so still distinct per run, if the OS cannot
/// give them: the time and the process id).
fn instance_salt() -> [u8; 32] {
    let mut salt = [0u8; 32];
    if getrandom::getrandom(&mut salt).is_err() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let mut hasher = Sha256::new();
        hasher.update(now.to_be_bytes());
        hasher.update(std::process::id().to_be_bytes());
        salt = hasher.finalize().into();
    }
    salt
}

/// Unix time now, in seconds.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl Ledger {
    /// An empty ledger at `sequence`, closed now, whose root account is `root` (entries are
    /// added by genesis).
    pub(super) fn empty(
        network: Network,
        base_fee: u32,
        sequence: u32,
        root: Keypair,
        assets: Assets,
    ) -> Ledger {
        let close_time = unix_now();
        let hash = Sha256::digest(network.id().as_bytes()).into();
        Ledger {
            network,
            entries: Rc::new(RefCell::new(Entries::new())),
            header: Header {
                sequence,
                close_time,
                hash,
            },
            base_fee,
            queue: Vec::new(),
            history: HashMap::new(),
            events: EventLog::default(),
            retention_window: super::DEFAULT_RETENTION_WINDOW,
            assets,
            root,
            invocations: 0,
            instance: instance_salt(),
        }
    }

    /// The sequence of the next ledger (the one being built: simulations and queued
    /// transactions run in it).
    pub(super) fn next_sequence(&self) -> u32 {
        self.header.sequence.saturating_add(1)
    }

    /// The close time the next ledger gets if it closes now: the wall clock, and at least one
    /// second after the latest close.
    pub(super) fn next_close_time(&self) -> u64 {
        unix_now().max(self.header.close_time.saturating_add(1))
    }

    /// What the host sees for the next ledger.
    pub(super) fn next_ledger_info(&self) -> LedgerInfo {
        invoke::ledger_info(
            &self.network.id(),
            self.next_sequence(),
            self.next_close_time(),
        )
    }

    /// A snapshot of the entries as the next ledger reads them.
    pub(super) fn snapshot(&self) -> Rc<Snapshot> {
        Rc::new(Snapshot::new(self.entries.clone(), self.next_sequence()))
    }

    /// A fresh PRNG seed: `sha256(label ‖ network id ‖ ledger ‖ invocation count)`.
    pub(super) fn seed(&mut self, label: &[u8]) -> [u8; 32] {
        self.invocations = self.invocations.wrapping_add(1);
        let mut hasher = Sha256::new();
        hasher.update(label);
        hasher.update(self.network.id().as_bytes());
        hasher.update(self.header.sequence.to_be_bytes());
        hasher.update(self.invocations.to_be_bytes());
        hasher.finalize().into()
    }

    /// The PRNG seed of a simulation: [`seed`](Self::seed) mixed with this ledger's random
    /// salt. A simulation picks the nonces of the authorizations it records, so nonces differ
    /// between two sandboxes (or one restarted) as they do on a real network, where a payer's
    /// nonce never repeats: a payment store that outlives a sandbox never sees an old
    /// payment's key again. Everything else (keys, contract ids) stays the same on every run.
    pub(super) fn simulation_seed(&mut self) -> [u8; 32] {
        let base = self.seed(b"tower-paywall sandbox simulation");
        let mut hasher = Sha256::new();
        hasher.update(base);
        hasher.update(self.instance);
        hasher.finalize().into()
    }

    /// The live entry under `key`, as the next ledger reads it.
    pub(super) fn entry(&self, key: &LedgerKey) -> Option<StoredEntry> {
        live_entry(&self.entries.borrow(), key, self.next_sequence())
    }

    /// An account entry.
    pub(super) fn account(&self, id: &AccountId) -> Option<AccountEntry> {
        Delta::default().account(self, id)
    }

    /// Applies `delta` in ledger `ledger` and returns its meta changes (`State` before every
    /// `Updated` or `Removed`, `Created` for new entries; TTL-only changes are not listed).
    pub(super) fn commit(&mut self, delta: Delta, ledger: u32) -> Vec<LedgerEntryChange> {
        let mut entries = self.entries.borrow_mut();
        let mut meta = Vec::new();
        for (key, after) in delta.changes {
            let before = live_entry(&entries, &key, ledger);
            describe_change(&key, before.as_ref(), after.as_ref(), &mut meta);
            match after {
                Some(stored) => {
                    entries.insert(key, stored);
                }
                None => {
                    entries.remove(&key);
                }
            }
        }
        meta
    }

    /// `getLatestLedger`.
    pub(super) fn latest_ledger(&self) -> LatestLedger {
        LatestLedger {
            id: hex::encode(self.header.hash),
            protocol_version: PROTOCOL_VERSION,
            sequence: self.header.sequence,
        }
    }

    /// The oldest ledger whose transactions and events `getTransaction` and `getEvents` still
    /// know.
    pub(super) fn oldest_ledger(&self) -> u32 {
        self.header
            .sequence
            .saturating_sub(self.retention_window.saturating_sub(1))
            .max(1)
    }

    /// `getHealth`.
    pub(super) fn health(&self) -> Health {
        Health {
            status: "healthy".to_owned(),
            latest_ledger: self.header.sequence,
            oldest_ledger: Some(self.oldest_ledger()),
            ledger_retention_window: Some(self.retention_window),
        }
    }

    /// `getNetwork` (no friendbot URL: funding is [`Sandbox::fund`](super::Sandbox::fund)).
    pub(super) fn network_info(&self) -> NetworkInfo {
        NetworkInfo {
            passphrase: self.network.passphrase().to_owned(),
            protocol_version: PROTOCOL_VERSION,
            friendbot_url: None,
        }
    }

    /// `getLedgerEntries`: the live entries of the latest ledger for these keys, in the order
    /// asked, each key once.
    pub(super) fn ledger_entries(&self, keys: &[LedgerKey]) -> LedgerEntries {
        let entries = self.entries.borrow();
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for key in keys {
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            if let Some(stored) = live_entry(&entries, key, self.header.sequence) {
                found.push(LedgerEntryResult {
                    key: key.clone(),
                    data: stored.entry.data.clone(),
                    last_modified_ledger: stored.entry.last_modified_ledger_seq,
                    live_until_ledger: stored.live_until,
                });
            }
        }
        LedgerEntries {
            entries: found,
            latest_ledger: self.header.sequence,
        }
    }

    /// `getEvents`.
    ///
    /// # Errors
    ///
    /// [`RpcError::Rpc`] for a request Soroban RPC refuses.
    pub(super) fn events(&self, request: &EventsRequest) -> Result<Events, RpcError> {
        self.events
            .query(request, self.header.sequence, self.oldest_ledger())
    }

    /// `getTransaction`.
    pub(super) fn transaction(&self, hash: &TransactionHash) -> TransactionInfo {
        match self.history.get(hash) {
            Some(applied) => TransactionInfo {
                status: if applied.success {
                    TransactionStatus::Success
                } else {
                    TransactionStatus::Failed
                },
                latest_ledger: self.header.sequence,
                ledger: Some(applied.ledger),
                created_at: Some(applied.close_time),
                application_order: Some(applied.application_order),
                fee_bump: applied.fee_bump,
                envelope: Some(applied.envelope.clone()),
                result: Some(applied.result.clone()),
                result_meta: Some(applied.meta.clone()),
            },
            None => TransactionInfo::not_found(self.header.sequence),
        }
    }
}

/// Appends the meta changes of one entry going from `before` to `after`: `Created`, `State` then
/// `Updated` or `Removed`, or nothing when only its TTL changed.
pub(super) fn describe_change(
    key: &LedgerKey,
    before: Option<&StoredEntry>,
    after: Option<&StoredEntry>,
    meta: &mut Vec<LedgerEntryChange>,
) {
    match (before, after) {
        (None, Some(new)) => meta.push(LedgerEntryChange::Created((*new.entry).clone())),
        (Some(old), Some(new)) if old.entry != new.entry => {
            meta.push(LedgerEntryChange::State((*old.entry).clone()));
            meta.push(LedgerEntryChange::Updated((*new.entry).clone()));
        }
        (Some(old), None) => {
            meta.push(LedgerEntryChange::State((*old.entry).clone()));
            meta.push(LedgerEntryChange::Removed(key.clone()));
        }
        (Some(_), Some(_)) | (None, None) => {}
    }
}

/// Changed entries over the ledger, committed together by [`Ledger::commit`].
#[derive(Clone, Debug, Default)]
pub(super) struct Delta {
    changes: BTreeMap<LedgerKey, Option<StoredEntry>>,
}

impl Delta {
    /// The entry under `key` with this delta's changes, as the next ledger reads it.
    pub(super) fn entry(&self, ledger: &Ledger, key: &LedgerKey) -> Option<StoredEntry> {
        match self.changes.get(key) {
            Some(changed) => changed.clone(),
            None => ledger.entry(key),
        }
    }

    /// An account entry, with this delta's changes.
    pub(super) fn account(&self, ledger: &Ledger, id: &AccountId) -> Option<AccountEntry> {
        let stored = self.entry(ledger, &account_ledger_key(id))?;
        match &stored.entry.data {
            LedgerEntryData::Account(account) => Some(account.clone()),
            _ => None,
        }
    }

    /// The changed entries (`None`: removed).
    pub(super) fn changed(&self) -> impl Iterator<Item = (&LedgerKey, &Option<StoredEntry>)> {
        self.changes.iter()
    }

    /// Sets the entry under its key (`None` removes it).
    pub(super) fn put(&mut self, key: LedgerKey, value: Option<StoredEntry>) {
        self.changes.insert(key, value);
    }

    /// Writes `data` (an entry without TTL) as modified in ledger `ledger`.
    pub(super) fn put_data(&mut self, data: LedgerEntryData, ledger: u32) {
        let key = data.to_key();
        let entry = LedgerEntry {
            last_modified_ledger_seq: ledger,
            data,
            ext: LedgerEntryExt::V0,
        };
        self.put(
            key,
            Some(StoredEntry {
                entry: Rc::new(entry),
                live_until: None,
            }),
        );
    }

    /// Writes an account entry as modified in ledger `ledger`.
    pub(super) fn put_account(&mut self, account: AccountEntry, ledger: u32) {
        self.put_data(LedgerEntryData::Account(account), ledger);
    }

    /// Takes the host's footprint changes: new values of read-write entries (removals
    /// included), longer lives of read-only ones. With `recorded` (changes from recording mode),
    /// untracked read-write keys are skipped: the footprint may list keys whose storage was
    /// rolled back.
    pub(super) fn put_host_changes(
        &mut self,
        ledger: &Ledger,
        changes: Vec<Change>,
        sequence: u32,
        recorded: bool,
    ) {
        for change in changes {
            let current = self.entry(ledger, &change.key);
            if change.read_only {
                if let (Some(stored), Some(live_until)) = (current, change.live_until)
                    && stored.live_until.is_some_and(|old| old < live_until)
                {
                    self.put(
                        change.key,
                        Some(StoredEntry {
                            entry: stored.entry,
                            live_until: Some(live_until),
                        }),
                    );
                }
                continue;
            }
            if change.untracked && recorded {
                continue;
            }
            let Some(mut entry) = change.new else {
                if current.is_some() {
                    self.put(change.key, None);
                }
                continue;
            };
            let unchanged = current.as_ref().is_some_and(|stored| {
                stored.entry.data == entry.data
                    && stored.entry.ext == entry.ext
                    && stored.live_until == change.live_until
            });
            if unchanged {
                continue;
            }
            let data_changed = current
                .as_ref()
                .is_none_or(|stored| stored.entry.data != entry.data);
            entry.last_modified_ledger_seq = if data_changed {
                sequence
            } else {
                current.map_or(sequence, |stored| stored.entry.last_modified_ledger_seq)
            };
            self.put(
                change.key,
                Some(StoredEntry {
                    entry: Rc::new(entry),
                    live_until: change.live_until,
                }),
            );
        }
    }
}
