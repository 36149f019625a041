//! The JSON wire shapes of Soroban RPC and their decoding into the typed answers: numbers sent as
//! JSON numbers or strings of digits, XDR as base64 (decoded within explicit limits), the
//! `getEvents` request's params. A field that does not decode makes the whole answer
//! [`RpcError::Malformed`], naming the field, never echoing its data.

use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};
use stellar_xdr::{Limits, ReadXdr, WriteXdr};

use super::client::MAX_RESPONSE_BYTES;
use super::error::malformed;
use super::{
    EventInfo, EventKind, Events, EventsRequest, Health, HostFunctionResult, LatestLedger,
    LedgerEntries, LedgerEntryResult, MAX_EVENTS_LIMIT, NetworkInfo, RestorePreamble, RpcError,
    SendResult, SendStatus, Simulation, TopicMatch, TransactionInfo, TransactionStatus,
};
use crate::stellar::Address;
use crate::stellar::transfer::MAX_XDR_DEPTH;

/// Base64 XDR of one of our own values, for a request.
pub(super) fn encode(value: &impl WriteXdr) -> Result<String, RpcError> {
    value
        .to_xdr_base64(Limits::none())
        .map_err(|_| RpcError::Unreachable("could not encode the request".into()))
}

/// The XDR limits of received values: the engine's depth limit, and no more bytes than a whole
/// answer may have.
fn xdr_limits() -> Limits {
    Limits {
        depth: MAX_XDR_DEPTH,
        len: MAX_RESPONSE_BYTES,
    }
}

/// Decodes a base64 XDR field of an answer.
fn xdr<T: ReadXdr>(method: &str, field: &str, text: &str) -> Result<T, RpcError> {
    T::from_xdr_base64(text, xdr_limits())
        .map_err(|_| malformed(method, format_args!("`{field}` is not valid base64 XDR")))
}

/// Decodes an optional base64 XDR field; absent, `null` and `""` are `None`.
fn optional_xdr<T: ReadXdr>(
    method: &str,
    field: &str,
    text: Option<String>,
) -> Result<Option<T>, RpcError> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => xdr(method, field, text).map(Some),
    }
}

/// Decodes a list of base64 XDR values; absent and `null` are empty.
fn xdr_list<T: ReadXdr>(
    method: &str,
    field: &str,
    texts: Option<Vec<String>>,
) -> Result<Vec<T>, RpcError> {
    texts
        .unwrap_or_default()
        .iter()
        .map(|text| xdr(method, field, text))
        .collect()
}

/// A number RPC sends as a JSON number or as a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient {
    Number(serde_json::Number),
    Text(String),
}

fn number<T: FromStr>(method: &str, field: &str, value: &Lenient) -> Result<T, RpcError> {
    let parsed = match value {
        Lenient::Number(number) => number.to_string().parse().ok(),
        Lenient::Text(text) => text.parse().ok(),
    };
    parsed.ok_or_else(|| malformed(method, format_args!("`{field}` is not a number in range")))
}

fn optional_number<T: FromStr>(
    method: &str,
    field: &str,
    value: Option<Lenient>,
) -> Result<Option<T>, RpcError> {
    value.map(|value| number(method, field, &value)).transpose()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HealthWire {
    status: String,
    latest_ledger: Lenient,
    oldest_ledger: Option<Lenient>,
    ledger_retention_window: Option<Lenient>,
}

pub(super) fn health(wire: HealthWire) -> Result<Health, RpcError> {
    const METHOD: &str = "getHealth";
    Ok(Health {
        status: wire.status,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        oldest_ledger: optional_number(METHOD, "oldestLedger", wire.oldest_ledger)?,
        ledger_retention_window: optional_number(
            METHOD,
            "ledgerRetentionWindow",
            wire.ledger_retention_window,
        )?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NetworkWire {
    passphrase: String,
    protocol_version: Lenient,
    friendbot_url: Option<String>,
}

pub(super) fn network_info(wire: NetworkWire) -> Result<NetworkInfo, RpcError> {
    const METHOD: &str = "getNetwork";
    Ok(NetworkInfo {
        passphrase: wire.passphrase,
        protocol_version: number(METHOD, "protocolVersion", &wire.protocol_version)?,
        friendbot_url: wire.friendbot_url.filter(|url| !url.is_empty()),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LatestLedgerWire {
    id: Option<String>,
    protocol_version: Lenient,
    sequence: Lenient,
}

pub(super) fn latest_ledger(wire: LatestLedgerWire) -> Result<LatestLedger, RpcError> {
    const METHOD: &str = "getLatestLedger";
    Ok(LatestLedger {
        id: wire.id.unwrap_or_default(),
        protocol_version: number(METHOD, "protocolVersion", &wire.protocol_version)?,
        sequence: number(METHOD, "sequence", &wire.sequence)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SimulateWire {
    latest_ledger: Lenient,
    min_resource_fee: Option<Lenient>,
    transaction_data: Option<String>,
    results: Option<Vec<HostFunctionResultWire>>,
    events: Option<Vec<String>>,
    error: Option<String>,
    restore_preamble: Option<RestorePreambleWire>,
}

#[derive(Deserialize)]
pub(super) struct HostFunctionResultWire {
    auth: Option<Vec<String>>,
    xdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RestorePreambleWire {
    min_resource_fee: Option<Lenient>,
    transaction_data: Option<String>,
}

pub(super) fn simulation(wire: SimulateWire) -> Result<Simulation, RpcError> {
    const METHOD: &str = "simulateTransaction";
    let results = wire
        .results
        .unwrap_or_default()
        .into_iter()
        .map(|result| {
            Ok(HostFunctionResult {
                auth: xdr_list(METHOD, "results[].auth", result.auth)?,
                retval: optional_xdr(METHOD, "results[].xdr", result.xdr)?,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    let restore_preamble = match wire.restore_preamble {
        None => None,
        Some(preamble) => optional_xdr(
            METHOD,
            "restorePreamble.transactionData",
            preamble.transaction_data,
        )?
        .map(|transaction_data| {
            Ok::<_, RpcError>(RestorePreamble {
                min_resource_fee: optional_number(
                    METHOD,
                    "restorePreamble.minResourceFee",
                    preamble.min_resource_fee,
                )?
                .unwrap_or(0),
                transaction_data,
            })
        })
        .transpose()?,
    };
    Ok(Simulation {
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        min_resource_fee: optional_number(METHOD, "minResourceFee", wire.min_resource_fee)?
            .unwrap_or(0),
        transaction_data: optional_xdr(METHOD, "transactionData", wire.transaction_data)?,
        results,
        events: xdr_list(METHOD, "events", wire.events)?,
        error: wire.error,
        restore_preamble,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SendWire {
    status: String,
    hash: String,
    latest_ledger: Lenient,
    error_result_xdr: Option<String>,
    diagnostic_events_xdr: Option<Vec<String>>,
}

pub(super) fn send_result(wire: SendWire) -> Result<SendResult, RpcError> {
    const METHOD: &str = "sendTransaction";
    Ok(SendResult {
        status: SendStatus::parse(&wire.status)
            .ok_or_else(|| malformed(METHOD, "unknown `status`"))?,
        hash: wire
            .hash
            .parse()
            .map_err(|_| malformed(METHOD, "`hash` is not 64 hex digits"))?,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        error_result: optional_xdr(METHOD, "errorResultXdr", wire.error_result_xdr)?,
        diagnostic_events: xdr_list(METHOD, "diagnosticEventsXdr", wire.diagnostic_events_xdr)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TransactionWire {
    status: String,
    latest_ledger: Lenient,
    ledger: Option<Lenient>,
    created_at: Option<Lenient>,
    application_order: Option<Lenient>,
    fee_bump: Option<bool>,
    envelope_xdr: Option<String>,
    result_xdr: Option<String>,
    result_meta_xdr: Option<String>,
}

pub(super) fn transaction_info(wire: TransactionWire) -> Result<TransactionInfo, RpcError> {
    const METHOD: &str = "getTransaction";
    Ok(TransactionInfo {
        status: TransactionStatus::parse(&wire.status)
            .ok_or_else(|| malformed(METHOD, "unknown `status`"))?,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        ledger: optional_number(METHOD, "ledger", wire.ledger)?,
        created_at: optional_number(METHOD, "createdAt", wire.created_at)?,
        application_order: optional_number(METHOD, "applicationOrder", wire.application_order)?,
        fee_bump: wire.fee_bump.unwrap_or(false),
        envelope: optional_xdr(METHOD, "envelopeXdr", wire.envelope_xdr)?,
        result: optional_xdr(METHOD, "resultXdr", wire.result_xdr)?,
        result_meta: optional_xdr(METHOD, "resultMetaXdr", wire.result_meta_xdr)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EntriesWire {
    entries: Option<Vec<EntryWire>>,
    latest_ledger: Lenient,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EntryWire {
    key: String,
    xdr: String,
    last_modified_ledger_seq: Lenient,
    live_until_ledger_seq: Option<Lenient>,
}

pub(super) fn ledger_entries(wire: EntriesWire) -> Result<LedgerEntries, RpcError> {
    const METHOD: &str = "getLedgerEntries";
    let entries = wire
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            Ok(LedgerEntryResult {
                key: xdr(METHOD, "entries[].key", &entry.key)?,
                data: xdr(METHOD, "entries[].xdr", &entry.xdr)?,
                last_modified_ledger: number(
                    METHOD,
                    "entries[].lastModifiedLedgerSeq",
                    &entry.last_modified_ledger_seq,
                )?,
                live_until_ledger: optional_number(
                    METHOD,
                    "entries[].liveUntilLedgerSeq",
                    entry.live_until_ledger_seq,
                )?,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    Ok(LedgerEntries {
        entries,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
    })
}

/// `getEvents`' params: `startLedger`, `endLedger`, `filters` (always, maybe empty; each with
/// `type` comma-separated, `contractIds` as strkeys and `topics` as base64 XDR, `*` and `**`,
/// the empty ones left out) and `pagination` (`cursor`, `limit`) when either is set.
pub(super) fn events_params(request: &EventsRequest) -> Result<Value, RpcError> {
    let mut params = Map::new();
    if let Some(start) = request.start_ledger {
        params.insert("startLedger".into(), start.into());
    }
    if let Some(end) = request.end_ledger {
        params.insert("endLedger".into(), end.into());
    }
    let mut filters = Vec::with_capacity(request.filters.len());
    for filter in &request.filters {
        let mut object = Map::new();
        if !filter.kinds.is_empty() {
            let kinds: Vec<&str> = filter.kinds.iter().map(|kind| kind.as_str()).collect();
            object.insert("type".into(), kinds.join(",").into());
        }
        if !filter.contract_ids.is_empty() {
            let ids: Vec<Value> = filter
                .contract_ids
                .iter()
                .map(|id| id.to_string().into())
                .collect();
            object.insert("contractIds".into(), ids.into());
        }
        if !filter.topics.is_empty() {
            let topics = filter
                .topics
                .iter()
                .map(|segments| {
                    segments
                        .iter()
                        .map(|segment| match segment {
                            TopicMatch::Exact(value) => encode(value).map(Value::String),
                            TopicMatch::Any => Ok("*".into()),
                            TopicMatch::AnyTrailing => Ok("**".into()),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Value::Array)
                })
                .collect::<Result<Vec<_>, _>>()?;
            object.insert("topics".into(), topics.into());
        }
        filters.push(Value::Object(object));
    }
    params.insert("filters".into(), filters.into());
    if request.cursor.is_some() || request.limit.is_some() {
        let mut pagination = Map::new();
        if let Some(cursor) = &request.cursor {
            pagination.insert("cursor".into(), cursor.clone().into());
        }
        if let Some(limit) = request.limit {
            pagination.insert("limit".into(), limit.into());
        }
        params.insert("pagination".into(), pagination.into());
    }
    Ok(Value::Object(params))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventsWire {
    events: Option<Vec<EventWire>>,
    latest_ledger: Lenient,
    oldest_ledger: Option<Lenient>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventWire {
    #[serde(rename = "type")]
    kind: String,
    ledger: Lenient,
    ledger_closed_at: String,
    contract_id: Option<String>,
    id: String,
    transaction_index: Option<Lenient>,
    operation_index: Option<Lenient>,
    tx_hash: String,
    in_successful_contract_call: bool,
    topic: Option<Vec<String>>,
    value: String,
}

/// Decodes `getEvents`' answer to a request for at most `limit` events (the server's default,
/// or [`MAX_EVENTS_LIMIT`], when `None` or 0): more events than that are refused.
pub(super) fn events(wire: EventsWire, limit: Option<u32>) -> Result<Events, RpcError> {
    const METHOD: &str = "getEvents";
    let list = wire.events.unwrap_or_default();
    let most = limit.filter(|limit| *limit > 0).unwrap_or(MAX_EVENTS_LIMIT);
    if u32::try_from(list.len()).map_or(true, |count| count > most) {
        return Err(malformed(
            METHOD,
            format_args!("more than {most} events, the most asked for"),
        ));
    }
    let events = list
        .into_iter()
        .map(|event| {
            let contract = match event.contract_id.as_deref() {
                None | Some("") => None,
                Some(text) => match text.parse::<Address>() {
                    Ok(address @ Address::Contract(_)) => Some(address),
                    _ => {
                        return Err(malformed(
                            METHOD,
                            "`events[].contractId` is not a contract address",
                        ));
                    }
                },
            };
            Ok(EventInfo {
                id: event.id,
                kind: EventKind::parse(&event.kind)
                    .ok_or_else(|| malformed(METHOD, "unknown `events[].type`"))?,
                ledger: number(METHOD, "events[].ledger", &event.ledger)?,
                ledger_closed_at: event.ledger_closed_at,
                contract,
                transaction: event
                    .tx_hash
                    .parse()
                    .map_err(|_| malformed(METHOD, "`events[].txHash` is not 64 hex digits"))?,
                transaction_index: optional_number(
                    METHOD,
                    "events[].transactionIndex",
                    event.transaction_index,
                )?,
                operation_index: optional_number(
                    METHOD,
                    "events[].operationIndex",
                    event.operation_index,
                )?,
                topics: xdr_list(METHOD, "events[].topic", event.topic)?,
                value: xdr(METHOD, "events[].value", &event.value)?,
                in_successful_contract_call: event.in_successful_contract_call,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    Ok(Events {
        events,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        oldest_ledger: optional_number(METHOD, "oldestLedger", wire.oldest_ledger)?,
        cursor: wire.cursor.filter(|cursor| !cursor.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stellar_xdr::{
        Int128Parts, ScSymbol, ScVal, TransactionResult, TransactionResultExt,
        TransactionResultResult,
    };

    use super::*;
    use crate::stellar::rpc::testing::{
        account_entry, account_key, answer, auth_entry, b64, checked_request, envelope, event,
        hash, payer, result_meta, success_result, transaction_data,
    };
    use crate::stellar::rpc::{EventFilter, SorobanRpc};
    use crate::stellar::{Keypair, Network};

    #[tokio::test]
    async fn get_health() {
        let (rpc, log) = answer(json!({"status": "healthy", "latestLedger": 51583040, "oldestLedger": 51565760, "ledgerRetentionWindow": 17281})).await;
        let health = rpc.health().await.unwrap();
        assert_eq!(checked_request(&log, "getHealth"), None);
        assert!(health.is_healthy());
        assert_eq!(
            health,
            Health {
                status: "healthy".into(),
                latest_ledger: 51_583_040,
                oldest_ledger: Some(51_565_760),
                ledger_retention_window: Some(17_281),
            }
        );
    }

    #[tokio::test]
    async fn get_network() {
        let passphrase = "Test SDF Network ; September 2015";
        let (rpc, log) = answer(json!({"friendbotUrl": "https://friendbot.stellar.org/", "passphrase": passphrase, "protocolVersion": 23})).await;
        let network = rpc.network().await.unwrap();
        assert_eq!(checked_request(&log, "getNetwork"), None);
        assert_eq!(network.passphrase, passphrase);
        assert_eq!(network.protocol_version, 23);
        assert_eq!(
            network.friendbot_url.as_deref(),
            Some("https://friendbot.stellar.org/")
        );
        assert_eq!(network.network_id(), Network::testnet().id());

        let (rpc, _) = answer(json!({"passphrase": passphrase, "protocolVersion": "23"})).await;
        assert_eq!(rpc.network().await.unwrap().friendbot_url, None);
    }

    #[tokio::test]
    async fn get_latest_ledger() {
        let id = "c73c5eac58a441d4eb733c35253ae85f783e018f7be5ef974258fed067aabb36";
        let (rpc, log) =
            answer(json!({"id": id, "protocolVersion": 23, "sequence": 2_539_605})).await;
        let ledger = rpc.latest_ledger().await.unwrap();
        assert_eq!(checked_request(&log, "getLatestLedger"), None);
        assert_eq!(
            ledger,
            LatestLedger {
                id: id.into(),
                protocol_version: 23,
                sequence: 2_539_605
            }
        );
    }

    #[tokio::test]
    async fn simulate_transaction() {
        let (rpc, log) = answer(json!({
            "latestLedger": 1000,
            "minResourceFee": "12345",
            "transactionData": b64(&transaction_data()),
            "results": [{"auth": [b64(&auth_entry())], "xdr": b64(&ScVal::Void)}],
            "events": [b64(&event())],
            "cost": {"cpuInsns": "1", "memBytes": "2"},
            "stateChanges": []
        }))
        .await;
        let simulation = rpc.simulate_transaction(&envelope()).await.unwrap();
        let params = checked_request(&log, "simulateTransaction").unwrap();
        assert_eq!(params, json!({"transaction": b64(&envelope())}));
        assert!(simulation.is_success() && !simulation.needs_restore());
        assert_eq!(
            simulation,
            Simulation {
                latest_ledger: 1000,
                min_resource_fee: 12_345,
                transaction_data: Some(transaction_data()),
                results: vec![HostFunctionResult {
                    auth: vec![auth_entry()],
                    retval: Some(ScVal::Void),
                }],
                events: vec![event()],
                error: None,
                restore_preamble: None,
            }
        );
        assert_eq!(simulation.result().unwrap().auth, [auth_entry()]);
    }

    #[tokio::test]
    async fn simulation_failure_and_restore() {
        let (rpc, _) = answer(json!({
            "latestLedger": "1000",
            "error": "HostError: Error(Contract, #10)",
            "events": [b64(&event())]
        }))
        .await;
        let failed = rpc.simulate_transaction(&envelope()).await.unwrap();
        assert!(!failed.is_success());
        assert_eq!(
            failed.error.as_deref(),
            Some("HostError: Error(Contract, #10)")
        );
        assert_eq!((failed.min_resource_fee, failed.latest_ledger), (0, 1000));
        assert_eq!(failed.events, [event()]);
        assert!(failed.results.is_empty() && failed.transaction_data.is_none());

        let (rpc, _) = answer(json!({
            "latestLedger": 1000,
            "minResourceFee": 100,
            "transactionData": b64(&transaction_data()),
            "results": [{"auth": [], "xdr": ""}],
            "restorePreamble": {"minResourceFee": "777", "transactionData": b64(&transaction_data())}
        }))
        .await;
        let restore = rpc.simulate_transaction(&envelope()).await.unwrap();
        assert!(restore.is_success() && restore.needs_restore());
        assert_eq!(restore.min_resource_fee, 100);
        assert_eq!(restore.results[0].retval, None);
        assert_eq!(
            restore.restore_preamble,
            Some(RestorePreamble {
                min_resource_fee: 777,
                transaction_data: transaction_data()
            })
        );

        // An empty preamble (what the JS SDK tolerates) is no preamble.
        let (rpc, _) = answer(json!({
            "latestLedger": 1000,
            "minResourceFee": "0",
            "transactionData": b64(&transaction_data()),
            "restorePreamble": {"minResourceFee": "0", "transactionData": ""}
        }))
        .await;
        let simulation = rpc.simulate_transaction(&envelope()).await.unwrap();
        assert!(!simulation.needs_restore());
    }

    #[tokio::test]
    async fn send_transaction() {
        let hash = hash();
        let (rpc, log) = answer(json!({
            "status": "PENDING",
            "hash": hash.to_string(),
            "latestLedger": 1000,
            "latestLedgerCloseTime": "1700000000"
        }))
        .await;
        let sent = rpc.send_transaction(&envelope()).await.unwrap();
        let params = checked_request(&log, "sendTransaction").unwrap();
        assert_eq!(params, json!({"transaction": b64(&envelope())}));
        assert_eq!(
            sent,
            SendResult {
                status: SendStatus::Pending,
                hash,
                latest_ledger: 1000,
                error_result: None,
                diagnostic_events: Vec::new(),
            }
        );

        let bad_seq = TransactionResult {
            fee_charged: 100,
            result: TransactionResultResult::TxBadSeq,
            ext: TransactionResultExt::V0,
        };
        let (rpc, _) = answer(json!({
            "status": "ERROR",
            "hash": hash.to_string().to_uppercase(),
            "latestLedger": "1000",
            "errorResultXdr": b64(&bad_seq),
            "diagnosticEventsXdr": [b64(&event())]
        }))
        .await;
        let sent = rpc.send_transaction(&envelope()).await.unwrap();
        assert_eq!(sent.status, SendStatus::Error);
        assert_eq!(sent.hash, hash);
        assert_eq!(sent.error_result, Some(bad_seq));
        assert_eq!(sent.diagnostic_events, [event()]);

        for (text, status) in [
            ("DUPLICATE", SendStatus::Duplicate),
            ("TRY_AGAIN_LATER", SendStatus::TryAgainLater),
        ] {
            let (rpc, _) =
                answer(json!({"status": text, "hash": hash.to_string(), "latestLedger": 1})).await;
            assert_eq!(
                rpc.send_transaction(&envelope()).await.unwrap().status,
                status
            );
            assert_eq!(status.to_string(), text);
        }
    }

    #[tokio::test]
    async fn get_transaction() {
        let hash = hash();
        let (rpc, log) = answer(json!({
            "status": "SUCCESS",
            "txHash": hash.to_string(),
            "latestLedger": 1002,
            "latestLedgerCloseTime": "1700000010",
            "oldestLedger": 1,
            "oldestLedgerCloseTime": "1690000000",
            "ledger": 1001,
            "createdAt": "1700000005",
            "applicationOrder": 1,
            "feeBump": false,
            "envelopeXdr": b64(&envelope()),
            "resultXdr": b64(&success_result()),
            "resultMetaXdr": b64(&result_meta()),
            "diagnosticEventsXdr": [b64(&event())]
        }))
        .await;
        let info = rpc.transaction(&hash).await.unwrap();
        let params = checked_request(&log, "getTransaction").unwrap();
        assert_eq!(params, json!({"hash": hash.to_string()}));
        assert_eq!(
            info,
            TransactionInfo {
                status: TransactionStatus::Success,
                latest_ledger: 1002,
                ledger: Some(1001),
                created_at: Some(1_700_000_005),
                application_order: Some(1),
                fee_bump: false,
                envelope: Some(envelope()),
                result: Some(success_result()),
                result_meta: Some(result_meta()),
            }
        );

        let (rpc, _) = answer(json!({
            "status": "NOT_FOUND",
            "latestLedger": 1002,
            "latestLedgerCloseTime": "1700000010",
            "oldestLedger": 1,
            "oldestLedgerCloseTime": "1690000000"
        }))
        .await;
        let info = rpc.transaction(&hash).await.unwrap();
        assert_eq!(info, TransactionInfo::not_found(1002));
        assert!(!info.status.is_final());

        let (rpc, _) =
            answer(json!({"status": "FAILED", "latestLedger": 3, "feeBump": true, "ledger": "2"}))
                .await;
        let info = rpc.transaction(&hash).await.unwrap();
        assert_eq!(info.status, TransactionStatus::Failed);
        assert!(info.status.is_final() && info.fee_bump);
        assert_eq!(info.ledger, Some(2));
    }

    #[tokio::test]
    async fn get_ledger_entries() {
        let key = account_key(&payer().address());
        let (rpc, log) = answer(json!({
            "entries": [{
                "key": b64(&key),
                "xdr": b64(&account_entry(42)),
                "lastModifiedLedgerSeq": 900,
                "liveUntilLedgerSeq": "2000"
            }],
            "latestLedger": 1000
        }))
        .await;
        let other = account_key(&Keypair::from_seed([8; 32]).address());
        let entries = rpc
            .ledger_entries(&[key.clone(), other.clone()])
            .await
            .unwrap();
        let params = checked_request(&log, "getLedgerEntries").unwrap();
        assert_eq!(params, json!({"keys": [b64(&key), b64(&other)]}));
        assert_eq!(
            entries,
            LedgerEntries {
                entries: vec![LedgerEntryResult {
                    key,
                    data: account_entry(42),
                    last_modified_ledger: 900,
                    live_until_ledger: Some(2000),
                }],
                latest_ledger: 1000,
            }
        );

        let (rpc, _) = answer(json!({"entries": null, "latestLedger": 1000})).await;
        assert!(
            rpc.ledger_entries(&[other])
                .await
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[tokio::test]
    async fn invalid_xdr_is_malformed() {
        let not_base64 = "!!!not base64!!!";
        let wrong_type = b64(&success_result());
        let truncated = {
            let full = b64(&transaction_data());
            full[..full.len() - 8].to_owned()
        };
        for bad in [not_base64.to_owned(), wrong_type, truncated] {
            let cases = [
                json!({"latestLedger": 1, "transactionData": bad}),
                json!({"latestLedger": 1, "results": [{"auth": [bad], "xdr": ""}]}),
                json!({"latestLedger": 1, "results": [{"auth": [], "xdr": bad}]}),
                json!({"latestLedger": 1, "events": [bad]}),
                json!({"latestLedger": 1, "restorePreamble": {"minResourceFee": "1", "transactionData": bad}}),
            ];
            for case in cases {
                let (rpc, _) = answer(case.clone()).await;
                let error = rpc.simulate_transaction(&envelope()).await.unwrap_err();
                assert!(matches!(error, RpcError::Malformed(_)), "{case}: {error:?}");
            }
            let (rpc, _) =
                answer(json!({"status": "SUCCESS", "latestLedger": 1, "resultMetaXdr": bad})).await;
            assert!(matches!(
                rpc.transaction(&hash()).await,
                Err(RpcError::Malformed(_))
            ));
            let (rpc, _) = answer(json!({"entries": [{"key": b64(&account_key(&payer().address())), "xdr": bad, "lastModifiedLedgerSeq": 1}], "latestLedger": 1})).await;
            assert!(matches!(
                rpc.ledger_entries(&[]).await,
                Err(RpcError::Malformed(_))
            ));
        }
        // The error names the field, never echoes the data.
        let (rpc, _) =
            answer(json!({"status": "SUCCESS", "latestLedger": 1, "envelopeXdr": "c2VjcmV0"}))
                .await;
        let message = rpc.transaction(&hash()).await.unwrap_err().to_string();
        assert!(
            message.contains("envelopeXdr") && !message.contains("c2VjcmV0"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn unknown_statuses_are_malformed() {
        for status in ["pending", "QUEUED", ""] {
            let (rpc, _) =
                answer(json!({"status": status, "hash": hash().to_string(), "latestLedger": 1}))
                    .await;
            let error = rpc.send_transaction(&envelope()).await.unwrap_err();
            assert!(
                matches!(error, RpcError::Malformed(_)),
                "{status}: {error:?}"
            );
        }
        for status in ["success", "PENDING", ""] {
            let (rpc, _) = answer(json!({"status": status, "latestLedger": 1})).await;
            let error = rpc.transaction(&hash()).await.unwrap_err();
            assert!(
                matches!(error, RpcError::Malformed(_)),
                "{status}: {error:?}"
            );
        }
        let (rpc, _) =
            answer(json!({"status": "PENDING", "hash": "abcd", "latestLedger": 1})).await;
        assert!(matches!(
            rpc.send_transaction(&envelope()).await,
            Err(RpcError::Malformed(_))
        ));
    }

    fn symbol(text: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(text.try_into().unwrap()))
    }

    fn account(seed: u8) -> ScVal {
        ScVal::Address(Keypair::from_seed([seed; 32]).address().to_sc_address())
    }

    fn usdc() -> Address {
        Network::testnet().usdc().unwrap()
    }

    /// A SAC `transfer` event of 0.001 USDC from account 7 to account 8, as RPC writes it.
    fn transfer_json() -> Value {
        json!({
            "type": "contract",
            "ledger": 3727845,
            "ledgerClosedAt": "2026-07-21T18:01:10Z",
            "contractId": usdc().to_string(),
            "id": "0016010972359577600-0000000001",
            "operationIndex": 0,
            "transactionIndex": 5,
            "txHash": hash().to_string(),
            "inSuccessfulContractCall": true,
            "topic": [b64(&symbol("transfer")), b64(&account(7)), b64(&account(8)), b64(&symbol("USDC"))],
            "value": b64(&ScVal::I128(Int128Parts { hi: 0, lo: 10_000 })),
        })
    }

    fn transfer_info() -> EventInfo {
        EventInfo {
            id: "0016010972359577600-0000000001".into(),
            kind: EventKind::Contract,
            ledger: 3_727_845,
            ledger_closed_at: "2026-07-21T18:01:10Z".into(),
            contract: Some(usdc()),
            transaction: hash(),
            transaction_index: Some(5),
            operation_index: Some(0),
            topics: vec![symbol("transfer"), account(7), account(8), symbol("USDC")],
            value: ScVal::I128(Int128Parts { hi: 0, lo: 10_000 }),
            in_successful_contract_call: true,
        }
    }

    /// The USDC transfers from account 7 to account 8, from ledger 3 727 800 on.
    fn transfers_request() -> EventsRequest {
        EventsRequest::from_ledger(3_727_800)
            .end_ledger(3_727_900)
            .filter(EventFilter::new().contract(usdc()).topic([
                TopicMatch::Exact(symbol("transfer")),
                TopicMatch::Exact(account(7)),
                TopicMatch::Exact(account(8)),
                TopicMatch::Any,
            ]))
            .filter(
                EventFilter::new()
                    .any_kind()
                    .contract(usdc())
                    .contract(Network::testnet().native_asset_contract())
                    .topic([TopicMatch::Exact(symbol("fee")), TopicMatch::AnyTrailing])
                    .topic([TopicMatch::AnyTrailing]),
            )
            .limit(10)
    }

    #[tokio::test]
    async fn get_events() {
        let (rpc, log) = answer(json!({
            "events": [transfer_json()],
            "latestLedger": 3730843,
            "oldestLedger": 3609884,
            "latestLedgerCloseTime": "1784671886",
            "oldestLedgerCloseTime": "1784066056",
            "cursor": "0016010972359577600-0000000001"
        }))
        .await;
        let events = rpc.events(&transfers_request()).await.unwrap();
        assert_eq!(
            checked_request(&log, "getEvents"),
            Some(json!({
                "startLedger": 3727800,
                "endLedger": 3727900,
                "filters": [
                    {
                        "type": "contract",
                        "contractIds": [usdc().to_string()],
                        "topics": [[b64(&symbol("transfer")), b64(&account(7)), b64(&account(8)), "*"]]
                    },
                    {
                        "contractIds": [usdc().to_string(), Network::testnet().native_asset_contract().to_string()],
                        "topics": [[b64(&symbol("fee")), "**"], ["**"]]
                    }
                ],
                "pagination": {"limit": 10}
            }))
        );
        assert_eq!(
            events,
            Events {
                events: vec![transfer_info()],
                latest_ledger: 3_730_843,
                oldest_ledger: Some(3_609_884),
                cursor: Some("0016010972359577600-0000000001".into()),
            }
        );
    }

    #[tokio::test]
    async fn get_events_request_shapes() {
        let (rpc, log) = answer(json!({"events": [], "latestLedger": 10})).await;
        let cases = [
            (
                EventsRequest::from_ledger(5),
                json!({"startLedger": 5, "filters": []}),
            ),
            (
                EventsRequest::after("0000000021474840576-0000000003").limit(2),
                json!({"filters": [], "pagination": {"cursor": "0000000021474840576-0000000003", "limit": 2}}),
            ),
            (
                EventsRequest::after("0000000021474840576-0000000003"),
                json!({"filters": [], "pagination": {"cursor": "0000000021474840576-0000000003"}}),
            ),
            (
                EventsRequest::from_ledger(5).filter(EventFilter::new()),
                json!({"startLedger": 5, "filters": [{"type": "contract"}]}),
            ),
            (
                EventsRequest::from_ledger(5).filter(EventFilter::new().any_kind()),
                json!({"startLedger": 5, "filters": [{}]}),
            ),
            (
                EventsRequest::from_ledger(5).filter(EventFilter {
                    kinds: vec![
                        EventKind::System,
                        EventKind::Contract,
                        EventKind::Diagnostic,
                    ],
                    ..EventFilter::new()
                }),
                json!({"startLedger": 5, "filters": [{"type": "system,contract,diagnostic"}]}),
            ),
        ];
        for (request, params) in cases {
            let events = rpc.events(&request).await.unwrap();
            assert_eq!(checked_request(&log, "getEvents"), Some(params));
            assert_eq!(
                events,
                Events {
                    events: Vec::new(),
                    latest_ledger: 10,
                    oldest_ledger: None,
                    cursor: None,
                }
            );
        }
    }

    #[tokio::test]
    async fn get_events_lenient_fields() {
        let mut system = transfer_json();
        system["type"] = "system".into();
        system["contractId"] = "".into();
        system["ledger"] = "3727845".into();
        system["transactionIndex"] = "5".into();
        let fields = system.as_object_mut().unwrap();
        fields.remove("topic");
        fields.remove("operationIndex");
        let (rpc, _) = answer(json!({
            "events": [system, transfer_json()],
            "latestLedger": "3730843",
            "oldestLedger": null,
            "cursor": ""
        }))
        .await;
        let events = rpc.events(&EventsRequest::from_ledger(1)).await.unwrap();
        let expected_system = EventInfo {
            kind: EventKind::System,
            contract: None,
            operation_index: None,
            topics: Vec::new(),
            ..transfer_info()
        };
        assert_eq!(
            events,
            Events {
                events: vec![expected_system, transfer_info()],
                latest_ledger: 3_730_843,
                oldest_ledger: None,
                cursor: None,
            }
        );

        // `events` absent or null: none. An answer of `limit` events is whole.
        for result in [
            json!({"latestLedger": 7}),
            json!({"events": null, "latestLedger": 7}),
        ] {
            let (rpc, _) = answer(result).await;
            let events = rpc.events(&EventsRequest::from_ledger(1)).await.unwrap();
            assert!(events.events.is_empty());
        }
        let (rpc, _) =
            answer(json!({"events": [transfer_json(), transfer_json()], "latestLedger": 7})).await;
        let request = EventsRequest::from_ledger(1).limit(2);
        assert_eq!(rpc.events(&request).await.unwrap().events.len(), 2);
    }

    /// The error of decoding `result` as `getEvents`' answer to `request`.
    async fn events_error(request: &EventsRequest, result: Value) -> RpcError {
        let (rpc, _) = answer(result).await;
        rpc.events(request).await.unwrap_err()
    }

    /// The error of decoding an answer whose one event has `field` set to `value` (removed for
    /// `null`).
    async fn event_field_error(field: &str, value: Value) -> RpcError {
        let mut event = transfer_json();
        if value.is_null() {
            event.as_object_mut().unwrap().remove(field);
        } else {
            event[field] = value;
        }
        let result = json!({"events": [event], "latestLedger": 7});
        events_error(&EventsRequest::from_ledger(1), result).await
    }

    #[tokio::test]
    async fn get_events_refuses_malformed_answers() {
        let malformed = |what: &str| RpcError::Malformed(format!("getEvents: {what}"));
        let wrong_type = b64(&success_result());
        let too_deep = (0..=MAX_XDR_DEPTH).fold(ScVal::Void, |inner, _| {
            ScVal::Vec(Some(vec![inner].try_into().unwrap()))
        });
        let cases = [
            ("type", json!("Contract"), "unknown `events[].type`"),
            ("type", json!(""), "unknown `events[].type`"),
            (
                "ledger",
                json!(-1),
                "`events[].ledger` is not a number in range",
            ),
            (
                "ledger",
                json!("3727845x"),
                "`events[].ledger` is not a number in range",
            ),
            (
                "contractId",
                json!("CNOTACONTRACT"),
                "`events[].contractId` is not a contract address",
            ),
            (
                "contractId",
                json!(Keypair::from_seed([7; 32]).address().to_string()),
                "`events[].contractId` is not a contract address",
            ),
            (
                "txHash",
                json!("abcd"),
                "`events[].txHash` is not 64 hex digits",
            ),
            (
                "transactionIndex",
                json!(4_294_967_296_u64),
                "`events[].transactionIndex` is not a number in range",
            ),
            (
                "operationIndex",
                json!(-1),
                "`events[].operationIndex` is not a number in range",
            ),
            (
                "topic",
                json!(["!!!not base64!!!"]),
                "`events[].topic` is not valid base64 XDR",
            ),
            (
                "topic",
                json!([b64(&symbol("transfer")), wrong_type.clone()]),
                "`events[].topic` is not valid base64 XDR",
            ),
            (
                "topic",
                json!([b64(&too_deep)]),
                "`events[].topic` is not valid base64 XDR",
            ),
            (
                "value",
                json!(""),
                "`events[].value` is not valid base64 XDR",
            ),
            (
                "value",
                json!(wrong_type),
                "`events[].value` is not valid base64 XDR",
            ),
            (
                "value",
                json!(b64(&too_deep)),
                "`events[].value` is not valid base64 XDR",
            ),
            // Missing or mistyped required fields.
            ("id", Value::Null, "the result is not the expected JSON"),
            ("value", Value::Null, "the result is not the expected JSON"),
            ("txHash", Value::Null, "the result is not the expected JSON"),
            (
                "inSuccessfulContractCall",
                json!("true"),
                "the result is not the expected JSON",
            ),
            (
                "topic",
                json!("AAAADwAAAAh0cmFuc2Zlcg=="),
                "the result is not the expected JSON",
            ),
        ];
        for (field, value, what) in cases {
            assert_eq!(
                event_field_error(field, value.clone()).await,
                malformed(what),
                "{field}: {value}"
            );
        }

        let one = EventsRequest::from_ledger(1);
        for (result, what) in [
            (
                json!({"events": [], "latestLedger": -7}),
                "`latestLedger` is not a number in range",
            ),
            (json!({"events": []}), "the result is not the expected JSON"),
            (
                json!({"events": [], "latestLedger": 7, "oldestLedger": "x"}),
                "`oldestLedger` is not a number in range",
            ),
            (
                json!({"events": {}, "latestLedger": 7}),
                "the result is not the expected JSON",
            ),
            (
                json!({"events": [], "latestLedger": 7, "cursor": 5}),
                "the result is not the expected JSON",
            ),
        ] {
            assert_eq!(
                events_error(&one, result.clone()).await,
                malformed(what),
                "{result}"
            );
        }

        // More events than asked for, or than any server may send.
        let two = json!({"events": [transfer_json(), transfer_json()], "latestLedger": 7});
        assert_eq!(
            events_error(&one.clone().limit(1), two).await,
            malformed("more than 1 events, the most asked for")
        );
        let too_many = vec![transfer_json(); MAX_EVENTS_LIMIT as usize + 1];
        let result = json!({"events": too_many, "latestLedger": 7});
        for request in [one.clone(), one.clone().limit(0)] {
            assert_eq!(
                events_error(&request, result.clone()).await,
                malformed("more than 10000 events, the most asked for")
            );
        }
        // The error names the field, never echoes the data.
        let error = event_field_error("txHash", json!("secret-looking-data")).await;
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
