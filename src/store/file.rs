//! [`FileChannelStore`]: the durable channel store.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use sha2::{Digest, Sha256};

use super::StoreError;
use super::channel::{ChannelId, ChannelPhase, ChannelState, ChannelStore, page};
use crate::BoxFuture;

/// The length of one channel record ([`ChannelState::to_record`]).
pub const CHANNEL_RECORD_LEN: usize = 156;
const RECORD_LEN: usize = CHANNEL_RECORD_LEN;
const BODY_LEN: usize = RECORD_LEN - 8;
const VERSION: u8 = 1;
const FILE_NAME: &str = "channels.log";
/// Records appended before the file is compacted again, beyond one per channel.
const COMPACT_AFTER: usize = 65_536;

/// A durable [`ChannelStore`] kept in one append-only file in a directory.
///
/// Each accepted state is appended as one fixed-size record and the file is synced
/// (`fdatasync`) before the write is reported, so a state the store said it kept survives a
/// crash or a power cut. Opening the store replays the file (the last record of a channel
/// wins), drops a torn record at the tail (each record carries a checksum), and compacts the
/// file to one record per channel when it holds more than that. The file is locked for the
/// life of the store: a second process (or a second store in this one) cannot open it.
///
/// Record layout (156 bytes, integers big-endian):
///
/// | bytes | field |
/// |---|---|
/// | 1 | format version (1) |
/// | 1 | phase: 0 open, 1 closing, 2 closed |
/// | 1 | flags: 1 signature present, 2 close transaction present, 4 unspent credit present |
/// | 1 | zero |
/// | 32 | channel contract id |
/// | 16 | cumulative amount (i128) |
/// | 64 | signature (zeros when absent) |
/// | 32 | closed: the close transaction hash; open or closing: the unspent credit (i128) in the first 16 bytes; zeros when absent |
/// | 8 | the first 8 bytes of SHA-256 over the 148 bytes before |
///
/// ```
/// use tower_paywall::store::{ChannelId, ChannelPhase, ChannelState, ChannelStore, FileChannelStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("channels-doc-{}", std::process::id()));
/// let channel = ChannelId([7; 32]);
/// let voucher = ChannelState { cumulative: 250, signature: Some([1; 64]), unspent: 0, phase: ChannelPhase::Open };
/// {
///     let store = FileChannelStore::open(&dir)?;
///     assert!(store.compare_and_set(channel, None, voucher).await?);
/// } // dropped: as after a crash, only the file remains
/// let store = FileChannelStore::open(&dir)?;
/// assert_eq!(store.load(channel).await?, Some(voucher));
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
pub struct FileChannelStore {
    /// What the file holds, for readers; changed only after the record is on disk.
    states: Arc<RwLock<HashMap<ChannelId, ChannelState>>>,
    /// The file; one writer at a time, syncing outside the readers' lock.
    log: Arc<Mutex<Log>>,
    path: PathBuf,
}

struct Log {
    file: File,
    dir: PathBuf,
    /// Whole records in the file.
    records: usize,
    /// Set when a failed write could not be undone: the file's tail is unknown, so nothing
    /// more is written until the store is opened again (which drops that tail).
    poisoned: bool,
}

impl FileChannelStore {
    /// Opens (creating if needed) the store in the directory `dir`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the directory or its file cannot be created, read or
    /// locked (another store holds it), or if a record in the middle of the file is corrupt (a
    /// torn record at the end, from a crash during a write, is dropped; anything else needs a
    /// look before the store is used again).
    pub fn open(dir: impl AsRef<Path>) -> Result<FileChannelStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io("create the directory"))?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("open the file"))?;
        file.try_lock()
            .map_err(|_| StoreError::Unavailable(format!("{} is in use", path.display())))?;
        // The file's name must survive a crash too.
        sync_dir(&dir)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read the file"))?;
        let mut states = HashMap::new();
        let mut records = 0;
        for chunk in bytes.chunks_exact(RECORD_LEN) {
            let Some((channel, state)) = decode(chunk) else {
                break;
            };
            states.insert(channel, state);
            records += 1;
        }
        let good = records * RECORD_LEN;
        if bytes.len() - good >= 2 * RECORD_LEN {
            // A bad record with whole records after it is not a torn write.
            return Err(StoreError::Unavailable(format!(
                "{}: record {records} is corrupt and is followed by others; move the file aside \
                 and look at it",
                path.display()
            )));
        }
        let mut log = Log {
            file,
            dir,
            records,
            poisoned: false,
        };
        if good != bytes.len() {
            // A torn tail: what follows the last good record was never reported kept.
            tracing::warn!(
                dropped = bytes.len() - good,
                "channel store: dropping a torn tail"
            );
            log.truncate()?;
        }
        if log.records > states.len() {
            log.compact(&states)?;
        }
        Ok(FileChannelStore {
            states: Arc::new(RwLock::new(states)),
            log: Arc::new(Mutex::new(log)),
            path,
        })
    }

    fn states(&self) -> RwLockReadGuard<'_, HashMap<ChannelId, ChannelState>> {
        // Every update is one insert: a poisoned lock is still consistent.
        self.states
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The blocking part of a compare-and-set: check, append, sync, publish.
    fn write(
        log: &Mutex<Log>,
        states: &RwLock<HashMap<ChannelId, ChannelState>>,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> Result<bool, StoreError> {
        // The writer's lock orders writes; readers only wait for the brief publish below.
        let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if log.poisoned {
            return Err(StoreError::Unavailable(
                "channel store: a write failed and could not be undone; reopen the store".into(),
            ));
        }
        let stored = states
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&channel)
            .copied();
        if stored != current {
            return Ok(false);
        }
        log.append(&encode(channel, &new))?;
        let live = {
            let mut states = states
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            states.insert(channel, new);
            states.len()
        };
        if log.records > live + COMPACT_AFTER {
            let snapshot = states
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            // The record is kept already; a failed compaction only leaves the file longer.
            if let Err(error) = log.compact(&snapshot) {
                tracing::warn!(%error, "channel store: compaction failed");
            }
        }
        Ok(true)
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |error| StoreError::Unavailable(format!("channel store: cannot {what}: {error}"))
}

impl Log {
    /// Appends one record and syncs it. On failure the file is cut back to its whole records
    /// (so the record is not there after a restart either), or the log is poisoned.
    fn append(&mut self, record: &[u8; RECORD_LEN]) -> Result<(), StoreError> {
        let written = self
            .file
            .write_all(record)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.records += 1;
                Ok(())
            }
            Err(error) => {
                if let Err(undo) = self.truncate() {
                    tracing::error!(%undo, "channel store: a failed write could not be undone");
                    self.poisoned = true;
                }
                Err(io("write a record")(error))
            }
        }
    }

    /// Cuts the file back to its whole records, synced.
    fn truncate(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len((self.records * RECORD_LEN) as u64)
            .and_then(|()| self.file.sync_all())
            .map_err(io("truncate the file"))
    }

    /// Rewrites the file with one record per channel: a new file, synced, renamed over the old
    /// one, then the directory synced.
    fn compact(&mut self, states: &HashMap<ChannelId, ChannelState>) -> Result<(), StoreError> {
        let path = self.dir.join(FILE_NAME);
        let temporary = self.dir.join(format!("{FILE_NAME}.compact"));
        let mut bytes = Vec::with_capacity(states.len() * RECORD_LEN);
        for (channel, state) in states {
            bytes.extend_from_slice(&encode(*channel, state));
        }
        let mut file = File::create(&temporary).map_err(io("create the compacted file"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("write the compacted file"))?;
        drop(file);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&temporary)
            .map_err(io("reopen the compacted file"))?;
        file.try_lock()
            .map_err(|_| StoreError::Unavailable("channel store: cannot lock".into()))?;
        std::fs::rename(&temporary, &path).map_err(io("replace the file"))?;
        sync_dir(&self.dir)?;
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        self.file = file;
        self.records = states.len();
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("sync the directory"))
}

impl ChannelState {
    /// The state of `channel` as one record of [`FileChannelStore`]'s format (the table
    /// there), for stores that keep channel states as bytes.
    pub fn to_record(&self, channel: ChannelId) -> [u8; CHANNEL_RECORD_LEN] {
        encode(channel, self)
    }

    /// The channel and state of a [`to_record`](Self::to_record) record; `None` for anything
    /// else (a wrong length, a bad checksum or version, an unknown phase or flag).
    pub fn from_record(record: &[u8]) -> Option<(ChannelId, ChannelState)> {
        if record.len() != RECORD_LEN {
            return None;
        }
        decode(record)
    }
}

fn encode(channel: ChannelId, state: &ChannelState) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[0] = VERSION;
    let (phase, transaction) = match state.phase {
        ChannelPhase::Open => (0, None),
        ChannelPhase::Closing => (1, None),
        ChannelPhase::Closed { transaction } => (2, transaction),
    };
    // A closed channel has no credit left: its slot holds the close transaction.
    let unspent = (phase != 2 && state.unspent != 0).then_some(state.unspent);
    record[1] = phase;
    record[2] = u8::from(state.signature.is_some())
        | (u8::from(transaction.is_some()) << 1)
        | (u8::from(unspent.is_some()) << 2);
    record[4..36].copy_from_slice(&channel.0);
    record[36..52].copy_from_slice(&state.cumulative.to_be_bytes());
    record[52..116].copy_from_slice(&state.signature.unwrap_or([0; 64]));
    record[116..148].copy_from_slice(&transaction.unwrap_or([0; 32]));
    if let Some(unspent) = unspent {
        record[116..132].copy_from_slice(&unspent.to_be_bytes());
    }
    let digest = Sha256::digest(&record[..BODY_LEN]);
    record[BODY_LEN..].copy_from_slice(&digest[..8]);
    record
}

fn decode(record: &[u8]) -> Option<(ChannelId, ChannelState)> {
    let digest = Sha256::digest(&record[..BODY_LEN]);
    if record[BODY_LEN..] != digest[..8] || record[0] != VERSION || record[3] != 0 {
        return None;
    }
    let flags = record[2];
    if flags & !7 != 0 || flags & 6 == 6 {
        return None;
    }
    let transaction: Option<[u8; 32]> = if flags & 2 != 0 {
        Some(record[116..148].try_into().ok()?)
    } else {
        None
    };
    let phase = match (record[1], transaction) {
        (0, None) => ChannelPhase::Open,
        (1, None) => ChannelPhase::Closing,
        (2, transaction) if flags & 4 == 0 => ChannelPhase::Closed { transaction },
        _ => return None,
    };
    let cumulative = i128::from_be_bytes(record[36..52].try_into().ok()?);
    let unspent = if flags & 4 != 0 {
        let unspent = i128::from_be_bytes(record[116..132].try_into().ok()?);
        let valid = 0 < unspent && unspent <= cumulative && record[132..148] == [0; 16];
        if !valid {
            return None;
        }
        unspent
    } else {
        0
    };
    let signature = if flags & 1 != 0 {
        Some(record[52..116].try_into().ok()?)
    } else {
        None
    };
    Some((
        ChannelId(record[4..36].try_into().ok()?),
        ChannelState {
            cumulative,
            signature,
            unspent,
            phase,
        },
    ))
}

impl ChannelStore for FileChannelStore {
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        let state = self.states().get(&channel).copied();
        Box::pin(std::future::ready(Ok(state)))
    }

    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (log, states) = (self.log.clone(), self.states.clone());
        Box::pin(async move {
            let write = move || Self::write(&log, &states, channel, current, new);
            // The sync blocks: off the async workers.
            match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::spawn_blocking(write)
                    .await
                    .map_err(|error| StoreError::Unavailable(error.to_string()))?,
                Err(_) => write(),
            }
        })
    }

    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        Box::pin(std::future::ready(Ok(page(&self.states(), after, limit))))
    }
}

impl fmt::Debug for FileChannelStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileChannelStore")
            .field("path", &self.path)
            .field("channels", &self.states().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, voucher};

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tower-paywall-channels-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_round_trip_and_only_whole_ones_decode() {
        let channel = ChannelId([5; 32]);
        let state = voucher(42, 9);
        let record = state.to_record(channel);
        assert_eq!(ChannelState::from_record(&record), Some((channel, state)));
        assert_eq!(ChannelState::from_record(&record[..RECORD_LEN - 1]), None);
        assert_eq!(
            ChannelState::from_record(&[record.as_slice(), &[0]].concat()),
            None
        );
        assert_eq!(ChannelState::from_record(&[]), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_passes_the_conformance_suite_and_is_durable() {
        let dir = dir("atomic");
        let store = Arc::new(FileChannelStore::open(&dir).unwrap());
        conformance::channel_store(store.clone()).await;
        let before = store.channels(None, usize::MAX).await.unwrap();
        drop(store);
        let reopened = FileChannelStore::open(&dir).unwrap();
        assert_eq!(reopened.channels(None, usize::MAX).await.unwrap(), before);
        // Reopening compacted the file to one record per channel.
        let len = std::fs::metadata(dir.join(FILE_NAME)).unwrap().len();
        assert_eq!(len, (before.len() * RECORD_LEN) as u64);
        drop(reopened);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_the_last_whole_record_wins() {
        let dir = dir("torn");
        let channel = ChannelId([5; 32]);
        let store = FileChannelStore::open(&dir).unwrap();
        assert!(
            store
                .compare_and_set(channel, None, voucher(10, 1))
                .await
                .unwrap()
        );
        assert!(
            store
                .compare_and_set(channel, Some(voucher(10, 1)), voucher(20, 2))
                .await
                .unwrap()
        );
        drop(store);
        // A crash in the middle of the third write: half a record.
        let path = dir.join(FILE_NAME);
        let third = encode(channel, &voucher(30, 3));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&third[..RECORD_LEN / 2]).unwrap();
        drop(file);
        let store = FileChannelStore::open(&dir).unwrap();
        assert_eq!(store.load(channel).await.unwrap(), Some(voucher(20, 2)));
        // And the store goes on from there.
        assert!(
            store
                .compare_and_set(channel, Some(voucher(20, 2)), voucher(40, 4))
                .await
                .unwrap()
        );
        drop(store);
        let store = FileChannelStore::open(&dir).unwrap();
        assert_eq!(store.load(channel).await.unwrap(), Some(voucher(40, 4)));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_ends_the_replay() {
        let channel = ChannelId([6; 32]);
        let mut record = encode(channel, &voucher(7, 7));
        assert_eq!(decode(&record), Some((channel, voucher(7, 7))));
        record[40] ^= 1;
        assert_eq!(decode(&record), None);
        // Every phase and flag round-trips.
        for phase in [
            ChannelPhase::Open,
            ChannelPhase::Closing,
            ChannelPhase::Closed { transaction: None },
            ChannelPhase::Closed {
                transaction: Some([9; 32]),
            },
        ] {
            let state = ChannelState {
                cumulative: -1,
                signature: None,
                unspent: 0,
                phase,
            };
            assert_eq!(decode(&encode(channel, &state)), Some((channel, state)));
        }
        // Credit paid ahead, open or closing; none once closed.
        for phase in [ChannelPhase::Open, ChannelPhase::Closing] {
            let state = ChannelState {
                unspent: 3,
                phase,
                ..voucher(7, 7)
            };
            assert_eq!(decode(&encode(channel, &state)), Some((channel, state)));
        }
        let closed = ChannelState {
            unspent: 3,
            phase: ChannelPhase::Closed {
                transaction: Some([9; 32]),
            },
            ..voucher(7, 7)
        };
        let (_, read) = decode(&encode(channel, &closed)).unwrap();
        assert_eq!(
            read,
            ChannelState {
                unspent: 0,
                ..closed
            }
        );
        // Credit that is not within the cumulative amount, or beside a transaction: refused.
        for unspent in [-1_i128, 8] {
            let mut record = encode(channel, &voucher(7, 7));
            record[2] |= 4;
            record[116..132].copy_from_slice(&unspent.to_be_bytes());
            let digest = Sha256::digest(&record[..BODY_LEN]);
            record[BODY_LEN..].copy_from_slice(&digest[..8]);
            assert_eq!(decode(&record), None, "{unspent}");
        }
        let mut record = encode(channel, &closed);
        record[2] |= 4;
        let digest = Sha256::digest(&record[..BODY_LEN]);
        record[BODY_LEN..].copy_from_slice(&digest[..8]);
        assert_eq!(decode(&record), None, "credit beside a close transaction");
    }

    #[tokio::test]
    async fn a_corrupt_record_with_records_after_it_is_not_a_torn_write() {
        let dir = dir("corrupt");
        let channel = ChannelId([8; 32]);
        let store = FileChannelStore::open(&dir).unwrap();
        let mut current = None;
        for amount in [10, 20, 30] {
            let next = voucher(amount, amount as u8);
            assert!(store.compare_and_set(channel, current, next).await.unwrap());
            current = Some(next);
        }
        drop(store);
        let path = dir.join(FILE_NAME);
        let clean = std::fs::read(&path).unwrap();
        // The last record damaged: a torn write, dropped.
        let mut bytes = clean.clone();
        bytes[2 * RECORD_LEN + 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let store = FileChannelStore::open(&dir).unwrap();
        assert_eq!(store.load(channel).await.unwrap(), Some(voucher(20, 20)));
        drop(store);
        // The first one damaged: the store refuses to guess.
        let mut bytes = clean;
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            FileChannelStore::open(&dir),
            Err(StoreError::Unavailable(message)) if message.contains("corrupt")
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_that_cannot_be_undone_stops_all_writes() {
        let dir = dir("poisoned");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, b"").unwrap();
        // A file that can be neither written nor cut: the write fails, its undo too.
        let log = Mutex::new(Log {
            file: File::open(&path).unwrap(),
            dir: dir.clone(),
            records: 0,
            poisoned: false,
        });
        let states = RwLock::new(HashMap::new());
        let channel = ChannelId([9; 32]);
        let first = FileChannelStore::write(&log, &states, channel, None, voucher(1, 1));
        assert!(
            matches!(first, Err(StoreError::Unavailable(_))),
            "{first:?}"
        );
        assert!(log.lock().unwrap().poisoned);
        assert!(states.read().unwrap().is_empty(), "nothing published");
        let second = FileChannelStore::write(&log, &states, channel, None, voucher(1, 1));
        assert!(
            matches!(&second, Err(StoreError::Unavailable(message)) if message.contains("reopen")),
            "{second:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_store_cannot_open_a_held_directory() {
        let dir = dir("locked");
        let store = FileChannelStore::open(&dir).unwrap();
        assert!(matches!(
            FileChannelStore::open(&dir),
            Err(StoreError::Unavailable(_))
        ));
        drop(store);
        assert!(FileChannelStore::open(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
