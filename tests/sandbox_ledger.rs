//! The sandbox ledger end to end, through `Sandbox` as a `SorobanRpc`, with manual ledger closes:
//! friendbot funding, the x402 client's simulate → sign → re-simulate flow, a relayer submitting
//! the payment, and what the ledger refuses (at send) or fails (at close).
#![cfg(feature = "sandbox")]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_paywall::sandbox::{
    DEFAULT_RETENTION_WINDOW, FRIENDBOT_USDC, FRIENDBOT_XLM, Sandbox, SandboxConfig, SandboxError,
    ServeConfig,
};
use tower_paywall::stellar::xdr::{
    AccountId, Asset, ContractEventBody, CreateAccountOp, CreateAccountResult, DecoratedSignature,
    FeeBumpTransaction, FeeBumpTransactionEnvelope, FeeBumpTransactionExt,
    FeeBumpTransactionInnerTx, Int128Parts, InvokeHostFunctionResult, LedgerEntryData, LedgerKey,
    LedgerKeyAccount, Memo, MuxedAccount, Operation, OperationBody, OperationResult,
    OperationResultTr, PaymentOp, PaymentResult, Preconditions, PublicKey, ScVal, SequenceNumber,
    Signature, SignatureHint, SorobanAuthorizationEntry, SorobanCredentials, TimeBounds, TimePoint,
    Transaction, TransactionEnvelope, TransactionExt, TransactionMeta, TransactionResultResult,
    TransactionV1Envelope, Uint256,
};
use tower_paywall::stellar::{
    Address, CredentialsArm, EventFilter, EventKind, EventsRequest, JsonRpcClient, Keypair,
    NULL_ACCOUNT, RpcError, SendStatus, Simulation, SorobanRpc, TopicMatch, TransactionHash,
    TransactionInfo, TransactionStatus, TransferRequest, account_sequence, account_signatures,
    address_credentials, build_transfer, encode_account_signatures, sign_authorization,
};

/// 0.01 USDC.
const AMOUNT: i128 = 100_000;

fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default().auto_close(false)).expect("the sandbox starts")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn v1(envelope: &mut TransactionEnvelope) -> &mut TransactionV1Envelope {
    match envelope {
        TransactionEnvelope::Tx(v1) => v1,
        _ => panic!("not a v1 envelope"),
    }
}

/// The authorization entries of a transfer envelope.
fn auth(envelope: &TransactionEnvelope) -> Vec<SorobanAuthorizationEntry> {
    let TransactionEnvelope::Tx(v1) = envelope else {
        panic!("not a v1 envelope");
    };
    let OperationBody::InvokeHostFunction(invoke) = &v1.tx.operations[0].body else {
        panic!("not a contract invocation");
    };
    invoke.auth.to_vec()
}

/// Replaces the authorization entries of a transfer envelope.
fn set_auth(envelope: &mut TransactionEnvelope, auth: Vec<SorobanAuthorizationEntry>) {
    let operation = v1(envelope).tx.operations.iter_mut().next().unwrap();
    let OperationBody::InvokeHostFunction(invoke) = &mut operation.body else {
        panic!("not a contract invocation");
    };
    invoke.auth = auth.try_into().unwrap();
}

/// Adds `keypair`'s signature over the envelope's hash.
fn sign(envelope: &mut TransactionEnvelope, keypair: &Keypair, sandbox: &Sandbox) {
    let hash = envelope.hash(sandbox.network().id().0).unwrap();
    let key = keypair.public_key();
    let signature = DecoratedSignature {
        hint: SignatureHint([key[28], key[29], key[30], key[31]]),
        signature: Signature(keypair.sign(&hash).to_vec().try_into().unwrap()),
    };
    let signatures = match envelope {
        TransactionEnvelope::Tx(v1) => &mut v1.signatures,
        TransactionEnvelope::TxFeeBump(fee_bump) => &mut fee_bump.signatures,
        TransactionEnvelope::TxV0(_) => panic!("v0"),
    };
    let mut list = signatures.to_vec();
    list.push(signature);
    *signatures = list.try_into().unwrap();
}

/// Puts a simulation's Soroban data and fee into the transaction (stellar-sdk's
/// `assembleTransaction`), with `auth` as the authorization.
fn assemble(
    envelope: &mut TransactionEnvelope,
    simulation: &Simulation,
    auth: Vec<SorobanAuthorizationEntry>,
) {
    assert!(simulation.is_success(), "{:?}", simulation.error);
    let data = simulation.transaction_data.clone().unwrap();
    let tx = &mut v1(envelope).tx;
    tx.fee = 100 + u32::try_from(data.resource_fee).unwrap();
    tx.ext = TransactionExt::V1(data);
    set_auth(envelope, auth);
}

/// What the official x402 client does: a transfer from the all-zeros account, simulated without
/// authorization; the recorded entry signed with `expiration`; simulated again (now enforcing
/// the signature) when `resimulate`.
async fn client_payment(
    sandbox: &Sandbox,
    payer: &Keypair,
    to: Address,
    expiration: u32,
    resimulate: bool,
) -> TransactionEnvelope {
    let mut envelope = build_transfer(&TransferRequest {
        source: NULL_ACCOUNT,
        sequence: 1,
        fee: 100,
        contract: sandbox.usdc(),
        from: payer.address(),
        to,
        amount: AMOUNT,
        nonce: 0,
        signature_expiration_ledger: 0,
        max_time: now() + 300,
        credentials: CredentialsArm::Address,
    })
    .unwrap();
    set_auth(&mut envelope, Vec::new());
    let first = sandbox.simulate_transaction(&envelope).await.unwrap();
    assert!(first.is_success(), "{:?}", first.error);
    let mut auth = first.result().unwrap().auth.clone();
    assert_eq!(auth.len(), 1);
    let credentials = address_credentials(&auth[0]).unwrap();
    assert_eq!(credentials.address, payer.address().to_sc_address());
    assert_eq!(credentials.signature, ScVal::Void);
    assert!(first.min_resource_fee > 0 && first.min_resource_fee < 50_000);
    assemble(&mut envelope, &first, auth.clone());

    sign_authorization(&mut auth[0], payer, &sandbox.network().id(), expiration).unwrap();
    set_auth(&mut envelope, auth.clone());
    if resimulate {
        let second = sandbox.simulate_transaction(&envelope).await.unwrap();
        assert!(second.is_success(), "{:?}", second.error);
        assert_eq!(
            second.result().unwrap().auth,
            auth,
            "enforced entries pass through"
        );
        assemble(&mut envelope, &second, auth);
    }
    envelope
}

/// The relayer's rebuild of a client payment: its own source and sequence, the client's fee,
/// operation and Soroban data; signed by the relayer.
fn relay(
    client: &TransactionEnvelope,
    relayer: &Keypair,
    sequence: i64,
    sandbox: &Sandbox,
) -> TransactionEnvelope {
    let mut envelope = client.clone();
    let v1 = v1(&mut envelope);
    v1.tx.source_account = MuxedAccount::Ed25519(Uint256(relayer.public_key()));
    v1.tx.seq_num = SequenceNumber(sequence);
    v1.signatures = Default::default();
    sign(&mut envelope, relayer, sandbox);
    envelope
}

/// A native payment from `source`, signed by it.
fn payment(
    sandbox: &Sandbox,
    source: &Keypair,
    sequence: i64,
    to: Address,
    amount: i64,
    max_time: u64,
) -> TransactionEnvelope {
    let tx = Transaction {
        source_account: MuxedAccount::Ed25519(Uint256(source.public_key())),
        fee: 100,
        seq_num: SequenceNumber(sequence),
        cond: Preconditions::Time(TimeBounds {
            min_time: TimePoint(0),
            max_time: TimePoint(max_time),
        }),
        memo: Memo::None,
        operations: vec![Operation {
            source_account: None,
            body: OperationBody::Payment(PaymentOp {
                destination: to.to_muxed_account().unwrap(),
                asset: Asset::Native,
                amount,
            }),
        }]
        .try_into()
        .unwrap(),
        ext: TransactionExt::V0,
    };
    let mut envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: Default::default(),
    });
    sign(&mut envelope, source, sandbox);
    envelope
}

async fn next_sequence(sandbox: &Sandbox, account: &Keypair) -> i64 {
    account_sequence(sandbox, &account.address()).await.unwrap() + 1
}

/// An account's lumens, read from its ledger entry.
async fn lumens(sandbox: &Sandbox, account: &Address) -> i64 {
    let key = LedgerKey::Account(LedgerKeyAccount {
        account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
            account.ed25519_key().unwrap(),
        ))),
    });
    let answer = sandbox.ledger_entries(&[key]).await.unwrap();
    match &answer.entries[0].data {
        LedgerEntryData::Account(entry) => entry.balance,
        other => panic!("not an account: {other:?}"),
    }
}

/// Sends, expects `PENDING`, closes, and returns the final transaction.
async fn send_and_close(sandbox: &Sandbox, envelope: &TransactionEnvelope) -> TransactionInfo {
    let sent = sandbox.send_transaction(envelope).await.unwrap();
    assert_eq!(sent.status, SendStatus::Pending, "{:?}", sent.error_result);
    assert_eq!(
        sandbox.transaction(&sent.hash).await.unwrap().status,
        TransactionStatus::NotFound
    );
    let closed = sandbox.close_ledger().await.unwrap();
    let info = sandbox.transaction(&sent.hash).await.unwrap();
    assert_eq!(info.ledger, Some(closed.sequence));
    assert!(info.created_at.is_some());
    assert_eq!(info.envelope.as_ref(), Some(envelope));
    info
}

/// The single operation result of a failed transaction.
fn failed_invocation(info: &TransactionInfo) -> InvokeHostFunctionResult {
    assert_eq!(info.status, TransactionStatus::Failed);
    let result = info.result.as_ref().unwrap();
    assert!(result.fee_charged > 0, "a failed transaction pays its fee");
    match &result.result {
        TransactionResultResult::TxFailed(results) => match &results[0] {
            OperationResult::OpInner(OperationResultTr::InvokeHostFunction(code)) => code.clone(),
            other => panic!("unexpected operation result {other:?}"),
        },
        other => panic!("unexpected result {other:?}"),
    }
}

/// The messages of the failed transaction's diagnostic error events ("nonce already exists for
/// address", …).
fn failure_reasons(info: &TransactionInfo) -> String {
    let Some(TransactionMeta::V4(meta)) = &info.result_meta else {
        panic!("no v4 meta");
    };
    let mut reasons = String::new();
    for event in meta.diagnostic_events.iter() {
        let ContractEventBody::V0(body) = &event.event.body;
        if body.topics.first() != Some(&ScVal::Symbol("error".try_into().unwrap())) {
            continue;
        }
        if let ScVal::Vec(Some(items)) = &body.data
            && let Some(ScVal::String(message)) = items.first()
        {
            reasons.push_str(&String::from_utf8_lossy(message.as_slice()));
            reasons.push('\n');
        }
    }
    reasons
}

/// The send-time refusal code of an envelope.
async fn refusal(sandbox: &Sandbox, envelope: &TransactionEnvelope) -> TransactionResultResult {
    let sent = sandbox.send_transaction(envelope).await.unwrap();
    assert_eq!(sent.status, SendStatus::Error);
    sent.error_result.unwrap().result
}

#[tokio::test]
async fn genesis_and_friendbot() {
    let sandbox = sandbox();
    assert_eq!(
        sandbox.usdc().to_string(),
        tower_paywall::stellar::USDC_TESTNET
    );
    assert_eq!(
        sandbox.xlm().to_string(),
        tower_paywall::stellar::XLM_TESTNET
    );
    let health = sandbox.health().await.unwrap();
    assert!(health.is_healthy());
    let network = sandbox.network().clone();
    assert_eq!(
        SorobanRpc::network(&sandbox).await.unwrap().network_id(),
        network.id()
    );

    let alice = sandbox.funded_keypair().await.unwrap();
    let bob = sandbox.funded_keypair().await.unwrap();
    assert_ne!(alice.address(), bob.address());
    for account in [&alice, &bob] {
        let address = account.address();
        assert_eq!(
            sandbox.balance(&sandbox.xlm(), &address).await.unwrap(),
            i128::from(FRIENDBOT_XLM)
        );
        assert_eq!(support::usdc_of(&sandbox, &address).await, FRIENDBOT_USDC);
    }

    // Funding again tops up.
    sandbox.fund(&alice.address()).await.unwrap();
    assert_eq!(lumens(&sandbox, &alice.address()).await, 2 * FRIENDBOT_XLM);
    assert_eq!(
        support::usdc_of(&sandbox, &alice.address()).await,
        2 * FRIENDBOT_USDC
    );
    assert_eq!(
        sandbox.fund(&sandbox.usdc()).await,
        Err(SandboxError::NotAnAccount(sandbox.usdc()))
    );
}

#[tokio::test]
async fn an_x402_payment_settles_once() {
    let sandbox = sandbox();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let relayer = sandbox.funded_keypair().await.unwrap();
    let latest = sandbox.latest_ledger().await.unwrap().sequence;
    let client = client_payment(&sandbox, &payer, pay_to, latest + 12, true).await;

    let sequence = next_sequence(&sandbox, &relayer).await;
    let lumens_before = lumens(&sandbox, &relayer.address()).await;
    let settled = relay(&client, &relayer, sequence, &sandbox);
    let info = send_and_close(&sandbox, &settled).await;
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    let result = info.result.as_ref().unwrap();
    assert!(matches!(
        &result.result,
        TransactionResultResult::TxSuccess(results)
            if matches!(&results[0], OperationResult::OpInner(OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(_))))
    ));
    // The relayer paid the fee: no more than it declared, at least the inclusion fee.
    let paid = lumens_before - lumens(&sandbox, &relayer.address()).await;
    assert_eq!(paid, result.fee_charged);
    assert!(paid > 100 && paid <= i64::from(v1(&mut settled.clone()).tx.fee));
    assert_eq!(
        support::usdc_of(&sandbox, &payer.address()).await,
        FRIENDBOT_USDC - AMOUNT
    );
    assert_eq!(
        support::usdc_of(&sandbox, &pay_to).await,
        FRIENDBOT_USDC + AMOUNT
    );
    // The meta carries the SAC `transfer` event.
    let Some(TransactionMeta::V4(meta)) = &info.result_meta else {
        panic!("no v4 meta");
    };
    let ContractEventBody::V0(event) = &meta.operations[0].events[0].body;
    assert_eq!(
        event.topics[0],
        ScVal::Symbol("transfer".try_into().unwrap())
    );
    assert!(meta.soroban_meta.is_some());
    // getLedgerEntries shows the sequence number the relayer used.
    assert_eq!(
        account_sequence(&sandbox, &relayer.address())
            .await
            .unwrap(),
        sequence
    );

    // The same signed authorization in a new transaction: the nonce is spent.
    let replay = relay(&client, &relayer, sequence + 1, &sandbox);
    let info = send_and_close(&sandbox, &replay).await;
    assert_eq!(failed_invocation(&info), InvokeHostFunctionResult::Trapped);
    assert!(failure_reasons(&info).contains("nonce already exists"));
    assert_eq!(
        account_sequence(&sandbox, &relayer.address())
            .await
            .unwrap(),
        sequence + 1,
        "a failed transaction still uses its sequence number"
    );
    assert_eq!(
        support::usdc_of(&sandbox, &pay_to).await,
        FRIENDBOT_USDC + AMOUNT
    );
}

#[tokio::test]
async fn expired_and_forged_authorizations_fail_on_the_ledger() {
    let sandbox = sandbox();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let relayer = sandbox.funded_keypair().await.unwrap();
    let latest = sandbox.latest_ledger().await.unwrap().sequence;
    // Signed without re-simulation (which would refuse these entries already).
    let valid = client_payment(&sandbox, &payer, pay_to, latest + 12, false).await;

    // Expired: valid through the latest ledger, applied in the next one.
    let mut expired = valid.clone();
    let mut entries = auth(&valid);
    sign_authorization(&mut entries[0], &payer, &sandbox.network().id(), latest).unwrap();
    set_auth(&mut expired, entries.clone());
    let sequence = next_sequence(&sandbox, &relayer).await;
    let info = send_and_close(&sandbox, &relay(&expired, &relayer, sequence, &sandbox)).await;
    assert_eq!(failed_invocation(&info), InvokeHostFunctionResult::Trapped);
    assert!(failure_reasons(&info).contains("signature has expired"));

    // Forged: someone else's key signs for the payer.
    let latest = sandbox.latest_ledger().await.unwrap().sequence;
    let mut forged = valid.clone();
    let intruder = Keypair::from_seed([66; 32]);
    sign_authorization(
        &mut entries[0],
        &intruder,
        &sandbox.network().id(),
        latest + 12,
    )
    .unwrap();
    set_auth(&mut forged, entries.clone());
    let info = send_and_close(&sandbox, &relay(&forged, &relayer, sequence + 1, &sandbox)).await;
    assert_eq!(failed_invocation(&info), InvokeHostFunctionResult::Trapped);
    assert!(failure_reasons(&info).contains("signer does not belong to account"));

    // Tampered: the payer's signature with one bit flipped.
    let mut tampered = valid.clone();
    sign_authorization(
        &mut entries[0],
        &payer,
        &sandbox.network().id(),
        latest + 12,
    )
    .unwrap();
    let SorobanCredentials::Address(credentials) = &mut entries[0].credentials else {
        unreachable!()
    };
    let mut signatures = account_signatures(&credentials.signature).unwrap();
    signatures[0].signature[0] ^= 1;
    credentials.signature = encode_account_signatures(&signatures).unwrap();
    set_auth(&mut tampered, entries);
    let info = send_and_close(
        &sandbox,
        &relay(&tampered, &relayer, sequence + 2, &sandbox),
    )
    .await;
    assert_eq!(failed_invocation(&info), InvokeHostFunctionResult::Trapped);
    assert!(failure_reasons(&info).contains("failed account authentication"));
    assert_eq!(support::usdc_of(&sandbox, &pay_to).await, FRIENDBOT_USDC);

    // Failures roll back: the nonce is still unused, and the real signature pays.
    let info = send_and_close(&sandbox, &relay(&valid, &relayer, sequence + 3, &sandbox)).await;
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    assert_eq!(
        support::usdc_of(&sandbox, &pay_to).await,
        FRIENDBOT_USDC + AMOUNT
    );
}

#[tokio::test]
async fn send_refuses_invalid_envelopes() {
    let sandbox = sandbox();
    let payer = sandbox.funded_keypair().await.unwrap();
    let relayer = sandbox.funded_keypair().await.unwrap();
    let latest = sandbox.latest_ledger().await.unwrap().sequence;
    let client = client_payment(&sandbox, &payer, relayer.address(), latest + 12, false).await;
    let sequence = next_sequence(&sandbox, &relayer).await;

    // The client's envelope itself: the all-zeros account does not exist.
    assert_eq!(
        refusal(&sandbox, &client).await,
        TransactionResultResult::TxNoAccount
    );
    // Bad sequence numbers.
    for bad in [sequence - 1, sequence + 1] {
        let envelope = relay(&client, &relayer, bad, &sandbox);
        assert_eq!(
            refusal(&sandbox, &envelope).await,
            TransactionResultResult::TxBadSeq
        );
    }
    // No envelope signature; someone else's; one too many.
    let mut unsigned = relay(&client, &relayer, sequence, &sandbox);
    v1(&mut unsigned).signatures = Default::default();
    assert_eq!(
        refusal(&sandbox, &unsigned).await,
        TransactionResultResult::TxBadAuth
    );
    let mut wrong = unsigned.clone();
    sign(&mut wrong, &payer, &sandbox);
    assert_eq!(
        refusal(&sandbox, &wrong).await,
        TransactionResultResult::TxBadAuth
    );
    let mut extra = relay(&client, &relayer, sequence, &sandbox);
    sign(&mut extra, &payer, &sandbox);
    assert_eq!(
        refusal(&sandbox, &extra).await,
        TransactionResultResult::TxBadAuthExtra
    );
    // Too late.
    let mut late = unsigned.clone();
    v1(&mut late).tx.cond = Preconditions::Time(TimeBounds {
        min_time: TimePoint(0),
        max_time: TimePoint(now() - 60),
    });
    sign(&mut late, &relayer, &sandbox);
    assert_eq!(
        refusal(&sandbox, &late).await,
        TransactionResultResult::TxTooLate
    );
    // Too little fee.
    let mut cheap = unsigned.clone();
    v1(&mut cheap).tx.fee = 100;
    sign(&mut cheap, &relayer, &sandbox);
    let sent = sandbox.send_transaction(&cheap).await.unwrap();
    let result = sent.error_result.unwrap();
    assert_eq!(result.result, TransactionResultResult::TxInsufficientFee);
    assert!(result.fee_charged > 100, "the fee needed");

    // Nothing was charged or used.
    assert_eq!(
        account_sequence(&sandbox, &relayer.address())
            .await
            .unwrap(),
        sequence - 1
    );
    assert_eq!(lumens(&sandbox, &relayer.address()).await, FRIENDBOT_XLM);
}

#[tokio::test]
async fn native_payments_and_the_queue() {
    let sandbox = sandbox();
    let alice = sandbox.funded_keypair().await.unwrap();
    let bob = sandbox.funded_keypair().await.unwrap();
    let sequence = next_sequence(&sandbox, &alice).await;
    let pay = payment(&sandbox, &alice, sequence, bob.address(), 10_000_000, 0);
    let sent = sandbox.send_transaction(&pay).await.unwrap();
    assert_eq!(sent.status, SendStatus::Pending);
    assert_eq!(
        sent.hash,
        TransactionHash::of(&pay, &sandbox.network().id()).unwrap()
    );
    // The same again; another one from the same source before the close.
    assert_eq!(
        sandbox.send_transaction(&pay).await.unwrap().status,
        SendStatus::Duplicate
    );
    let next = payment(&sandbox, &alice, sequence + 1, bob.address(), 1, 0);
    assert_eq!(
        sandbox.send_transaction(&next).await.unwrap().status,
        SendStatus::TryAgainLater
    );
    let closed = sandbox.close_ledger().await.unwrap();
    assert_eq!(closed.transactions, 1);
    let info = sandbox.transaction(&sent.hash).await.unwrap();
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    assert_eq!(info.application_order, Some(1));
    assert_eq!(info.result.as_ref().unwrap().fee_charged, 100);
    assert_eq!(
        lumens(&sandbox, &alice.address()).await,
        FRIENDBOT_XLM - 10_000_000 - 100
    );
    assert_eq!(
        lumens(&sandbox, &bob.address()).await,
        FRIENDBOT_XLM + 10_000_000
    );

    // More than it can spend above its reserve: fails at close, the fee is charged.
    let too_much = payment(
        &sandbox,
        &alice,
        sequence + 1,
        bob.address(),
        FRIENDBOT_XLM,
        0,
    );
    let sent = sandbox.send_transaction(&too_much).await.unwrap();
    assert_eq!(sent.status, SendStatus::Pending);
    sandbox.close_ledger().await.unwrap();
    let info = sandbox.transaction(&sent.hash).await.unwrap();
    assert_eq!(info.status, TransactionStatus::Failed);
    assert!(matches!(
        &info.result.unwrap().result,
        TransactionResultResult::TxFailed(results)
            if results[0] == OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::Underfunded))
    ));
    assert_eq!(
        account_sequence(&sandbox, &alice.address()).await.unwrap(),
        sequence + 1
    );

    // createAccount: a new account with 2 XLM, its sequence number from the ledger it is in.
    let carol = Keypair::from_seed([77; 32]);
    let TransactionEnvelope::Tx(mut create) =
        payment(&sandbox, &alice, sequence + 2, bob.address(), 1, 0)
    else {
        unreachable!()
    };
    create.tx.operations = vec![Operation {
        source_account: None,
        body: OperationBody::CreateAccount(CreateAccountOp {
            destination: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(carol.public_key()))),
            starting_balance: 20_000_000,
        }),
    }]
    .try_into()
    .unwrap();
    let mut create = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: create.tx,
        signatures: Default::default(),
    });
    sign(&mut create, &alice, &sandbox);
    let info = send_and_close(&sandbox, &create).await;
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    assert_eq!(lumens(&sandbox, &carol.address()).await, 20_000_000);
    assert_eq!(
        account_sequence(&sandbox, &carol.address()).await.unwrap(),
        i64::from(info.ledger.unwrap()) << 32
    );
    // Again: it exists now.
    let mut again = create.clone();
    v1(&mut again).tx.seq_num = SequenceNumber(sequence + 3);
    v1(&mut again).signatures = Default::default();
    sign(&mut again, &alice, &sandbox);
    let info = send_and_close(&sandbox, &again).await;
    assert!(matches!(
        &info.result.unwrap().result,
        TransactionResultResult::TxFailed(results)
            if results[0] == OperationResult::OpInner(OperationResultTr::CreateAccount(CreateAccountResult::AlreadyExist))
    ));
}

#[tokio::test]
async fn a_fee_bump_pays_for_its_inner_transaction() {
    let sandbox = sandbox();
    let alice = sandbox.funded_keypair().await.unwrap();
    let bob = sandbox.funded_keypair().await.unwrap();
    let sponsor = sandbox.funded_keypair().await.unwrap();
    let sequence = next_sequence(&sandbox, &alice).await;
    let TransactionEnvelope::Tx(inner) = payment(&sandbox, &alice, sequence, bob.address(), 5, 0)
    else {
        unreachable!()
    };
    let bump = |fee| {
        TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
            tx: FeeBumpTransaction {
                fee_source: MuxedAccount::Ed25519(Uint256(sponsor.public_key())),
                fee,
                inner_tx: FeeBumpTransactionInnerTx::Tx(inner.clone()),
                ext: FeeBumpTransactionExt::V0,
            },
            signatures: Default::default(),
        })
    };
    // Unsigned by the sponsor; then too cheap for two "operations".
    assert_eq!(
        refusal(&sandbox, &bump(400)).await,
        TransactionResultResult::TxBadAuth
    );
    let mut cheap = bump(150);
    sign(&mut cheap, &sponsor, &sandbox);
    assert_eq!(
        refusal(&sandbox, &cheap).await,
        TransactionResultResult::TxInsufficientFee
    );

    let mut envelope = bump(400);
    sign(&mut envelope, &sponsor, &sandbox);
    let info = send_and_close(&sandbox, &envelope).await;
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    assert!(info.fee_bump);
    let result = info.result.unwrap();
    assert_eq!(result.fee_charged, 200);
    assert!(matches!(
        result.result,
        TransactionResultResult::TxFeeBumpInnerSuccess(_)
    ));
    assert_eq!(
        lumens(&sandbox, &sponsor.address()).await,
        FRIENDBOT_XLM - 200
    );
    assert_eq!(lumens(&sandbox, &alice.address()).await, FRIENDBOT_XLM - 5);
    assert_eq!(
        account_sequence(&sandbox, &alice.address()).await.unwrap(),
        sequence
    );
}

/// Two sandboxes started alike give the same keys and contracts, but their simulations record
/// different nonces, as a real network's would: a payment store that outlives a sandbox (a
/// durable one, across a restart) never meets an old payment's key again.
#[tokio::test]
async fn restarted_sandboxes_keep_their_keys_but_not_their_nonces() {
    let mut nonces = Vec::new();
    let mut payers = Vec::new();
    for _ in 0..2 {
        let sandbox = sandbox();
        let payer = sandbox.funded_keypair().await.unwrap();
        let to = sandbox.funded_keypair().await.unwrap().address();
        let envelope = client_payment(&sandbox, &payer, to, 100, false).await;
        nonces.push(address_credentials(&auth(&envelope)[0]).unwrap().nonce);
        payers.push(payer.address());
    }
    assert_eq!(payers[0], payers[1], "the same keys on every run");
    assert_ne!(nonces[0], nonces[1], "fresh nonces on every run");
}

#[tokio::test]
async fn failed_simulations_say_why() {
    let sandbox = sandbox();
    let payer = sandbox.funded_keypair().await.unwrap();
    let mut envelope = build_transfer(&TransferRequest {
        source: NULL_ACCOUNT,
        sequence: 1,
        fee: 100,
        contract: sandbox.usdc(),
        from: payer.address(),
        to: NULL_ACCOUNT,
        amount: FRIENDBOT_USDC + 1,
        nonce: 0,
        signature_expiration_ledger: 0,
        max_time: 0,
        credentials: CredentialsArm::Address,
    })
    .unwrap();
    set_auth(&mut envelope, Vec::new());
    let simulation = sandbox.simulate_transaction(&envelope).await.unwrap();
    assert!(!simulation.is_success());
    let error = simulation.error.unwrap();
    assert!(error.starts_with("HostError: Error(Contract, #"), "{error}");
    assert!(!simulation.events.is_empty());

    let pay = payment(&sandbox, &payer, 2, payer.address(), 1, 0);
    let simulation = sandbox.simulate_transaction(&pay).await.unwrap();
    assert!(simulation.error.unwrap().contains("invoke a host function"));
}

#[tokio::test]
async fn ledgers_close_on_their_own() {
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(50))).unwrap();
    let first = sandbox.latest_ledger().await.unwrap().sequence;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = sandbox.latest_ledger().await.unwrap().sequence;
    assert!(later >= first + 2, "{first} → {later}");
    assert!(matches!(
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::ZERO)),
        Err(SandboxError::InvalidConfig(_))
    ));
}

/// The filter of USDC `transfer` events from `from` to `to`: SAC transfer events carry the
/// asset as a fourth topic.
fn usdc_transfers(sandbox: &Sandbox, from: &Address, to: &Address) -> EventFilter {
    EventFilter::new().contract(sandbox.usdc()).topic([
        TopicMatch::Exact(ScVal::Symbol("transfer".try_into().unwrap())),
        TopicMatch::Exact(ScVal::Address(from.to_sc_address())),
        TopicMatch::Exact(ScVal::Address(to.to_sc_address())),
        TopicMatch::Any,
    ])
}

#[tokio::test]
async fn a_transfer_is_found_by_its_event() {
    let sandbox = sandbox();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let relayer = sandbox.funded_keypair().await.unwrap();
    let start = sandbox.latest_ledger().await.unwrap().sequence;
    let client = client_payment(&sandbox, &payer, pay_to, start + 12, true).await;
    let sequence = next_sequence(&sandbox, &relayer).await;
    let settled = relay(&client, &relayer, sequence, &sandbox);
    let hash = TransactionHash::of(&settled, &sandbox.network().id()).unwrap();
    let info = send_and_close(&sandbox, &settled).await;
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    let ledger = info.ledger.unwrap();
    // The same payment again fails (its nonce is spent): its fee is still charged.
    let replay = relay(&client, &relayer, sequence + 1, &sandbox);
    let replay_hash = TransactionHash::of(&replay, &sandbox.network().id()).unwrap();
    let replayed = send_and_close(&sandbox, &replay).await;
    assert_eq!(replayed.status, TransactionStatus::Failed);
    let latest = sandbox.latest_ledger().await.unwrap().sequence;

    let request = EventsRequest::from_ledger(start).filter(usdc_transfers(
        &sandbox,
        &payer.address(),
        &pay_to,
    ));
    let found = sandbox.events(&request).await.unwrap();
    assert_eq!(found.events.len(), 1, "{found:?}");
    let event = &found.events[0];
    assert_eq!(event.transaction, hash);
    assert_eq!(event.ledger, ledger);
    assert_eq!(event.kind, EventKind::Contract);
    assert_eq!(event.contract, Some(sandbox.usdc()));
    assert!(event.in_successful_contract_call);
    assert_eq!(
        event.value,
        ScVal::I128(Int128Parts {
            hi: 0,
            lo: u64::try_from(AMOUNT).unwrap()
        })
    );
    assert_eq!(
        event.topics[..3],
        [
            ScVal::Symbol("transfer".try_into().unwrap()),
            ScVal::Address(payer.address().to_sc_address()),
            ScVal::Address(pay_to.to_sc_address()),
        ]
    );
    assert_eq!(
        (event.transaction_index, event.operation_index),
        (Some(1), Some(0))
    );
    assert_eq!(found.latest_ledger, latest);
    assert_eq!(found.oldest_ledger, Some(1));
    // The meta's event, as `getTransaction` gives it.
    let Some(TransactionMeta::V4(meta)) = &info.result_meta else {
        panic!("no v4 meta");
    };
    let ContractEventBody::V0(body) = &meta.operations[0].events[0].body;
    assert_eq!(
        (&event.topics[..], &event.value),
        (&body.topics[..], &body.data)
    );

    // The page after the cursor has nothing more.
    let next = EventsRequest::after(found.cursor.clone().unwrap()).filter(usdc_transfers(
        &sandbox,
        &payer.address(),
        &pay_to,
    ));
    assert!(sandbox.events(&next).await.unwrap().events.is_empty());
    // Nor is there a transfer the other way.
    let reverse = EventsRequest::from_ledger(start).filter(usdc_transfers(
        &sandbox,
        &pay_to,
        &payer.address(),
    ));
    assert!(sandbox.events(&reverse).await.unwrap().events.is_empty());

    // The relayer's fee events: the failed transaction's are there, not successful.
    let fees = EventsRequest::from_ledger(start).filter(
        EventFilter::new().contract(sandbox.xlm()).topic([
            TopicMatch::Exact(ScVal::Symbol("fee".try_into().unwrap())),
            TopicMatch::Exact(ScVal::Address(relayer.address().to_sc_address())),
        ]),
    );
    let fees = sandbox.events(&fees).await.unwrap().events;
    let of = |hash: TransactionHash| -> Vec<bool> {
        fees.iter()
            .filter(|event| event.transaction == hash)
            .map(|event| event.in_successful_contract_call)
            .collect()
    };
    assert!(!of(hash).is_empty() && of(hash).iter().all(|successful| *successful));
    assert!(!of(replay_hash).is_empty() && of(replay_hash).iter().all(|successful| !successful));

    // The same through Soroban JSON-RPC over HTTP.
    let server = sandbox
        .serve(ServeConfig::default().https(None))
        .await
        .unwrap();
    let rpc = JsonRpcClient::builder(server.http_url().unwrap())
        .build()
        .unwrap();
    assert_eq!(rpc.events(&request).await.unwrap(), found);
    let early = EventsRequest::from_ledger(latest + 1);
    assert_eq!(
        rpc.events(&early).await,
        Err(RpcError::Rpc {
            code: -32600,
            message: format!("startLedger must be within the ledger range: 1 - {latest}"),
        })
    );
}

#[tokio::test]
async fn events_outside_the_retention_window_are_gone() {
    assert_eq!(
        sandbox().health().await.unwrap().ledger_retention_window,
        Some(DEFAULT_RETENTION_WINDOW)
    );
    assert!(matches!(
        Sandbox::start(SandboxConfig::default().retention_window(0)),
        Err(SandboxError::InvalidConfig(_))
    ));
    let sandbox = Sandbox::start(
        SandboxConfig::default()
            .auto_close(false)
            .retention_window(3),
    )
    .unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let start = sandbox.latest_ledger().await.unwrap().sequence;
    let client = client_payment(&sandbox, &payer, pay_to, start + 12, true).await;
    let sequence = next_sequence(&sandbox, &payer).await;
    let settled = relay(&client, &payer, sequence, &sandbox);
    let info = send_and_close(&sandbox, &settled).await;
    assert_eq!(info.status, TransactionStatus::Success, "{:?}", info.result);
    let ledger = info.ledger.unwrap();
    let transfers = |from: u32| {
        EventsRequest::from_ledger(from).filter(usdc_transfers(&sandbox, &payer.address(), &pay_to))
    };
    assert_eq!(
        sandbox
            .events(&transfers(ledger))
            .await
            .unwrap()
            .events
            .len(),
        1
    );

    // Three more ledgers: the window is the latest three.
    for _ in 0..3 {
        sandbox.close_ledger().await.unwrap();
    }
    let health = sandbox.health().await.unwrap();
    assert_eq!(health.ledger_retention_window, Some(3));
    assert_eq!(health.oldest_ledger, Some(ledger + 1));
    assert_eq!(
        sandbox.events(&transfers(ledger)).await,
        Err(RpcError::Rpc {
            code: -32600,
            message: format!(
                "startLedger must be within the ledger range: {} - {}",
                ledger + 1,
                ledger + 3
            ),
        })
    );
    let kept = sandbox.events(&transfers(ledger + 1)).await.unwrap();
    assert!(kept.events.is_empty());
    assert_eq!(kept.oldest_ledger, Some(ledger + 1));
    assert_eq!(
        sandbox
            .transaction(&TransactionHash::of(&settled, &sandbox.network().id()).unwrap())
            .await
            .unwrap()
            .status,
        TransactionStatus::NotFound
    );
}

#[test]
fn the_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Sandbox>();
}

/// What the ledger says of a transaction a settlement submitted, from its hash and time bounds:
/// settled once it succeeded, not settled once it failed or once no ledger can include it any
/// more, unknown while it still could land.
#[tokio::test]
async fn transaction_evidence_tells_settled_and_failed_from_unknown() {
    use tower_paywall::stellar::{LedgerFinding, SettlementEvidence};
    let sandbox = sandbox();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let relayer = sandbox.funded_keypair().await.unwrap();
    let latest = sandbox.latest_ledger().await.unwrap().sequence;
    let valid = client_payment(&sandbox, &payer, pay_to, latest + 12, false).await;
    let evidence = |hash, valid_until| SettlementEvidence::Transaction { hash, valid_until };
    let hash_of = |envelope: &TransactionEnvelope| {
        TransactionHash::of(envelope, &sandbox.network().id()).unwrap()
    };

    // Signed by someone else for the payer: it fails on the ledger.
    let mut forged = valid.clone();
    let mut entries = auth(&valid);
    let intruder = Keypair::from_seed([66; 32]);
    sign_authorization(
        &mut entries[0],
        &intruder,
        &sandbox.network().id(),
        latest + 12,
    )
    .unwrap();
    set_auth(&mut forged, entries);
    let sequence = next_sequence(&sandbox, &relayer).await;
    let forged = relay(&forged, &relayer, sequence, &sandbox);
    assert_eq!(
        send_and_close(&sandbox, &forged).await.status,
        TransactionStatus::Failed
    );
    assert_eq!(
        evidence(hash_of(&forged), None).find(&sandbox).await,
        LedgerFinding::NotSettled
    );

    // The payer's own signature: it settles.
    let paid = relay(&valid, &relayer, sequence + 1, &sandbox);
    assert_eq!(
        send_and_close(&sandbox, &paid).await.status,
        TransactionStatus::Success
    );
    assert_eq!(
        evidence(hash_of(&paid), Some(now() + 600))
            .find(&sandbox)
            .await,
        LedgerFinding::Settled(hash_of(&paid))
    );

    // Never submitted: unknown while it could still land, or when it has no time bounds; not
    // settled once its time bounds have closed.
    let unsent = TransactionHash([9; 32]);
    for (valid_until, finding) in [
        (Some(now() + 600), LedgerFinding::Unknown),
        (None, LedgerFinding::Unknown),
        (Some(now() - 60), LedgerFinding::NotSettled),
    ] {
        assert_eq!(
            evidence(unsent, valid_until).find(&sandbox).await,
            finding,
            "{valid_until:?}"
        );
    }
}
