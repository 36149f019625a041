//! The Stellar engine: everything the payment intents need from Stellar, and nothing about them.
//!
//! This module knows Stellar, not x402 or MPP:
//! - [`Network`]: CAIP-2 names (`stellar:testnet`), passphrases and [`NetworkId`]s;
//! - [`Address`]: accounts (`G…`), contracts (`C…`) and muxed accounts (`M…`), as strkeys and as XDR;
//! - [`Keypair`]: ed25519 keys (`S…` seeds), signing, and [`verify_ed25519`];
//! - [`Amount`]: non-negative token amounts with 7 decimals, in wire (`"10000"`) and display (`"0.001"`)
//!   form;
//! - [`stellar_asset_contract`]: the contract id of a classic asset's Stellar Asset Contract, with the
//!   well-known USDC and XLM ids;
//! - [`auth`]: Soroban authorization entries: the signature payload, signing, offline verification;
//! - [`channel`]: the one-way payment channel contract's signed commitment ([`commitment_bytes`]);
//! - [`transfer`]: SAC `transfer(from, to, amount)` transactions: decoding untrusted envelopes within
//!   explicit XDR limits, checking their shape and authorization, building and signing them;
//! - `rpc` (feature `rpc`): the [`SorobanRpc`] trait over Soroban RPC, [`JsonRpcClient`], and
//!   helpers such as [`wait_for_transaction`];
//! - `evidence` (feature `rpc`): [`SettlementEvidence`], how to find a payment on the ledger
//!   after the answer to its settlement was lost.
//!
//! Checks here are the ones that need no ledger. Balances, nonces, expiration and fees are ledger state,
//! left to a simulation or a submission.
//!
//! A payer builds and signs a transfer; a server decodes it, reads it and verifies the signature:
//!
//! ```
//! use tower_paywall::stellar::{
//!     Address, CredentialsArm, Keypair, Network, TransferRequest, build_transfer, decode_envelope,
//!     sac_transfer, sign_payer, verify_authorization, xdr::{Limits, WriteXdr},
//! };
//!
//! let network = Network::testnet();
//! let payer = Keypair::from_seed([1; 32]);
//! let pay_to: Address = "GCATS5YOVB6ROX2WUNKGNQ2MP3GMXDMKSG2O4N5CLX3A6W4PZGZZI55U".parse()?;
//! let usdc = network.usdc().expect("testnet has USDC");
//!
//! // The payer (the nonce and the resources normally come from a simulation).
//! let mut envelope = build_transfer(&TransferRequest {
//!     source: payer.address(),
//!     sequence: 1,
//!     fee: 100,
//!     contract: usdc,
//!     from: payer.address(),
//!     to: pay_to,
//!     amount: 10_000,
//!     nonce: 42,
//!     signature_expiration_ledger: 1_000,
//!     max_time: 1_700_000_000,
//!     credentials: CredentialsArm::Address,
//! })?;
//! sign_payer(&mut envelope, &payer, &network.id(), 1_000)?;
//! let base64 = envelope.to_xdr_base64(Limits::none())?;
//!
//! // The server.
//! let transfer = sac_transfer(&decode_envelope(&base64)?)?;
//! assert_eq!((transfer.contract, transfer.to, transfer.amount), (usdc, pay_to, 10_000));
//! let signers = verify_authorization(&network.id(), transfer.payer_authorization()?)?;
//! assert_eq!(signers, vec![payer.public_key()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod address;
pub mod amount;
pub mod asset;
pub mod auth;
pub mod channel;
pub mod events;
#[cfg(feature = "rpc")]
pub mod evidence;
pub mod keypair;
#[cfg(feature = "rpc")]
mod ledger_watch;
pub mod network;
#[cfg(feature = "rpc")]
pub mod prepare;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod signer;
#[cfg(feature = "rpc")]
pub mod sponsor;
pub mod transfer;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError};
pub use asset::{
    USDC_ISSUER_PUBNET, USDC_ISSUER_TESTNET, USDC_PUBNET, USDC_TESTNET, XLM_PUBNET, XLM_TESTNET,
    stellar_asset_contract,
};
pub use auth::{
    AccountSignature, AuthError, MAX_ACCOUNT_SIGNATURES, account_signatures, address_credentials,
    authorization_payload, authorization_preimage, encode_account_signatures, sign_authorization,
    sign_authorization_by, verify_authorization,
};
pub use channel::{COMMITMENT_LEN, CommitmentError, commitment_bytes};
#[cfg(feature = "rpc")]
pub use channel::{ChannelFunction, ChannelInfo, ChannelReadError, channel_call, read_channel};
pub use events::{TransferEventError, check_transfer_events};
#[cfg(feature = "rpc")]
pub use evidence::{AuthorizedTransfer, EvidenceError, LedgerFinding, SettlementEvidence};
pub use keypair::{Keypair, KeypairError, VerifyingKey, verify_ed25519};
pub use network::{Network, NetworkError, NetworkId};
#[cfg(feature = "rpc")]
pub use prepare::{Invocation, PrepareError, TransferOrder, prepare_invocation, prepare_transfer};
#[cfg(feature = "rpc")]
pub use rpc::{
    EventFilter, EventInfo, EventKind, Events, EventsRequest, Health, HostFunctionResult,
    JsonRpcClient, JsonRpcClientBuilder, LatestLedger, LedgerEntries, LedgerEntryResult,
    NetworkInfo, RestorePreamble, RpcBuildError, RpcError, SendResult, SendStatus, Simulation,
    SorobanRpc, TopicMatch, TransactionHash, TransactionHashError, TransactionInfo,
    TransactionStatus, account_sequence, contract_data, wait_for_transaction,
};
pub use signer::{CallbackSigner, SignError, Signer};
#[cfg(feature = "rpc")]
pub use sponsor::{Sponsor, SponsorError, Sponsored, SponsoredCall};
pub use stellar_xdr as xdr;
pub use transfer::{
    CredentialsArm, MAX_ENVELOPE_BYTES, MAX_XDR_DEPTH, NULL_ACCOUNT, SacTransfer, TransferError,
    TransferRequest, build_transfer, decode_envelope, decode_limits, fee_bump, invocation_envelope,
    sac_transfer, set_authorization, sign_envelope, sign_envelope_by, sign_payer,
};
