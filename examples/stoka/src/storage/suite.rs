//! The one test suite every [`Storage`] back end passes, with an injected clock.
//!
//! Only what the sweeper counts depends on the back end ([`Expiry`]); every other assertion
//! holds for all of them.

use super::{Ack, Blob, Challenge, NewMessage, PopOptions, Put, PutMode, Storage, Usage};

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

/// How a back end gets rid of expired records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// [`Storage::sweep_expired`] removes them, and counts them.
    Swept,
    /// The store evicts them on its own clock; [`Storage::sweep_expired`] answers 0.
    Native,
}

/// Every part of the suite, in one go.
pub(crate) async fn run(storage: &dyn Storage, expiry: Expiry) {
    blobs(storage, expiry).await;
    queues(storage).await;
    usage(storage).await;
    challenges(storage, expiry).await;
    profiles(storage).await;
}

/// Blobs: create, replace, owner isolation, sizes at chunk edges, expiry, sweeping.
async fn blobs(storage: &dyn Storage, expiry: Expiry) {
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

    // The sweeper removes what expired by `later`, in batches, and nothing else (a store that
    // evicts natively has nothing to sweep).
    let mut swept = 0;
    loop {
        let batch = storage.sweep_expired(later, 3).await.unwrap();
        assert!(batch <= 3);
        swept += batch;
        if batch == 0 {
            break;
        }
    }
    match expiry {
        // Alice's blobs of NOW + HOUR: "size-*" minus the deleted "size-1" and the replaced
        // "size-350000" (still NOW + HOUR) = 9 - 1 = 8.
        Expiry::Swept => assert_eq!(swept, 8),
        Expiry::Native => assert_eq!(swept, 0),
    }
    assert_eq!(
        body(storage, ALICE, "note", later).await.as_deref(),
        Some(&b"longer life"[..])
    );
    assert_eq!(
        body(storage, BOB, "note", later).await.as_deref(),
        Some(&b"again"[..])
    );
}

const POP: PopOptions = PopOptions {
    visibility_ms: 30_000,
    max_receives: 3,
};
const DAY: u64 = 24 * HOUR;

/// Pushes `body` from Bob to Alice's `topic` at `at`, retained for 4 days.
async fn push(storage: &dyn Storage, topic: &str, body: &[u8], at: u64) -> String {
    let message = NewMessage {
        body,
        from: BOB,
        sent_at: at,
        expires_at: at + 4 * DAY,
    };
    storage.push(ALICE, topic, message).await.unwrap()
}

/// Queues: FIFO, visibility, per-delivery receipts, dead letters, retention, isolation.
async fn queues(storage: &dyn Storage) {
    assert_eq!(storage.pop(ALICE, "inbox", NOW, POP).await.unwrap(), None);
    let first = push(storage, "inbox", b"one", NOW).await;
    let second = push(storage, "inbox", b"two", NOW + 1).await;
    assert_ne!(first, second);
    // Another mailbox and another topic see nothing.
    assert_eq!(storage.pop(BOB, "inbox", NOW + 2, POP).await.unwrap(), None);
    assert_eq!(
        storage.pop(ALICE, "other", NOW + 2, POP).await.unwrap(),
        None
    );

    // Oldest first, with the sender and a first receive.
    let one = storage
        .pop(ALICE, "inbox", NOW + 2, POP)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            one.message_id.as_str(),
            one.body.as_slice(),
            one.from.as_str()
        ),
        (first.as_str(), &b"one"[..], BOB)
    );
    assert_eq!((one.sent_at, one.receive_count), (NOW, 1));
    let two = storage
        .pop(ALICE, "inbox", NOW + 3, POP)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.message_id, second);
    // Both in flight: nothing visible until the visibility timeout.
    let in_flight = NOW + 2 + 29_999;
    assert_eq!(
        storage.pop(ALICE, "inbox", in_flight, POP).await.unwrap(),
        None
    );
    // A receipt works only in its own mailbox and topic.
    assert_eq!(
        storage
            .ack(BOB, "inbox", &two.receipt, NOW + 4)
            .await
            .unwrap(),
        Ack::Unknown
    );
    assert_eq!(
        storage
            .ack(ALICE, "other", &two.receipt, NOW + 4)
            .await
            .unwrap(),
        Ack::Unknown
    );
    assert_eq!(
        storage
            .ack(ALICE, "inbox", "not-a-receipt", NOW + 4)
            .await
            .unwrap(),
        Ack::Unknown
    );
    assert_eq!(
        storage
            .ack(ALICE, "inbox", &two.receipt, NOW + 4)
            .await
            .unwrap(),
        Ack::Deleted
    );
    assert_eq!(
        storage
            .ack(ALICE, "inbox", &two.receipt, NOW + 5)
            .await
            .unwrap(),
        Ack::Unknown,
        "acknowledged already"
    );

    // Not acknowledged: delivered again after the timeout, with a new receipt; the old one is
    // stale.
    let again_at = NOW + 2 + 30_000;
    let again = storage
        .pop(ALICE, "inbox", again_at, POP)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.message_id, first);
    assert_eq!(again.receive_count, 2);
    assert_ne!(again.receipt, one.receipt);
    assert_eq!(
        storage
            .ack(ALICE, "inbox", &one.receipt, again_at)
            .await
            .unwrap(),
        Ack::Stale
    );
    // The third delivery is the last; at the fourth attempt it goes to the dead letters.
    let third_at = again_at + 30_000;
    let third = storage
        .pop(ALICE, "inbox", third_at, POP)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.receive_count, 3);
    let fourth_at = third_at + 30_000;
    assert_eq!(
        storage.pop(ALICE, "inbox", fourth_at, POP).await.unwrap(),
        None
    );
    let behind = push(storage, "inbox", b"three", fourth_at).await;
    let next = storage
        .pop(ALICE, "inbox", fourth_at, POP)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.message_id, behind, "the dead letter is not delivered");
    let dead = storage
        .dead_letters(ALICE, "inbox", fourth_at, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].message_id.as_str(),
            dead[0].body.as_slice(),
            dead[0].receive_count
        ),
        (first.as_str(), &b"one"[..], 3)
    );
    assert_eq!(
        storage
            .ack(ALICE, "inbox", &third.receipt, fourth_at)
            .await
            .unwrap(),
        Ack::Unknown,
        "a dead letter is not acknowledged"
    );
    assert_eq!(
        storage
            .dead_letters(BOB, "inbox", fourth_at, 10)
            .await
            .unwrap(),
        []
    );

    // Retention: an unacknowledged message is gone after 4 days, dead or not.
    let retained = push(storage, "retained", b"old", NOW).await;
    let gone_at = NOW + 4 * DAY;
    assert_eq!(
        storage.pop(ALICE, "retained", gone_at, POP).await.unwrap(),
        None
    );
    assert_eq!(
        storage
            .dead_letters(ALICE, "inbox", gone_at + 2 * DAY, 10)
            .await
            .unwrap(),
        []
    );
    let _ = retained;
    // An in-flight message past its retention cannot be acknowledged.
    let late = push(storage, "late", b"late", NOW).await;
    let delivery = storage.pop(ALICE, "late", NOW, POP).await.unwrap().unwrap();
    assert_eq!(delivery.message_id, late);
    assert_eq!(
        storage
            .ack(ALICE, "late", &delivery.receipt, gone_at)
            .await
            .unwrap(),
        Ack::Unknown
    );
    // Bodies up to the largest message come back whole.
    let big: Vec<u8> = (0..262_144).map(|i| (i % 253) as u8).collect();
    push(storage, "big", &big, NOW).await;
    let delivered = storage.pop(ALICE, "big", NOW, POP).await.unwrap().unwrap();
    assert_eq!(delivered.body, big);
}

/// Usage: counters add up per wallet and day; ranges are inclusive.
async fn usage(storage: &dyn Storage) {
    let store = Usage {
        operations: 1,
        bytes_in: 1024,
        bytes_out: 0,
        charged_atomic: 1_400,
    };
    let read = Usage {
        operations: 1,
        bytes_in: 0,
        bytes_out: 1024,
        charged_atomic: 1_100,
    };
    storage.add_usage(ALICE, 20_000, store).await.unwrap();
    storage.add_usage(ALICE, 20_000, read).await.unwrap();
    storage.add_usage(ALICE, 20_002, read).await.unwrap();
    storage.add_usage(BOB, 20_001, store).await.unwrap();
    let days = storage.usage(ALICE, 19_999, 20_002).await.unwrap();
    assert_eq!(days, vec![(20_000, store.plus(read)), (20_002, read)]);
    assert_eq!(
        storage.usage(ALICE, 20_001, 20_001).await.unwrap(),
        [],
        "Bob's day is his"
    );
    assert_eq!(storage.usage(ALICE, 20_002, 20_000).await.unwrap(), []);
    assert_eq!(store.plus(read).charged_atomic, 2_500);
}

/// Challenges: issued once per id, taken once, never after expiry.
async fn challenges(storage: &dyn Storage, expiry: Expiry) {
    let challenge = Challenge {
        audience: "me-usage".into(),
        message: "stoka me-usage abc".into(),
        expires_at: NOW + 300_000,
    };
    let issue = |id, at| storage.issue_challenge(id, &challenge, at);
    assert!(issue("abc", NOW).await.unwrap());
    assert!(!issue("abc", NOW).await.unwrap());
    assert_eq!(
        storage.take_challenge("abc", NOW).await.unwrap(),
        Some(challenge.clone())
    );
    assert_eq!(
        storage.take_challenge("abc", NOW).await.unwrap(),
        None,
        "single use"
    );
    assert_eq!(storage.take_challenge("never", NOW).await.unwrap(), None);
    // Expired: not answered, and gone.
    assert!(issue("late", NOW).await.unwrap());
    assert_eq!(
        storage
            .take_challenge("late", challenge.expires_at)
            .await
            .unwrap(),
        None
    );
    assert!(issue("late", NOW).await.unwrap(), "the id is free again");
    // Expired, not taken and not swept: the id is free at the expiry, and not a moment before.
    assert!(issue("lapsed", NOW).await.unwrap());
    assert!(!issue("lapsed", challenge.expires_at - 1).await.unwrap());
    assert!(
        issue("lapsed", challenge.expires_at).await.unwrap(),
        "an expired challenge counts as absent"
    );
    assert_eq!(
        storage.take_challenge("lapsed", NOW).await.unwrap(),
        Some(challenge.clone()),
        "the re-issued one"
    );
    // The sweeper removes expired challenges: issued again before their expiry, only the
    // sweep can have freed the ids. A store that evicts natively frees them at the expiry.
    assert!(issue("swept", NOW).await.unwrap());
    storage
        .sweep_expired(challenge.expires_at, 1000)
        .await
        .unwrap();
    let again = match expiry {
        Expiry::Swept => NOW,
        Expiry::Native => challenge.expires_at,
    };
    for id in ["late", "swept"] {
        assert!(issue(id, again).await.unwrap(), "{id} was swept");
    }
    // Taken, the re-issued ones leave nothing behind. (A store that evicts natively gave them
    // a millisecond: issued at their expiry, they may be gone before they are taken.)
    for id in ["late", "swept"] {
        let taken = storage.take_challenge(id, NOW).await.unwrap();
        assert!(taken.is_some() || expiry == Expiry::Native, "{id}");
        assert_eq!(storage.take_challenge(id, NOW).await.unwrap(), None, "{id}");
    }
}

/// Profiles: bind, rebind, clear.
async fn profiles(storage: &dyn Storage) {
    assert_eq!(storage.email(ALICE).await.unwrap(), None);
    storage
        .set_email(ALICE, Some("a@example.com"))
        .await
        .unwrap();
    storage
        .set_email(ALICE, Some("alice@example.com"))
        .await
        .unwrap();
    assert_eq!(
        storage.email(ALICE).await.unwrap().as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(storage.email(BOB).await.unwrap(), None);
    storage.set_email(ALICE, None).await.unwrap();
    assert_eq!(storage.email(ALICE).await.unwrap(), None);
}

/// After [`run`] and a reopen: the two live blobs are there, the expired ones are not (swept,
/// they are gone even at a time they were live).
pub(crate) async fn survivors(storage: &dyn Storage, expiry: Expiry) {
    let later = NOW + HOUR;
    assert_eq!(
        body(storage, ALICE, "note", later).await.as_deref(),
        Some(&b"longer life"[..])
    );
    assert_eq!(
        body(storage, BOB, "note", later).await.as_deref(),
        Some(&b"again"[..])
    );
    let at = match expiry {
        Expiry::Swept => NOW,
        Expiry::Native => later,
    };
    assert_eq!(
        storage.blob_size(ALICE, "size-1025", at).await.unwrap(),
        None
    );
    assert_eq!(storage.sweep_expired(later, 100).await.unwrap(), 0);
}
