//! `getEvents`: the contract events of the transactions applied in the ledgers the sandbox
//! keeps, served as Soroban RPC serves them.
//!
//! - **What is kept**: at each close, every applied transaction's transaction-level events (the
//!   fee charged before all transactions and the refund after it) and its operations' contract
//!   events (none for a failed transaction: its meta has none). Each event carries
//!   `inSuccessfulContractCall` as RPC sets it: whether its transaction succeeded. Diagnostic
//!   events are not kept, as RPC keeps none. Friendbot funding applies no transaction and so
//!   leaves no event.
//! - **Ids and order**: an event's id is RPC's: the TOID of (ledger, transaction index from 1,
//!   operation index), 19 digits, a hyphen, and the event's index there, 10 digits. Fee charges
//!   take transaction 0; a transaction's refund takes its operation index 4095; answers list
//!   events in id order, which is ledger order.
//! - **Retention**: events of ledgers older than the retention window are dropped with the
//!   transactions `getTransaction` forgets; a start ledger outside the ledgers kept is refused
//!   with RPC's error (`-32600`).
//! - **Requests** are checked as RPC checks them, with its messages (`-32602`): a cursor or a
//!   ledger range, a positive start ledger, at most [`MAX_EVENTS_LIMIT`] events, at most
//!   [`MAX_EVENT_FILTERS`] filters of at most [`MAX_FILTER_CONTRACTS`] contracts and
//!   [`MAX_TOPIC_FILTERS`] topic filters of 1 to [`MAX_TOPIC_SEGMENTS`] segments, `**` last
//!   only, kinds `contract` and `system` only.
//! - **Pages**: a search covers at most 10 000 ledgers from its start and stops at the limit; the
//!   answer's cursor is the last event's id when the page is full, else the end of the ledgers
//!   searched, from which the next page resumes.

use std::collections::BTreeMap;
use std::fmt;

use stellar_xdr::{ContractEvent, ContractEventBody, TransactionEventStage, TransactionMeta};

use super::apply::Applied;
use crate::stellar::Address;
use crate::stellar::rpc::{
    DEFAULT_EVENTS_LIMIT, EventInfo, EventKind, Events, EventsRequest, MAX_EVENT_FILTERS,
    MAX_EVENTS_LIMIT, MAX_FILTER_CONTRACTS, MAX_TOPIC_FILTERS, MAX_TOPIC_SEGMENTS, RpcError,
    TopicMatch, TransactionHash,
};

/// JSON-RPC `Invalid params`: a request RPC's checks refuse.
const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC `Invalid request`: RPC's code for a start ledger outside the ledgers kept.
const INVALID_REQUEST: i64 = -32600;
/// Most ledgers one search covers from its start (RPC's scan limit).
const LEDGER_SCAN_LIMIT: u32 = 10_000;
/// The largest transaction index of a TOID (20 bits): the events after all transactions.
const TRANSACTION_MASK: u32 = (1 << 20) - 1;
/// The largest operation index of a TOID (12 bits): a transaction's events after its
/// operations.
const OPERATION_MASK: u32 = (1 << 12) - 1;

/// Where an event is: RPC's event id, ordered as RPC orders events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EventId {
    ledger: u32,
    transaction: u32,
    operation: u32,
    index: u32,
}

impl EventId {
    /// The first position of `ledger`.
    fn ledger_start(ledger: u32) -> EventId {
        EventId {
            ledger,
            transaction: 0,
            operation: 0,
            index: 0,
        }
    }

    /// The last position of `ledger`: the cursor of a search that ended with it.
    fn ledger_end(ledger: u32) -> EventId {
        EventId {
            ledger,
            transaction: TRANSACTION_MASK,
            operation: OPERATION_MASK,
            index: u32::MAX,
        }
    }

    /// Parses `<TOID>-<index>`, as RPC parses a cursor.
    fn parse(text: &str) -> Option<EventId> {
        let (toid, index) = text.split_once('-')?;
        let toid: u64 = toid.parse().ok()?;
        Some(EventId {
            ledger: u32::try_from(toid >> 32).ok()?,
            transaction: u32::try_from((toid >> 12) & u64::from(TRANSACTION_MASK)).ok()?,
            operation: u32::try_from(toid & u64::from(OPERATION_MASK)).ok()?,
            index: index.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let toid = (u64::from(self.ledger) << 32)
            | (u64::from(self.transaction & TRANSACTION_MASK) << 12)
            | u64::from(self.operation & OPERATION_MASK);
        write!(f, "{toid:019}-{:010}", self.index)
    }
}

/// One kept event.
#[derive(Clone, Debug)]
struct StoredEvent {
    event: ContractEvent,
    transaction: TransactionHash,
    successful: bool,
    close_time: u64,
}

/// The events of one closing ledger, gathered transaction by transaction.
pub(super) struct LedgerEvents {
    ledger: u32,
    close_time: u64,
    /// The next index of an event before all transactions (across the ledger).
    before_all: u32,
    /// The next index of an event after all transactions (across the ledger).
    after_all: u32,
    events: Vec<(EventId, StoredEvent)>,
}

impl LedgerEvents {
    /// No events yet, of ledger `ledger` closing at `close_time`.
    pub(super) fn new(ledger: u32, close_time: u64) -> LedgerEvents {
        LedgerEvents {
            ledger,
            close_time,
            before_all: 0,
            after_all: 0,
            events: Vec::new(),
        }
    }

    /// Gathers the events of an applied transaction.
    pub(super) fn add(&mut self, hash: TransactionHash, applied: &Applied) {
        let TransactionMeta::V4(meta) = &applied.meta else {
            return;
        };
        let transaction = applied.application_order.min(TRANSACTION_MASK - 1);
        let close_time = self.close_time;
        let stored = |event: &ContractEvent| StoredEvent {
            event: event.clone(),
            transaction: hash,
            successful: applied.success,
            close_time,
        };
        let mut after_transaction = 0_u32;
        let mut found = Vec::new();
        for event in meta.events.iter() {
            let id = match event.stage {
                TransactionEventStage::BeforeAllTxs => {
                    let index = self.before_all;
                    self.before_all = self.before_all.saturating_add(1);
                    EventId {
                        ledger: self.ledger,
                        transaction: 0,
                        operation: 0,
                        index,
                    }
                }
                TransactionEventStage::AfterTx => {
                    let index = after_transaction;
                    after_transaction = after_transaction.saturating_add(1);
                    EventId {
                        ledger: self.ledger,
                        transaction,
                        operation: OPERATION_MASK,
                        index,
                    }
                }
                TransactionEventStage::AfterAllTxs => {
                    let index = self.after_all;
                    self.after_all = self.after_all.saturating_add(1);
                    EventId {
                        ledger: self.ledger,
                        transaction: TRANSACTION_MASK,
                        operation: 0,
                        index,
                    }
                }
            };
            found.push((id, stored(&event.event)));
        }
        for (operation, operation_meta) in meta.operations.iter().enumerate() {
            let operation = u32::try_from(operation).map_or(OPERATION_MASK - 1, |operation| {
                operation.min(OPERATION_MASK - 1)
            });
            for (index, event) in operation_meta.events.iter().enumerate() {
                let id = EventId {
                    ledger: self.ledger,
                    transaction,
                    operation,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                };
                found.push((id, stored(event)));
            }
        }
        self.events.extend(found);
    }
}

/// The events kept, by id.
#[derive(Default)]
pub(super) struct EventLog {
    events: BTreeMap<EventId, StoredEvent>,
}

impl EventLog {
    /// Keeps a closed ledger's events.
    pub(super) fn append(&mut self, ledger: LedgerEvents) {
        self.events.extend(ledger.events);
    }

    /// Drops the events of the ledgers before `oldest`.
    pub(super) fn forget_before(&mut self, oldest: u32) {
        self.events = self.events.split_off(&EventId::ledger_start(oldest));
    }

    /// `getEvents`, with ledgers `oldest..=latest` kept.
    ///
    /// # Errors
    ///
    /// [`RpcError::Rpc`] with RPC's code and message for a request RPC refuses.
    pub(super) fn query(
        &self,
        request: &EventsRequest,
        latest: u32,
        oldest: u32,
    ) -> Result<Events, RpcError> {
        let cursor = match &request.cursor {
            Some(text) => Some(
                EventId::parse(text)
                    .ok_or_else(|| invalid_params(format!("invalid event id {}", short(text))))?,
            ),
            None => None,
        };
        check(request).map_err(invalid_params)?;
        let start = match cursor {
            // The page starts just after the cursor (RPC's wrap included).
            Some(cursor) => EventId {
                index: cursor.index.wrapping_add(1),
                ..cursor
            },
            None => EventId::ledger_start(request.start_ledger.unwrap_or(0)),
        };
        let limit = request
            .limit
            .filter(|limit| *limit > 0)
            .unwrap_or(DEFAULT_EVENTS_LIMIT);
        let mut end_ledger = start
            .ledger
            .saturating_add(LEDGER_SCAN_LIMIT)
            .min(latest.saturating_add(1));
        if let Some(end) = request.end_ledger.filter(|end| *end != 0) {
            end_ledger = end_ledger.min(end);
        }
        if start.ledger < oldest || start.ledger > latest {
            return Err(RpcError::Rpc {
                code: INVALID_REQUEST,
                message: format!(
                    "startLedger must be within the ledger range: {oldest} - {latest}"
                ),
            });
        }
        let capacity = usize::try_from(limit).unwrap_or(usize::MAX).min(1024);
        let mut events = Vec::with_capacity(capacity);
        let mut last = None;
        if start < EventId::ledger_start(end_ledger) {
            let range = self.events.range(start..EventId::ledger_start(end_ledger));
            for (id, stored) in range {
                if u32::try_from(events.len()).is_ok_and(|count| count >= limit) {
                    break;
                }
                if request.matches(&stored.event) {
                    events.push(info(*id, stored));
                    last = Some(*id);
                }
            }
        }
        let full = u32::try_from(events.len()).is_ok_and(|count| count >= limit);
        let cursor = match last {
            Some(id) if full => id,
            _ => EventId::ledger_end(end_ledger.saturating_sub(1)),
        };
        Ok(Events {
            events,
            latest_ledger: latest,
            oldest_ledger: Some(oldest),
            cursor: Some(cursor.to_string()),
        })
    }
}

/// The answer's view of a kept event.
fn info(id: EventId, stored: &StoredEvent) -> EventInfo {
    let ContractEventBody::V0(body) = &stored.event.body;
    EventInfo {
        id: id.to_string(),
        kind: EventKind::of(stored.event.type_),
        ledger: id.ledger,
        ledger_closed_at: rfc3339(stored.close_time),
        contract: stored
            .event
            .contract_id
            .as_ref()
            .map(|contract| Address::Contract(contract.0.0)),
        transaction: stored.transaction,
        transaction_index: Some(id.transaction),
        operation_index: Some(id.operation),
        topics: body.topics.to_vec(),
        value: body.data.clone(),
        in_successful_contract_call: stored.successful,
    }
}

fn invalid_params(message: String) -> RpcError {
    RpcError::Rpc {
        code: INVALID_PARAMS,
        message,
    }
}

/// At most 64 characters of a text echoed in an error.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// RPC's checks of a request (all but the cursor's syntax and the ledger range), with its
/// messages.
fn check(request: &EventsRequest) -> Result<(), String> {
    let ledger_set = |ledger: Option<u32>| ledger.is_some_and(|ledger| ledger != 0);
    if request.cursor.is_some() {
        if ledger_set(request.start_ledger) || ledger_set(request.end_ledger) {
            return Err("ledger ranges and cursor cannot both be set".into());
        }
    } else if !ledger_set(request.start_ledger) {
        return Err("startLedger must be positive".into());
    }
    if request.limit.is_some_and(|limit| limit > MAX_EVENTS_LIMIT) {
        return Err(format!("limit must not exceed {MAX_EVENTS_LIMIT}"));
    }
    if request.filters.len() > MAX_EVENT_FILTERS {
        return Err(format!("maximum {MAX_EVENT_FILTERS} filters per request"));
    }
    for (number, filter) in request.filters.iter().enumerate() {
        let number = number + 1;
        let refuse = |why: String| Err(format!("filter {number} invalid: {why}"));
        if filter
            .kinds
            .iter()
            .any(|kind| !matches!(kind, EventKind::Contract | EventKind::System))
        {
            return refuse(KIND_REFUSED.into());
        }
        if filter.contract_ids.len() > MAX_FILTER_CONTRACTS {
            return refuse(format!(
                "maximum {MAX_FILTER_CONTRACTS} contract IDs per filter"
            ));
        }
        if filter.topics.len() > MAX_TOPIC_FILTERS {
            return refuse(format!("maximum {MAX_TOPIC_FILTERS} topics per filter"));
        }
        if let Some(bad) = filter
            .contract_ids
            .iter()
            .position(|id| !matches!(id, Address::Contract(_)))
        {
            return refuse(format!("contract ID {} invalid", bad + 1));
        }
        for (topic, segments) in filter.topics.iter().enumerate() {
            if let Err(why) = check_topic(segments) {
                return refuse(format!("topic {} invalid: {why}", topic + 1));
            }
        }
    }
    Ok(())
}

/// RPC's message for a filter kind it does not take.
pub(super) const KIND_REFUSED: &str =
    "filter type invalid: if set, type must be either 'system' or 'contract'";

/// RPC's checks of one topic filter.
fn check_topic(segments: &[TopicMatch]) -> Result<(), String> {
    if segments.is_empty() {
        return Err("topic must have at least 1 segment".into());
    }
    let fixed = match segments.split_last() {
        Some((TopicMatch::AnyTrailing, fixed)) => fixed,
        _ => segments,
    };
    if let Some(bad) = fixed
        .iter()
        .position(|segment| *segment == TopicMatch::AnyTrailing)
    {
        return Err(format!(
            "segment {} invalid: wildcard '**' is only allowed as the last segment",
            bad + 1
        ));
    }
    if fixed.len() > MAX_TOPIC_SEGMENTS {
        return Err(format!(
            "topic cannot have more than {MAX_TOPIC_SEGMENTS} segments"
        ));
    }
    Ok(())
}

/// `unix` seconds as RFC 3339 UTC, to the second (`2026-07-21T18:01:10Z`), as RPC writes
/// `ledgerClosedAt`.
fn rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX / 2);
    let seconds = unix % 86_400;
    let (year, month, day) = crate::civil::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use stellar_xdr::{
        ContractEventType, ContractEventV0, ContractId, ExtensionPoint, Hash, OperationMetaV2,
        ScSymbol, ScVal, TransactionEnvelope, TransactionEvent, TransactionMetaV4,
        TransactionResult, TransactionResultExt, TransactionResultResult,
    };

    use super::*;
    use crate::stellar::rpc::{EventFilter, TopicMatch};

    const USDC: [u8; 32] = [1; 32];
    const XLM: [u8; 32] = [2; 32];
    const CLOSE_TIME: u64 = 1_700_000_000;

    fn symbol(text: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(text.try_into().unwrap()))
    }

    fn event(contract: [u8; 32], topics: Vec<ScVal>, data: i64) -> ContractEvent {
        ContractEvent {
            ext: ExtensionPoint::V0,
            contract_id: Some(ContractId(Hash(contract))),
            type_: ContractEventType::Contract,
            body: ContractEventBody::V0(ContractEventV0 {
                topics: topics.try_into().unwrap(),
                data: ScVal::I64(data),
            }),
        }
    }

    fn fee(stage: TransactionEventStage, amount: i64) -> TransactionEvent {
        TransactionEvent {
            stage,
            event: event(XLM, vec![symbol("fee")], amount),
        }
    }

    fn transfer(amount: i64) -> ContractEvent {
        event(
            USDC,
            vec![symbol("transfer"), symbol("a"), symbol("b"), symbol("USDC")],
            amount,
        )
    }

    /// A transaction applied at position `order` of its ledger: its fee events, then one
    /// operation with `operation_events`.
    fn applied(
        order: u32,
        success: bool,
        fees: Vec<TransactionEvent>,
        operation_events: Vec<ContractEvent>,
    ) -> Applied {
        let operations = if operation_events.is_empty() {
            Vec::new()
        } else {
            vec![OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: Default::default(),
                events: operation_events.try_into().unwrap(),
            }]
        };
        Applied {
            envelope: TransactionEnvelope::default(),
            result: TransactionResult {
                fee_charged: 100,
                result: TransactionResultResult::TxSuccess(Default::default()),
                ext: TransactionResultExt::V0,
            },
            meta: TransactionMeta::V4(TransactionMetaV4 {
                events: fees.try_into().unwrap(),
                operations: operations.try_into().unwrap(),
                ..Default::default()
            }),
            success,
            ledger: 0,
            close_time: 0,
            application_order: order,
            fee_bump: false,
        }
    }

    fn hash(byte: u8) -> TransactionHash {
        TransactionHash([byte; 32])
    }

    fn id(ledger: u32, transaction: u32, operation: u32, index: u32) -> String {
        EventId {
            ledger,
            transaction,
            operation,
            index,
        }
        .to_string()
    }

    /// Ledger 5: a successful transfer (fee, transfer, refund) and a failed transaction (fee,
    /// refund); ledger 6: another transfer (fee, transfer).
    fn log() -> EventLog {
        use TransactionEventStage::{AfterTx, BeforeAllTxs};
        let mut log = EventLog::default();
        let mut five = LedgerEvents::new(5, CLOSE_TIME);
        five.add(
            hash(1),
            &applied(
                1,
                true,
                vec![fee(BeforeAllTxs, 500), fee(AfterTx, -100)],
                vec![transfer(10)],
            ),
        );
        five.add(
            hash(2),
            &applied(
                2,
                false,
                vec![fee(BeforeAllTxs, 400), fee(AfterTx, -50)],
                Vec::new(),
            ),
        );
        log.append(five);
        let mut six = LedgerEvents::new(6, CLOSE_TIME + 5);
        six.add(
            hash(3),
            &applied(1, true, vec![fee(BeforeAllTxs, 300)], vec![transfer(20)]),
        );
        log.append(six);
        log
    }

    fn ids(events: &Events) -> Vec<&str> {
        events
            .events
            .iter()
            .map(|event| event.id.as_str())
            .collect()
    }

    #[test]
    fn ids_are_rpc_event_ids() {
        // The id of an event in Soroban RPC's documentation: ledger 3727845, transaction 5.
        let documented = EventId {
            ledger: 3_727_845,
            transaction: 5,
            operation: 0,
            index: 1,
        };
        assert_eq!(documented.to_string(), "0016010972359577600-0000000001");
        assert_eq!(
            EventId::parse("0016010972359577600-0000000001"),
            Some(documented)
        );
        let end = EventId::ledger_end(8);
        assert_eq!(end.to_string(), "0000000038654705663-4294967295");
        assert_eq!(EventId::parse(&end.to_string()), Some(end));
        assert_eq!(
            EventId::parse("34359738368-7"),
            Some(EventId {
                index: 7,
                ..EventId::ledger_start(8)
            })
        );
        for bad in [
            "",
            "abc",
            "1",
            "1-",
            "-1",
            "x-1",
            "1-x",
            "1--1",
            "1-4294967296",
            "18446744073709551616-1",
            " 1-1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn close_times_are_rfc3339() {
        for (unix, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_784_671_270, "2026-07-21T22:01:10Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(unix), text);
        }
        // No panic at the far end.
        assert!(rfc3339(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn events_come_in_ledger_order_with_their_transactions() {
        let events = log().query(&EventsRequest::from_ledger(5), 8, 1).unwrap();
        assert_eq!(
            ids(&events),
            [
                id(5, 0, 0, 0),
                id(5, 0, 0, 1),
                id(5, 1, 0, 0),
                id(5, 1, OPERATION_MASK, 0),
                id(5, 2, OPERATION_MASK, 0),
                id(6, 0, 0, 0),
                id(6, 1, 0, 0),
            ]
        );
        let summary: Vec<(TransactionHash, bool, ScVal)> = events
            .events
            .iter()
            .map(|event| {
                (
                    event.transaction,
                    event.in_successful_contract_call,
                    event.value.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (hash(1), true, ScVal::I64(500)),
                (hash(2), false, ScVal::I64(400)),
                (hash(1), true, ScVal::I64(10)),
                (hash(1), true, ScVal::I64(-100)),
                (hash(2), false, ScVal::I64(-50)),
                (hash(3), true, ScVal::I64(300)),
                (hash(3), true, ScVal::I64(20)),
            ]
        );
        let transfer = &events.events[2];
        assert_eq!(
            *transfer,
            EventInfo {
                id: id(5, 1, 0, 0),
                kind: EventKind::Contract,
                ledger: 5,
                ledger_closed_at: "2023-11-14T22:13:20Z".into(),
                contract: Some(Address::Contract(USDC)),
                transaction: hash(1),
                transaction_index: Some(1),
                operation_index: Some(0),
                topics: vec![symbol("transfer"), symbol("a"), symbol("b"), symbol("USDC")],
                value: ScVal::I64(10),
                in_successful_contract_call: true,
            }
        );
        assert_eq!(events.events[5].ledger_closed_at, "2023-11-14T22:13:25Z");
        assert_eq!((events.latest_ledger, events.oldest_ledger), (8, Some(1)));
        // The page is not full: the cursor is the end of the ledgers searched.
        assert_eq!(events.cursor, Some(EventId::ledger_end(8).to_string()));
    }

    #[test]
    fn filters_pick_contracts_and_topics() {
        let transfers = EventsRequest::from_ledger(1).filter(
            EventFilter::new().contract(Address::Contract(USDC)).topic([
                TopicMatch::Exact(symbol("transfer")),
                TopicMatch::Any,
                TopicMatch::Any,
                TopicMatch::Any,
            ]),
        );
        let events = log().query(&transfers, 8, 1).unwrap();
        assert_eq!(ids(&events), [id(5, 1, 0, 0), id(6, 1, 0, 0)]);
        let fees = EventsRequest::from_ledger(1)
            .filter(EventFilter::new().contract(Address::Contract(XLM)));
        assert_eq!(log().query(&fees, 8, 1).unwrap().events.len(), 5);
        let system =
            EventsRequest::from_ledger(1).filter(EventFilter::new().kind(EventKind::System));
        assert!(log().query(&system, 8, 1).unwrap().events.is_empty());
        let three_topics = EventsRequest::from_ledger(1).filter(EventFilter::new().topic([
            TopicMatch::Exact(symbol("transfer")),
            TopicMatch::Any,
            TopicMatch::Any,
        ]));
        assert!(log().query(&three_topics, 8, 1).unwrap().events.is_empty());
    }

    #[test]
    fn pages_follow_their_cursors() {
        let log = log();
        let first = log
            .query(&EventsRequest::from_ledger(5).limit(2), 8, 1)
            .unwrap();
        assert_eq!(ids(&first), [id(5, 0, 0, 0), id(5, 0, 0, 1)]);
        assert_eq!(
            first.cursor,
            Some(id(5, 0, 0, 1)),
            "a full page ends at its last event"
        );
        let second = log
            .query(&EventsRequest::after(first.cursor.unwrap()).limit(2), 8, 1)
            .unwrap();
        assert_eq!(ids(&second), [id(5, 1, 0, 0), id(5, 1, OPERATION_MASK, 0)]);
        let third = log
            .query(&EventsRequest::after(second.cursor.unwrap()), 8, 1)
            .unwrap();
        assert_eq!(
            ids(&third),
            [id(5, 2, OPERATION_MASK, 0), id(6, 0, 0, 0), id(6, 1, 0, 0)]
        );
        let end = third.cursor.unwrap();
        assert_eq!(end, EventId::ledger_end(8).to_string());
        let done = log.query(&EventsRequest::after(end), 8, 1).unwrap();
        assert!(done.events.is_empty());

        // `endLedger` is exclusive.
        let five = log
            .query(&EventsRequest::from_ledger(5).end_ledger(6), 8, 1)
            .unwrap();
        assert_eq!(five.events.len(), 5);
        assert_eq!(five.cursor, Some(EventId::ledger_end(5).to_string()));
        // An end before the start searches nothing.
        let none = log
            .query(&EventsRequest::from_ledger(6).end_ledger(3), 8, 1)
            .unwrap();
        assert!(none.events.is_empty());
        assert_eq!(none.cursor, Some(EventId::ledger_end(2).to_string()));
    }

    #[test]
    fn a_search_covers_at_most_ten_thousand_ledgers() {
        let mut log = EventLog::default();
        for ledger in [10_000, 10_001] {
            let mut events = LedgerEvents::new(ledger, CLOSE_TIME);
            events.add(hash(1), &applied(1, true, Vec::new(), vec![transfer(1)]));
            log.append(events);
        }
        // Ledgers 1 to 10 000.
        let first = log
            .query(&EventsRequest::from_ledger(1), 20_000, 1)
            .unwrap();
        assert_eq!(ids(&first), [id(10_000, 1, 0, 0)]);
        assert_eq!(first.cursor, Some(EventId::ledger_end(10_000).to_string()));
        let second = log
            .query(&EventsRequest::after(first.cursor.unwrap()), 20_000, 1)
            .unwrap();
        assert_eq!(ids(&second), [id(10_001, 1, 0, 0)]);
        assert_eq!(second.cursor, Some(EventId::ledger_end(19_999).to_string()));
    }

    #[test]
    fn old_ledgers_are_forgotten_and_refused() {
        let mut log = log();
        log.forget_before(6);
        let out_of_range = |oldest: u32, latest: u32| RpcError::Rpc {
            code: INVALID_REQUEST,
            message: format!("startLedger must be within the ledger range: {oldest} - {latest}"),
        };
        assert_eq!(
            log.query(&EventsRequest::from_ledger(5), 8, 6),
            Err(out_of_range(6, 8))
        );
        assert_eq!(
            log.query(&EventsRequest::after(id(5, 1, 0, 0)), 8, 6),
            Err(out_of_range(6, 8))
        );
        assert_eq!(
            log.query(&EventsRequest::from_ledger(9), 8, 6),
            Err(out_of_range(6, 8))
        );
        let kept = log.query(&EventsRequest::from_ledger(6), 8, 6).unwrap();
        assert_eq!(ids(&kept), [id(6, 0, 0, 0), id(6, 1, 0, 0)]);
        // Even asked from before the window, nothing forgotten comes back.
        assert_eq!(
            ids(&log.query(&EventsRequest::from_ledger(5), 8, 5).unwrap()),
            [id(6, 0, 0, 0), id(6, 1, 0, 0)]
        );
    }

    #[test]
    fn requests_are_checked_as_rpc_checks_them() {
        use TopicMatch::{Any, AnyTrailing};
        let usdc = Address::Contract(USDC);
        let filter = |filter: EventFilter| EventsRequest::from_ledger(5).filter(filter);
        let mut cursor_and_start = EventsRequest::after(id(5, 0, 0, 0));
        cursor_and_start.start_ledger = Some(5);
        let mut cursor_and_end = EventsRequest::after(id(5, 0, 0, 0));
        cursor_and_end.end_ledger = Some(7);
        let mut zero_start = EventsRequest::from_ledger(0);
        zero_start.cursor = None;
        let cases = [
            (EventsRequest::after("nope"), "invalid event id nope".to_owned()),
            (
                EventsRequest::after("x".repeat(100)),
                format!("invalid event id {}", "x".repeat(64)),
            ),
            (cursor_and_start, "ledger ranges and cursor cannot both be set".into()),
            (cursor_and_end, "ledger ranges and cursor cannot both be set".into()),
            (EventsRequest::default(), "startLedger must be positive".into()),
            (zero_start, "startLedger must be positive".into()),
            (EventsRequest::from_ledger(5).limit(10_001), "limit must not exceed 10000".into()),
            (
                EventsRequest {
                    filters: vec![EventFilter::new(); 6],
                    ..EventsRequest::from_ledger(5)
                },
                "maximum 5 filters per request".into(),
            ),
            (
                EventsRequest::from_ledger(5)
                    .filter(EventFilter::new())
                    .filter(EventFilter::new().kind(EventKind::Diagnostic)),
                format!("filter 2 invalid: {KIND_REFUSED}"),
            ),
            (
                filter(EventFilter {
                    contract_ids: vec![usdc; 6],
                    ..EventFilter::new()
                }),
                "filter 1 invalid: maximum 5 contract IDs per filter".into(),
            ),
            (
                filter(EventFilter {
                    topics: vec![vec![Any]; 6],
                    ..EventFilter::new()
                }),
                "filter 1 invalid: maximum 5 topics per filter".into(),
            ),
            (
                filter(EventFilter::new().contract(usdc).contract(Address::Account([3; 32]))),
                "filter 1 invalid: contract ID 2 invalid".into(),
            ),
            (
                filter(EventFilter::new().topic([Any]).topic([])),
                "filter 1 invalid: topic 2 invalid: topic must have at least 1 segment".into(),
            ),
            (
                filter(EventFilter::new().topic([Any, AnyTrailing, Any])),
                "filter 1 invalid: topic 1 invalid: segment 2 invalid: wildcard '**' is only allowed as the last segment".into(),
            ),
            (
                filter(EventFilter::new().topic([Any, Any, Any, Any, Any])),
                "filter 1 invalid: topic 1 invalid: topic cannot have more than 4 segments".into(),
            ),
        ];
        for (request, message) in cases {
            assert_eq!(
                log().query(&request, 8, 1),
                Err(RpcError::Rpc {
                    code: INVALID_PARAMS,
                    message
                }),
                "{request:?}"
            );
        }
        // At the limits, all is well.
        let widest = EventsRequest {
            filters: vec![
                EventFilter {
                    kinds: vec![EventKind::Contract, EventKind::System],
                    contract_ids: vec![usdc; 5],
                    topics: vec![vec![Any, Any, Any, Any, AnyTrailing]; 5],
                };
                5
            ],
            ..EventsRequest::from_ledger(5).limit(10_000)
        };
        assert!(log().query(&widest, 8, 1).is_ok());
        let mut zero_limit = EventsRequest::from_ledger(5);
        zero_limit.limit = Some(0);
        assert_eq!(
            log().query(&zero_limit, 8, 1).unwrap().events.len(),
            7,
            "0 is the default"
        );
    }
}
