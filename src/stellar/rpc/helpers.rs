//! Helpers built on [`SorobanRpc`]: [`wait_for_transaction`] polls `getTransaction` until a
//! transaction is final; [`account_sequence`] and [`contract_data`] read one ledger entry each.

use std::time::Duration;

use tokio::time::Instant;

use stellar_xdr::{
    AccountId, ContractDataDurability, LedgerEntryData, LedgerKey, LedgerKeyAccount,
    LedgerKeyContractData, PublicKey, ScVal, Uint256,
};

use super::{LedgerEntryResult, RpcError, SorobanRpc, TransactionHash, TransactionInfo};
use crate::stellar::Address;

/// First pause between two `getTransaction` polls.
const FIRST_POLL_DELAY: Duration = Duration::from_millis(200);
/// Longest pause between two `getTransaction` polls.
const MAX_POLL_DELAY: Duration = Duration::from_secs(2);
/// Longest deadline [`wait_for_transaction`] honours; longer ones are clamped.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Polls `getTransaction` until the transaction is final (`SUCCESS` or `FAILED`) or `deadline`
/// has passed, pausing 200 ms, then 1.5 times longer each time, at most 2 s.
///
/// Unavailability ([`RpcError::is_unavailable`]) while polling is retried until the deadline.
///
/// # Errors
///
/// [`RpcError::NotFinal`] at the deadline (the last error instead, if the last poll failed);
/// at once, any error that is not unavailability.
pub async fn wait_for_transaction(
    rpc: &dyn SorobanRpc,
    hash: &TransactionHash,
    deadline: Duration,
) -> Result<TransactionInfo, RpcError> {
    let start = tokio::time::Instant::now();
    let end = start.checked_add(deadline.min(MAX_WAIT)).unwrap_or(start);
    let backoff = Backoff {
        first: true,
        pause: FIRST_POLL_DELAY,
    };
    follow_transaction(rpc, hash, end, backoff).await
}

/// When to look a transaction up next: [`follow_transaction`] looks whenever `next` answers
/// `true`, and stops when it answers `false` (the deadline `end` passed).
pub(crate) trait Pace {
    fn next(&mut self, end: Instant) -> impl Future<Output = bool> + Send;
}

/// At once, then after 200 ms, 1.5 times longer each time, at most 2 s.
struct Backoff {
    first: bool,
    pause: Duration,
}

impl Pace for Backoff {
    fn next(&mut self, end: Instant) -> impl Future<Output = bool> + Send {
        let pause = if std::mem::take(&mut self.first) {
            Some(Duration::ZERO)
        } else {
            let remaining = end.saturating_duration_since(Instant::now());
            let pause = self.pause.min(remaining);
            self.pause = (self.pause.saturating_mul(3) / 2).min(MAX_POLL_DELAY);
            (!remaining.is_zero()).then_some(pause)
        };
        async move {
            match pause {
                Some(pause) => {
                    tokio::time::sleep(pause).await;
                    true
                }
                None => false,
            }
        }
    }
}

/// Looks `hash` up at `pace` until it is final or `end` has passed; unavailability while
/// looking is retried until then.
///
/// # Errors
///
/// As [`wait_for_transaction`].
pub(crate) async fn follow_transaction(
    rpc: &dyn SorobanRpc,
    hash: &TransactionHash,
    end: Instant,
    mut pace: impl Pace,
) -> Result<TransactionInfo, RpcError> {
    let mut last_error = None;
    while pace.next(end).await {
        match tokio::time::timeout_at(end, rpc.transaction(hash)).await {
            Ok(Ok(info)) if info.status.is_final() => return Ok(info),
            Ok(Ok(_)) => last_error = None,
            Ok(Err(error)) if error.is_unavailable() => {
                tracing::debug!(%error, %hash, "getTransaction failed, looking again");
                last_error = Some(error);
            }
            Ok(Err(error)) => return Err(error),
            Err(_elapsed) => break,
        }
    }
    Err(last_error.unwrap_or(RpcError::NotFinal(*hash)))
}

/// The current sequence number of an account (`G…`, or the account of an `M…`), read with one
/// `getLedgerEntries`. A transaction from it uses this + 1.
///
/// # Errors
///
/// [`RpcError::AccountNotFound`] if the account does not exist or `account` is a contract;
/// [`RpcError::Malformed`] if the server answers the key with another kind of entry; the
/// call's errors.
pub async fn account_sequence(rpc: &dyn SorobanRpc, account: &Address) -> Result<i64, RpcError> {
    let Some(key) = account.ed25519_key() else {
        return Err(RpcError::AccountNotFound(*account));
    };
    let account_id = AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)));
    let ledger_key = LedgerKey::Account(LedgerKeyAccount {
        account_id: account_id.clone(),
    });
    let answer = rpc
        .ledger_entries(std::slice::from_ref(&ledger_key))
        .await?;
    let Some(entry) = answer.entries.into_iter().find(|e| e.key == ledger_key) else {
        return Err(RpcError::AccountNotFound(*account));
    };
    match entry.data {
        LedgerEntryData::Account(found) if found.account_id == account_id => Ok(found.seq_num.0),
        _ => Err(RpcError::Malformed(
            "getLedgerEntries answered an account key with another entry".into(),
        )),
    }
}

/// A contract's data entry under `key`, read with one `getLedgerEntries`; `None` if there is
/// none (or it is archived).
///
/// # Errors
///
/// [`RpcError::Malformed`] if the server answers the key with another kind of entry; the call's
/// errors.
pub async fn contract_data(
    rpc: &dyn SorobanRpc,
    contract: &Address,
    key: ScVal,
    durability: ContractDataDurability,
) -> Result<Option<LedgerEntryResult>, RpcError> {
    let ledger_key = LedgerKey::ContractData(LedgerKeyContractData {
        contract: contract.to_sc_address(),
        key,
        durability,
    });
    let answer = rpc
        .ledger_entries(std::slice::from_ref(&ledger_key))
        .await?;
    let Some(entry) = answer.entries.into_iter().find(|e| e.key == ledger_key) else {
        return Ok(None);
    };
    if matches!(entry.data, LedgerEntryData::ContractData(_)) {
        Ok(Some(entry))
    } else {
        Err(RpcError::Malformed(
            "getLedgerEntries answered a contract data key with another entry".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use serde_json::json;
    use stellar_xdr::{ContractDataEntry, ExtensionPoint};

    use super::*;
    use crate::stellar::Network;
    use crate::stellar::rpc::TransactionStatus;
    use crate::stellar::rpc::testing::{
        Reply, Seen, account_entry, account_key, answer, b64, checked_request, client, hash, payer,
        reply, serve, success, success_result,
    };

    /// A double answering `getTransaction` with NOT_FOUND `not_found` times, then SUCCESS.
    fn eventually_final(not_found: usize) -> Reply {
        let calls = Arc::new(Mutex::new(0_usize));
        reply(move |seen: Seen| {
            let n = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            async move {
                if n <= not_found {
                    success(
                        &seen,
                        json!({"status": "NOT_FOUND", "latestLedger": 1000 + n}),
                    )
                } else {
                    success(
                        &seen,
                        json!({"status": "SUCCESS", "latestLedger": 1000 + n, "ledger": 1000 + n, "resultXdr": b64(&success_result())}),
                    )
                }
            }
        })
    }

    #[tokio::test]
    async fn wait_for_transaction_reaches_success() {
        let (base, log) = serve(eventually_final(2)).await;
        let rpc: Arc<dyn SorobanRpc> = Arc::new(client(&base));
        let started = Instant::now();
        let info = wait_for_transaction(&rpc, &hash(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.status, TransactionStatus::Success);
        assert_eq!(info.result, Some(success_result()));
        assert_eq!(log.count(), 3);
        for seen in log.all() {
            assert_eq!(seen.method(), "getTransaction");
            assert_eq!(seen.body["params"], json!({"hash": hash().to_string()}));
        }
        // Pauses of 200 ms and 300 ms.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn wait_for_transaction_times_out() {
        let (base, log) = serve(eventually_final(usize::MAX)).await;
        let rpc = client(&base);
        let started = Instant::now();
        let error = wait_for_transaction(&rpc, &hash(), Duration::from_millis(800))
            .await
            .unwrap_err();
        assert_eq!(error, RpcError::NotFinal(hash()));
        assert!(error.is_unavailable());
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        // Polls at about 0, 200, 500 ms (and maybe one at the deadline).
        assert!((2..=4).contains(&log.count()), "{}", log.count());
    }

    #[tokio::test]
    async fn wait_for_transaction_stops_on_a_malformed_answer() {
        let (rpc, log) = answer(json!({"status": "WHAT", "latestLedger": 1})).await;
        let error = wait_for_transaction(&rpc, &hash(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Malformed(_)), "{error:?}");
        assert_eq!(log.count(), 1);
    }

    #[tokio::test]
    async fn wait_for_transaction_reports_an_unreachable_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let rpc = client(&format!("http://{address}"));
        let error = wait_for_transaction(&rpc, &hash(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn account_sequence_of_present_and_missing_accounts() {
        let key = account_key(&payer().address());
        let (rpc, log) = answer(json!({
            "entries": [{"key": b64(&key), "xdr": b64(&account_entry(184_467_440_737)), "lastModifiedLedgerSeq": 900}],
            "latestLedger": 1000
        }))
        .await;
        assert_eq!(
            account_sequence(&rpc, &payer().address()).await.unwrap(),
            184_467_440_737
        );
        assert_eq!(
            checked_request(&log, "getLedgerEntries"),
            Some(json!({"keys": [b64(&key)]}))
        );

        let (rpc, _) = answer(json!({"entries": [], "latestLedger": 1000})).await;
        let error = account_sequence(&rpc, &payer().address())
            .await
            .unwrap_err();
        assert_eq!(error, RpcError::AccountNotFound(payer().address()));
        assert!(!error.is_unavailable());

        let usdc = Network::testnet().usdc().unwrap();
        assert_eq!(
            account_sequence(&rpc, &usdc).await,
            Err(RpcError::AccountNotFound(usdc))
        );

        // The right key answered with another kind of entry.
        let data = LedgerEntryData::ContractData(ContractDataEntry {
            ext: ExtensionPoint::V0,
            contract: usdc.to_sc_address(),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
            val: ScVal::Void,
        });
        let (rpc, _) = answer(json!({
            "entries": [{"key": b64(&key), "xdr": b64(&data), "lastModifiedLedgerSeq": 900}],
            "latestLedger": 1000
        }))
        .await;
        assert!(matches!(
            account_sequence(&rpc, &payer().address()).await,
            Err(RpcError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn contract_data_present_and_missing() {
        let usdc = Network::testnet().usdc().unwrap();
        let key = LedgerKey::ContractData(LedgerKeyContractData {
            contract: usdc.to_sc_address(),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
        });
        let data = LedgerEntryData::ContractData(ContractDataEntry {
            ext: ExtensionPoint::V0,
            contract: usdc.to_sc_address(),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
            val: ScVal::U32(1),
        });
        let (rpc, log) = answer(json!({
            "entries": [{"key": b64(&key), "xdr": b64(&data), "lastModifiedLedgerSeq": 900, "liveUntilLedgerSeq": 5000}],
            "latestLedger": 1000
        }))
        .await;
        let entry = contract_data(
            &rpc,
            &usdc,
            ScVal::LedgerKeyContractInstance,
            ContractDataDurability::Persistent,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!((entry.data, entry.live_until_ledger), (data, Some(5000)));
        assert_eq!(
            checked_request(&log, "getLedgerEntries"),
            Some(json!({"keys": [b64(&key)]}))
        );

        let (rpc, _) = answer(json!({"entries": [], "latestLedger": 1000})).await;
        let missing = contract_data(
            &rpc,
            &usdc,
            ScVal::LedgerKeyContractInstance,
            ContractDataDurability::Temporary,
        )
        .await
        .unwrap();
        assert_eq!(missing, None);
    }
}
