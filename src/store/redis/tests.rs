//! The Redis stores on a real server and a real Redis Cluster (`scripts/test` starts both):
//! the conformance suites on each, two nodes over one deployment, the key layout, lifetimes,
//! and damaged records.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::{
    ChannelPhase, ChannelStore, Fingerprint, LeaseHolder, Leases, PaymentBackend, PaymentKey,
    PaymentStore, RECORD_TAG_LEN, RecordWrite, Reservation, conformance,
};

/// A store in a namespace of its own on each test deployment.
async fn stores() -> Vec<(&'static str, RedisStore)> {
    let mut stores = Vec::new();
    for (label, url) in test_deployments() {
        let store = RedisStore::connect(&url, &test_namespace("tower-paywall"))
            .await
            .unwrap_or_else(|error| panic!("Redis {label} at {url}: {error}"));
        stores.push((label, store));
    }
    stores
}

/// Another node's store: its own connection, the same namespace.
async fn other_node(store: &RedisStore, label: &str) -> RedisStore {
    let url = test_deployments()
        .into_iter()
        .find(|(other, _)| *other == label)
        .unwrap()
        .1;
    RedisStore::connect(&url, store.namespace()).await.unwrap()
}

async fn pttl(store: &RedisStore, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut store.connection())
        .await
        .unwrap()
}

/// Runs a raw command (to damage records on purpose).
async fn raw(store: &RedisStore, command: &redis::Cmd) {
    command
        .query_async::<redis::Value>(&mut store.connection())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_pass_the_conformance_suite_on_one_node_and_two() {
    for (label, store) in stores().await {
        eprintln!("payments on the Redis {label}");
        assert_eq!(store.is_cluster(), label == "cluster");
        conformance::payment_store(Arc::new(store.payment_store())).await;
        let other = other_node(&store, label).await;
        conformance::shared_payment_store(
            Arc::new(store.payment_store()),
            Arc::new(other.payment_store()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_pass_the_conformance_suite_and_are_shared() {
    for (label, store) in stores().await {
        eprintln!("channels on the Redis {label}");
        let channels = store.channel_store();
        conformance::channel_store(Arc::new(channels.clone())).await;
        let listed = channels.channels(None, usize::MAX).await.unwrap();
        assert_eq!(listed.len(), 5);
        // Another node sees the same channels, and writes over the same states.
        let other = other_node(&store, label).await.channel_store();
        assert_eq!(other.channels(None, usize::MAX).await.unwrap(), listed);
        let (a, state) = listed[0];
        let closing = ChannelState {
            phase: ChannelPhase::Closing,
            ..state
        };
        assert!(
            !other
                .compare_and_set(a, Some(ChannelState::NEW), closing)
                .await
                .unwrap()
        );
        assert!(
            other
                .compare_and_set(a, Some(state), closing)
                .await
                .unwrap()
        );
        assert_eq!(channels.load(a).await.unwrap(), Some(closing));
        // States and listings never expire; they are spread by the id's first six bits.
        assert_eq!(pttl(&store, &channels.state_key(a)).await, -1);
        assert_eq!(pttl(&store, &channels.list_key(a)).await, -1);
        assert_eq!(
            channels.state_key(a),
            format!("{}:ch:{{c00}}:{}", store.namespace(), hex::encode(a.0))
        );
        let last = ChannelId([0xfe; 32]);
        assert_eq!(
            channels.list_key(last),
            format!("{}:ch:{{c3f}}", store.namespace())
        );
        // And another namespace has none.
        let url = test_deployments()
            .into_iter()
            .find(|(other, _)| *other == label)
            .unwrap()
            .1;
        let elsewhere = RedisStore::connect(&url, &format!("{}-other", store.namespace()))
            .await
            .unwrap();
        assert_eq!(
            elsewhere
                .channel_store()
                .channels(None, usize::MAX)
                .await
                .unwrap(),
            []
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_pass_the_conformance_suite_across_nodes() {
    for (label, store) in stores().await {
        eprintln!("leases on the Redis {label}");
        conformance::leases(Arc::new(store.leases())).await;
        // A lease one node holds, the other node cannot take.
        let other = other_node(&store, label).await.leases();
        let (one, two) = (LeaseHolder::unique(), LeaseHolder::unique());
        let minute = Duration::from_secs(60);
        assert!(store.leases().acquire(b"close", one, minute).await.unwrap());
        assert!(!other.acquire(b"close", two, minute).await.unwrap());
        let key = store.leases().lease_key(b"close");
        assert_eq!(key, format!("{}:l:{{636c6f7365}}", store.namespace()));
        let left = pttl(&store, &key).await;
        assert!((59_000..=60_000).contains(&left), "{left} ms");
        store.leases().release(b"close", one).await.unwrap();
        assert!(other.acquire(b"close", two, minute).await.unwrap());
    }
}

#[tokio::test]
async fn pending_settlements_are_listed_from_every_shard_oldest_first() {
    for (label, store) in stores().await {
        eprintln!("pending settlements on the Redis {label}");
        let backend = store.payments();
        let put = |value| RecordWrite::Put {
            value,
            ttl: Some(Duration::from_secs(60)),
            pending: true,
        };
        // Keys in different shards (by their first byte), listed in the order written.
        let keys: Vec<PaymentKey> = [0xf0_u8, 0x00, 0x80, 0x44]
            .iter()
            .map(|first| {
                let mut key = [*first; 32];
                key[31] = 0x5a;
                PaymentKey(key)
            })
            .collect();
        for key in &keys {
            assert!(backend.swap(*key, None, put(&[1; 40])).await.unwrap());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert_eq!(backend.pending(10).await.unwrap(), keys);
        assert_eq!(backend.pending(2).await.unwrap(), keys[..2]);
        assert!(backend.pending(0).await.unwrap().is_empty());
        // A record that expired is unlisted when listed.
        raw(&store, redis::cmd("DEL").arg(backend.record_key(keys[1]))).await;
        assert_eq!(
            backend.pending(10).await.unwrap(),
            [keys[0], keys[2], keys[3]]
        );
        assert_eq!(
            backend.record_key(keys[0]),
            format!("{}:p:{{p3c}}:{}", store.namespace(), hex::encode(keys[0].0))
        );
        for key in [keys[0], keys[2], keys[3]] {
            assert!(
                backend
                    .swap(key, Some(&[1; 40]), RecordWrite::Remove)
                    .await
                    .unwrap()
            );
        }
        assert!(backend.pending(10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_hot_sets_are_spread_over_the_clusters_nodes() {
    for (label, store) in stores().await {
        if label != "cluster" {
            continue;
        }
        // Which node serves each shard's tag: more than one, so that no single node holds
        // every payment or every channel.
        let mut connection = store.connection();
        let mut slots = std::collections::BTreeSet::new();
        for shard in 0..SHARDS {
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{{p{shard:02x}}}"))
                .query_async(&mut connection)
                .await
                .unwrap();
            slots.insert(slot);
        }
        assert_eq!(slots.len(), usize::from(SHARDS), "one slot per shard");
        let ranges: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .unwrap();
        let redis::Value::Array(ranges) = ranges else {
            panic!("CLUSTER SLOTS answered {ranges:?}");
        };
        let mut owners = std::collections::BTreeSet::new();
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (fields.first(), fields.get(1))
            else {
                continue;
            };
            if slots.range(*start..=*end).next().is_some() {
                owners.insert(format!("{:?}", fields.get(2)));
            }
        }
        assert!(owners.len() > 1, "every shard on one node: {owners:?}");
    }
}

#[tokio::test]
async fn swaps_keep_or_renew_the_records_lifetime() {
    for (label, store) in stores().await {
        eprintln!("lifetimes on the Redis {label}");
        let backend = store.payments();
        let key = PaymentKey::derive(&[b"lifetime", store.namespace().as_bytes()]);
        let record_key = backend.record_key(key);
        let (first, second, third) = ([1; 40], [2; 40], [3; 40]);
        let put = |value, ttl| RecordWrite::Put {
            value,
            ttl,
            pending: false,
        };
        let ten = Some(Duration::from_secs(10));
        // A new record needs a lifetime: keeping none would keep it forever.
        let error = backend
            .swap(key, None, put(&first, None))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: a new payment record needs a lifetime"
        );
        assert_eq!(pttl(&store, &record_key).await, -2);
        assert!(backend.swap(key, None, put(&first, ten)).await.unwrap());
        let before = pttl(&store, &record_key).await;
        assert!((9_000..=10_000).contains(&before), "{before} ms");
        // Only the expected record is replaced: by its tag, the first RECORD_TAG_LEN bytes.
        assert!(!backend.swap(key, None, put(&second, ten)).await.unwrap());
        let mut other_tag = first;
        other_tag[RECORD_TAG_LEN - 1] = 9;
        assert!(
            !backend
                .swap(key, Some(&other_tag), put(&second, None))
                .await
                .unwrap()
        );
        assert_eq!(backend.load(key).await.unwrap(), Some(first.to_vec()));
        // Without a lifetime, the key keeps the one it has.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut same_tag = first;
        same_tag[RECORD_TAG_LEN] = 9;
        assert!(
            backend
                .swap(key, Some(&same_tag), put(&second, None))
                .await
                .unwrap()
        );
        let kept = pttl(&store, &record_key).await;
        assert!(kept > 0 && kept < before, "{kept} ms after {before} ms");
        assert_eq!(backend.load(key).await.unwrap(), Some(second.to_vec()));
        // With one, it starts again.
        let minute = Some(Duration::from_secs(60));
        assert!(
            backend
                .swap(key, Some(&second), put(&third, minute))
                .await
                .unwrap()
        );
        let renewed = pttl(&store, &record_key).await;
        assert!((59_000..=60_000).contains(&renewed), "{renewed} ms");
        // A removal is a swap too.
        assert!(
            !backend
                .swap(key, Some(&second), RecordWrite::Remove)
                .await
                .unwrap()
        );
        assert!(
            backend
                .swap(key, Some(&third), RecordWrite::Remove)
                .await
                .unwrap()
        );
        assert_eq!(backend.load(key).await.unwrap(), None);
        // A lifetime under a millisecond is sent as 1 ms (the server refuses 0).
        let instant = Some(Duration::from_micros(10));
        assert!(backend.swap(key, None, put(&first, instant)).await.unwrap());
        let claimed = [b"instant", store.namespace().as_bytes()].concat();
        assert!(backend.claim(&claimed, Duration::ZERO).await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(backend.load(key).await.unwrap(), None);
        assert!(backend.claim(&claimed, Duration::ZERO).await.unwrap());
        // Claims expire natively under their own key.
        let id = b"tx:\x00{1}";
        assert!(backend.claim(id, Duration::from_secs(10)).await.unwrap());
        assert!(!backend.claim(id, Duration::from_secs(10)).await.unwrap());
        let claim_key = backend.claim_key(id);
        assert_eq!(
            claim_key,
            format!("{}:pc:{{{}}}", store.namespace(), hex::encode(id))
        );
        let left = pttl(&store, &claim_key).await;
        assert!((9_000..=10_000).contains(&left), "{left} ms");
    }
}

#[tokio::test]
async fn damaged_payment_records_are_unavailable_not_new() {
    for (_, store) in stores().await {
        let backend = store.payments();
        let key = PaymentKey::derive(&[b"damaged"]);
        raw(
            &store,
            redis::cmd("SET")
                .arg(backend.record_key(key))
                .arg(&[2_u8; 40][..])
                .arg("PX")
                .arg(60_000),
        )
        .await;
        let payments = store.payment_store();
        let error = payments
            .reserve(key, Fingerprint([1; 32]), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: payment record is not readable: damaged"
        );
        // Nothing was written over it.
        assert_eq!(backend.load(key).await.unwrap(), Some(vec![2; 40]));
        // A sound record under another key is still served.
        let sound = PaymentKey::derive(&[b"sound"]);
        assert_eq!(
            payments
                .reserve(sound, Fingerprint([1; 32]), Duration::from_secs(60))
                .await
                .unwrap(),
            Reservation::New
        );
    }
}

#[tokio::test]
async fn damaged_channel_states_are_unavailable() {
    for (_, store) in stores().await {
        let channels = store.channel_store();
        let all =
            |channels: RedisChannels| async move { channels.channels(None, usize::MAX).await };
        let (a, b) = (ChannelId([1; 32]), ChannelId([2; 32]));
        let state = conformance::voucher(5, 1);
        assert!(channels.compare_and_set(a, None, state).await.unwrap());
        // Bytes that do not decode.
        raw(
            &store,
            redis::cmd("SET")
                .arg(channels.state_key(b))
                .arg(&[7_u8; 156][..]),
        )
        .await;
        raw(
            &store,
            redis::cmd("ZADD")
                .arg(channels.list_key(b))
                .arg(0)
                .arg(hex::encode(b.0)),
        )
        .await;
        let damaged =
            format!("payment store unavailable: the stored state of channel {b} is damaged");
        assert_eq!(channels.load(b).await.unwrap_err().to_string(), damaged);
        assert_eq!(
            all(channels.clone()).await.unwrap_err().to_string(),
            damaged
        );
        assert_eq!(channels.load(a).await.unwrap(), Some(state));
        // And nothing is written over them.
        assert!(!channels.compare_and_set(b, None, state).await.unwrap());
        // Another channel's record under this channel's key.
        raw(
            &store,
            redis::cmd("SET")
                .arg(channels.state_key(b))
                .arg(&state.to_record(a)[..]),
        )
        .await;
        let misplaced = format!(
            "payment store unavailable: the stored state of channel {b} belongs to another channel"
        );
        assert_eq!(channels.load(b).await.unwrap_err().to_string(), misplaced);
        assert_eq!(
            all(channels.clone()).await.unwrap_err().to_string(),
            misplaced
        );
        // A listed channel whose state is gone.
        raw(&store, redis::cmd("DEL").arg(channels.state_key(b))).await;
        assert_eq!(channels.load(b).await.unwrap(), None);
        assert_eq!(
            all(channels.clone()).await.unwrap_err().to_string(),
            format!("payment store unavailable: channel {b} is listed but has no stored state")
        );
        // A listed id that is not one.
        raw(
            &store,
            redis::cmd("ZREM")
                .arg(channels.list_key(b))
                .arg(hex::encode(b.0)),
        )
        .await;
        assert_eq!(all(channels.clone()).await.unwrap(), [(a, state)]);
        raw(
            &store,
            redis::cmd("ZADD")
                .arg(channels.list_key(a))
                .arg(0)
                .arg("zz"),
        )
        .await;
        assert_eq!(
            all(channels.clone()).await.unwrap_err().to_string(),
            "payment store unavailable: a listed channel id is malformed"
        );
    }
}

#[test]
fn lifetimes_are_whole_milliseconds_the_server_accepts() {
    assert_eq!(ttl_ms(Duration::ZERO), 1);
    assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
    assert_eq!(ttl_ms(Duration::from_secs(60)), 60_000);
    assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
}

#[test]
fn escaping_keeps_parts_apart() {
    assert_eq!(escape("GABC"), "GABC");
    assert_eq!(escape("a%b:c{d}e"), "a%25b%3Ac%7Bd%7De");
    assert_ne!(escape("%3A"), escape(":"));
}

#[test]
fn shards_are_ranges_of_ids_in_order() {
    assert_eq!(shard(&[0; 32]), 0);
    assert_eq!(shard(&[3; 32]), 0);
    assert_eq!(shard(&[4; 32]), 1);
    assert_eq!(shard(&[0xff; 32]), SHARDS - 1);
}
