//! Soroban RPC (Stellar RPC): the [`SorobanRpc`] trait, [`JsonRpcClient`] (JSON-RPC 2.0 over
//! reqwest), and helpers built on the trait.
//!
//! [`SorobanRpc`] covers the methods the payment intents and the official clients use:
//! `getHealth`, `getNetwork`, `getLatestLedger`, `simulateTransaction`, `sendTransaction`,
//! `getTransaction`, `getLedgerEntries` and `getEvents`. Results are typed, and every XDR field
//! is decoded (within explicit XDR limits) before it is handed over: a server sending undecodable
//! XDR gets [`RpcError::Malformed`], never a half-read answer.
//!
//! On top of the trait: [`wait_for_transaction`] (polls `getTransaction` until the transaction
//! is final), [`account_sequence`] and [`contract_data`] (one `getLedgerEntries` each).
//!
//! The module is laid out by concept: the answers of the server's own state (`getHealth`,
//! `getNetwork`, `getLatestLedger`), of simulation, of transactions, of ledger entries and of
//! events each have a file; the client and its transport are one more, and the JSON wire
//! shapes and their decoding into the typed answers another.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tower_paywall::stellar::{JsonRpcClient, SorobanRpc};
//!
//! let rpc: Arc<dyn SorobanRpc> =
//!     Arc::new(JsonRpcClient::builder("https://soroban-testnet.stellar.org").build()?);
//! let ledger = rpc.latest_ledger().await?;
//! println!("latest ledger: {}", ledger.sequence);
//! # Ok(()) }
//! ```

mod client;
mod entries;
mod error;
mod events;
pub(crate) mod helpers;
mod info;
mod simulation;
#[cfg(test)]
mod testing;
mod transaction;
mod wire;

use std::sync::Arc;

use stellar_xdr::{LedgerKey, TransactionEnvelope};

use crate::BoxFuture;

pub use client::{JsonRpcClient, JsonRpcClientBuilder, RpcBuildError};
pub use entries::{LedgerEntries, LedgerEntryResult};
pub use error::RpcError;
pub use events::{
    DEFAULT_EVENTS_LIMIT, EventFilter, EventInfo, EventKind, Events, EventsRequest,
    MAX_EVENT_FILTERS, MAX_EVENTS_LIMIT, MAX_FILTER_CONTRACTS, MAX_TOPIC_FILTERS,
    MAX_TOPIC_SEGMENTS, TopicMatch,
};
pub use helpers::{account_sequence, contract_data, wait_for_transaction};
pub use info::{Health, LatestLedger, NetworkInfo};
pub use simulation::{HostFunctionResult, RestorePreamble, Simulation};
pub use transaction::{
    SendResult, SendStatus, TransactionHash, TransactionHashError, TransactionInfo,
    TransactionStatus,
};

/// A Soroban RPC server: the methods payment flows need, with typed, decoded results.
///
/// Object-safe; schemes hold one as `Arc<dyn SorobanRpc>`. [`JsonRpcClient`] talks to a real
/// server; tests and in-process ledgers may implement it directly.
pub trait SorobanRpc: Send + Sync + 'static {
    /// `getHealth`: whether the server is healthy, and the ledgers it keeps.
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>>;

    /// `getNetwork`: the network's passphrase and protocol version.
    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>>;

    /// `getLatestLedger`: the latest ledger the server knows.
    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>>;

    /// `simulateTransaction {transaction}`: the resources, fee, authorizations, return value
    /// and events of a transaction, without submitting it. A failed simulation is `Ok` with
    /// [`Simulation::error`] set.
    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>>;

    /// `sendTransaction {transaction}`: submits a signed transaction. It is not final yet; see
    /// [`wait_for_transaction`]. A rejection is `Ok` with [`SendStatus::Error`].
    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>>;

    /// `getTransaction {hash}`: a transaction's status and, once final, its envelope, result
    /// and meta.
    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>>;

    /// `getLedgerEntries {keys}`: the current entries for these keys; missing ones are left out.
    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>>;

    /// `getEvents {startLedger, endLedger, filters, pagination}`: the events of a ledger range
    /// (or of the page after a cursor) that match the request's filters, oldest first, at most
    /// the request's limit. Servers keep events for a retention window only: a start ledger
    /// before the oldest one kept is an [`RpcError::Rpc`].
    fn events<'a>(&'a self, request: &'a EventsRequest) -> BoxFuture<'a, Result<Events, RpcError>>;
}

impl<T: SorobanRpc + ?Sized> SorobanRpc for Arc<T> {
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
        (**self).health()
    }

    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
        (**self).network()
    }

    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
        (**self).latest_ledger()
    }

    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
        (**self).simulate_transaction(transaction)
    }

    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
        (**self).send_transaction(transaction)
    }

    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
        (**self).transaction(hash)
    }

    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
        (**self).ledger_entries(keys)
    }

    fn events<'a>(&'a self, request: &'a EventsRequest) -> BoxFuture<'a, Result<Events, RpcError>> {
        (**self).events(request)
    }
}
