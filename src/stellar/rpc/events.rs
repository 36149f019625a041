//! `getEvents`: the request ([`EventsRequest`], its [`EventFilter`]s and [`TopicMatch`]es) and
//! the answer ([`Events`], one [`EventInfo`] per event).
//!
//! How a filter matches is on [`EventFilter`]; a request matches an event when it has no filter
//! or one of its filters matches.

use std::fmt;

use stellar_xdr::{ContractEvent, ContractEventBody, ContractEventType, ScVal};

use super::TransactionHash;
use crate::stellar::Address;

/// Most filters one request may carry (Soroban RPC's limit).
pub const MAX_EVENT_FILTERS: usize = 5;
/// Most contracts one filter may name (Soroban RPC's limit).
pub const MAX_FILTER_CONTRACTS: usize = 5;
/// Most topic filters one filter may carry (Soroban RPC's limit).
pub const MAX_TOPIC_FILTERS: usize = 5;
/// Most segments of one topic filter, a trailing `**` not counted (Soroban RPC's limit).
pub const MAX_TOPIC_SEGMENTS: usize = 4;
/// Largest page: Soroban RPC's ceiling on `pagination.limit`, and the most events an answer to a
/// request without a limit may carry.
pub const MAX_EVENTS_LIMIT: u32 = 10_000;
/// The page size a server uses when the request gives no limit (Soroban RPC's default).
pub const DEFAULT_EVENTS_LIMIT: u32 = 100;

/// An event's type, as `getEvents` names it in a filter's and an event's `type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `contract`: emitted by a contract (SAC `transfer`, `fee`, …).
    #[default]
    Contract,
    /// `system`: emitted by the host (a contract's executable updated, …).
    System,
    /// `diagnostic`: debugging events. Current servers keep none and refuse the kind in a
    /// filter.
    Diagnostic,
}

impl EventKind {
    /// The kind as RPC spells it (`contract`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Contract => "contract",
            Self::System => "system",
            Self::Diagnostic => "diagnostic",
        }
    }

    /// The kind RPC spells `text`.
    #[must_use]
    pub fn parse(text: &str) -> Option<EventKind> {
        match text {
            "contract" => Some(Self::Contract),
            "system" => Some(Self::System),
            "diagnostic" => Some(Self::Diagnostic),
            _ => None,
        }
    }

    /// The kind of an XDR event type.
    #[must_use]
    pub const fn of(event_type: ContractEventType) -> EventKind {
        match event_type {
            ContractEventType::Contract => Self::Contract,
            ContractEventType::System => Self::System,
            ContractEventType::Diagnostic => Self::Diagnostic,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a topic filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicMatch {
    /// This value exactly (written as base64 XDR).
    Exact(ScVal),
    /// `*`: any one value.
    Any,
    /// `**`: any number of values, none included; only as a topic filter's last segment.
    AnyTrailing,
}

impl TopicMatch {
    /// Whether this segment matches the topic `value`.
    fn matches(&self, value: &ScVal) -> bool {
        match self {
            Self::Exact(expected) => expected == value,
            Self::Any | Self::AnyTrailing => true,
        }
    }
}

/// One `getEvents` filter: event kinds, contracts and topic filters.
///
/// It matches an event as Soroban RPC matches it: the event is of one of the filter's kinds
/// (any kind when it has none), comes from one of its contracts (any contract when it names
/// none), and its topics match one of its topic filters (any topics when it has none). A topic
/// filter matches segment by segment: [`TopicMatch::Exact`] one value, [`TopicMatch::Any`] (`*`)
/// any one value, and a trailing [`TopicMatch::AnyTrailing`] (`**`) any number of further
/// values, none included; without a trailing `**`, the event has exactly as many topics as the
/// filter has segments.
///
/// ```
/// use tower_paywall::stellar::xdr::ScVal;
/// use tower_paywall::stellar::{EventFilter, EventKind, Network, TopicMatch};
///
/// let usdc = Network::testnet().usdc().expect("testnet has USDC");
/// // USDC `transfer` events, whatever their sender, recipient and further topics.
/// let transfers = EventFilter::new().contract(usdc).topic([
///     TopicMatch::Exact(ScVal::Symbol("transfer".try_into().expect("a symbol"))),
///     TopicMatch::AnyTrailing,
/// ]);
/// assert_eq!(transfers.kinds, [EventKind::Contract]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventFilter {
    /// The kinds of events to match (`type`, comma-separated on the wire); empty matches every
    /// kind. [`EventFilter::new`] asks for [`EventKind::Contract`].
    pub kinds: Vec<EventKind>,
    /// The contracts whose events match (`contractIds`); empty matches every contract. At most
    /// [`MAX_FILTER_CONTRACTS`], all contract addresses (`C…`).
    pub contract_ids: Vec<Address>,
    /// The topic filters (`topics`); empty matches any topics. At most [`MAX_TOPIC_FILTERS`],
    /// each of 1 to [`MAX_TOPIC_SEGMENTS`] segments (a trailing `**` not counted).
    pub topics: Vec<Vec<TopicMatch>>,
}

impl Default for EventFilter {
    fn default() -> Self {
        EventFilter::new()
    }
}

impl EventFilter {
    /// Contract events from any contract, with any topics.
    #[must_use]
    pub fn new() -> EventFilter {
        EventFilter {
            kinds: vec![EventKind::Contract],
            contract_ids: Vec::new(),
            topics: Vec::new(),
        }
    }

    /// Matches events of `kind` only, instead of the kinds set so far.
    #[must_use]
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kinds = vec![kind];
        self
    }

    /// Matches events of every kind (the filter sends no `type`).
    #[must_use]
    pub fn any_kind(mut self) -> Self {
        self.kinds.clear();
        self
    }

    /// Adds a contract whose events match.
    #[must_use]
    pub fn contract(mut self, contract: Address) -> Self {
        self.contract_ids.push(contract);
        self
    }

    /// Adds a topic filter, segment by segment.
    #[must_use]
    pub fn topic(mut self, segments: impl IntoIterator<Item = TopicMatch>) -> Self {
        self.topics.push(segments.into_iter().collect());
        self
    }

    /// Whether `event` matches this filter, as Soroban RPC matches it.
    #[must_use]
    pub fn matches(&self, event: &ContractEvent) -> bool {
        let kind = EventKind::of(event.type_);
        let kind_matches = self.kinds.is_empty() || self.kinds.contains(&kind);
        let contract_matches = self.contract_ids.is_empty()
            || event
                .contract_id
                .as_ref()
                .is_some_and(|id| self.contract_ids.contains(&Address::Contract(id.0.0)));
        let ContractEventBody::V0(body) = &event.body;
        let topics_matches = self.topics.is_empty()
            || self
                .topics
                .iter()
                .any(|filter| topics_match(filter, &body.topics));
        kind_matches && contract_matches && topics_matches
    }
}

/// Whether an event's `topics` match one topic filter.
fn topics_match(filter: &[TopicMatch], topics: &[ScVal]) -> bool {
    let segments = match filter.split_last() {
        Some((TopicMatch::AnyTrailing, fixed)) if topics.len() >= fixed.len() => fixed,
        Some((TopicMatch::AnyTrailing, _)) => return false,
        _ if topics.len() != filter.len() => return false,
        _ => filter,
    };
    segments
        .iter()
        .zip(topics)
        .all(|(segment, value)| segment.matches(value))
}

/// A `getEvents` request: a ledger range (or a cursor), filters, and a page size.
///
/// A first request names its start ledger ([`EventsRequest::from_ledger`]); the next pages
/// follow the answer's cursor ([`EventsRequest::after`]), with no ledger range.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_paywall::stellar::{EventFilter, EventsRequest, JsonRpcClient, Network, SorobanRpc};
///
/// let rpc = JsonRpcClient::builder("https://soroban-testnet.stellar.org").build()?;
/// let usdc = EventFilter::new().contract(Network::testnet().usdc().expect("testnet has USDC"));
/// let request = EventsRequest::from_ledger(1_000).filter(usdc.clone()).limit(50);
/// let page = rpc.events(&request).await?;
/// for event in &page.events {
///     println!("{} in ledger {}: {:?}", event.id, event.ledger, event.topics);
/// }
/// if let Some(cursor) = page.cursor {
///     let next = rpc.events(&EventsRequest::after(cursor).filter(usdc).limit(50)).await?;
///     println!("{} more", next.events.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventsRequest {
    /// The first ledger searched, inclusive (`startLedger`); must be set unless a cursor is.
    pub start_ledger: Option<u32>,
    /// The ledger the search ends before, exclusive (`endLedger`); only without a cursor.
    pub end_ledger: Option<u32>,
    /// The filters (`filters`), at most [`MAX_EVENT_FILTERS`]; an event matching any of them is
    /// included. None includes every event.
    pub filters: Vec<EventFilter>,
    /// Where the previous page ended (`pagination.cursor`, an answer's [`Events::cursor`]): the
    /// search resumes just after it.
    pub cursor: Option<String>,
    /// The most events to answer (`pagination.limit`), 1 to [`MAX_EVENTS_LIMIT`]; the server's
    /// default ([`DEFAULT_EVENTS_LIMIT`]) when `None`.
    pub limit: Option<u32>,
}

impl EventsRequest {
    /// The events from ledger `start` (inclusive) on, with no filter.
    #[must_use]
    pub fn from_ledger(start: u32) -> EventsRequest {
        EventsRequest {
            start_ledger: Some(start),
            ..EventsRequest::default()
        }
    }

    /// The page after `cursor` (a previous answer's [`Events::cursor`]), with no filter.
    #[must_use]
    pub fn after(cursor: impl Into<String>) -> EventsRequest {
        EventsRequest {
            cursor: Some(cursor.into()),
            ..EventsRequest::default()
        }
    }

    /// Ends the search before ledger `end` (exclusive).
    #[must_use]
    pub fn end_ledger(mut self, end: u32) -> Self {
        self.end_ledger = Some(end);
        self
    }

    /// Adds a filter.
    #[must_use]
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Answers at most `limit` events.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `event` matches the request: it has no filter, or one of its filters matches.
    #[must_use]
    pub fn matches(&self, event: &ContractEvent) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|filter| filter.matches(event))
    }
}

/// `getEvents`' answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Events {
    /// The matching events, oldest first.
    pub events: Vec<EventInfo>,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// The oldest ledger the server keeps events of, if given.
    pub oldest_ledger: Option<u32>,
    /// Where this page ended: the next request's [`EventsRequest::after`]. The last event's id
    /// when the page is full; otherwise the end of the range searched.
    pub cursor: Option<String>,
}

/// One event of [`Events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    /// The event's unique id (`id`), which is also a cursor: the ledger, transaction and
    /// operation it comes from, and its index there.
    pub id: String,
    /// Its kind (`type`).
    pub kind: EventKind,
    /// The ledger it was emitted in (`ledger`).
    pub ledger: u32,
    /// When that ledger closed, as the server wrote it (ISO 8601, `ledgerClosedAt`).
    pub ledger_closed_at: String,
    /// The contract that emitted it (`contractId`); `None` for events of no contract.
    pub contract: Option<Address>,
    /// The transaction that emitted it (`txHash`).
    pub transaction: TransactionHash,
    /// That transaction's position in its ledger, from 1 (`transactionIndex`), if given.
    pub transaction_index: Option<u32>,
    /// The operation's position in the transaction, from 0 (`operationIndex`), if given.
    pub operation_index: Option<u32>,
    /// Its topics (`topic`).
    pub topics: Vec<ScVal>,
    /// Its data (`value`).
    pub value: ScVal,
    /// Whether the transaction that emitted it succeeded (`inSuccessfulContractCall`): false for
    /// the fee events of a failed transaction.
    pub in_successful_contract_call: bool,
}

#[cfg(test)]
mod tests {
    use stellar_xdr::{ContractEventV0, ContractId, ExtensionPoint, Hash};

    use super::*;

    fn symbol(text: &str) -> ScVal {
        ScVal::Symbol(text.try_into().unwrap())
    }

    fn event(
        contract: Option<[u8; 32]>,
        kind: ContractEventType,
        topics: &[ScVal],
    ) -> ContractEvent {
        ContractEvent {
            ext: ExtensionPoint::V0,
            contract_id: contract.map(|id| ContractId(Hash(id))),
            type_: kind,
            body: ContractEventBody::V0(ContractEventV0 {
                topics: topics.to_vec().try_into().unwrap(),
                data: ScVal::Void,
            }),
        }
    }

    #[test]
    fn kinds_are_spelled_as_rpc_spells_them() {
        for kind in [
            EventKind::Contract,
            EventKind::System,
            EventKind::Diagnostic,
        ] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(EventKind::parse("Contract"), None);
        assert_eq!(EventKind::parse(""), None);
        assert_eq!(EventKind::of(ContractEventType::System), EventKind::System);
    }

    #[test]
    fn filters_match_kinds_and_contracts() {
        let transfer = event(
            Some([1; 32]),
            ContractEventType::Contract,
            &[symbol("transfer")],
        );
        assert!(EventFilter::new().matches(&transfer));
        assert!(
            EventFilter::default()
                .contract(Address::Contract([1; 32]))
                .matches(&transfer)
        );
        let two = EventFilter::new()
            .contract(Address::Contract([2; 32]))
            .contract(Address::Contract([1; 32]));
        assert!(two.matches(&transfer));
        assert!(
            !EventFilter::new()
                .contract(Address::Contract([2; 32]))
                .matches(&transfer)
        );
        // An account never emits events: naming one matches nothing.
        assert!(
            !EventFilter::new()
                .contract(Address::Account([1; 32]))
                .matches(&transfer)
        );
        assert!(
            !EventFilter::new()
                .kind(EventKind::System)
                .matches(&transfer)
        );
        assert!(EventFilter::new().any_kind().matches(&transfer));

        let system = event(
            None,
            ContractEventType::System,
            &[symbol("executable_update")],
        );
        assert!(!EventFilter::new().matches(&system));
        assert!(EventFilter::new().kind(EventKind::System).matches(&system));
        assert!(EventFilter::new().any_kind().matches(&system));
        // An event of no contract never matches a filter naming contracts.
        let named = EventFilter::new()
            .any_kind()
            .contract(Address::Contract([1; 32]));
        assert!(!named.matches(&system));
    }

    #[test]
    fn topic_filters_match_segment_by_segment() {
        use TopicMatch::{Any, AnyTrailing, Exact};
        let topics = [
            symbol("transfer"),
            symbol("from"),
            symbol("to"),
            symbol("usdc"),
        ];
        let transfer = event(Some([1; 32]), ContractEventType::Contract, &topics);
        let matches =
            |segments: Vec<TopicMatch>| EventFilter::new().topic(segments).matches(&transfer);

        assert!(matches(vec![Exact(symbol("transfer")), Any, Any, Any]));
        assert!(matches(vec![
            Exact(symbol("transfer")),
            Exact(symbol("from")),
            Exact(symbol("to")),
            Any
        ]));
        assert!(matches(vec![Exact(symbol("transfer")), AnyTrailing]));
        assert!(matches(vec![AnyTrailing]));
        assert!(
            matches(vec![Any, Any, Any, Any, AnyTrailing]),
            "** matches no further topic"
        );
        // Without a trailing **, the lengths must be equal.
        assert!(!matches(vec![Exact(symbol("transfer")), Any, Any]));
        assert!(!matches(vec![
            Exact(symbol("transfer")),
            Any,
            Any,
            Any,
            Any
        ]));
        assert!(!matches(vec![Any, Any, Any, Any, Any, AnyTrailing]));
        assert!(!matches(vec![Exact(symbol("mint")), AnyTrailing]));
        assert!(!matches(vec![Any, Exact(symbol("to")), Any, Any]));
        // One matching topic filter of several is enough.
        let either = EventFilter::new()
            .topic([Exact(symbol("mint")), AnyTrailing])
            .topic([Exact(symbol("transfer")), AnyTrailing]);
        assert!(either.matches(&transfer));

        let none = event(Some([1; 32]), ContractEventType::Contract, &[]);
        assert!(EventFilter::new().topic([AnyTrailing]).matches(&none));
        assert!(!EventFilter::new().topic([Any]).matches(&none));
    }

    #[test]
    fn requests_match_any_of_their_filters() {
        let transfer = event(
            Some([1; 32]),
            ContractEventType::Contract,
            &[symbol("transfer")],
        );
        assert!(EventsRequest::from_ledger(1).matches(&transfer));
        let other = EventFilter::new().contract(Address::Contract([2; 32]));
        assert!(
            !EventsRequest::from_ledger(1)
                .filter(other.clone())
                .matches(&transfer)
        );
        let mine = EventFilter::new().contract(Address::Contract([1; 32]));
        assert!(
            EventsRequest::from_ledger(1)
                .filter(other)
                .filter(mine)
                .matches(&transfer)
        );
    }

    #[test]
    fn request_constructors() {
        let request = EventsRequest::from_ledger(7).end_ledger(9).limit(3);
        assert_eq!(
            request,
            EventsRequest {
                start_ledger: Some(7),
                end_ledger: Some(9),
                filters: Vec::new(),
                cursor: None,
                limit: Some(3),
            }
        );
        let next = EventsRequest::after("0000000030064775168-0000000001");
        assert_eq!(
            next.cursor.as_deref(),
            Some("0000000030064775168-0000000001")
        );
        assert_eq!(
            (next.start_ledger, next.end_ledger, next.limit),
            (None, None, None)
        );
    }
}
