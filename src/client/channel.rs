//! Paying MPP `channel` challenges with vouchers: the cumulative amount of each channel is
//! raised and written durably **before** the commitment is signed, so that no restart ever
//! signs an amount lower than one already given away (`@stellar/mpp`'s client keeps it in
//! memory only).
//!
//! A voucher's amount is the stored amount plus the price; a `close` is a paid request too, and
//! raises it the same way. A server's `cumulativeAmount` above the stored amount is refused
//! (`@stellar/mpp` would start from it, and so sign away the difference); one below it (a
//! server that lost its state) changes nothing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::offer::ChannelRequest;
use super::{Failure, PayError};
use crate::stellar::{Address, Network, Signer, commitment_bytes};

/// Why the cumulative amounts could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CumulativeError {
    /// The file could not be read, written or synced.
    #[error("cumulative store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not this store's format.
    #[error("the cumulative store file is corrupt")]
    Corrupt,
    /// The amount would overflow.
    #[error("the cumulative amount would overflow")]
    Overflow,
    /// Another store (this process or another) has the file open.
    #[error("the cumulative store file is in use by another store")]
    Locked,
}

/// Where a client keeps, per channel, the highest cumulative amount it signed.
pub trait CumulativeStore: Send + Sync + 'static {
    /// The highest amount signed for `channel` on `network` (0 when none).
    ///
    /// # Errors
    ///
    /// The store failed.
    fn current(&self, network: &str, channel: &Address) -> Result<i128, CumulativeError>;

    /// Atomically sets the channel's amount to `max(current, floor) + amount`, durably, and
    /// returns it; the caller signs that amount only after this returns.
    ///
    /// # Errors
    ///
    /// The store failed (nothing may be signed then) or the amount overflows.
    fn advance(
        &self,
        network: &str,
        channel: &Address,
        floor: i128,
        amount: i128,
    ) -> Result<i128, CumulativeError>;
}

type Amounts = BTreeMap<String, i128>;

/// The amounts of a store, under one lock: what both stores share.
#[derive(Debug, Default)]
struct Locked(Mutex<Amounts>);

impl Locked {
    fn current(&self, network: &str, channel: &Address) -> i128 {
        let amounts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        amounts.get(&key(network, channel)).copied().unwrap_or(0)
    }

    /// Raises the amount to `max(current, floor) + amount`; the new amounts are kept only once
    /// `persist` has accepted them.
    fn advance(
        &self,
        network: &str,
        channel: &Address,
        floor: i128,
        amount: i128,
        persist: impl FnOnce(&Amounts) -> Result<(), CumulativeError>,
    ) -> Result<i128, CumulativeError> {
        let mut amounts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = key(network, channel);
        let next = amounts
            .get(&key)
            .copied()
            .unwrap_or(0)
            .max(floor)
            .checked_add(amount)
            .ok_or(CumulativeError::Overflow)?;
        let mut raised = amounts.clone();
        raised.insert(key, next);
        persist(&raised)?;
        *amounts = raised;
        Ok(next)
    }
}

fn key(network: &str, channel: &Address) -> String {
    format!("{network} {channel}")
}

/// Cumulative amounts in memory: lost on exit (tests, short-lived agents whose channels are
/// closed before they stop).
#[derive(Debug, Default)]
pub struct MemoryCumulativeStore {
    amounts: Locked,
}

impl CumulativeStore for MemoryCumulativeStore {
    fn current(&self, network: &str, channel: &Address) -> Result<i128, CumulativeError> {
        Ok(self.amounts.current(network, channel))
    }

    fn advance(
        &self,
        network: &str,
        channel: &Address,
        floor: i128,
        amount: i128,
    ) -> Result<i128, CumulativeError> {
        (self.amounts).advance(network, channel, floor, amount, |_| Ok(()))
    }
}

/// Cumulative amounts in one JSON file, replaced atomically (written beside, synced, renamed,
/// the directory synced) on every advance. The file is locked (a `.lock` file beside it) for
/// as long as the store is open: a second store on the same path is refused. Each advance
/// syncs to disk on the caller's thread (a few milliseconds).
#[derive(Debug)]
pub struct FileCumulativeStore {
    path: PathBuf,
    amounts: Locked,
    /// Held for the store's life.
    _lock: File,
}

impl FileCumulativeStore {
    /// Opens (or starts) the store at `path`.
    ///
    /// # Errors
    ///
    /// [`CumulativeError::Io`] when the file cannot be read, [`CumulativeError::Corrupt`] when
    /// it is not a map of amounts.
    pub fn open(path: impl AsRef<Path>) -> Result<FileCumulativeStore, CumulativeError> {
        let path = path.as_ref().to_path_buf();
        let lock = File::create(beside(&path, "lock"))?;
        lock.try_lock().map_err(|_| CumulativeError::Locked)?;
        let amounts = match fs::read(&path) {
            Ok(bytes) => parse(&bytes)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Amounts::new(),
            Err(error) => return Err(error.into()),
        };
        Ok(FileCumulativeStore {
            path,
            amounts: Locked(Mutex::new(amounts)),
            _lock: lock,
        })
    }

    fn write(&self, amounts: &Amounts) -> Result<(), CumulativeError> {
        let text: BTreeMap<&String, String> = amounts
            .iter()
            .map(|(key, amount)| (key, amount.to_string()))
            .collect();
        let json = serde_json::to_vec_pretty(&text).map_err(|_| CumulativeError::Corrupt)?;
        let temporary = beside(&self.path, "tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&temporary, &self.path)?;
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(directory)?.sync_all()?;
        Ok(())
    }
}

/// `path` with `.suffix` appended to its name (never replacing its extension).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn parse(bytes: &[u8]) -> Result<Amounts, CumulativeError> {
    let text: BTreeMap<String, String> =
        serde_json::from_slice(bytes).map_err(|_| CumulativeError::Corrupt)?;
    text.into_iter()
        .map(|(key, amount)| {
            let amount: i128 = amount.parse().map_err(|_| CumulativeError::Corrupt)?;
            if amount < 0 {
                return Err(CumulativeError::Corrupt);
            }
            Ok((key, amount))
        })
        .collect()
}

impl CumulativeStore for FileCumulativeStore {
    fn current(&self, network: &str, channel: &Address) -> Result<i128, CumulativeError> {
        Ok(self.amounts.current(network, channel))
    }

    fn advance(
        &self,
        network: &str,
        channel: &Address,
        floor: i128,
        amount: i128,
    ) -> Result<i128, CumulativeError> {
        // Only what reached the disk is kept: a failed write leaves the old amounts.
        (self.amounts).advance(network, channel, floor, amount, |raised| self.write(raised))
    }
}

/// The channels a client pays from: each with the signer of its commitment key.
#[derive(Clone)]
pub(crate) struct Wallet {
    /// Each channel, in the order they were added.
    pub(crate) channels: Vec<WalletChannel>,
    pub(crate) store: Arc<dyn CumulativeStore>,
}

impl Default for Wallet {
    fn default() -> Self {
        Wallet {
            channels: Vec::new(),
            store: Arc::new(MemoryCumulativeStore::default()),
        }
    }
}

/// One of the wallet's channels.
#[derive(Clone)]
pub(crate) struct WalletChannel {
    /// The only origin (`scheme://host:port`) it pays and is named to.
    pub(crate) origin: String,
    pub(crate) channel: Address,
    /// Signs its commitments.
    pub(crate) signer: Arc<dyn Signer>,
}

impl Wallet {
    /// The signer of `channel`'s commitments, if it is one of the wallet's for `origin`.
    pub(crate) fn signer(&self, origin: &str, channel: &Address) -> Option<&Arc<dyn Signer>> {
        self.channels
            .iter()
            .find(|entry| entry.channel == *channel && entry.origin == origin)
            .map(|entry| &entry.signer)
    }

    /// The channels paid to `origin`.
    pub(crate) fn for_origin<'a>(&'a self, origin: &'a str) -> impl Iterator<Item = &'a Address> {
        self.channels
            .iter()
            .filter(move |entry| entry.origin == origin)
            .map(|entry| &entry.channel)
    }
}

/// What a voucher asks the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Voucher,
    Close,
}

/// Signs a voucher raising `channel`'s cumulative amount to `target` (or to what this client
/// signed already, when that is higher), the amount stored durably first: the payload and the
/// amount signed. `accepted` is what the server holds; more than this client ever signed is
/// refused.
pub(crate) async fn voucher_to(
    wallet: &Wallet,
    origin: &str,
    network: &Network,
    request: &ChannelRequest,
    accepted: i128,
    target: i128,
) -> Result<(Value, i128), Failure> {
    let raise = |signed: i128| target.saturating_sub(signed.max(accepted)).max(0);
    raise_and_sign(
        wallet,
        origin,
        network,
        request,
        accepted,
        raise,
        Action::Voucher,
    )
    .await
}

/// Signs a voucher raising `channel`'s cumulative amount by `more` over what this client signed
/// (a stream paying ahead before the server asks), the amount stored durably first.
pub(crate) async fn voucher_more(
    wallet: &Wallet,
    origin: &str,
    network: &Network,
    request: &ChannelRequest,
    more: i128,
) -> Result<(Value, i128), Failure> {
    raise_and_sign(
        wallet,
        origin,
        network,
        request,
        0,
        |_| more,
        Action::Voucher,
    )
    .await
}

/// Raises `request`'s channel above what the server holds (`accepted`) by `raise(signed)`,
/// durably, then signs the amount for `action`: the payload and the amount.
async fn raise_and_sign(
    wallet: &Wallet,
    origin: &str,
    network: &Network,
    request: &ChannelRequest,
    accepted: i128,
    raise: impl FnOnce(i128) -> i128,
    action: Action,
) -> Result<(Value, i128), Failure> {
    let signer = wallet
        .signer(origin, &request.channel)
        .ok_or(PayError::Unsupported("not one of this client's channels"))?;
    let signed = wallet
        .store
        .current(&request.network, &request.channel)
        .map_err(|error| PayError::Channel(error.to_string()))?;
    // The server's word on the channel is only trusted downwards: a server that claims more
    // than this client ever signed would have it sign away the difference.
    if accepted > signed {
        return Err(PayError::InvalidOffer(
            "the server holds a cumulative amount this client never signed",
        )
        .into());
    }
    let cumulative = wallet
        .store
        .advance(&request.network, &request.channel, accepted, raise(signed))
        .map_err(|error| PayError::Channel(error.to_string()))?;
    sign(signer, network, request, cumulative, action)
        .await
        .map(|payload| (payload, cumulative))
}

/// The payload of a voucher (or close) for `cumulative`, already stored.
async fn sign(
    signer: &Arc<dyn Signer>,
    network: &Network,
    request: &ChannelRequest,
    cumulative: i128,
    action: Action,
) -> Result<Value, Failure> {
    // Raised, the amount is part of every later voucher: a failure from here on counts as
    // spent.
    let bytes = commitment_bytes(&network.id(), &request.channel, cumulative)
        .map_err(|_| Failure::spent(PayError::InvalidOffer("channel commitment")))?;
    let signature = crate::stellar::signer::sign_checked(&**signer, &bytes)
        .await
        .map_err(|error| Failure::spent(PayError::Signer(error.to_string())))?;
    let action = match action {
        Action::Voucher => "voucher",
        Action::Close => "close",
    };
    Ok(json!({
        "action": action,
        "amount": cumulative.to_string(),
        "signature": hex::encode(signature),
    }))
}

/// The voucher's payload for `request`: the stored amount raised by its price.
pub(crate) async fn payload(
    wallet: &Wallet,
    origin: &str,
    network: &Network,
    request: &ChannelRequest,
    action: Action,
) -> Result<Value, Failure> {
    let raise = |_| request.amount;
    raise_and_sign(
        wallet,
        origin,
        network,
        request,
        request.cumulative,
        raise,
        action,
    )
    .await
    .map(|(payload, _)| payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_claiming_more_than_was_signed_gets_no_voucher() {
        let channel = Address::Contract([7; 32]);
        let key = crate::stellar::Keypair::from_seed([3; 32]);
        let wallet = Wallet {
            channels: vec![WalletChannel {
                origin: "http://a".into(),
                channel,
                signer: Arc::new(key),
            }],
            store: Arc::new(MemoryCumulativeStore::default()),
        };
        let request = |cumulative| ChannelRequest {
            amount: 10,
            channel,
            network: "stellar:testnet".into(),
            cumulative,
            unit: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pay = |cumulative| {
            runtime.block_on(payload(
                &wallet,
                "http://a",
                &Network::testnet(),
                &request(cumulative),
                Action::Voucher,
            ))
        };
        assert_eq!(pay(0).unwrap()["amount"], "10");
        // The whole deposit, asked as the "held" amount: refused, nothing raised or signed.
        assert!(matches!(
            pay(1_000_000_000),
            Err(Failure {
                error: PayError::InvalidOffer(_),
                spent: false
            })
        ));
        assert_eq!(
            wallet.store.current("stellar:testnet", &channel).unwrap(),
            10
        );
        // A server that lost its state: the next voucher still goes on from what was signed.
        assert_eq!(pay(0).unwrap()["amount"], "20");
        let voucher = pay(20).unwrap();
        assert_eq!(voucher["amount"], "30");
        assert_eq!(voucher["action"], "voucher");
        // Another origin does not get to use the channel.
        let elsewhere = runtime.block_on(payload(
            &wallet,
            "http://b",
            &Network::testnet(),
            &request(30),
            Action::Voucher,
        ));
        assert!(matches!(
            elsewhere,
            Err(Failure {
                error: PayError::Unsupported(_),
                spent: false
            })
        ));
    }

    #[test]
    fn a_refused_commitment_signature_still_counts_as_spent() {
        let channel = Address::Contract([7; 32]);
        let refusing = crate::stellar::CallbackSigner::new([9; 32], |_| async {
            Err(crate::stellar::SignError::Refused("no".into()))
        });
        let wallet = Wallet {
            channels: vec![WalletChannel {
                origin: "http://a".into(),
                channel,
                signer: Arc::new(refusing),
            }],
            store: Arc::new(MemoryCumulativeStore::default()),
        };
        let request = ChannelRequest {
            amount: 10,
            channel,
            network: "stellar:testnet".into(),
            cumulative: 0,
            unit: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let failed = runtime.block_on(payload(
            &wallet,
            "http://a",
            &Network::testnet(),
            &request,
            Action::Close,
        ));
        // The amount was raised before the signature: the next voucher will include it.
        assert!(matches!(
            failed,
            Err(Failure {
                error: PayError::Signer(_),
                spent: true
            })
        ));
        assert_eq!(
            wallet.store.current("stellar:testnet", &channel).unwrap(),
            10
        );
    }

    #[test]
    fn amounts_only_go_up_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("cumulative-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("channels.json");
        let channel = Address::Contract([7; 32]);
        let store = FileCumulativeStore::open(&path).unwrap();
        assert_eq!(store.current("stellar:testnet", &channel).unwrap(), 0);
        assert_eq!(
            store.advance("stellar:testnet", &channel, 0, 10).unwrap(),
            10
        );
        // The server holds more than we remember (another device paid): start from there.
        assert_eq!(
            store.advance("stellar:testnet", &channel, 50, 10).unwrap(),
            60
        );
        // It holds less (it lost state): never sign lower than we did.
        assert_eq!(
            store.advance("stellar:testnet", &channel, 5, 10).unwrap(),
            70
        );
        assert!(matches!(
            FileCumulativeStore::open(&path),
            Err(CumulativeError::Locked)
        ));
        drop(store);
        let store = FileCumulativeStore::open(&path).unwrap();
        assert_eq!(store.current("stellar:testnet", &channel).unwrap(), 70);
        assert_eq!(store.current("stellar:pubnet", &channel).unwrap(), 0);
        assert!(matches!(
            store.advance("stellar:testnet", &channel, i128::MAX, 1),
            Err(CumulativeError::Overflow)
        ));
        assert_eq!(store.current("stellar:testnet", &channel).unwrap(), 70);
        drop(store);
        for corrupt in [&b"[]"[..], b"{\"k\": \"-1\"}", b"{\"k\": 5}", b"\xff"] {
            fs::write(&path, corrupt).unwrap();
            assert!(matches!(
                FileCumulativeStore::open(&path),
                Err(CumulativeError::Corrupt)
            ));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
