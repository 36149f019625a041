//! [`StellarCharge`]: the MPP `charge` intent with method `stellar` as a
//! [`PaymentScheme`]: the server settles the client's SAC transfer itself,
//! through Soroban RPC.
//!
//! | credential `payload.type` | what the client did | what the server does |
//! |---|---|---|
//! | `transaction` (pull) | signed a transfer transaction, its own account the source | simulates it (exactly one `transfer` event of the price to the recipient), submits it unmodified, waits until final |
//! | `signedHash` (push) | submitted the transfer itself, then signed `"{challenge id}:{hash}"` | reads the transaction (`SUCCESS`, one transfer of the price from the signer to the recipient), checks the signature |
//! | `hash` (push, memo-bound; opt-in with [`StellarChargeBuilder::memo_push`]) | paid native XLM with a classic `payment` whose memo is `MEMO_HASH(sha256(challenge id))` | reads the transaction (`SUCCESS`, one payment of the price in lumens from the payer to the recipient, that memo) |
//!
//! A challenge is single-use (the layer reserves each challenge id), and so is each transaction
//! hash (claimed in the layer's store), so one on-chain payment never pays twice. A challenge is
//! bound to the request it was issued for: its `opaque` carries `route`, a digest of the method
//! and path (not the query), inside what the challenge id's HMAC covers, and a credential
//! presented on another method or path is `invalid-challenge` (for `channel` too). RPC outages
//! answer 503, never 402.
//!
//! Refusals carry the core draft's problem types, as the official server sends them. The
//! payload's shape is checked first, as mppx's schema is before the method's checks: a payload
//! without the method's shape (an unknown `type`, a missing or malformed field) is
//! `invalid-payload`. A credential of the method's shape that then fails a check is
//! `verification-failed`, as the Stellar charge draft asks of every failed check; that includes
//! a push this server does not take (any `signedHash` or `hash` while it sponsors fees, which the
//! draft forbids, and `hash` unless memo-bound pushes are on) and a `source` that is not a
//! `did:pkh` account on this network.
//!
//! An accepted credential presented again gets the recorded answer (the same 200, body and
//! `Payment-Receipt`) without a second settlement, so a client whose answer was lost is served
//! by its retry. The official server answers such a retry with a fresh 402
//! (`invalid-challenge`), which leaves that client paid and unserved.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::binding::ChallengeKeys;
use super::expires::{DEFAULT_CHALLENGE_TTL, Timestamp};
use super::problem::ProblemCode;
use super::server::{self, Issuer, busy, problem, unavailable};
use crate::BoxFuture;
use crate::price::Price;
use crate::scheme::{
    Challenge, ChallengeContext, Credential, Intent, Offer, PaymentContext, PaymentScheme, Receipt,
    Rejection, SettleOutcome, Verified,
};
use crate::stellar::rpc::{
    SendStatus, SorobanRpc, TransactionHash, TransactionStatus, wait_for_transaction,
};
use crate::stellar::xdr::HostFunction;
use crate::stellar::xdr::TransactionEnvelope;
use crate::stellar::{
    Address, AuthorizedTransfer, LedgerFinding, Network, SacTransfer, SettlementEvidence,
    check_transfer_events, decode_envelope, sac_transfer, verify_ed25519,
};
use crate::stellar::{
    NULL_ACCOUNT, Sponsor, SponsorError, SponsoredCall, address_credentials, verify_authorization,
};
use crate::store::{Fingerprint, PaymentKey, PaymentStore, Reservation};

const INTENT: &str = "charge";
/// How long single-use claims on transaction hashes are kept.
const CLAIM_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a pull settlement waits for its transaction to be final.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// The MPP `charge` intent on Stellar (see the [module docs](self)).
pub struct StellarCharge {
    network: Network,
    currency: Address,
    recipient: Address,
    realm: Option<String>,
    keys: ChallengeKeys,
    rpc: Arc<dyn SorobanRpc>,
    ttl: Duration,
    memo_push: bool,
    sponsor: Option<Arc<Sponsor>>,
}

/// Builds a [`StellarCharge`].
#[must_use]
pub struct StellarChargeBuilder {
    network: Network,
    recipient: Address,
    keys: ChallengeKeys,
    rpc: Arc<dyn SorobanRpc>,
    currency: Option<Address>,
    realm: Option<String>,
    ttl: Duration,
    memo_push: bool,
    sponsor: Option<Arc<Sponsor>>,
}

/// Why a [`StellarChargeBuilder`] refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StellarChargeError {
    /// No currency was set and the network has no known USDC contract.
    #[error("no currency set, and the network has no known USDC contract")]
    NoCurrency,
    /// The currency is not a contract address.
    #[error("the currency must be a contract (C…) address")]
    CurrencyNotContract,
    /// The recipient is not an account or contract address.
    #[error("the recipient must be a G… or C… address")]
    Recipient,
    /// The memo-bound push needs native XLM as the currency.
    #[error("the memo-bound push takes native XLM: set the currency to the XLM contract")]
    MemoPushCurrency,
    /// The challenge lifetime is zero or above one hour.
    #[error("the challenge lifetime must be between 1 s and 1 h")]
    Ttl,
}

impl StellarCharge {
    /// Starts a builder: charges paid to `recipient` on `network`, checked and settled through
    /// `rpc`, with challenge ids bound by `keys`.
    pub fn builder(
        network: Network,
        recipient: Address,
        rpc: Arc<dyn SorobanRpc>,
        keys: ChallengeKeys,
    ) -> StellarChargeBuilder {
        StellarChargeBuilder {
            network,
            recipient,
            keys,
            rpc,
            currency: None,
            realm: None,
            ttl: DEFAULT_CHALLENGE_TTL,
            memo_push: false,
            sponsor: None,
        }
    }
}

impl StellarChargeBuilder {
    /// The token contract charged in (default: the network's USDC).
    pub fn currency(mut self, currency: Address) -> Self {
        self.currency = Some(currency);
        self
    }

    /// The protection space (default: the request's host).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// How long a challenge stays valid (default 5 minutes).
    pub fn challenge_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Also accepts the memo-bound push: a classic native `payment` of the price whose memo is
    /// `MEMO_HASH(sha256(challenge id))`, proven by its hash (`payload.type = "hash"`). The memo
    /// ties the transaction to one challenge. The currency must be the network's XLM contract.
    pub fn memo_push(mut self, enabled: bool) -> Self {
        self.memo_push = enabled;
        self
    }

    /// Sponsors the payers' fees (`methodDetails.feePayer: true`): clients sign the transfer's
    /// authorization only, from the all-zeros source, and `sponsor` submits it from its own
    /// accounts. Pushes are then refused (the client would pay its own fee).
    pub fn sponsor(mut self, sponsor: Arc<Sponsor>) -> Self {
        self.sponsor = Some(sponsor);
        self
    }

    /// Checks the settings and builds the scheme.
    pub fn build(self) -> Result<StellarCharge, StellarChargeError> {
        let currency = match self.currency {
            Some(currency) => currency,
            None => self.network.usdc().ok_or(StellarChargeError::NoCurrency)?,
        };
        if !currency.is_contract() {
            return Err(StellarChargeError::CurrencyNotContract);
        }
        if matches!(self.recipient, Address::MuxedAccount { .. }) {
            return Err(StellarChargeError::Recipient);
        }
        if self.ttl.is_zero() || self.ttl > Duration::from_secs(3600) {
            return Err(StellarChargeError::Ttl);
        }
        if self.memo_push && currency != self.network.native_asset_contract() {
            return Err(StellarChargeError::MemoPushCurrency);
        }
        Ok(StellarCharge {
            network: self.network,
            currency,
            recipient: self.recipient,
            realm: self.realm,
            keys: self.keys,
            rpc: self.rpc,
            ttl: self.ttl,
            memo_push: self.memo_push,
            sponsor: self.sponsor,
        })
    }
}

/// What a credential proves.
enum Proof {
    /// A signed transaction to submit.
    Pull(Box<TransactionEnvelope>),
    /// A confirmed transaction.
    Push(TransactionHash),
    /// An authorized transfer to submit from our accounts.
    Sponsored(Box<(SponsoredCall, SacTransfer)>),
}

struct ChargeVerified {
    proof: Proof,
    hash: TransactionHash,
    /// How to find the settlement on the ledger if its answer is lost.
    evidence: SettlementEvidence,
}

/// The credential `source` naming `payer` on `network`: `did:pkh:<network CAIP-2>:G…` (read
/// back by the server's payer check).
#[cfg(feature = "client")]
pub(crate) fn source_did(network: &Network, payer: &Address) -> String {
    format!("did:pkh:{}:{payer}", network.caip2())
}

/// The payload's `type`, once the payload has the shape the method defines for it (what mppx's
/// schema checks before the method's own): `transaction` with a string, `signedHash` with a
/// 64-hex `hash` and a 128-hex `sourceSignature`, `hash` with a 64-hex `hash`. Anything else is
/// `invalid-payload`; a well-formed payload that fails this server's checks is
/// `verification-failed`, as the Stellar charge draft asks of every failed check and as the
/// official server answers.
fn payload_kind(payload: &Map<String, Value>) -> Result<&'static str, Rejection> {
    let hex_of = |field: &str, len: usize| {
        payload
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|text| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let kind = match payload.get("type").and_then(Value::as_str) {
        Some("transaction") if payload.get("transaction").is_some_and(Value::is_string) => {
            "transaction"
        }
        Some("signedHash") if hex_of("hash", 64) && hex_of("sourceSignature", 128) => "signedHash",
        Some("hash") if hex_of("hash", 64) => "hash",
        _ => return Err(problem(ProblemCode::InvalidPayload)),
    };
    Ok(kind)
}

/// What a `signedHash` push signs: `"{challenge id}:{lowercase hash}"`.
pub(crate) fn push_message(challenge_id: &str, hash: &TransactionHash) -> String {
    format!("{challenge_id}:{hash}")
}

impl StellarCharge {
    /// The challenge request for `price`.
    fn request(&self, price: &Price) -> Map<String, Value> {
        let mut details = json!({ "network": self.network.caip2() });
        let types = if self.sponsor.is_some() {
            details["feePayer"] = json!(true);
            json!(["transaction"])
        } else if self.memo_push {
            json!(["transaction", "signedHash", "hash"])
        } else {
            json!(["transaction", "signedHash"])
        };
        details["credentialTypes"] = types;
        let request = json!({
            "amount": price.amount().to_atomic_string(),
            "currency": self.currency.to_string(),
            "recipient": self.recipient.to_string(),
            "methodDetails": details,
        });
        match request {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// The payer a `did:pkh:stellar:<network>:G…` source names, on our network; any other
    /// source fails verification (as the official server answers it).
    fn payer(&self, source: Option<&str>) -> Result<Address, Rejection> {
        let invalid = || problem(ProblemCode::VerificationFailed);
        let source = source.ok_or_else(invalid)?;
        let rest = source
            .strip_prefix("did:pkh:stellar:")
            .ok_or_else(invalid)?;
        let (network, account) = rest.split_once(':').ok_or_else(invalid)?;
        if format!("stellar:{network}") != self.network.caip2() {
            return Err(invalid());
        }
        let payer: Address = account.parse().map_err(|_| invalid())?;
        if !matches!(payer, Address::Account(_)) {
            return Err(invalid());
        }
        Ok(payer)
    }

    fn issuer(&self) -> Issuer<'_> {
        Issuer {
            keys: &self.keys,
            realm: self.realm.as_deref(),
            intent: INTENT,
            ttl: self.ttl,
        }
    }

    /// The transfer is exactly the price, in our currency, from the payer to our recipient.
    fn check_transfer(&self, transfer: &SacTransfer, payer: &Address, price: &Price) -> bool {
        transfer.contract == self.currency
            && transfer.to == self.recipient
            && transfer.from == *payer
            && transfer.amount == price.amount().atomic()
    }

    async fn verify_pull(
        &self,
        transaction: &str,
        payer: &Address,
        expires: Option<Timestamp>,
        price: &Price,
    ) -> Result<ChargeVerified, Rejection> {
        let failed = || problem(ProblemCode::VerificationFailed);
        let envelope = decode_envelope(transaction).map_err(|_| failed())?;
        let transfer = sac_transfer(&envelope).map_err(|_| failed())?;
        if transfer.fee_bump || !self.check_transfer(&transfer, payer, price) {
            return Err(failed());
        }
        if let Some(sponsor) = &self.sponsor {
            if transfer.tx_source == NULL_ACCOUNT {
                return self
                    .verify_sponsored(sponsor, envelope, transfer, expires)
                    .await;
            }
            // Our own account as the source would make us pay, and sign, for the payer.
            let ours = sponsor.accounts();
            if ours.contains(&transfer.tx_source)
                || transfer
                    .op_source
                    .as_ref()
                    .is_some_and(|source| ours.contains(source))
            {
                return Err(failed());
            }
        }
        let max_time = match &envelope {
            TransactionEnvelope::Tx(v1) => match &v1.tx.cond {
                crate::stellar::xdr::Preconditions::Time(bounds) => Some(bounds.max_time.0),
                _ => None,
            },
            _ => None,
        };
        let deadline = expires.map(|at| u64::try_from(at.unix_millis() / 1000).unwrap_or(0));
        if let (Some(max_time), Some(deadline)) = (max_time, deadline)
            && (max_time == 0 || max_time > deadline)
        {
            return Err(failed());
        }
        self.simulate_transfer(&envelope, &transfer).await?;
        let hash = TransactionHash::of(&envelope, &self.network.id()).map_err(|_| failed())?;
        Ok(ChargeVerified {
            proof: Proof::Pull(Box::new(envelope)),
            hash,
            evidence: SettlementEvidence::Transaction {
                hash,
                valid_until: max_time.filter(|max_time| *max_time > 0),
            },
        })
    }

    /// Simulates the transaction: it must succeed with exactly the one transfer `transfer` names.
    async fn simulate_transfer(
        &self,
        envelope: &TransactionEnvelope,
        transfer: &SacTransfer,
    ) -> Result<(), Rejection> {
        let simulation = self
            .rpc
            .simulate_transaction(envelope)
            .await
            .map_err(|e| unavailable(&e))?;
        if !simulation.is_success() || check_transfer_events(&simulation.events, transfer).is_err()
        {
            return Err(problem(ProblemCode::VerificationFailed));
        }
        Ok(())
    }

    /// A sponsored pull: the payer signed the transfer's authorization only; we submit it.
    async fn verify_sponsored(
        &self,
        sponsor: &Sponsor,
        envelope: TransactionEnvelope,
        transfer: SacTransfer,
        expires: Option<Timestamp>,
    ) -> Result<ChargeVerified, Rejection> {
        let failed = || problem(ProblemCode::VerificationFailed);
        let entry = transfer.payer_authorization().map_err(|_| failed())?;
        // Address credentials, signed by the payer's own key; none of ours anywhere.
        let signers = verify_authorization(&self.network.id(), entry).map_err(|_| failed())?;
        if !transfer
            .from
            .ed25519_key()
            .is_some_and(|key| signers.contains(&key))
        {
            return Err(failed());
        }
        let ours = sponsor.accounts();
        let in_auth = transfer.auth.iter().any(|entry| {
            address_credentials(entry)
                .ok()
                .and_then(|credentials| Address::from_sc_address(&credentials.address).ok())
                .is_some_and(|address| ours.contains(&address))
        });
        if ours.contains(&transfer.from) || in_auth {
            return Err(failed());
        }
        // Valid no longer than the challenge: expiration ≤ latest + ⌈(expires − now) / 5 s⌉.
        let expiration = address_credentials(entry)
            .map_err(|_| failed())?
            .signature_expiration_ledger;
        let latest = self
            .rpc
            .latest_ledger()
            .await
            .map_err(|e| unavailable(&e))?
            .sequence;
        let now_ms = Timestamp::now().unix_millis();
        let left_ms = expires.map_or(0, |at| at.unix_millis().saturating_sub(now_ms));
        let left_ms = u64::try_from(left_ms).unwrap_or(0);
        let max_ledgers = u32::try_from(left_ms.div_ceil(5_000)).unwrap_or(u32::MAX);
        if expiration <= latest || expiration > latest.saturating_add(max_ledgers) {
            return Err(failed());
        }
        self.simulate_transfer(&envelope, &transfer).await?;
        let hash = TransactionHash::of(&envelope, &self.network.id()).map_err(|_| failed())?;
        let call = SponsoredCall {
            host_function: HostFunction::InvokeContract(transfer.invocation.clone()),
            auth: transfer.auth.clone(),
            valid_for: SETTLE_DEADLINE,
        };
        // The payer's authorization is the one thing every submission of it consumes.
        let evidence = SettlementEvidence::Authorized(
            AuthorizedTransfer::of(&transfer, latest).map_err(|_| failed())?,
        );
        Ok(ChargeVerified {
            proof: Proof::Sponsored(Box::new((call, transfer))),
            hash,
            evidence,
        })
    }

    /// The transaction `payload.hash` names, confirmed (`SUCCESS`), with its envelope.
    async fn confirmed(
        &self,
        payload: &Map<String, Value>,
    ) -> Result<(TransactionHash, TransactionEnvelope), Rejection> {
        let hash: TransactionHash = payload
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| problem(ProblemCode::InvalidPayload))?
            .parse()
            .map_err(|_| problem(ProblemCode::InvalidPayload))?;
        let info = self
            .rpc
            .transaction(&hash)
            .await
            .map_err(|e| unavailable(&e))?;
        match (info.status, info.envelope) {
            (TransactionStatus::Success, Some(envelope)) => Ok((hash, envelope)),
            _ => Err(problem(ProblemCode::VerificationFailed)),
        }
    }

    async fn verify_push(
        &self,
        payload: &Map<String, Value>,
        challenge_id: &str,
        payer: &Address,
        price: &Price,
    ) -> Result<ChargeVerified, Rejection> {
        let failed = || problem(ProblemCode::VerificationFailed);
        let invalid = || problem(ProblemCode::InvalidPayload);
        let signature = payload
            .get("sourceSignature")
            .and_then(Value::as_str)
            .and_then(|text| <[u8; 64] as hex::FromHex>::from_hex(text).ok())
            .ok_or_else(invalid)?;
        let (hash, envelope) = self.confirmed(payload).await?;
        let transfer = sac_transfer(&envelope).map_err(|_| failed())?;
        if !self.check_transfer(&transfer, payer, price) {
            return Err(failed());
        }
        let key = payer.ed25519_key().ok_or_else(failed)?;
        let message = push_message(challenge_id, &hash);
        if !verify_ed25519(&key, message.as_bytes(), &signature) {
            return Err(failed());
        }
        Ok(ChargeVerified {
            proof: Proof::Push(hash),
            hash,
            evidence: SettlementEvidence::Transaction {
                hash,
                valid_until: None,
            },
        })
    }

    async fn verify_memo_push(
        &self,
        payload: &Map<String, Value>,
        challenge_id: &str,
        payer: &Address,
        price: &Price,
    ) -> Result<ChargeVerified, Rejection> {
        let failed = || problem(ProblemCode::VerificationFailed);
        let (hash, envelope) = self.confirmed(payload).await?;
        let memo: [u8; 32] = Sha256::digest(challenge_id.as_bytes()).into();
        let payment = native_payment(&envelope, &memo).ok_or_else(failed)?;
        let paid_right = payment.from == *payer
            && payment.to == self.recipient
            && i128::from(payment.amount) == price.amount().atomic();
        if !paid_right {
            return Err(failed());
        }
        Ok(ChargeVerified {
            proof: Proof::Push(hash),
            hash,
            evidence: SettlementEvidence::Transaction {
                hash,
                valid_until: None,
            },
        })
    }

    async fn submit(
        &self,
        envelope: &TransactionEnvelope,
        hash: &TransactionHash,
    ) -> SettleOutcome {
        let sent = match self.rpc.send_transaction(envelope).await {
            Ok(sent) => sent,
            Err(error) => return SettleOutcome::Unknown(unavailable(&error)),
        };
        match sent.status {
            SendStatus::Pending | SendStatus::Duplicate => {}
            SendStatus::TryAgainLater => return SettleOutcome::Rejected(busy()),
            SendStatus::Error => {
                return SettleOutcome::Rejected(problem(ProblemCode::SettlementFailed));
            }
        }
        match wait_for_transaction(&*self.rpc, hash, SETTLE_DEADLINE).await {
            Ok(info) if info.status == TransactionStatus::Success => {
                SettleOutcome::Settled(self.receipt(hash))
            }
            Ok(_) => SettleOutcome::Rejected(problem(ProblemCode::SettlementFailed)),
            Err(error) => SettleOutcome::Unknown(unavailable(&error)),
        }
    }

    async fn submit_sponsored(
        &self,
        call: &SponsoredCall,
        transfer: &SacTransfer,
    ) -> SettleOutcome {
        let Some(sponsor) = &self.sponsor else {
            return SettleOutcome::Rejected(problem(ProblemCode::SettlementFailed));
        };
        let check = |simulation: &crate::stellar::rpc::Simulation| {
            check_transfer_events(&simulation.events, transfer).map_err(|_| "unexpected events")
        };
        match sponsor.submit(call, &check).await {
            Ok(sponsored) if sponsored.status == TransactionStatus::Success => {
                SettleOutcome::Settled(self.receipt(&sponsored.hash))
            }
            Ok(_) => SettleOutcome::Rejected(problem(ProblemCode::SettlementFailed)),
            Err(SponsorError::Unknown(error)) => SettleOutcome::Unknown(unavailable(&error)),
            Err(SponsorError::Rpc(error)) => SettleOutcome::Rejected(unavailable(&error)),
            Err(error) => {
                tracing::warn!(%error, "sponsored settlement not submitted");
                SettleOutcome::Rejected(problem(ProblemCode::SettlementFailed))
            }
        }
    }

    fn receipt(&self, hash: &TransactionHash) -> Receipt {
        server::receipt(hash.to_string())
    }
}

/// A classic native payment.
struct NativePayment {
    from: Address,
    to: Address,
    amount: i64,
}

/// The single native `payment` of a v1 transaction whose memo is `MEMO_HASH(memo)`.
fn native_payment(envelope: &TransactionEnvelope, memo: &[u8; 32]) -> Option<NativePayment> {
    use crate::stellar::xdr::{Asset, Memo, OperationBody};
    let TransactionEnvelope::Tx(v1) = envelope else {
        return None;
    };
    let tx = &v1.tx;
    if !matches!(&tx.memo, Memo::Hash(hash) if hash.0 == *memo) {
        return None;
    }
    let [operation] = tx.operations.as_slice() else {
        return None;
    };
    let OperationBody::Payment(payment) = &operation.body else {
        return None;
    };
    if payment.asset != Asset::Native {
        return None;
    }
    let source = operation
        .source_account
        .as_ref()
        .unwrap_or(&tx.source_account);
    Some(NativePayment {
        from: Address::from_muxed_account(source),
        to: Address::from_muxed_account(&payment.destination),
        amount: payment.amount,
    })
}

impl PaymentScheme for StellarCharge {
    fn intent(&self) -> Intent {
        Intent::MPP_CHARGE
    }

    fn read(&self, headers: &HeaderMap) -> Option<Result<Credential, Rejection>> {
        server::read(headers, INTENT)
    }

    fn offer<'a>(
        &'a self,
        price: &'a Price,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Offer, Rejection>> {
        Box::pin(async move {
            let challenge = self.issuer().issue(price, request, &self.request(price))?;
            Ok(Offer::new(Intent::MPP_CHARGE, challenge))
        })
    }

    fn challenge(
        &self,
        offers: &[&Offer],
        context: &ChallengeContext<'_>,
        challenge: &mut Challenge,
    ) {
        server::render(offers, context, challenge);
    }

    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        context: PaymentContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, Rejection>> {
        Box::pin(async move {
            let mpp = server::credential(credential)?;
            let request = self.request(context.price);
            self.issuer()
                .check(&mpp.challenge, context.request, |echo| {
                    echo.request_json().is_ok_and(|echoed| echoed == request)
                })?;
            // The payload's shape first (mppx's schema check), then the method's checks.
            let payload = mpp
                .payload
                .as_object()
                .ok_or_else(|| problem(ProblemCode::InvalidPayload))?;
            let kind = payload_kind(payload)?;
            let payer = self.payer(mpp.source.as_deref())?;
            let verified = match kind {
                "transaction" => {
                    let transaction = payload
                        .get("transaction")
                        .and_then(Value::as_str)
                        .ok_or_else(|| problem(ProblemCode::InvalidPayload))?;
                    let expires = mpp.challenge.expires_at().ok().flatten();
                    self.verify_pull(transaction, &payer, expires, context.price)
                        .await?
                }
                // A push this server does not take: a well-formed credential failing its checks.
                "signedHash" | "hash" if self.sponsor.is_some() => {
                    return Err(problem(ProblemCode::VerificationFailed));
                }
                "hash" if !self.memo_push => {
                    return Err(problem(ProblemCode::VerificationFailed));
                }
                "signedHash" => {
                    self.verify_push(payload, &mpp.challenge.id, &payer, context.price)
                        .await?
                }
                _ => {
                    self.verify_memo_push(payload, &mpp.challenge.id, &payer, context.price)
                        .await?
                }
            };
            Ok(Verified::new(
                payer.to_string(),
                context.price.amount(),
                self.currency.to_string(),
                verified,
            ))
        })
    }

    /// A challenge answered by another credential before: it is used up.
    fn reused(&self) -> Rejection {
        problem(ProblemCode::InvalidChallenge)
    }

    fn settle(
        self: Arc<Self>,
        verified: Arc<Verified>,
        store: Arc<dyn PaymentStore>,
    ) -> BoxFuture<'static, SettleOutcome> {
        Box::pin(async move {
            let Some(detail) = verified.detail::<ChargeVerified>() else {
                return SettleOutcome::Rejected(problem(ProblemCode::VerificationFailed));
            };
            // One transaction pays for one challenge, whoever presents it.
            let claim = [b"mpp:stellar:tx:".as_slice(), &detail.hash.0].concat();
            match store.claim(&claim, CLAIM_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    return SettleOutcome::Rejected(problem(ProblemCode::VerificationFailed));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot claim a transaction hash");
                    return SettleOutcome::Rejected(busy());
                }
            }
            match &detail.proof {
                Proof::Push(hash) => SettleOutcome::Settled(self.receipt(hash)),
                Proof::Pull(envelope) => self.submit(envelope, &detail.hash).await,
                Proof::Sponsored(sponsored) => {
                    // The payer's authorization pays once, whoever presents it: reserve it as
                    // the payment it is (an x402 payment of it, or another challenge carrying
                    // it, then finds it taken), so only this settlement can consume its nonce.
                    let transfer = &sponsored.1;
                    let Ok((nonce, _)) = transfer.payer_nonce() else {
                        return SettleOutcome::Rejected(problem(ProblemCode::VerificationFailed));
                    };
                    let payer = transfer.from.to_string();
                    let key = PaymentKey::of_authorization(self.network.caip2(), &payer, nonce);
                    let holder = Fingerprint::of(b"mpp:stellar:sponsored");
                    match store.reserve(key, holder, CLAIM_TTL).await {
                        Ok(Reservation::New) => {}
                        Ok(_) => {
                            return SettleOutcome::Rejected(problem(
                                ProblemCode::VerificationFailed,
                            ));
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot reserve an authorization");
                            return SettleOutcome::Rejected(busy());
                        }
                    }
                    self.submit_sponsored(&sponsored.0, transfer).await
                }
            }
        })
    }

    /// A pull's transaction hash and time bounds; a sponsored pull's authorization (its nonce is
    /// consumed by whichever transaction of ours lands); a push's hash.
    fn evidence(&self, verified: &Verified) -> bytes::Bytes {
        verified
            .detail::<ChargeVerified>()
            .map(|detail| bytes::Bytes::from(detail.evidence.encode()))
            .unwrap_or_default()
    }

    fn reconcile<'a>(
        &'a self,
        pending: &'a crate::store::PendingSettlement,
    ) -> BoxFuture<'a, crate::scheme::Reconciled> {
        use crate::scheme::Reconciled;
        Box::pin(async move {
            let Ok(evidence) = SettlementEvidence::decode(&pending.evidence) else {
                return Reconciled::Unknown;
            };
            match evidence.find(&*self.rpc).await {
                LedgerFinding::Settled(hash) => Reconciled::Settled(self.receipt(&hash)),
                LedgerFinding::NotSettled => {
                    Reconciled::NotSettled(problem(ProblemCode::SettlementFailed))
                }
                LedgerFinding::Unknown => Reconciled::Unknown,
            }
        })
    }
}

impl std::fmt::Debug for StellarCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StellarCharge")
            .field("network", &self.network.caip2())
            .field("currency", &self.currency)
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}
