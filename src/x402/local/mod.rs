//! [`LocalFacilitator`]: the Stellar `exact` facilitator, run by this crate against a Soroban RPC
//! (a real network's, or the sandbox's), usable in-process by a
//! [`PaymentLayer`](crate::PaymentLayer) or over HTTP through [`facilitator_router`].

use std::sync::Arc;
use std::time::Duration;

use super::checks::{Expected, check_transfer, read_transfer, reason};
use super::facilitator::{Facilitator, FacilitatorError, FacilitatorRequest};
use super::wire::{
    PaymentPayload, PaymentRequirements, SettleResponse, SupportedKind, SupportedResponse,
    VerifyResponse, X402_VERSION,
};
use crate::BoxFuture;
use crate::stellar::rpc::{RpcError, Simulation, SorobanRpc, TransactionStatus};
use crate::stellar::xdr::{DiagnosticEvent, HostFunction, TransactionEnvelope};
use crate::stellar::{
    Address, Amount, Keypair, Network, SacTransfer, Sponsor, SponsorError, SponsoredCall,
    TransferEventError, address_credentials, check_transfer_events,
};
use crate::store::Leases;

mod server;
pub use server::facilitator_router;

const SCHEME: &str = "exact";
/// The base fee per operation, in stroops.
const BASE_FEE: u32 = 100;
/// Default ceiling on the fees of a transaction this facilitator pays for: 1 XLM.
pub const DEFAULT_MAX_FEE: u32 = 10_000_000;
/// Ledgers close about every five seconds.
const LEDGER_SECONDS: u64 = 5;

/// The Stellar `exact` facilitator, run against a Soroban RPC.
///
/// Verification makes the spec's MUST checks and the stricter of the TypeScript and
/// OpenZeppelin facilitators' checks:
///
/// | check | refusal |
/// |---|---|
/// | x402 version 2, scheme `exact`, our network, `extra.areFeesSponsored` a boolean | `invalid_x402_version`, `unsupported_scheme`, `invalid_network`, `invalid_exact_payload_malformed` |
/// | the asset is one we settle | `unsupported_asset` |
/// | one SAC `transfer` of the exact amount of the asset to `payTo`; no fee bump, no envelope signatures | `…_wrong_*`, `…_has_envelope_signatures` |
/// | address credentials only, no sub-invocations, the payer signed (and a G payer's own key verifies) | `…_unsupported_credential_type`, `…_has_subinvocations`, `…_missing_payer_signature`, `…_bad_signature` |
/// | our key is not the payer, a source, or in an authorization entry | `…_facilitator_is_payer`, `…_unsafe_tx_or_op_source`, `…_facilitator_in_auth` |
/// | `latest < expiration ≤ latest + ⌈maxTimeoutSeconds / 5⌉` | `…_auth_already_expired`, `…_signature_expiration_too_far` |
/// | the client's fee is within `[minResourceFee, max_fee]` | `…_fee_below_minimum`, `…_fee_exceeds_maximum` |
/// | simulation succeeds with exactly one contract event: the asset's `transfer(from, to, amount)` | `…_simulation_failed`, `…_no_transfer_events`, `…_multiple_transfers`, `…_unexpected_balance_changes`, `…_event_wrong_*` |
///
/// Settlement re-verifies, then rebuilds the transaction with one of the facilitator's own
/// source accounts and its next sequence number (the client's operation and signed authorization
/// unchanged), simulates it for its resources, signs it, submits it and waits until it is final.
/// Each source account (the fee payer, plus any [channel accounts](LocalFacilitatorBuilder::channel))
/// carries one settlement at a time, as the network queues one transaction per account, so
/// concurrent settlements never collide on a sequence number; an account is taken after the
/// simulation and given back the moment its ledger shows the transaction, so each carries one
/// settlement per ledger (`examples/settle_load.rs`: 0.97–1.0 of accounts ÷ ledger period).
/// Replicas share their accounts through [leases](LocalFacilitatorBuilder::leases).
///
/// ```
/// # #[cfg(feature = "rpc")] {
/// use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};
/// use tower_paywall::x402::LocalFacilitator;
///
/// let rpc = JsonRpcClient::builder("https://soroban-rpc.example").build()?;
/// let fee_payer = Keypair::from_seed([9; 32]);
/// let facilitator = LocalFacilitator::builder(rpc, Network::testnet(), fee_payer).build()?;
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LocalFacilitator {
    inner: Arc<Inner>,
}

struct Inner {
    rpc: Arc<dyn SorobanRpc>,
    network: Network,
    /// Sends settlements from the facilitator's accounts.
    sponsor: Sponsor,
    assets: Vec<Address>,
    max_fee: u32,
    supported: Arc<SupportedResponse>,
}

/// Builds a [`LocalFacilitator`].
#[must_use]
pub struct LocalFacilitatorBuilder {
    rpc: Arc<dyn SorobanRpc>,
    network: Network,
    fee_payer: Keypair,
    channels: Vec<Keypair>,
    fee_bump: Option<Keypair>,
    assets: Vec<Address>,
    max_fee: u32,
    leases: Option<Arc<dyn Leases>>,
}

/// Why a [`LocalFacilitatorBuilder`] refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalFacilitatorError {
    /// No asset was set and the network has no known USDC contract.
    #[error("no asset set, and the network has no known USDC contract")]
    NoAsset,
    /// An asset is not a contract address.
    #[error("assets must be contract (C…) addresses")]
    AssetNotContract,
    /// The fee ceiling is below the base fee.
    #[error("max_fee must be at least the base fee of 100 stroops")]
    MaxFee,
}

impl LocalFacilitator {
    /// Starts a builder: settle through `rpc` on `network`, paying fees from `fee_payer`'s
    /// account.
    pub fn builder(
        rpc: impl SorobanRpc,
        network: Network,
        fee_payer: Keypair,
    ) -> LocalFacilitatorBuilder {
        Self::builder_shared(Arc::new(rpc), network, fee_payer)
    }

    /// Like [`builder`](Self::builder), with an RPC shared with others.
    pub fn builder_shared(
        rpc: Arc<dyn SorobanRpc>,
        network: Network,
        fee_payer: Keypair,
    ) -> LocalFacilitatorBuilder {
        LocalFacilitatorBuilder {
            rpc,
            network,
            fee_payer,
            channels: Vec::new(),
            fee_bump: None,
            assets: Vec::new(),
            max_fee: DEFAULT_MAX_FEE,
            leases: None,
        }
    }

    /// The account that pays the fees (and must never be a payer).
    pub fn fee_payer(&self) -> Address {
        self.inner.sponsor.accounts()[0]
    }

    /// Every account this facilitator sends from (the fee payer first): none of them may ever
    /// be a payer, a source, or in an authorization entry of a payment.
    pub fn accounts(&self) -> &[Address] {
        self.inner.sponsor.accounts()
    }
}

impl LocalFacilitatorBuilder {
    /// Adds an asset (a SAC or SEP-41 contract) this facilitator settles; default: the
    /// network's USDC.
    pub fn asset(mut self, asset: Address) -> Self {
        self.assets.push(asset);
        self
    }

    /// Adds a channel account: another funded source account settlements are sent from, so
    /// that several settle in the same ledger (the network queues one transaction per source
    /// account). Each pays its own fees.
    pub fn channel(mut self, account: Keypair) -> Self {
        self.channels.push(account);
        self
    }

    /// Pays every settlement's fees from `account` through a fee bump, so the source accounts
    /// (the fee payer and the channels) only lend their sequence numbers.
    pub fn fee_bump(mut self, account: Keypair) -> Self {
        self.fee_bump = Some(account);
        self
    }

    /// The most this facilitator pays in fees for one settlement, and the most a client's
    /// transaction may declare (default [`DEFAULT_MAX_FEE`] stroops).
    pub fn max_fee(mut self, stroops: u32) -> Self {
        self.max_fee = stroops;
        self
    }

    /// Shares the fee payer and channel accounts with other instances (replicas of one
    /// facilitator) through `leases`, such as the `redis` feature's `RedisStore::leases`: each
    /// account is leased for a settlement, from its submission until it is final, so no two
    /// instances settle on one account in one ledger. Without it, one instance owns its
    /// accounts.
    pub fn leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Checks the settings and builds the facilitator.
    pub fn build(self) -> Result<LocalFacilitator, LocalFacilitatorError> {
        let assets = if self.assets.is_empty() {
            vec![self.network.usdc().ok_or(LocalFacilitatorError::NoAsset)?]
        } else {
            self.assets
        };
        if !assets.iter().all(Address::is_contract) {
            return Err(LocalFacilitatorError::AssetNotContract);
        }
        if self.max_fee < BASE_FEE {
            return Err(LocalFacilitatorError::MaxFee);
        }
        let mut keypairs = vec![self.fee_payer];
        keypairs.extend(self.channels);
        let sponsor = Sponsor::new(
            self.rpc.clone(),
            self.network.clone(),
            keypairs,
            self.fee_bump,
            self.max_fee,
        )
        .map_err(|_| LocalFacilitatorError::MaxFee)?;
        let sponsor = match self.leases {
            Some(leases) => sponsor.with_leases(leases),
            None => sponsor,
        };
        let addresses = sponsor.accounts().to_vec();
        let mut extra = serde_json::Map::new();
        extra.insert("areFeesSponsored".into(), true.into());
        let supported = SupportedResponse {
            kinds: vec![SupportedKind {
                x402_version: X402_VERSION,
                scheme: SCHEME.into(),
                network: self.network.caip2().into(),
                extra: Some(extra),
            }],
            extensions: Vec::new(),
            signers: [(
                self.network.caip2().to_owned(),
                addresses.iter().map(Address::to_string).collect(),
            )]
            .into_iter()
            .collect(),
        };
        Ok(LocalFacilitator {
            inner: Arc::new(Inner {
                rpc: self.rpc,
                network: self.network,
                sponsor,
                assets,
                max_fee: self.max_fee,
                supported: Arc::new(supported),
            }),
        })
    }
}

/// Why a payment was not accepted: a reason for the client, or the ledger being unreachable.
enum Refusal {
    Invalid(&'static str),
    /// The ledger could not be asked; nothing was submitted.
    Rpc(RpcError),
    /// The ledger stopped answering after a submission: the outcome is unknown.
    Unknown(RpcError),
}

impl From<RpcError> for Refusal {
    fn from(error: RpcError) -> Self {
        Refusal::Rpc(error)
    }
}

/// A payment that passed the offline and expiration checks.
struct Payment {
    transfer: SacTransfer,
    envelope_fee: u32,
    expiration: u32,
    max_timeout_seconds: u64,
}

impl Inner {
    /// Everything but simulation.
    async fn validate(&self, request: &FacilitatorRequest<'_>) -> Result<Payment, Refusal> {
        use Refusal::Invalid;
        let requirements = request.payment_requirements;
        let payload = PaymentPayload::from_json(request.payment_payload.get().as_bytes())
            .map_err(|_| Invalid(reason::REQUIREMENTS_MALFORMED))?;
        if request.x402_version != X402_VERSION || payload.x402_version() != X402_VERSION {
            return Err(Invalid(reason::INVALID_VERSION));
        }
        let accepted = payload.accepted();
        if requirements.scheme != SCHEME || accepted.scheme != SCHEME {
            return Err(Invalid(reason::UNSUPPORTED_SCHEME));
        }
        let network = self.network.caip2();
        if requirements.network != network || accepted.network != network {
            return Err(Invalid(reason::INVALID_NETWORK));
        }
        let (asset, pay_to, amount) =
            parse_requirements(requirements).ok_or(Invalid(reason::REQUIREMENTS_MALFORMED))?;
        if !self.assets.contains(&asset) {
            return Err(Invalid(reason::UNSUPPORTED_ASSET));
        }
        let transaction = payload.transaction().ok_or(Invalid(reason::MALFORMED))?;
        let (transfer, payer_entry) = read_transfer(transaction).map_err(Invalid)?;
        {
            let is_facilitator = |address: &Address| self.sponsor.accounts().contains(address);
            let expected = Expected {
                network: self.network.id(),
                asset: &asset,
                pay_to: &pay_to,
                amount,
                is_facilitator: &is_facilitator,
            };
            check_transfer(&transfer, &payer_entry, &expected).map_err(Invalid)?;
        }
        if transfer.fee > self.max_fee {
            return Err(Invalid(reason::FEE_TOO_HIGH));
        }
        let expiration = address_credentials(&payer_entry)
            .map_err(|_| Invalid(reason::CREDENTIAL_TYPE))?
            .signature_expiration_ledger;
        let latest = self.rpc.latest_ledger().await?.sequence;
        let max_ledgers = requirements.max_timeout_seconds.div_ceil(LEDGER_SECONDS);
        if expiration <= latest {
            return Err(Invalid(reason::EXPIRED));
        }
        if u64::from(expiration) > u64::from(latest) + max_ledgers {
            return Err(Invalid(reason::EXPIRATION_TOO_FAR));
        }
        Ok(Payment {
            envelope_fee: transfer.fee,
            transfer,
            expiration,
            max_timeout_seconds: requirements.max_timeout_seconds,
        })
    }

    /// Simulates `envelope` and checks it moves exactly the payment.
    async fn simulate(
        &self,
        envelope: &TransactionEnvelope,
        payment: &Payment,
    ) -> Result<Simulation, Refusal> {
        let simulation = self.rpc.simulate_transaction(envelope).await?;
        if !simulation.is_success() {
            tracing::debug!(error = ?simulation.error, "payment simulation failed");
            return Err(Refusal::Invalid(reason::SIMULATION_FAILED));
        }
        check_events(&simulation.events, &payment.transfer).map_err(Refusal::Invalid)?;
        Ok(simulation)
    }

    async fn verify(&self, request: &FacilitatorRequest<'_>) -> Result<Payment, Refusal> {
        let payment = self.validate(request).await?;
        let envelope = client_envelope(request)?;
        let simulation = self.simulate(&envelope, &payment).await?;
        if i64::from(payment.envelope_fee) < simulation.min_resource_fee {
            return Err(Refusal::Invalid(reason::FEE_TOO_LOW));
        }
        Ok(payment)
    }

    async fn settle(&self, request: &FacilitatorRequest<'_>) -> Result<SettleResponse, Refusal> {
        let payment = self.validate(request).await?;
        let transfer = &payment.transfer;
        let call = SponsoredCall {
            host_function: HostFunction::InvokeContract(transfer.invocation.clone()),
            auth: transfer.auth.clone(),
            valid_for: Duration::from_secs(payment.max_timeout_seconds.max(LEDGER_SECONDS * 2)),
        };
        let check = |simulation: &Simulation| check_events(&simulation.events, transfer);
        let sponsored = self
            .sponsor
            .submit(&call, &check)
            .await
            .map_err(|error| match error {
                SponsorError::Refused(reason) => Refusal::Invalid(reason),
                SponsorError::Simulation(_) => Refusal::Invalid(reason::SIMULATION_FAILED),
                SponsorError::FeeTooHigh => Refusal::Invalid(reason::FEE_TOO_HIGH),
                SponsorError::Rpc(error) => Refusal::Rpc(error),
                SponsorError::Unknown(error) => Refusal::Unknown(error),
                other => {
                    tracing::warn!(%other, "settlement not submitted");
                    Refusal::Invalid(reason::SUBMISSION_FAILED)
                }
            })?;
        let (hash, status) = (sponsored.hash, sponsored.status);
        let payer = Some(payment.transfer.from.to_string());
        let network = self.network.caip2().to_owned();
        tracing::debug!(expiration = payment.expiration, %hash, "settled");
        Ok(match status {
            TransactionStatus::Success => SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                payer,
                transaction: hash.to_string(),
                network,
                amount: Some(payment.transfer.amount.to_string()),
            },
            TransactionStatus::Failed | TransactionStatus::NotFound => SettleResponse {
                success: false,
                error_reason: Some(reason::TRANSACTION_FAILED.into()),
                error_message: None,
                payer,
                transaction: hash.to_string(),
                network,
                amount: None,
            },
        })
    }
}

fn parse_requirements(requirements: &PaymentRequirements) -> Option<(Address, Address, i128)> {
    let sponsored = requirements.extra.get("areFeesSponsored")?.as_bool()?;
    if !sponsored {
        return None;
    }
    let asset = requirements.asset.parse().ok()?;
    let pay_to = requirements.pay_to.parse().ok()?;
    let amount = Amount::parse_atomic(&requirements.amount).ok()?.atomic();
    Some((asset, pay_to, amount))
}

fn client_envelope(request: &FacilitatorRequest<'_>) -> Result<TransactionEnvelope, Refusal> {
    let payload = PaymentPayload::from_json(request.payment_payload.get().as_bytes())
        .map_err(|_| Refusal::Invalid(reason::REQUIREMENTS_MALFORMED))?;
    let transaction = payload
        .transaction()
        .ok_or(Refusal::Invalid(reason::MALFORMED))?;
    crate::stellar::decode_envelope(transaction).map_err(|_| Refusal::Invalid(reason::MALFORMED))
}

/// Exactly one contract event, the asset's `transfer(from, to, amount)`; nothing else moved.
fn check_events(events: &[DiagnosticEvent], transfer: &SacTransfer) -> Result<(), &'static str> {
    check_transfer_events(events, transfer).map_err(|error| match error {
        TransferEventError::NoTransfer => reason::NO_TRANSFER_EVENTS,
        TransferEventError::MultipleTransfers => reason::MULTIPLE_TRANSFERS,
        TransferEventError::Unexpected => reason::UNEXPECTED_EVENTS,
        TransferEventError::WrongFrom => reason::EVENT_WRONG_FROM,
        TransferEventError::WrongTo => reason::EVENT_WRONG_TO,
        TransferEventError::WrongAmount => reason::EVENT_WRONG_AMOUNT,
    })
}

/// An RPC failure before anything was submitted: nothing happened.
fn facilitator_error(error: &RpcError) -> FacilitatorError {
    match error {
        RpcError::Timeout | RpcError::NotFinal(_) => FacilitatorError::Timeout,
        other if other.is_unavailable() => FacilitatorError::Unreachable(other.to_string()),
        other => FacilitatorError::Malformed(other.to_string()),
    }
}

/// An RPC failure after a submission: nobody knows whether the money moved.
fn unknown_outcome(error: &RpcError) -> FacilitatorError {
    tracing::warn!(%error, "settlement outcome unknown");
    match error {
        RpcError::Timeout | RpcError::NotFinal(_) => FacilitatorError::Timeout,
        other => FacilitatorError::Interrupted(other.to_string()),
    }
}

impl Facilitator for LocalFacilitator {
    fn verify<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        Box::pin(async move {
            match self.inner.verify(request).await {
                Ok(payment) => Ok(VerifyResponse {
                    is_valid: true,
                    invalid_reason: None,
                    invalid_message: None,
                    payer: Some(payment.transfer.from.to_string()),
                }),
                Err(Refusal::Invalid(code)) => Ok(VerifyResponse {
                    is_valid: false,
                    invalid_reason: Some(code.into()),
                    invalid_message: None,
                    payer: None,
                }),
                Err(Refusal::Rpc(error) | Refusal::Unknown(error)) => {
                    Err(facilitator_error(&error))
                }
            }
        })
    }

    fn settle<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        Box::pin(async move {
            match self.inner.settle(request).await {
                Ok(answer) => Ok(answer),
                Err(Refusal::Invalid(code)) => Ok(SettleResponse {
                    success: false,
                    error_reason: Some(code.into()),
                    error_message: None,
                    payer: None,
                    transaction: String::new(),
                    network: self.inner.network.caip2().to_owned(),
                    amount: None,
                }),
                Err(Refusal::Rpc(error)) => Err(facilitator_error(&error)),
                Err(Refusal::Unknown(error)) => Err(unknown_outcome(&error)),
            }
        })
    }

    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        let supported = self.inner.supported.clone();
        Box::pin(async move { Ok(supported) })
    }
}

impl std::fmt::Debug for LocalFacilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFacilitator")
            .field("network", &self.inner.network.caip2())
            .field("accounts", &self.inner.sponsor.accounts())
            .field("assets", &self.inner.assets)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::xdr::{
        ContractEvent, ContractEventV0, ContractId, ExtensionPoint, Hash, Int128Parts,
    };
    use crate::stellar::xdr::{ContractEventBody, ContractEventType, ScMapEntry, ScSymbol, ScVal};
    use crate::stellar::{CredentialsArm, TransferRequest, build_transfer, sac_transfer};

    fn transfer() -> SacTransfer {
        let envelope = build_transfer(&TransferRequest {
            source: Keypair::from_seed([7; 32]).address(),
            sequence: 1,
            fee: 100,
            contract: Network::testnet().usdc().unwrap(),
            from: Keypair::from_seed([7; 32]).address(),
            to: Keypair::from_seed([8; 32]).address(),
            amount: 10_000,
            nonce: 1,
            signature_expiration_ledger: 0,
            max_time: 0,
            credentials: CredentialsArm::Address,
        })
        .unwrap();
        sac_transfer(&envelope).unwrap()
    }

    fn event(contract: &Address, topics: Vec<ScVal>, data: ScVal) -> DiagnosticEvent {
        let Address::Contract(id) = contract else {
            unreachable!()
        };
        DiagnosticEvent {
            in_successful_contract_call: true,
            event: ContractEvent {
                ext: ExtensionPoint::V0,
                contract_id: Some(ContractId(Hash(*id))),
                type_: ContractEventType::Contract,
                body: ContractEventBody::V0(ContractEventV0 {
                    topics: topics.try_into().unwrap(),
                    data,
                }),
            },
        }
    }

    fn symbol(name: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(name.try_into().unwrap()))
    }

    fn amount(value: i128) -> ScVal {
        ScVal::I128(Int128Parts {
            hi: (value >> 64) as i64,
            lo: value as u64,
        })
    }

    fn transfer_event(
        transfer: &SacTransfer,
        from: &Address,
        to: &Address,
        value: i128,
    ) -> DiagnosticEvent {
        let topics = vec![
            symbol("transfer"),
            ScVal::Address(from.to_sc_address()),
            ScVal::Address(to.to_sc_address()),
            ScVal::String(crate::stellar::xdr::ScString("USDC:G…".try_into().unwrap())),
        ];
        event(&transfer.contract, topics, amount(value))
    }

    #[test]
    fn exactly_one_matching_transfer_event_passes() {
        let t = transfer();
        let good = transfer_event(&t, &t.from, &t.to, t.amount);
        assert_eq!(check_events(std::slice::from_ref(&good), &t), Ok(()));
        // Diagnostic (non-contract) events are ignored.
        let mut diagnostic = good.clone();
        diagnostic.event.type_ = ContractEventType::Diagnostic;
        diagnostic.event.contract_id = None;
        assert_eq!(
            check_events(&[diagnostic.clone(), good.clone()], &t),
            Ok(())
        );
        // A muxed recipient's amount comes in a map.
        let mut muxed = good.clone();
        let ContractEventBody::V0(body) = &mut muxed.event.body;
        body.data = ScVal::Map(Some(
            vec![ScMapEntry {
                key: symbol("amount"),
                val: amount(t.amount),
            }]
            .try_into()
            .unwrap(),
        ));
        assert_eq!(check_events(&[muxed], &t), Ok(()));
    }

    #[test]
    fn every_other_event_shape_is_refused() {
        let t = transfer();
        let other = Keypair::from_seed([9; 32]).address();
        let good = transfer_event(&t, &t.from, &t.to, t.amount);
        assert_eq!(check_events(&[], &t), Err(reason::NO_TRANSFER_EVENTS));
        assert_eq!(
            check_events(&[good.clone(), good.clone()], &t),
            Err(reason::MULTIPLE_TRANSFERS)
        );
        let foreign = Network::testnet().native_asset_contract();
        let mut elsewhere = good.clone();
        elsewhere.event.contract_id = event(&foreign, vec![], ScVal::Void).event.contract_id;
        assert_eq!(
            check_events(&[good.clone(), elsewhere], &t),
            Err(reason::UNEXPECTED_EVENTS)
        );
        let mint = event(&t.contract, vec![symbol("mint")], amount(1));
        assert_eq!(
            check_events(&[good, mint], &t),
            Err(reason::UNEXPECTED_EVENTS)
        );
        let cases = [
            (
                transfer_event(&t, &other, &t.to, t.amount),
                reason::EVENT_WRONG_FROM,
            ),
            (
                transfer_event(&t, &t.from, &other, t.amount),
                reason::EVENT_WRONG_TO,
            ),
            (
                transfer_event(&t, &t.from, &t.to, t.amount + 1),
                reason::EVENT_WRONG_AMOUNT,
            ),
        ];
        for (event, code) in cases {
            assert_eq!(check_events(&[event], &t), Err(code));
        }
    }

    #[test]
    fn the_builder_checks_its_settings() {
        struct NoRpc;
        impl SorobanRpc for NoRpc {
            fn health(&self) -> BoxFuture<'_, Result<crate::stellar::rpc::Health, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn network(&self) -> BoxFuture<'_, Result<crate::stellar::rpc::NetworkInfo, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn latest_ledger(
                &self,
            ) -> BoxFuture<'_, Result<crate::stellar::rpc::LatestLedger, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn simulate_transaction<'a>(
                &'a self,
                _: &'a TransactionEnvelope,
            ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn send_transaction<'a>(
                &'a self,
                _: &'a TransactionEnvelope,
            ) -> BoxFuture<'a, Result<crate::stellar::rpc::SendResult, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn transaction<'a>(
                &'a self,
                _: &'a crate::stellar::TransactionHash,
            ) -> BoxFuture<'a, Result<crate::stellar::rpc::TransactionInfo, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn ledger_entries<'a>(
                &'a self,
                _: &'a [crate::stellar::xdr::LedgerKey],
            ) -> BoxFuture<'a, Result<crate::stellar::rpc::LedgerEntries, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
            fn events<'a>(
                &'a self,
                _: &'a crate::stellar::rpc::EventsRequest,
            ) -> BoxFuture<'a, Result<crate::stellar::rpc::Events, RpcError>> {
                Box::pin(async { Err(RpcError::Timeout) })
            }
        }
        let key = || Keypair::from_seed([9; 32]);
        let custom = Network::custom("stellar:local", "Local network").unwrap();
        let no_asset = LocalFacilitator::builder(NoRpc, custom, key()).build();
        assert_eq!(no_asset.unwrap_err(), LocalFacilitatorError::NoAsset);
        let account = LocalFacilitator::builder(NoRpc, Network::testnet(), key())
            .asset(key().address())
            .build();
        assert_eq!(
            account.unwrap_err(),
            LocalFacilitatorError::AssetNotContract
        );
        let fee = LocalFacilitator::builder(NoRpc, Network::testnet(), key())
            .max_fee(99)
            .build();
        assert_eq!(fee.unwrap_err(), LocalFacilitatorError::MaxFee);
        let facilitator = LocalFacilitator::builder(NoRpc, Network::testnet(), key())
            .build()
            .unwrap();
        assert_eq!(facilitator.fee_payer(), key().address());
        let supported = block_on(facilitator.supported());
        assert_eq!(
            supported.signers_for("stellar:testnet").collect::<Vec<_>>(),
            vec![key().address().to_string().as_str()]
        );
        assert_eq!(
            supported.fees_sponsored("exact", "stellar:testnet"),
            Some(true)
        );
    }

    fn block_on(
        future: BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>>,
    ) -> Arc<SupportedResponse> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
            .unwrap()
    }
}
