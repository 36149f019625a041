//! Soroban JSON-RPC served over HTTP and HTTPS on loopback, for any [`SorobanRpc`].
//!
//! The wire shapes are the official RPC's (what `@stellar/stellar-sdk` parses): XDR as base64
//! strings, `minResourceFee` and `createdAt` as strings, ledgers as numbers. The HTTPS listener
//! presents a certificate made at start and written to a file, because the TypeScript Stellar
//! clients refuse plain-HTTP RPC.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::MAX_LEDGER_ENTRY_KEYS;
use super::events::KIND_REFUSED;
use super::tls::{LoopbackIdentity, TlsError};
use crate::stellar::rpc::{
    EventFilter, EventKind, Events, EventsRequest, Health, LatestLedger, LedgerEntries,
    MAX_EVENT_FILTERS, MAX_FILTER_CONTRACTS, MAX_TOPIC_FILTERS, MAX_TOPIC_SEGMENTS, NetworkInfo,
    RpcError, SendResult, Simulation, SorobanRpc, TopicMatch, TransactionHash, TransactionInfo,
};
use crate::stellar::xdr::{LedgerKey, ReadXdr, ScVal, WriteXdr};
use crate::stellar::{Address, decode_envelope, decode_limits};

/// JSON-RPC error codes.
mod code {
    pub(super) const PARSE_ERROR: i64 = -32700;
    pub(super) const INVALID_REQUEST: i64 = -32600;
    pub(super) const METHOD_NOT_FOUND: i64 = -32601;
    pub(super) const INVALID_PARAMS: i64 = -32602;
    pub(super) const INTERNAL: i64 = -32603;
}

/// A JSON-RPC error: code and message.
type Fault = (i64, String);

/// An axum router answering Soroban JSON-RPC at `POST /`, backed by `rpc`.
pub fn rpc_router(rpc: Arc<dyn SorobanRpc>) -> Router {
    Router::new().route("/", post(handle)).with_state(rpc)
}

async fn handle(State(rpc): State<Arc<dyn SorobanRpc>>, body: Bytes) -> axum::Json<Value> {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => return reply(Value::Null, Err((code::PARSE_ERROR, "parse error".into()))),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = match (&request["jsonrpc"], &request["method"]) {
        (Value::String(version), Value::String(method)) if version == "2.0" => method.clone(),
        _ => return reply(id, Err((code::INVALID_REQUEST, "invalid request".into()))),
    };
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    reply(id, dispatch(&*rpc, &method, &params).await)
}

fn reply(id: Value, answer: Result<Value, Fault>) -> axum::Json<Value> {
    axum::Json(match answer {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
        }
    })
}

async fn dispatch(rpc: &dyn SorobanRpc, method: &str, params: &Value) -> Result<Value, Fault> {
    match method {
        "getHealth" => Ok(health(&rpc.health().await.map_err(fault)?)),
        "getNetwork" => Ok(network(&rpc.network().await.map_err(fault)?)),
        "getLatestLedger" => Ok(latest_ledger(&rpc.latest_ledger().await.map_err(fault)?)),
        "simulateTransaction" => {
            let envelope = envelope_param(params)?;
            let simulation = rpc.simulate_transaction(&envelope).await.map_err(fault)?;
            Ok(simulation_json(&simulation))
        }
        "sendTransaction" => {
            let envelope = envelope_param(params)?;
            Ok(send_json(
                &rpc.send_transaction(&envelope).await.map_err(fault)?,
            ))
        }
        "getTransaction" => {
            let hash: TransactionHash = string_param(params, "hash")?
                .parse()
                .map_err(|_| invalid("`hash` must be 64 hex digits"))?;
            Ok(transaction_json(
                &rpc.transaction(&hash).await.map_err(fault)?,
            ))
        }
        "getLedgerEntries" => {
            let keys = keys_param(params)?;
            Ok(entries_json(
                &rpc.ledger_entries(&keys).await.map_err(fault)?,
            ))
        }
        "getEvents" => {
            let request = events_params(params)?;
            Ok(events_json(&rpc.events(&request).await.map_err(fault)?))
        }
        _ => Err((
            code::METHOD_NOT_FOUND,
            format!("method not found: {}", short(method)),
        )),
    }
}

fn invalid(message: &str) -> Fault {
    (code::INVALID_PARAMS, message.to_owned())
}

fn fault(error: RpcError) -> Fault {
    match error {
        RpcError::Rpc { code, message } => (code, message),
        other => {
            tracing::warn!(error = %other, "sandbox RPC call failed");
            (code::INTERNAL, "internal error".into())
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

fn string_param<'a>(params: &'a Value, name: &str) -> Result<&'a str, Fault> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("missing string parameter `{name}`")))
}

fn envelope_param(params: &Value) -> Result<crate::stellar::xdr::TransactionEnvelope, Fault> {
    let text = string_param(params, "transaction")?;
    decode_envelope(text).map_err(|_| invalid("`transaction` is not a transaction envelope"))
}

fn keys_param(params: &Value) -> Result<Vec<LedgerKey>, Fault> {
    let keys = params
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("missing array parameter `keys`"))?;
    if keys.is_empty() || keys.len() > MAX_LEDGER_ENTRY_KEYS {
        return Err(invalid("`keys` must hold 1 to 200 keys"));
    }
    keys.iter()
        .map(|key| {
            let text = key
                .as_str()
                .ok_or_else(|| invalid("`keys` must be strings"))?;
            LedgerKey::from_xdr_base64(text, decode_limits())
                .map_err(|_| invalid("`keys` holds something that is not a ledger key"))
        })
        .collect()
}

/// `getEvents`' params: `startLedger` and `endLedger` (numbers), `filters` (each with `type`,
/// comma-separated kinds; `contractIds`, strkeys; `topics`, arrays of base64 XDR `ScVal`s, `*`
/// and `**`) and `pagination` (`cursor`, `limit`). Counts are bounded before anything is
/// decoded (filters, contract ids and topic filters at Soroban RPC's limits, and segments at
/// [`MAX_TOPIC_SEGMENTS`] + 1, a trailing `**` included); the rest of RPC's checks are the
/// backing [`SorobanRpc`]'s.
fn events_params(params: &Value) -> Result<EventsRequest, Fault> {
    let ledger = |name: &str| match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|ledger| u32::try_from(ledger).ok())
            .map(Some)
            .ok_or_else(|| invalid(&format!("`{name}` must be a ledger sequence number"))),
    };
    let mut request = EventsRequest {
        start_ledger: ledger("startLedger")?,
        end_ledger: ledger("endLedger")?,
        ..EventsRequest::default()
    };
    let filters = match params.get("filters") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(filters)) => filters.as_slice(),
        Some(_) => return Err(invalid("`filters` must be an array")),
    };
    if filters.len() > MAX_EVENT_FILTERS {
        return Err(invalid(&format!(
            "maximum {MAX_EVENT_FILTERS} filters per request"
        )));
    }
    for (number, filter) in filters.iter().enumerate() {
        let filter = event_filter(filter)
            .map_err(|why| invalid(&format!("filter {} invalid: {why}", number + 1)))?;
        request.filters.push(filter);
    }
    match params.get("pagination") {
        None | Some(Value::Null) => {}
        Some(Value::Object(pagination)) => {
            request.cursor = match pagination.get("cursor") {
                None | Some(Value::Null) => None,
                Some(Value::String(cursor)) => Some(cursor.clone()),
                Some(_) => return Err(invalid("`pagination.cursor` must be a string")),
            };
            request.limit = match pagination.get("limit") {
                None | Some(Value::Null) => None,
                Some(limit) => Some(
                    limit
                        .as_u64()
                        .map(|limit| u32::try_from(limit).unwrap_or(u32::MAX))
                        .ok_or_else(|| {
                            invalid("`pagination.limit` must be a non-negative integer")
                        })?,
                ),
            };
        }
        Some(_) => return Err(invalid("`pagination` must be an object")),
    }
    Ok(request)
}

/// One `getEvents` filter; the error is RPC's reason, without the filter's number.
fn event_filter(filter: &Value) -> Result<EventFilter, String> {
    let Value::Object(filter) = filter else {
        return Err("a filter must be an object".into());
    };
    let mut parsed = EventFilter::new().any_kind();
    match filter.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kinds)) if kinds.is_empty() => {}
        Some(Value::String(kinds)) => {
            for kind in kinds.split(',') {
                parsed
                    .kinds
                    .push(EventKind::parse(kind).ok_or(KIND_REFUSED)?);
            }
        }
        Some(_) => return Err("`type` must be a string".into()),
    }
    let list = |name: &str, most: usize, what: &str| match filter.get(name) {
        None | Some(Value::Null) => Ok(&[][..]),
        Some(Value::Array(items)) if items.len() > most => {
            Err(format!("maximum {most} {what} per filter"))
        }
        Some(Value::Array(items)) => Ok(items.as_slice()),
        Some(_) => Err(format!("`{name}` must be an array")),
    };
    for (number, id) in list("contractIds", MAX_FILTER_CONTRACTS, "contract IDs")?
        .iter()
        .enumerate()
    {
        let id = id
            .as_str()
            .and_then(|id| id.parse::<Address>().ok())
            .ok_or_else(|| format!("contract ID {} invalid", number + 1))?;
        parsed.contract_ids.push(id);
    }
    for (number, topic) in list("topics", MAX_TOPIC_FILTERS, "topics")?
        .iter()
        .enumerate()
    {
        let segments =
            topic_filter(topic).map_err(|why| format!("topic {} invalid: {why}", number + 1))?;
        parsed.topics.push(segments);
    }
    Ok(parsed)
}

/// One topic filter: its segments, at most [`MAX_TOPIC_SEGMENTS`] and a trailing `**`.
fn topic_filter(topic: &Value) -> Result<Vec<TopicMatch>, String> {
    let Value::Array(segments) = topic else {
        return Err("a topic must be an array of segments".into());
    };
    if segments.len() > MAX_TOPIC_SEGMENTS + 1 {
        return Err(format!(
            "topic cannot have more than {MAX_TOPIC_SEGMENTS} segments"
        ));
    }
    segments
        .iter()
        .enumerate()
        .map(|(number, segment)| match segment.as_str() {
            Some("*") => Ok(TopicMatch::Any),
            Some("**") => Ok(TopicMatch::AnyTrailing),
            Some(text) => ScVal::from_xdr_base64(text, decode_limits())
                .map(TopicMatch::Exact)
                .map_err(|_| format!("segment {} is not a base64 ScVal, * or **", number + 1)),
            None => Err(format!("segment {} must be a string", number + 1)),
        })
        .collect()
}

fn b64(value: &impl WriteXdr) -> Value {
    // Encoding our own values: they always fit.
    value
        .to_xdr_base64(crate::stellar::xdr::Limits::none())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn health(health: &Health) -> Value {
    let mut out = json!({ "status": health.status, "latestLedger": health.latest_ledger });
    insert(
        &mut out,
        "oldestLedger",
        health.oldest_ledger.map(Value::from),
    );
    let window = health.ledger_retention_window.map(Value::from);
    insert(&mut out, "ledgerRetentionWindow", window);
    out
}

fn network(network: &NetworkInfo) -> Value {
    let mut out = json!({
        "passphrase": network.passphrase,
        "protocolVersion": network.protocol_version,
    });
    insert(
        &mut out,
        "friendbotUrl",
        network.friendbot_url.clone().map(Value::String),
    );
    out
}

/// `getLatestLedger`, with the `headerXdr` and `metadataXdr` current RPC servers send and the
/// TypeScript SDK requires. The sandbox keeps no full header: these carry the sequence, protocol
/// and hash, with every other field zero and an empty transaction set.
fn latest_ledger(ledger: &LatestLedger) -> Value {
    use crate::stellar::xdr::{
        Hash, LedgerCloseMeta, LedgerCloseMetaV0, LedgerHeader, LedgerHeaderExt,
        LedgerHeaderHistoryEntry, LedgerHeaderHistoryEntryExt, Limits, StellarValue,
        StellarValueExt, TimePoint, TransactionSet,
    };
    let hash = <[u8; 32] as hex::FromHex>::from_hex(&ledger.id)
        .ok()
        .unwrap_or([0; 32]);
    let header = LedgerHeader {
        ledger_version: ledger.protocol_version,
        previous_ledger_hash: Hash([0; 32]),
        scp_value: StellarValue {
            tx_set_hash: Hash([0; 32]),
            close_time: TimePoint(0),
            upgrades: Default::default(),
            ext: StellarValueExt::Basic,
        },
        tx_set_result_hash: Hash([0; 32]),
        bucket_list_hash: Hash([0; 32]),
        ledger_seq: ledger.sequence,
        total_coins: 0,
        fee_pool: 0,
        inflation_seq: 0,
        id_pool: 0,
        base_fee: 0,
        base_reserve: 0,
        max_tx_set_size: 0,
        skip_list: [Hash([0; 32]), Hash([0; 32]), Hash([0; 32]), Hash([0; 32])],
        ext: LedgerHeaderExt::V0,
    };
    let meta = LedgerCloseMeta::V0(LedgerCloseMetaV0 {
        ledger_header: LedgerHeaderHistoryEntry {
            hash: Hash(hash),
            header: header.clone(),
            ext: LedgerHeaderHistoryEntryExt::V0,
        },
        tx_set: TransactionSet {
            previous_ledger_hash: Hash([0; 32]),
            txs: Default::default(),
        },
        tx_processing: Default::default(),
        upgrades_processing: Default::default(),
        scp_info: Default::default(),
    });
    json!({
        "id": ledger.id,
        "protocolVersion": ledger.protocol_version,
        "sequence": ledger.sequence,
        "headerXdr": header.to_xdr_base64(Limits::none()).unwrap_or_default(),
        "metadataXdr": meta.to_xdr_base64(Limits::none()).unwrap_or_default(),
    })
}

fn simulation_json(simulation: &Simulation) -> Value {
    let mut out = json!({ "latestLedger": simulation.latest_ledger });
    if let Some(error) = &simulation.error {
        insert(&mut out, "error", Some(Value::String(error.clone())));
    }
    let events: Vec<Value> = simulation.events.iter().map(b64).collect();
    insert(&mut out, "events", Some(Value::Array(events)));
    if simulation.error.is_some() {
        return out;
    }
    let fee = simulation.min_resource_fee.to_string();
    insert(&mut out, "minResourceFee", Some(Value::String(fee)));
    insert(
        &mut out,
        "transactionData",
        simulation.transaction_data.as_ref().map(b64),
    );
    let results: Vec<Value> = simulation
        .results
        .iter()
        .map(|result| {
            let auth: Vec<Value> = result.auth.iter().map(b64).collect();
            let retval = result
                .retval
                .as_ref()
                .map_or(Value::String(String::new()), b64);
            json!({ "auth": auth, "xdr": retval })
        })
        .collect();
    insert(&mut out, "results", Some(Value::Array(results)));
    if let Some(preamble) = &simulation.restore_preamble {
        let preamble = json!({
            "minResourceFee": preamble.min_resource_fee.to_string(),
            "transactionData": b64(&preamble.transaction_data),
        });
        insert(&mut out, "restorePreamble", Some(preamble));
    }
    out
}

fn send_json(sent: &SendResult) -> Value {
    let mut out = json!({
        "status": sent.status.as_str(),
        "hash": sent.hash.to_string(),
        "latestLedger": sent.latest_ledger,
    });
    insert(
        &mut out,
        "errorResultXdr",
        sent.error_result.as_ref().map(b64),
    );
    if !sent.diagnostic_events.is_empty() {
        let events = sent.diagnostic_events.iter().map(b64).collect();
        insert(&mut out, "diagnosticEventsXdr", Some(Value::Array(events)));
    }
    out
}

fn transaction_json(info: &TransactionInfo) -> Value {
    let mut out = json!({
        "status": info.status.as_str(),
        "latestLedger": info.latest_ledger,
    });
    insert(&mut out, "ledger", info.ledger.map(Value::from));
    let created = info.created_at.map(|at| Value::String(at.to_string()));
    insert(&mut out, "createdAt", created);
    insert(
        &mut out,
        "applicationOrder",
        info.application_order.map(Value::from),
    );
    if info.status.is_final() {
        insert(&mut out, "feeBump", Some(Value::Bool(info.fee_bump)));
    }
    insert(&mut out, "envelopeXdr", info.envelope.as_ref().map(b64));
    insert(&mut out, "resultXdr", info.result.as_ref().map(b64));
    insert(
        &mut out,
        "resultMetaXdr",
        info.result_meta.as_ref().map(b64),
    );
    out
}

fn entries_json(entries: &LedgerEntries) -> Value {
    let list: Vec<Value> = entries
        .entries
        .iter()
        .map(|entry| {
            let mut out = json!({
                "key": b64(&entry.key),
                "xdr": b64(&entry.data),
                "lastModifiedLedgerSeq": entry.last_modified_ledger,
            });
            insert(
                &mut out,
                "liveUntilLedgerSeq",
                entry.live_until_ledger.map(Value::from),
            );
            out
        })
        .collect();
    json!({ "entries": list, "latestLedger": entries.latest_ledger })
}

/// `getEvents`' answer, as RPC writes it: every event field present (`contractId` empty for an
/// event of no contract), `cursor` always a string.
fn events_json(events: &Events) -> Value {
    let list: Vec<Value> = events
        .events
        .iter()
        .map(|event| {
            let contract = event
                .contract
                .map_or_else(String::new, |contract| contract.to_string());
            let topics: Vec<Value> = event.topics.iter().map(b64).collect();
            let mut out = json!({
                "type": event.kind.as_str(),
                "ledger": event.ledger,
                "ledgerClosedAt": event.ledger_closed_at,
                "contractId": contract,
                "id": event.id,
                "txHash": event.transaction.to_string(),
                "inSuccessfulContractCall": event.in_successful_contract_call,
                "topic": topics,
                "value": b64(&event.value),
            });
            insert(
                &mut out,
                "operationIndex",
                event.operation_index.map(Value::from),
            );
            insert(
                &mut out,
                "transactionIndex",
                event.transaction_index.map(Value::from),
            );
            out
        })
        .collect();
    let mut out = json!({
        "events": list,
        "latestLedger": events.latest_ledger,
        "cursor": events.cursor.clone().unwrap_or_default(),
    });
    insert(
        &mut out,
        "oldestLedger",
        events.oldest_ledger.map(Value::from),
    );
    out
}

fn insert(object: &mut Value, name: &str, value: Option<Value>) {
    if let (Value::Object(fields), Some(value)) = (object, value) {
        fields.insert(name.to_owned(), value);
    }
}

/// Where [`RpcServer`] listens and writes its certificate.
#[derive(Clone, Debug)]
#[must_use]
pub struct ServeConfig {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    certificate_path: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        ServeConfig {
            http: Some(loopback),
            https: Some(loopback),
            certificate_path: None,
        }
    }
}

impl ServeConfig {
    /// Plain HTTP on `address` (default `127.0.0.1:0`, a free port); `None` turns it off.
    pub fn http(mut self, address: Option<SocketAddr>) -> Self {
        self.http = address;
        self
    }

    /// HTTPS on `address` (default `127.0.0.1:0`, a free port); `None` turns it off.
    pub fn https(mut self, address: Option<SocketAddr>) -> Self {
        self.https = address;
        self
    }

    /// Where the certificate is written (default: a file of its own in the system's temporary
    /// folder, `tower-paywall-sandbox/`).
    pub fn certificate_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.certificate_path = Some(path.into());
        self
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener could not bind.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS identity could not be made or written.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A running server: HTTP and HTTPS listeners serving one router. Dropping it stops them.
pub struct RpcServer {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    certificate_path: PathBuf,
    certificate_pem: String,
    tasks: Vec<JoinHandle<()>>,
}

static SERVERS: AtomicU64 = AtomicU64::new(0);

impl RpcServer {
    /// Binds the listeners, makes and writes the certificate, and serves `app` on both.
    pub async fn start(app: Router, config: ServeConfig) -> Result<RpcServer, ServeError> {
        let identity = LoopbackIdentity::generate()?;
        let certificate_path = config
            .certificate_path
            .unwrap_or_else(default_certificate_path);
        identity.write_certificate(&certificate_path)?;
        let mut tasks = Vec::new();
        let http = match config.http {
            Some(address) => {
                let listener = bind(address).await?;
                let local = local_address(&listener, address)?;
                tasks.push(tokio::spawn(serve_plain(listener, app.clone())));
                Some(local)
            }
            None => None,
        };
        let https = match config.https {
            Some(address) => {
                let listener = bind(address).await?;
                let local = local_address(&listener, address)?;
                let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
                tasks.push(tokio::spawn(serve_tls(listener, acceptor, app)));
                Some(local)
            }
            None => None,
        };
        Ok(RpcServer {
            http,
            https,
            certificate_path,
            certificate_pem: identity.certificate_pem,
            tasks,
        })
    }

    /// `http://127.0.0.1:<port>`, if plain HTTP is on.
    pub fn http_url(&self) -> Option<String> {
        self.http.map(|address| format!("http://{address}"))
    }

    /// `https://127.0.0.1:<port>`, if HTTPS is on.
    pub fn https_url(&self) -> Option<String> {
        self.https.map(|address| format!("https://{address}"))
    }

    /// The file holding the certificate to trust.
    pub fn certificate_path(&self) -> &Path {
        &self.certificate_path
    }

    /// The certificate to trust, PEM-encoded.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("certificate_path", &self.certificate_path)
            .finish()
    }
}

fn default_certificate_path() -> PathBuf {
    let n = SERVERS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir()
        .join("tower-paywall-sandbox")
        .join(format!("rpc-{}-{n}.pem", std::process::id()))
}

async fn bind(address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })
}

fn local_address(listener: &TcpListener, address: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })
}

async fn serve_plain(listener: TcpListener, app: Router) {
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "sandbox HTTP listener stopped");
    }
}

async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "sandbox HTTPS accept failed");
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = TowerToHyperService::new(app);
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "sandbox HTTPS connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxFuture;
    use crate::stellar::rpc::{
        EventInfo, HostFunctionResult, JsonRpcClient, LedgerEntryResult, SendStatus,
        TransactionStatus,
    };
    use crate::stellar::xdr::{
        AccountEntry, DiagnosticEvent, LedgerEntryData, LedgerKeyAccount, OperationMeta, ScVal,
        SequenceNumber, SorobanTransactionData, TransactionEnvelope, TransactionExt,
        TransactionMeta, TransactionResult, TransactionResultResult, VecM,
    };
    use crate::stellar::{
        Address, CredentialsArm, Keypair, Network, TransferRequest, build_transfer,
    };

    /// A transfer envelope: a source of realistic auth entries and Soroban data.
    fn envelope() -> TransactionEnvelope {
        let payer = Keypair::from_seed([7; 32]);
        build_transfer(&TransferRequest {
            source: payer.address(),
            sequence: 2,
            fee: 100,
            contract: Network::testnet().usdc().expect("testnet USDC"),
            from: payer.address(),
            to: Keypair::from_seed([8; 32]).address(),
            amount: 10_000,
            nonce: 42,
            signature_expiration_ledger: 0,
            max_time: 0,
            credentials: CredentialsArm::Address,
        })
        .expect("a transfer")
    }

    fn soroban_data(envelope: &TransactionEnvelope) -> SorobanTransactionData {
        match envelope {
            TransactionEnvelope::Tx(v1) => match &v1.tx.ext {
                TransactionExt::V1(data) => data.clone(),
                TransactionExt::V0 => unreachable!("build_transfer sets Soroban data"),
            },
            _ => unreachable!("build_transfer makes v1 envelopes"),
        }
    }

    /// Answers every method with fixed values, or a JSON-RPC error for the `error` account.
    struct Canned;

    fn simulation(transaction: &TransactionEnvelope) -> Simulation {
        let auth = transaction.auths().cloned().collect();
        Simulation {
            latest_ledger: 77,
            min_resource_fee: 12_345,
            transaction_data: Some(soroban_data(transaction)),
            results: vec![HostFunctionResult {
                auth,
                retval: Some(ScVal::Void),
            }],
            events: vec![DiagnosticEvent::default()],
            error: None,
            restore_preamble: None,
        }
    }

    fn account_entry() -> LedgerEntryResult {
        let account = Keypair::from_seed([7; 32]).address();
        let Address::Account(key) = account else {
            unreachable!()
        };
        let account_id = crate::stellar::xdr::AccountId(
            crate::stellar::xdr::PublicKey::PublicKeyTypeEd25519(crate::stellar::xdr::Uint256(key)),
        );
        LedgerEntryResult {
            key: LedgerKey::Account(LedgerKeyAccount {
                account_id: account_id.clone(),
            }),
            data: LedgerEntryData::Account(AccountEntry {
                account_id,
                balance: 100_000_000,
                seq_num: SequenceNumber(4242),
                ..AccountEntry::default()
            }),
            last_modified_ledger: 70,
            live_until_ledger: None,
        }
    }

    /// A USDC `transfer` event and a fee event of no contract, in ledger 78.
    fn events_page() -> Events {
        let usdc = Network::testnet().usdc().expect("testnet USDC");
        let symbol = |text: &str| ScVal::Symbol(text.try_into().expect("a symbol"));
        let account =
            |seed| ScVal::Address(Keypair::from_seed([seed; 32]).address().to_sc_address());
        let transfer = EventInfo {
            id: "0000000335007453184-0000000000".into(),
            kind: EventKind::Contract,
            ledger: 78,
            ledger_closed_at: "2023-11-14T22:13:20Z".into(),
            contract: Some(usdc),
            transaction: TransactionHash([3; 32]),
            transaction_index: Some(1),
            operation_index: Some(0),
            topics: vec![symbol("transfer"), account(7), account(8), symbol("USDC")],
            value: ScVal::I128(crate::stellar::xdr::Int128Parts { hi: 0, lo: 10_000 }),
            in_successful_contract_call: true,
        };
        let system = EventInfo {
            id: "0000000335007453184-0000000001".into(),
            kind: EventKind::System,
            contract: None,
            topics: Vec::new(),
            value: ScVal::Void,
            in_successful_contract_call: false,
            transaction_index: None,
            operation_index: None,
            ..transfer.clone()
        };
        Events {
            events: vec![transfer, system],
            latest_ledger: 78,
            oldest_ledger: Some(1),
            cursor: Some("0000000339302416383-4294967295".into()),
        }
    }

    impl SorobanRpc for Canned {
        fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
            Box::pin(async {
                Ok(Health {
                    status: "healthy".into(),
                    latest_ledger: 77,
                    oldest_ledger: Some(1),
                    ledger_retention_window: Some(17_280),
                })
            })
        }
        fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
            Box::pin(async {
                Ok(NetworkInfo {
                    passphrase: Network::TESTNET_PASSPHRASE.into(),
                    protocol_version: 23,
                    friendbot_url: Some("http://127.0.0.1:1/friendbot".into()),
                })
            })
        }
        fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
            Box::pin(async {
                Ok(LatestLedger {
                    id: "ab".repeat(32),
                    protocol_version: 23,
                    sequence: 77,
                })
            })
        }
        fn simulate_transaction<'a>(
            &'a self,
            transaction: &'a TransactionEnvelope,
        ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
            Box::pin(async move { Ok(simulation(transaction)) })
        }
        fn send_transaction<'a>(
            &'a self,
            _: &'a TransactionEnvelope,
        ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
            Box::pin(async {
                Ok(SendResult {
                    status: SendStatus::Error,
                    hash: TransactionHash([3; 32]),
                    latest_ledger: 77,
                    error_result: Some(TransactionResult {
                        fee_charged: 100,
                        result: TransactionResultResult::TxBadSeq,
                        ext: Default::default(),
                    }),
                    diagnostic_events: Vec::new(),
                })
            })
        }
        fn transaction<'a>(
            &'a self,
            hash: &'a TransactionHash,
        ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
            Box::pin(async move {
                if hash.0 == [0; 32] {
                    return Err(RpcError::Rpc {
                        code: -32000,
                        message: "no such thing".into(),
                    });
                }
                if hash.0 != [3; 32] {
                    return Ok(TransactionInfo::not_found(77));
                }
                Ok(TransactionInfo {
                    status: TransactionStatus::Success,
                    latest_ledger: 78,
                    ledger: Some(78),
                    created_at: Some(1_700_000_000),
                    application_order: Some(1),
                    fee_bump: false,
                    envelope: Some(envelope()),
                    result: Some(TransactionResult {
                        fee_charged: 100,
                        result: TransactionResultResult::TxSuccess(VecM::default()),
                        ext: Default::default(),
                    }),
                    result_meta: Some(TransactionMeta::V0(
                        vec![OperationMeta::default()].try_into().expect("one"),
                    )),
                })
            })
        }
        fn ledger_entries<'a>(
            &'a self,
            _: &'a [LedgerKey],
        ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
            Box::pin(async {
                Ok(LedgerEntries {
                    entries: vec![account_entry()],
                    latest_ledger: 77,
                })
            })
        }
        fn events<'a>(
            &'a self,
            request: &'a EventsRequest,
        ) -> BoxFuture<'a, Result<Events, RpcError>> {
            Box::pin(async move {
                if request.start_ledger == Some(1) {
                    return Err(RpcError::Rpc {
                        code: -32600,
                        message: "startLedger must be within the ledger range: 2 - 78".into(),
                    });
                }
                Ok(events_page())
            })
        }
    }

    async fn server() -> RpcServer {
        RpcServer::start(rpc_router(Arc::new(Canned)), ServeConfig::default())
            .await
            .expect("the server starts")
    }

    #[tokio::test]
    async fn our_client_reads_every_answer_back_over_http_and_https() {
        let server = server().await;
        let http = JsonRpcClient::builder(server.http_url().unwrap())
            .build()
            .unwrap();
        let https = JsonRpcClient::builder(server.https_url().unwrap())
            .root_certificate_pem(server.certificate_pem().as_bytes())
            .build()
            .unwrap();
        let written = std::fs::read_to_string(server.certificate_path()).unwrap();
        assert_eq!(written, server.certificate_pem());
        let envelope = envelope();
        for client in [&http, &https] {
            assert_eq!(
                client.health().await.unwrap(),
                Canned.health().await.unwrap()
            );
            assert_eq!(
                client.network().await.unwrap(),
                Canned.network().await.unwrap()
            );
            assert_eq!(
                client.latest_ledger().await.unwrap(),
                Canned.latest_ledger().await.unwrap()
            );
            assert_eq!(
                client.simulate_transaction(&envelope).await.unwrap(),
                simulation(&envelope)
            );
            let sent = client.send_transaction(&envelope).await.unwrap();
            assert_eq!(sent, Canned.send_transaction(&envelope).await.unwrap());
            let hash = TransactionHash([3; 32]);
            let info = client.transaction(&hash).await.unwrap();
            assert_eq!(info, Canned.transaction(&hash).await.unwrap());
            let missing = client.transaction(&TransactionHash([4; 32])).await.unwrap();
            assert_eq!(missing.status, TransactionStatus::NotFound);
            let keys = [account_entry().key];
            assert_eq!(
                client.ledger_entries(&keys).await.unwrap().entries,
                vec![account_entry()]
            );
            let failed = client.transaction(&TransactionHash([0; 32])).await;
            assert!(matches!(failed, Err(RpcError::Rpc { code: -32000, .. })));
            let request = EventsRequest::from_ledger(2).filter(EventFilter::new());
            assert_eq!(client.events(&request).await.unwrap(), events_page());
            let refused = client.events(&EventsRequest::from_ledger(1)).await;
            assert_eq!(
                refused,
                Err(RpcError::Rpc {
                    code: -32600,
                    message: "startLedger must be within the ledger range: 2 - 78".into()
                })
            );
        }
    }

    /// Posts `body` to the router itself and reads the JSON answer.
    async fn raw(body: &str) -> Value {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = http::Request::post("/")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        let answer = rpc_router(Arc::new(Canned)).oneshot(request).await.unwrap();
        assert_eq!(answer.status(), 200);
        let bytes = answer.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn answers_have_the_official_shapes() {
        let transaction = envelope()
            .to_xdr_base64(crate::stellar::xdr::Limits::none())
            .unwrap();
        let body = json!({"jsonrpc":"2.0","id":7,"method":"simulateTransaction","params":{"transaction": transaction}});
        let answer = raw(&body.to_string()).await;
        assert_eq!(answer["id"], 7);
        let result = &answer["result"];
        assert_eq!(result["minResourceFee"], "12345");
        assert_eq!(result["latestLedger"], 77);
        assert!(result["transactionData"].is_string());
        assert!(result["results"][0]["auth"][0].is_string());
        assert!(result.get("error").is_none());
        let body = json!({"jsonrpc":"2.0","id":"x","method":"getTransaction","params":{"hash": "03".repeat(32)}});
        let result = &raw(&body.to_string()).await["result"];
        assert_eq!(result["status"], "SUCCESS");
        assert_eq!(result["createdAt"], "1700000000");
        assert_eq!(result["ledger"], 78);
        for field in ["envelopeXdr", "resultXdr", "resultMetaXdr"] {
            assert!(result[field].is_string(), "{field}");
        }
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"getLatestLedger"}"#;
        let latest = raw(body).await["result"].clone();
        assert_eq!(latest["sequence"], 77);
        // The TypeScript SDK refuses an answer without these two.
        use crate::stellar::xdr::{LedgerCloseMeta, LedgerHeader, Limits};
        let header =
            LedgerHeader::from_xdr_base64(latest["headerXdr"].as_str().unwrap(), Limits::none())
                .unwrap();
        assert_eq!(header.ledger_seq, 77);
        let meta = LedgerCloseMeta::from_xdr_base64(
            latest["metadataXdr"].as_str().unwrap(),
            Limits::none(),
        )
        .unwrap();
        let LedgerCloseMeta::V0(meta) = meta else {
            panic!("a V0 close meta")
        };
        assert_eq!(meta.ledger_header.header.ledger_seq, 77);
    }

    #[tokio::test]
    async fn get_events_answers_have_the_official_shape() {
        let body = json!({"jsonrpc":"2.0","id":3,"method":"getEvents","params":{"startLedger": 2, "filters": [{"type": "contract"}], "pagination": {"limit": 10}}});
        let answer = raw(&body.to_string()).await;
        assert_eq!(answer["id"], 3);
        let result = &answer["result"];
        assert_eq!(result["latestLedger"], 78);
        assert_eq!(result["oldestLedger"], 1);
        assert_eq!(result["cursor"], "0000000339302416383-4294967295");
        let transfer = &result["events"][0];
        let usdc = Network::testnet().usdc().unwrap().to_string();
        assert_eq!(
            transfer,
            &json!({
                "type": "contract",
                "ledger": 78,
                "ledgerClosedAt": "2023-11-14T22:13:20Z",
                "contractId": usdc,
                "id": "0000000335007453184-0000000000",
                "operationIndex": 0,
                "transactionIndex": 1,
                "txHash": "03".repeat(32),
                "inSuccessfulContractCall": true,
                "topic": events_page().events[0].topics.iter().map(b64).collect::<Vec<_>>(),
                "value": b64(&events_page().events[0].value),
            })
        );
        // An event of no contract has an empty `contractId`; no topics are an empty list.
        let system = &result["events"][1];
        assert_eq!(system["type"], "system");
        assert_eq!(system["contractId"], "");
        assert_eq!(system["topic"], json!([]));
        assert_eq!(system["inSuccessfulContractCall"], false);
        assert!(system.get("operationIndex").is_none());
    }

    #[test]
    fn get_events_params_read_the_wire_request() {
        let usdc = Network::testnet().usdc().unwrap();
        let transfer = ScVal::Symbol("transfer".try_into().unwrap());
        let params = json!({
            "startLedger": 1000,
            "endLedger": 2000,
            "filters": [
                {"type": "contract", "contractIds": [usdc.to_string()], "topics": [[b64(&transfer), "*", "*", "**"]]},
                {"type": "system,contract", "topics": [["**"]]},
                {"type": ""},
                {}
            ],
            "pagination": {"cursor": "0000004294967300096-0000000001", "limit": 7},
            "xdrFormat": "base64"
        });
        let parsed = events_params(&params).unwrap();
        let mut expected = EventsRequest::from_ledger(1000)
            .end_ledger(2000)
            .filter(EventFilter::new().contract(usdc).topic([
                TopicMatch::Exact(transfer),
                TopicMatch::Any,
                TopicMatch::Any,
                TopicMatch::AnyTrailing,
            ]))
            .filter(
                EventFilter::new()
                    .any_kind()
                    .topic([TopicMatch::AnyTrailing]),
            )
            .filter(EventFilter::new().any_kind())
            .filter(EventFilter::new().any_kind())
            .limit(7);
        expected.filters[1].kinds = vec![EventKind::System, EventKind::Contract];
        expected.cursor = Some("0000004294967300096-0000000001".into());
        assert_eq!(parsed, expected);

        // Nothing but nulls: an empty request, refused later by the ledger's own checks.
        let empty = json!({"startLedger": null, "filters": null, "pagination": {"cursor": null, "limit": null}});
        assert_eq!(events_params(&empty).unwrap(), EventsRequest::default());
        assert_eq!(
            events_params(&Value::Null).unwrap(),
            EventsRequest::default()
        );
        // Types are kept as asked; the backing RPC refuses `diagnostic`.
        let diagnostic = json!({"filters": [{"type": "diagnostic"}]});
        assert_eq!(
            events_params(&diagnostic).unwrap().filters[0].kinds,
            [EventKind::Diagnostic]
        );
        // A huge limit saturates, for the backing RPC to refuse with its own message.
        let huge = json!({"pagination": {"limit": 1_u64 << 40}});
        assert_eq!(events_params(&huge).unwrap().limit, Some(u32::MAX));
    }

    #[test]
    fn get_events_params_refuse_malformed_requests() {
        let id = Network::testnet().usdc().unwrap().to_string();
        let filter = |filter: Value| json!({"startLedger": 2, "filters": [filter]});
        let cases = [
            (
                json!({"startLedger": -1}),
                "`startLedger` must be a ledger sequence number",
            ),
            (
                json!({"startLedger": "5"}),
                "`startLedger` must be a ledger sequence number",
            ),
            (
                json!({"startLedger": 1.5}),
                "`startLedger` must be a ledger sequence number",
            ),
            (
                json!({"endLedger": 4_294_967_296_u64}),
                "`endLedger` must be a ledger sequence number",
            ),
            (json!({"filters": {}}), "`filters` must be an array"),
            (
                json!({"filters": vec![json!({}); MAX_EVENT_FILTERS + 1]}),
                "maximum 5 filters per request",
            ),
            (
                json!({"filters": [{}, 5]}),
                "filter 2 invalid: a filter must be an object",
            ),
            (
                filter(json!({"type": 5})),
                "filter 1 invalid: `type` must be a string",
            ),
            (
                filter(json!({"type": "transfer"})),
                "filter 1 invalid: filter type invalid: if set, type must be either 'system' or 'contract'",
            ),
            (
                filter(json!({"type": "contract,"})),
                "filter 1 invalid: filter type invalid: if set, type must be either 'system' or 'contract'",
            ),
            (
                filter(json!({"contractIds": id})),
                "filter 1 invalid: `contractIds` must be an array",
            ),
            (
                filter(json!({"contractIds": vec![id.clone(); MAX_FILTER_CONTRACTS + 1]})),
                "filter 1 invalid: maximum 5 contract IDs per filter",
            ),
            (
                filter(json!({"contractIds": [id, "CNOTANADDRESS"]})),
                "filter 1 invalid: contract ID 2 invalid",
            ),
            (
                filter(json!({"contractIds": [5]})),
                "filter 1 invalid: contract ID 1 invalid",
            ),
            (
                filter(json!({"topics": "*"})),
                "filter 1 invalid: `topics` must be an array",
            ),
            (
                filter(json!({"topics": vec![json!(["*"]); MAX_TOPIC_FILTERS + 1]})),
                "filter 1 invalid: maximum 5 topics per filter",
            ),
            (
                filter(json!({"topics": ["*"]})),
                "filter 1 invalid: topic 1 invalid: a topic must be an array of segments",
            ),
            (
                filter(json!({"topics": [["*"], ["*", "*", "*", "*", "*", "**"]]})),
                "filter 1 invalid: topic 2 invalid: topic cannot have more than 4 segments",
            ),
            (
                filter(json!({"topics": [["*", "AAAA"]]})),
                "filter 1 invalid: topic 1 invalid: segment 2 is not a base64 ScVal, * or **",
            ),
            (
                filter(json!({"topics": [["not base64!"]]})),
                "filter 1 invalid: topic 1 invalid: segment 1 is not a base64 ScVal, * or **",
            ),
            (
                filter(json!({"topics": [["***"]]})),
                "filter 1 invalid: topic 1 invalid: segment 1 is not a base64 ScVal, * or **",
            ),
            (
                filter(json!({"topics": [[5]]})),
                "filter 1 invalid: topic 1 invalid: segment 1 must be a string",
            ),
            (json!({"pagination": []}), "`pagination` must be an object"),
            (
                json!({"pagination": {"cursor": 5}}),
                "`pagination.cursor` must be a string",
            ),
            (
                json!({"pagination": {"limit": -1}}),
                "`pagination.limit` must be a non-negative integer",
            ),
            (
                json!({"pagination": {"limit": "5"}}),
                "`pagination.limit` must be a non-negative integer",
            ),
        ];
        for (params, message) in cases {
            assert_eq!(
                events_params(&params),
                Err((code::INVALID_PARAMS, message.to_owned())),
                "{params}"
            );
        }
    }

    #[tokio::test]
    async fn bad_requests_get_json_rpc_errors() {
        let error_code = |answer: Value| answer["error"]["code"].as_i64();
        assert_eq!(error_code(raw("{not json").await), Some(-32700));
        assert_eq!(error_code(raw(r#"{"id":1}"#).await), Some(-32600));
        let unknown = r#"{"jsonrpc":"2.0","id":1,"method":"getEverything"}"#;
        assert_eq!(error_code(raw(unknown).await), Some(-32601));
        let cases = [
            json!({"method":"simulateTransaction","params":{}}),
            json!({"method":"simulateTransaction","params":{"transaction":"AAAA"}}),
            json!({"method":"sendTransaction","params":{"transaction":"not base64!"}}),
            json!({"method":"getTransaction","params":{"hash":"xyz"}}),
            json!({"method":"getLedgerEntries","params":{"keys":[]}}),
            json!({"method":"getLedgerEntries","params":{"keys":["AAAA"]}}),
            json!({"method":"getLedgerEntries","params":{"keys": vec!["AAAA"; MAX_LEDGER_ENTRY_KEYS + 1]}}),
            json!({"method":"getEvents","params":{"filters": [{"topics": [["nope"]]}]}}),
        ];
        for mut case in cases {
            case["jsonrpc"] = "2.0".into();
            case["id"] = 1.into();
            let answer = raw(&case.to_string()).await;
            assert_eq!(error_code(answer), Some(-32602), "{case}");
        }
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let server = server().await;
        let url = server.http_url().unwrap();
        drop(server);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let client = JsonRpcClient::builder(url).build().unwrap();
        assert!(client.latest_ledger().await.is_err());
    }
}
