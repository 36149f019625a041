//! The one test suite every [`Storage`] back end passes, with an injected clock.

use super::{Blob, Put, PutMode, Storage};

const ALICE: &str = "GALICE";
const BOB: &str = "GBOB";
/// The suite's clock: a fixed "now" in unix milliseconds.
const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

/// The body of `owner`'s live blob under `key` at `at`.
async fn body(storage: &dyn Storage, owner: &str, key: &str, at: u64) -> Option<Vec<u8>> {
    let blob = storage.get_blob(owner, key, at).await.unwrap();
    blob.map(|blob| blob.body)
}

/// Blobs: create, replace, owner isolation, sizes at chunk edges, expiry, sweeping.
pub(crate) async fn run(storage: &dyn Storage) {
    // Create, then create again: the second is refused and changes nothing.
    let put = |owner, key, body: &'static [u8], mode| {
        storage.put_blob(owner, key, body, NOW + HOUR, mode, NOW)
    };
    assert_eq!(
        put(ALICE, "note", b"first", PutMode::Create).await.unwrap(),
        Put::Created
    );
    assert_eq!(
        put(ALICE, "note", b"second", PutMode::Create)
            .await
            .unwrap(),
        Put::Exists
    );
    let blob = storage.get_blob(ALICE, "note", NOW).await.unwrap();
    assert_eq!(
        blob,
        Some(Blob {
            body: b"first".to_vec(),
            expires_at: NOW + HOUR
        })
    );
    // Owner isolation: Bob sees nothing under Alice's key, and can use the same key.
    assert_eq!(storage.get_blob(BOB, "note", NOW).await.unwrap(), None);
    assert_eq!(storage.blob_size(BOB, "note", NOW).await.unwrap(), None);
    assert_eq!(
        put(BOB, "note", b"bob's", PutMode::Replace).await.unwrap(),
        Put::NotFound
    );
    assert_eq!(
        put(BOB, "note", b"bob's", PutMode::Create).await.unwrap(),
        Put::Created
    );
    assert_eq!(
        body(storage, ALICE, "note", NOW).await.as_deref(),
        Some(&b"first"[..])
    );
    // Replace, with a new life.
    let replaced = storage
        .put_blob(
            ALICE,
            "note",
            b"longer life",
            NOW + 2 * HOUR,
            PutMode::Replace,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(replaced, Put::Replaced);
    assert_eq!(
        storage.blob_size(ALICE, "note", NOW).await.unwrap(),
        Some(11)
    );

    // Sizes around the chunk edges and the largest object come back whole.
    for size in [
        0_usize, 1, 1024, 1025, 65_023, 65_024, 65_025, 130_048, 350_000,
    ] {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let key = format!("size-{size}");
        let created = storage
            .put_blob(ALICE, &key, &body, NOW + HOUR, PutMode::Create, NOW)
            .await
            .unwrap();
        assert_eq!(created, Put::Created, "{size} B");
        let read = storage.get_blob(ALICE, &key, NOW).await.unwrap().unwrap();
        assert_eq!(read.body, body, "{size} B");
        assert_eq!(
            storage.blob_size(ALICE, &key, NOW).await.unwrap(),
            Some(size as u64)
        );
    }
    // A replacement by a smaller body leaves no chunk of the larger one.
    let small = storage
        .put_blob(
            ALICE,
            "size-350000",
            b"tiny",
            NOW + HOUR,
            PutMode::Replace,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(small, Put::Replaced);
    assert_eq!(
        body(storage, ALICE, "size-350000", NOW).await.as_deref(),
        Some(&b"tiny"[..])
    );

    // Expiry: at `expires_at` a blob is gone for reads and writes, before any sweep.
    let later = NOW + HOUR;
    assert_eq!(storage.get_blob(BOB, "note", later).await.unwrap(), None);
    assert_eq!(storage.blob_size(BOB, "note", later).await.unwrap(), None);
    let recreated = storage
        .put_blob(BOB, "note", b"again", later + HOUR, PutMode::Create, later)
        .await
        .unwrap();
    assert_eq!(recreated, Put::Created, "an expired blob counts as absent");
    let replaced_expired = storage
        .put_blob(ALICE, "size-0", b"x", later + HOUR, PutMode::Replace, later)
        .await
        .unwrap();
    assert_eq!(replaced_expired, Put::NotFound);

    // Delete: whether there was one; then gone.
    assert!(storage.delete_blob(ALICE, "size-1").await.unwrap());
    assert!(!storage.delete_blob(ALICE, "size-1").await.unwrap());
    assert!(!storage.delete_blob(BOB, "size-1024").await.unwrap());
    assert_eq!(storage.get_blob(ALICE, "size-1", NOW).await.unwrap(), None);

    // The sweeper removes what expired by `later`, in batches, and nothing else.
    let mut swept = 0;
    loop {
        let batch = storage.sweep_expired(later, 3).await.unwrap();
        assert!(batch <= 3);
        swept += batch;
        if batch == 0 {
            break;
        }
    }
    // Alice's blobs of NOW + HOUR: "size-*" minus the deleted "size-1" and the replaced
    // "size-350000" (still NOW + HOUR) = 9 - 1 = 8.
    assert_eq!(swept, 8);
    assert_eq!(
        body(storage, ALICE, "note", later).await.as_deref(),
        Some(&b"longer life"[..])
    );
    assert_eq!(
        body(storage, BOB, "note", later).await.as_deref(),
        Some(&b"again"[..])
    );
}

/// After [`run`] and a reopen: the two live blobs are there, the swept ones are not.
pub(crate) async fn survivors(storage: &dyn Storage) {
    let later = NOW + HOUR;
    assert_eq!(
        body(storage, ALICE, "note", later).await.as_deref(),
        Some(&b"longer life"[..])
    );
    assert_eq!(
        body(storage, BOB, "note", later).await.as_deref(),
        Some(&b"again"[..])
    );
    assert_eq!(
        storage.blob_size(ALICE, "size-1025", NOW).await.unwrap(),
        None
    );
    assert_eq!(storage.sweep_expired(later, 100).await.unwrap(), 0);
}
