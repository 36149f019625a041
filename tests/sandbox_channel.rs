//! The sandbox's one-way payment channel contract end to end, with manual ledger closes: the
//! signed commitment's bytes, deployment and deposit, the recipient's `settle` and `close`, the
//! funder's `top_up`, `close_start` and `refund`, the getters and instance storage, and every
//! refusal. Calls go through real signed transactions ([`Sandbox::invoke`]); reads are
//! simulations, as clients do them.
#![cfg(feature = "sandbox")]

use tower_paywall::sandbox::{
    ChannelError, ChannelParams, ContractCall, Invoked, Sandbox, SandboxConfig, SandboxError,
};
use tower_paywall::stellar::xdr::{
    ContractDataDurability, ContractEvent, ContractEventBody, Int128Parts, LedgerEntryData, ScMap,
    ScSymbol, ScVal,
};
use tower_paywall::stellar::{
    Address, Keypair, Network, SorobanRpc, commitment_bytes, contract_data,
};

/// 1 USDC in atomic units.
const USDC: i128 = 10_000_000;
/// The first deposit: 10 USDC.
const DEPOSIT: i128 = 10 * USDC;

fn i128_val(value: i128) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: (value >> 64) as i64,
        lo: value as u64,
    })
}

fn i128_of(value: &ScVal) -> i128 {
    match value {
        ScVal::I128(parts) => (i128::from(parts.hi) << 64) | i128::from(parts.lo),
        other => panic!("not an i128: {other:?}"),
    }
}

fn bytes_val(bytes: &[u8]) -> ScVal {
    ScVal::Bytes(bytes.to_vec().try_into().unwrap())
}

fn symbol(text: &str) -> ScVal {
    ScVal::Symbol(ScSymbol(text.try_into().unwrap()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The contract error code of a failed simulation: `HostError: Error(Contract, #3)`, or for a
/// constructor (whose errors the host turns into `Error(Context, InvalidAction)`) the
/// `Contract(1)` of the event log.
fn contract_error(error: &SandboxError) -> u32 {
    let SandboxError::Host(message) = error else {
        panic!("not a host failure: {error:?}");
    };
    let code = message
        .split("Error(Contract, #")
        .nth(1)
        .or_else(|| {
            message
                .split("constructor invocation has failed with error\", Contract(")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no contract error in {message}"));
    code[..code.find(')').unwrap()].parse().unwrap()
}

/// A failed simulation in which the host refused the commitment's signature.
fn assert_signature_refused(error: &SandboxError) {
    let SandboxError::Host(message) = error else {
        panic!("not a host failure: {error:?}");
    };
    assert!(
        message.starts_with("HostError: Error(Crypto, InvalidInput)"),
        "{message}"
    );
}

fn code(error: ChannelError) -> u32 {
    error.code()
}

/// A sandbox with a funded funder and recipient, and a channel between them holding 10 USDC.
struct Channel {
    sandbox: Sandbox,
    funder: Keypair,
    recipient: Keypair,
    commitment_key: Keypair,
    address: Address,
}

impl Channel {
    async fn open(refund_waiting_period: u32) -> Channel {
        let sandbox =
            Sandbox::start(SandboxConfig::default().auto_close(false)).expect("the sandbox starts");
        let funder = sandbox.funded_keypair().await.unwrap();
        let recipient = sandbox.funded_keypair().await.unwrap();
        let commitment_key = Keypair::from_seed([42; 32]);
        let address = sandbox
            .deploy_channel(ChannelParams {
                token: sandbox.usdc(),
                from: &funder,
                commitment_key: commitment_key.public_key(),
                to: recipient.address(),
                amount: DEPOSIT,
                refund_waiting_period,
            })
            .await
            .expect("the channel deploys");
        Channel {
            sandbox,
            funder,
            recipient,
            commitment_key,
            address,
        }
    }

    fn call(&self, function: &str, args: Vec<ScVal>) -> ContractCall {
        ContractCall::new(self.address, function, args)
    }

    /// A getter's value, simulated.
    async fn get(&self, getter: &str) -> ScVal {
        self.sandbox
            .simulate_call(&self.call(getter, vec![]))
            .await
            .unwrap_or_else(|error| panic!("{getter}: {error}"))
    }

    async fn usdc(&self, holder: &Address) -> i128 {
        self.sandbox
            .balance(&self.sandbox.usdc(), holder)
            .await
            .unwrap()
    }

    /// The commitment key's signature over the commitment for `amount`.
    fn sign(&self, amount: i128) -> [u8; 64] {
        let bytes = commitment_bytes(&self.sandbox.network().id(), &self.address, amount).unwrap();
        self.commitment_key.sign(&bytes)
    }

    /// `function(amount, signature)` as `caller`.
    async fn withdraw(
        &self,
        caller: &Keypair,
        function: &str,
        amount: i128,
        signature: &[u8],
    ) -> Result<Invoked, SandboxError> {
        let call = self.call(function, vec![i128_val(amount), bytes_val(signature)]);
        self.sandbox.invoke(caller, &call).await
    }

    /// The recipient settles `amount` with the commitment key's signature.
    async fn settle(&self, amount: i128) -> Result<Invoked, SandboxError> {
        let signature = self.sign(amount);
        self.withdraw(&self.recipient, "settle", amount, &signature)
            .await
    }

    /// The funder calls `function()`.
    async fn as_funder(&self, function: &str) -> Result<Invoked, SandboxError> {
        self.sandbox
            .invoke(&self.funder, &self.call(function, vec![]))
            .await
    }

    async fn latest(&self) -> u32 {
        self.sandbox.latest_ledger().await.unwrap().sequence
    }
}

/// The channel's events (not the token's) in an invocation: name and data.
fn channel_events(invoked: &Invoked, channel: &Address) -> Vec<(String, ScMap)> {
    invoked
        .events
        .iter()
        .filter(|event| {
            event
                .contract_id
                .as_ref()
                .is_some_and(|id| Address::Contract(id.0.0) == *channel)
        })
        .map(|event: &ContractEvent| {
            let ContractEventBody::V0(body) = &event.body;
            assert_eq!(body.topics.len(), 1);
            let ScVal::Symbol(name) = &body.topics[0] else {
                panic!("topic {:?}", body.topics[0]);
            };
            let ScVal::Map(Some(data)) = &body.data else {
                panic!("data {:?}", body.data);
            };
            (name.to_utf8_string_lossy(), data.clone())
        })
        .collect()
}

fn field<'a>(data: &'a ScMap, name: &str) -> &'a ScVal {
    let key = symbol(name);
    &data
        .iter()
        .find(|entry| entry.key == key)
        .unwrap_or_else(|| panic!("no {name} in {data:?}"))
        .val
}

#[test]
fn the_commitment_is_the_sdk_vector() {
    // research/mpp.md §3.2: channel 07×32, 1 USDC, testnet, signed by seed 01×32.
    let channel: Address = "CADQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQP5KR"
        .parse()
        .unwrap();
    let bytes = commitment_bytes(&Network::testnet().id(), &channel, 10_000_000).unwrap();
    assert_eq!(bytes.len(), 192);
    assert_eq!(
        hex(&bytes),
        "0000001100000001000000040000000f00000006616d6f756e7400000000000a000000000000000000000000009896800000000f000000076368616e6e656c00000000120000000107070707070707070707070707070707070707070707070707070707070707070000000f00000006646f6d61696e00000000000f000000086368616e636d6d740000000f000000076e6574776f726b000000000d00000020cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472"
    );
    assert_eq!(
        hex(&Keypair::from_seed([1; 32]).sign(&bytes)),
        "b2f3752900328a16c3b4ba4d6399376dff9a5db5dec3f9843dc1f3dfbdca66d22ebcbab9900204beba5ac1cc5778bd6b96d621582438e7ded07ff8db05c7e90b"
    );
}

#[tokio::test]
async fn prepare_commitment_is_the_engine_commitment() {
    let channel = Channel::open(100).await;
    let network = channel.sandbox.network().id();
    // Small amounts, and one beyond 56 bits (an i128 object on the host).
    for amount in [0, 1, 10_000_000, DEPOSIT, (1 << 70) + 5] {
        let simulated = channel
            .sandbox
            .simulate_call(&channel.call("prepare_commitment", vec![i128_val(amount)]))
            .await
            .unwrap();
        let expected = commitment_bytes(&network, &channel.address, amount).unwrap();
        assert_eq!(simulated, bytes_val(&expected), "amount {amount}");
    }
    // Through a transaction too.
    let invoked = channel
        .sandbox
        .invoke(
            &channel.recipient,
            &channel.call("prepare_commitment", vec![i128_val(3)]),
        )
        .await
        .unwrap();
    assert_eq!(
        invoked.return_value,
        bytes_val(&commitment_bytes(&network, &channel.address, 3).unwrap())
    );
}

#[tokio::test]
async fn deploying_deposits_and_the_getters_read_the_channel() {
    let channel = Channel::open(17_280).await;
    let (funder, recipient) = (channel.funder.address(), channel.recipient.address());
    assert!(channel.address.is_contract());
    assert_eq!(
        channel.usdc(&funder).await,
        tower_paywall::sandbox::FRIENDBOT_USDC - DEPOSIT
    );
    assert_eq!(channel.usdc(&channel.address).await, DEPOSIT);
    assert_eq!(
        channel.usdc(&recipient).await,
        tower_paywall::sandbox::FRIENDBOT_USDC
    );

    let address = |address: Address| ScVal::Address(address.to_sc_address());
    assert_eq!(channel.get("token").await, address(channel.sandbox.usdc()));
    assert_eq!(channel.get("from").await, address(funder));
    assert_eq!(channel.get("to").await, address(recipient));
    assert_eq!(
        channel.get("refund_waiting_period").await,
        ScVal::U32(17_280)
    );
    assert_eq!(i128_of(&channel.get("balance").await), DEPOSIT);
    assert_eq!(i128_of(&channel.get("deposited").await), DEPOSIT);
    assert_eq!(i128_of(&channel.get("withdrawn").await), 0);

    // Instance storage as a server reads it (research/mpp.md §3.6): `Vec[Symbol(variant)]` keys.
    let instance = contract_data(
        &channel.sandbox,
        &channel.address,
        ScVal::LedgerKeyContractInstance,
        ContractDataDurability::Persistent,
    )
    .await
    .unwrap()
    .expect("the instance entry");
    let LedgerEntryData::ContractData(data) = instance.data else {
        panic!("not contract data");
    };
    let ScVal::ContractInstance(instance) = data.val else {
        panic!("not an instance");
    };
    let storage = instance.storage.expect("instance storage");
    let stored = |variant: &str| {
        let key = ScVal::Vec(Some(vec![symbol(variant)].try_into().unwrap()));
        storage
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| entry.val.clone())
    };
    assert_eq!(stored("Token"), Some(address(channel.sandbox.usdc())));
    assert_eq!(stored("From"), Some(address(funder)));
    assert_eq!(stored("To"), Some(address(recipient)));
    assert_eq!(
        stored("CommitmentKey"),
        Some(bytes_val(&channel.commitment_key.public_key()))
    );
    assert_eq!(stored("RefundWaitingPeriod"), Some(ScVal::U32(17_280)));
    assert_eq!(stored("WithdrawnAmount"), Some(i128_val(0)));
    assert_eq!(stored("CloseEffectiveAtLedger"), None);
    assert_eq!(storage.len(), 6);
}

#[tokio::test]
async fn deploying_needs_the_funders_money() {
    let sandbox = Sandbox::start(SandboxConfig::default().auto_close(false)).unwrap();
    let funder = sandbox.funded_keypair().await.unwrap();
    let params = |amount| ChannelParams {
        token: sandbox.usdc(),
        from: &funder,
        commitment_key: [1; 32],
        to: Keypair::from_seed([2; 32]).address(),
        amount,
        refund_waiting_period: 10,
    };
    // More than the funder holds: the token refuses the deposit, nothing is created.
    let error = sandbox
        .deploy_channel(params(tower_paywall::sandbox::FRIENDBOT_USDC + 1))
        .await
        .unwrap_err();
    assert!(matches!(error, SandboxError::Host(_)), "{error:?}");
    // A negative deposit.
    let error = sandbox.deploy_channel(params(-1)).await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::NegativeAmount));
    // No deposit: a channel with nothing in it.
    let empty = sandbox.deploy_channel(params(0)).await.unwrap();
    assert_eq!(sandbox.balance(&sandbox.usdc(), &empty).await.unwrap(), 0);
    assert_eq!(
        sandbox
            .balance(&sandbox.usdc(), &funder.address())
            .await
            .unwrap(),
        tower_paywall::sandbox::FRIENDBOT_USDC
    );
}

#[tokio::test]
async fn settling_pays_the_recipient_what_each_commitment_adds() {
    let channel = Channel::open(100).await;
    let recipient = channel.recipient.address();
    let start = channel.usdc(&recipient).await;

    let first = channel.settle(3 * USDC).await.unwrap();
    assert_eq!(first.return_value, ScVal::Void);
    assert_eq!(channel.usdc(&recipient).await, start + 3 * USDC);
    assert_eq!(channel.usdc(&channel.address).await, DEPOSIT - 3 * USDC);
    assert_eq!(i128_of(&channel.get("withdrawn").await), 3 * USDC);
    let events = channel_events(&first, &channel.address);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "withdraw");
    assert_eq!(
        field(&events[0].1, "to"),
        &ScVal::Address(recipient.to_sc_address())
    );
    assert_eq!(i128_of(field(&events[0].1, "amount")), 3 * USDC);

    // A higher commitment pays the difference.
    let second = channel.settle(5 * USDC).await.unwrap();
    assert_eq!(channel.usdc(&recipient).await, start + 5 * USDC);
    assert_eq!(i128_of(&channel.get("withdrawn").await), 5 * USDC);
    assert_eq!(i128_of(&channel.get("balance").await), DEPOSIT - 5 * USDC);
    assert_eq!(i128_of(&channel.get("deposited").await), DEPOSIT);
    let events = channel_events(&second, &channel.address);
    assert_eq!(i128_of(field(&events[0].1, "amount")), 2 * USDC);

    // The same commitment again pays nothing.
    let again = channel.settle(5 * USDC).await.unwrap();
    assert!(channel_events(&again, &channel.address).is_empty());
    assert_eq!(channel.usdc(&recipient).await, start + 5 * USDC);

    // More than the deposit: the token refuses (the SAC's insufficient balance, #10).
    let error = channel.settle(DEPOSIT + 1).await.unwrap_err();
    assert_eq!(contract_error(&error), 10);
    assert_eq!(channel.usdc(&recipient).await, start + 5 * USDC);
}

#[tokio::test]
async fn closing_pays_the_best_commitment_and_refunds_the_rest() {
    let channel = Channel::open(100).await;
    let (funder, recipient) = (channel.funder.address(), channel.recipient.address());
    let (funder_start, recipient_start) =
        (channel.usdc(&funder).await, channel.usdc(&recipient).await);
    channel.settle(3 * USDC).await.unwrap();

    let signature = channel.sign(7 * USDC);
    let closed = channel
        .withdraw(&channel.recipient, "close", 7 * USDC, &signature)
        .await
        .unwrap();
    assert_eq!(channel.usdc(&recipient).await, recipient_start + 7 * USDC);
    assert_eq!(channel.usdc(&funder).await, funder_start + 3 * USDC);
    assert_eq!(channel.usdc(&channel.address).await, 0);
    assert_eq!(i128_of(&channel.get("withdrawn").await), 7 * USDC);
    assert_eq!(i128_of(&channel.get("deposited").await), 7 * USDC);

    let events = channel_events(&closed, &channel.address);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["withdraw", "close", "refund"]);
    assert_eq!(i128_of(field(&events[0].1, "amount")), 4 * USDC);
    assert_eq!(
        field(&events[1].1, "effective_at_ledger"),
        &ScVal::U32(closed.ledger)
    );
    assert_eq!(
        field(&events[2].1, "from"),
        &ScVal::Address(funder.to_sc_address())
    );
    assert_eq!(i128_of(field(&events[2].1, "amount")), 3 * USDC);

    // Closed: the funder cannot start a close, and a refund finds nothing left.
    let error = channel.as_funder("close_start").await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::AlreadyClosed));
    let refunded = channel.as_funder("refund").await.unwrap();
    assert!(channel_events(&refunded, &channel.address).is_empty());
    assert_eq!(channel.usdc(&funder).await, funder_start + 3 * USDC);
}

#[tokio::test]
async fn bad_commitments_and_callers_fail() {
    let channel = Channel::open(100).await;
    let recipient = channel.recipient.address();
    let start = channel.usdc(&recipient).await;
    channel.settle(5 * USDC).await.unwrap();

    // A forged signature: one bit flipped.
    let mut forged = channel.sign(6 * USDC);
    forged[10] ^= 1;
    let error = channel
        .withdraw(&channel.recipient, "settle", 6 * USDC, &forged)
        .await
        .unwrap_err();
    assert_signature_refused(&error);

    // A signature for another amount.
    let other_amount = channel.sign(9 * USDC);
    let error = channel
        .withdraw(&channel.recipient, "settle", 6 * USDC, &other_amount)
        .await
        .unwrap_err();
    assert_signature_refused(&error);

    // A signature by another key.
    let stranger = Keypair::from_seed([43; 32]);
    let bytes =
        commitment_bytes(&channel.sandbox.network().id(), &channel.address, 6 * USDC).unwrap();
    let error = channel
        .withdraw(
            &channel.recipient,
            "settle",
            6 * USDC,
            &stranger.sign(&bytes),
        )
        .await
        .unwrap_err();
    assert_signature_refused(&error);

    // A signature for another channel.
    let elsewhere = commitment_bytes(
        &channel.sandbox.network().id(),
        &Address::Contract([7; 32]),
        6 * USDC,
    )
    .unwrap();
    let error = channel
        .withdraw(
            &channel.recipient,
            "settle",
            6 * USDC,
            &channel.commitment_key.sign(&elsewhere),
        )
        .await
        .unwrap_err();
    assert_signature_refused(&error);

    // A lower commitment than already withdrawn.
    let error = channel.settle(4 * USDC).await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::NegativeAmount));
    let error = channel.settle(-1).await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::NegativeAmount));

    // A good commitment sent by someone else than the recipient: `to` must authorize. The
    // simulation records `to`'s entry; sent unsigned, the transaction fails in its ledger.
    let signature = channel.sign(6 * USDC);
    for function in ["settle", "close"] {
        let error = channel
            .withdraw(&channel.funder, function, 6 * USDC, &signature)
            .await
            .unwrap_err();
        let SandboxError::Transaction(reason) = &error else {
            panic!("{error:?}");
        };
        assert!(reason.contains("FAILED"), "{reason}");
        assert!(reason.contains("Auth(InvalidAction)"), "{reason}");
    }

    // A signature that is not a `BytesN<64>`: the contract traps on the argument.
    let error = channel
        .withdraw(&channel.recipient, "settle", 6 * USDC, &signature[..63])
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("Error(WasmVm, InvalidAction)"),
        "{error}"
    );

    // Nothing moved; the good commitment still works.
    assert_eq!(channel.usdc(&recipient).await, start + 5 * USDC);
    assert_eq!(i128_of(&channel.get("withdrawn").await), 5 * USDC);
    channel.settle(6 * USDC).await.unwrap();
    assert_eq!(channel.usdc(&recipient).await, start + 6 * USDC);
}

#[tokio::test]
async fn the_funder_refunds_after_the_waiting_period() {
    const PERIOD: u32 = 3;
    let channel = Channel::open(PERIOD).await;
    let funder = channel.funder.address();
    let start = channel.usdc(&funder).await;

    // No close started.
    let error = channel.as_funder("refund").await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::NotClosed));
    // Only the funder starts a close.
    assert!(
        channel
            .sandbox
            .invoke(&channel.recipient, &channel.call("close_start", vec![]))
            .await
            .is_err()
    );

    let started = channel.as_funder("close_start").await.unwrap();
    let events = channel_events(&started, &channel.address);
    assert_eq!(events[0].0, "close");
    let effective = started.ledger + PERIOD;
    assert_eq!(
        field(&events[0].1, "effective_at_ledger"),
        &ScVal::U32(effective)
    );

    // Until the close is effective the funder waits, and the recipient can still settle.
    let error = channel.as_funder("refund").await.unwrap_err();
    assert_eq!(
        contract_error(&error),
        code(ChannelError::RefundWaitingPeriodNotElapsed)
    );
    channel.settle(2 * USDC).await.unwrap();
    while channel.latest().await + 1 < effective {
        channel.sandbox.close_ledger().await.unwrap();
    }
    assert_eq!(channel.latest().await + 1, effective);
    // `refund` runs in the ledger being built: the effective one.
    let refunded = channel.as_funder("refund").await.unwrap();
    assert_eq!(refunded.ledger, effective);
    assert_eq!(channel.usdc(&funder).await, start + DEPOSIT - 2 * USDC);
    assert_eq!(channel.usdc(&channel.address).await, 0);
    let events = channel_events(&refunded, &channel.address);
    assert_eq!(events[0].0, "refund");
    assert_eq!(i128_of(field(&events[0].1, "amount")), DEPOSIT - 2 * USDC);

    // Closed now; a refund again finds nothing.
    let error = channel.as_funder("close_start").await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::AlreadyClosed));
    channel.as_funder("refund").await.unwrap();
    assert_eq!(channel.usdc(&funder).await, start + DEPOSIT - 2 * USDC);
}

#[tokio::test]
async fn the_recipient_closes_during_the_waiting_period() {
    let channel = Channel::open(100).await;
    let (funder, recipient) = (channel.funder.address(), channel.recipient.address());
    let (funder_start, recipient_start) =
        (channel.usdc(&funder).await, channel.usdc(&recipient).await);
    let started = channel.as_funder("close_start").await.unwrap();
    let events = channel_events(&started, &channel.address);
    assert_eq!(
        field(&events[0].1, "effective_at_ledger"),
        &ScVal::U32(started.ledger + 100)
    );

    // The recipient answers with its best commitment: paid, and the close is effective now.
    let signature = channel.sign(4 * USDC);
    let closed = channel
        .withdraw(&channel.recipient, "close", 4 * USDC, &signature)
        .await
        .unwrap();
    let events = channel_events(&closed, &channel.address);
    assert_eq!(events[1].0, "close");
    assert_eq!(
        field(&events[1].1, "effective_at_ledger"),
        &ScVal::U32(closed.ledger)
    );
    assert_eq!(channel.usdc(&recipient).await, recipient_start + 4 * USDC);
    assert_eq!(
        channel.usdc(&funder).await,
        funder_start + DEPOSIT - 4 * USDC
    );
    let error = channel.as_funder("close_start").await.unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::AlreadyClosed));
}

#[tokio::test]
async fn the_funder_tops_up() {
    let channel = Channel::open(100).await;
    let funder = channel.funder.address();
    let start = channel.usdc(&funder).await;
    let top_up = |amount: i128| channel.call("top_up", vec![i128_val(amount)]);

    channel
        .sandbox
        .invoke(&channel.funder, &top_up(5 * USDC))
        .await
        .unwrap();
    assert_eq!(channel.usdc(&funder).await, start - 5 * USDC);
    assert_eq!(i128_of(&channel.get("balance").await), DEPOSIT + 5 * USDC);
    assert_eq!(i128_of(&channel.get("deposited").await), DEPOSIT + 5 * USDC);
    channel.settle(12 * USDC).await.unwrap();
    assert_eq!(i128_of(&channel.get("deposited").await), DEPOSIT + 5 * USDC);

    let error = channel
        .sandbox
        .invoke(&channel.funder, &top_up(-1))
        .await
        .unwrap_err();
    assert_eq!(contract_error(&error), code(ChannelError::NegativeAmount));
    // Only the funder tops up through the channel.
    assert!(
        channel
            .sandbox
            .invoke(&channel.recipient, &top_up(USDC))
            .await
            .is_err()
    );
    assert_eq!(i128_of(&channel.get("balance").await), 3 * USDC);
}
