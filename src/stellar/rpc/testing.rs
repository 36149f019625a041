//! Test doubles shared by the module's tests: a loopback JSON-RPC server answering canned
//! results and recording what it saw, and fixtures (a transfer envelope, its authorization and
//! Soroban data, a transfer event, results and metas).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response as HttpResponse};
use http::header::CONTENT_TYPE;
use serde_json::{Value, json};
use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountId, ContractEvent, ContractEventBody, ContractEventType,
    ContractEventV0, ContractId, DiagnosticEvent, ExtensionPoint, Hash, Int128Parts,
    InvokeHostFunctionResult, LedgerEntryData, LedgerFootprint, LedgerKey, LedgerKeyAccount,
    Limits, OperationBody, OperationResult, OperationResultTr, PublicKey, ScSymbol, ScVal,
    SequenceNumber, SorobanAuthorizationEntry, SorobanResources, SorobanTransactionData,
    SorobanTransactionDataExt, SorobanTransactionMetaExt, SorobanTransactionMetaV2, Thresholds,
    TransactionEnvelope, TransactionMeta, TransactionMetaV4, TransactionResult,
    TransactionResultExt, TransactionResultResult, TransactionV1Envelope, Uint256, VecM, WriteXdr,
};

use super::{JsonRpcClient, TransactionHash};
use crate::BoxFuture;
use crate::stellar::{Address, CredentialsArm, Keypair, Network, TransferRequest, build_transfer};

/// One JSON-RPC request as the test double saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) http_method: String,
    pub(super) content_type: Option<String>,
    pub(super) body: Value,
}

impl Seen {
    pub(super) fn method(&self) -> &str {
        self.body["method"].as_str().unwrap_or_default()
    }
    pub(super) fn id(&self) -> Value {
        self.body["id"].clone()
    }
}

/// What the test double saw, shared with the test.
#[derive(Clone, Default)]
pub(super) struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub(super) fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    pub(super) fn last(&self) -> Seen {
        self.all().pop().unwrap()
    }
    pub(super) fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

pub(super) type Reply = Arc<dyn Fn(Seen) -> BoxFuture<'static, HttpResponse> + Send + Sync>;

/// A test double's behaviour: the HTTP response to a JSON-RPC request.
pub(super) fn reply<F, Fut>(f: F) -> Reply
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    Arc::new(move |seen| Box::pin(f(seen)))
}

/// Starts a loopback axum JSON-RPC double.
pub(super) async fn serve(reply: Reply) -> (String, Log) {
    let log = Log::default();
    let seen = log.clone();
    let app = Router::new().fallback(move |request: Request| {
        let (seen, reply) = (seen.clone(), reply.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let request = Seen {
                http_method: parts.method.to_string(),
                content_type: parts
                    .headers
                    .get(CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned()),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            };
            seen.0.lock().unwrap().push(request.clone());
            reply(request).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), log)
}

pub(super) fn http(status: u16, body: String) -> HttpResponse {
    (
        http::StatusCode::from_u16(status).unwrap(),
        [(CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A JSON-RPC success answering `seen`.
pub(super) fn success(seen: &Seen, result: Value) -> HttpResponse {
    let body = json!({"jsonrpc": "2.0", "id": seen.id(), "result": result});
    http(200, body.to_string())
}

/// A double answering every call with `result`.
pub(super) fn answering(result: Value) -> Reply {
    reply(move |seen| {
        let result = result.clone();
        async move { success(&seen, result) }
    })
}

pub(super) fn client(base: &str) -> JsonRpcClient {
    JsonRpcClient::builder(base).build().unwrap()
}

pub(super) async fn answer(result: Value) -> (JsonRpcClient, Log) {
    let (base, log) = serve(answering(result)).await;
    (client(&base), log)
}

pub(super) fn b64(value: &impl WriteXdr) -> String {
    value.to_xdr_base64(Limits::none()).unwrap()
}

pub(super) fn payer() -> Keypair {
    Keypair::from_seed([7; 32])
}

pub(super) fn envelope() -> TransactionEnvelope {
    let network = Network::testnet();
    build_transfer(&TransferRequest {
        source: payer().address(),
        sequence: 43,
        fee: 100,
        contract: network.usdc().unwrap(),
        from: payer().address(),
        to: Keypair::from_seed([8; 32]).address(),
        amount: 10_000,
        nonce: 42,
        signature_expiration_ledger: 1_000,
        max_time: 1_700_000_000,
        credentials: CredentialsArm::Address,
    })
    .unwrap()
}

/// The payer's (unsigned) authorization entry of [`envelope`], as a simulation returns it.
pub(super) fn auth_entry() -> SorobanAuthorizationEntry {
    let TransactionEnvelope::Tx(TransactionV1Envelope { tx, .. }) = envelope() else {
        unreachable!()
    };
    let OperationBody::InvokeHostFunction(op) = &tx.operations[0].body else {
        unreachable!()
    };
    op.auth[0].clone()
}

pub(super) fn account_key(address: &Address) -> LedgerKey {
    LedgerKey::Account(LedgerKeyAccount {
        account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
            address.ed25519_key().unwrap(),
        ))),
    })
}

pub(super) fn transaction_data() -> SorobanTransactionData {
    SorobanTransactionData {
        ext: SorobanTransactionDataExt::V0,
        resources: SorobanResources {
            footprint: LedgerFootprint {
                read_only: vec![account_key(&payer().address())].try_into().unwrap(),
                read_write: VecM::default(),
            },
            instructions: 1_234_567,
            disk_read_bytes: 1_000,
            write_bytes: 500,
        },
        resource_fee: 12_345,
    }
}

pub(super) fn event() -> DiagnosticEvent {
    DiagnosticEvent {
        in_successful_contract_call: true,
        event: ContractEvent {
            ext: ExtensionPoint::V0,
            contract_id: Some(ContractId(Hash([5; 32]))),
            type_: ContractEventType::Contract,
            body: ContractEventBody::V0(ContractEventV0 {
                topics: vec![ScVal::Symbol(ScSymbol("transfer".try_into().unwrap()))]
                    .try_into()
                    .unwrap(),
                data: ScVal::I128(Int128Parts { hi: 0, lo: 10_000 }),
            }),
        },
    }
}

pub(super) fn account_entry(sequence: i64) -> LedgerEntryData {
    let LedgerKey::Account(LedgerKeyAccount { account_id }) = account_key(&payer().address())
    else {
        unreachable!()
    };
    LedgerEntryData::Account(AccountEntry {
        account_id,
        balance: 100_000_000,
        seq_num: SequenceNumber(sequence),
        num_sub_entries: 0,
        inflation_dest: None,
        flags: 0,
        home_domain: Default::default(),
        thresholds: Thresholds([1, 0, 0, 0]),
        signers: VecM::default(),
        ext: AccountEntryExt::V0,
    })
}

pub(super) fn success_result() -> TransactionResult {
    TransactionResult {
        fee_charged: 12_445,
        result: TransactionResultResult::TxSuccess(
            vec![OperationResult::OpInner(
                OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash(
                    [9; 32],
                ))),
            )]
            .try_into()
            .unwrap(),
        ),
        ext: TransactionResultExt::V0,
    }
}

pub(super) fn result_meta() -> TransactionMeta {
    TransactionMeta::V4(TransactionMetaV4 {
        soroban_meta: Some(SorobanTransactionMetaV2 {
            ext: SorobanTransactionMetaExt::V0,
            return_value: Some(ScVal::Void),
        }),
        diagnostic_events: vec![event()].try_into().unwrap(),
        ..Default::default()
    })
}

pub(super) fn hash() -> TransactionHash {
    TransactionHash::of(&envelope(), &Network::testnet().id()).unwrap()
}

/// Checks the JSON-RPC frame of the last request and returns its params.
pub(super) fn checked_request(log: &Log, method: &str) -> Option<Value> {
    let seen = log.last();
    assert_eq!(seen.http_method, "POST");
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    assert_eq!(seen.body["jsonrpc"], "2.0");
    assert!(seen.body["id"].is_u64(), "{:?}", seen.body);
    assert_eq!(seen.method(), method);
    seen.body.get("params").cloned()
}
