//! Charge per request with HTTP 402 on Stellar, from any [tower] service (axum, tonic, hyper).
//!
//! One [`PaymentLayer`] speaks the payment intents a client may choose from:
//!
//! | intent | who settles | status |
//! |---|---|---|
//! | x402 v2 `exact` ([`x402::Exact`]) | a facilitator (`/verify`, `/settle`, `/supported`) | available |
//! | MPP `charge` (method `stellar`) | the server, through Soroban RPC | available ([`mpp::StellarCharge`]): pull, unsponsored or sponsored; push `signedHash`; the memo-bound XLM push (opt-in) |
//! | MPP `channel` (method `stellar`) | off-chain vouchers, closed on-chain once | available ([`mpp::StellarChannel`]): vouchers credited by compare-and-set in a [`ChannelStore`](store::ChannelStore) (durable: [`FileChannelStore`](store::FileChannelStore)), the client's `close`, a watcher answering the funder's `close_start` |
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_paywall::{PaymentLayer, Price, stellar::{Address, Network}, x402};
//!
//! let facilitator = x402::HttpFacilitator::builder("https://facilitator.example/x402/testnet")
//!     .api_key("my-api-key")
//!     .build()?;
//! let pay_to: Address = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB".parse()?;
//! let paywall = PaymentLayer::builder()
//!     .scheme(x402::Exact::builder(Network::testnet(), pay_to, facilitator).build()?)
//!     .price(Price::parse("$0.001")?)
//!     .build()?;
//! let app: Router = Router::new().route("/joke", get(|| async { "…" })).layer(paywall);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See [`layer`] for the request flow, the settlement orders, the status codes, and which
//! protocols a 402 speaks (the client's `Accept-Payment` decides).
//!
//! # Features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `http-facilitator` | yes | [`x402::HttpFacilitator`] (reqwest + rustls with the ring provider) |
//! | `rpc` | yes | [`stellar::rpc`]: the [`SorobanRpc`](stellar::SorobanRpc) trait and [`JsonRpcClient`](stellar::JsonRpcClient), a Soroban JSON-RPC client (same stack); with it MPP `charge` and `channel`, and `seller`, the schemes a seller offers made from one set of settings |
//! | `sandbox` | no | `sandbox`: an offline Stellar ledger on the real Soroban host, usable in process as a [`SorobanRpc`](stellar::SorobanRpc) and served as Soroban JSON-RPC over HTTP and HTTPS with a friendbot, and a development stack on it (its RPC and our facilitator served, demo wallets and a demo payment channel); implies `local-facilitator` |
//! | `client` | no | `client`: `PayingClient`, a reqwest client that pays 402s (x402 `exact`; MPP `charge` pull, sponsored or not, and push; MPP `channel` vouchers and close) within a policy and a budget; metered SSE streams and WebSockets paid as they flow; and `PayingGrpcLayer`, the same for a tonic client; implies `rpc` |
//! | `websocket` | no | a metered route also answers a WebSocket upgrade, sending its events as messages paid by vouchers sent on the socket (the layer does the upgrade; serve with hyper's upgrades on, as `axum::serve` does) |
//! | `redis` | no | `store::redis`: payments, channel states and leases in Redis 7+ (one server or a Redis Cluster), shared by every replica of a service |
//! | `prometheus` | no | [`layer::metrics::prometheus`](layer::metrics): the process's Prometheus recorder for the layer's metrics, the text a `/metrics` route answers with |
//! | `local-facilitator` | no | `x402::LocalFacilitator` (the Stellar `exact` facilitator against a Soroban RPC) and `x402::facilitator_router`, its HTTP server |
//!
//! # Modules
//!
//! - [`stellar`]: the protocol-agnostic Stellar engine (networks, addresses, amounts, Soroban
//!   authorization signing and verification, SAC transfer parsing, Soroban RPC).
//! - [`x402`]: x402 v2 wire types and codecs, the `exact` scheme, facilitators.
//! - [`mpp`]: the MPP `Payment` auth scheme (challenges, credentials, receipts, HMAC challenge
//!   ids, JCS, Problem Details, `Accept-Payment`), and its Stellar `charge` and `channel` intents.
//! - [`price`], [`scheme`], [`store`]: the seams the layer is built on (the payment store; the
//!   channel stores).
//! - `seller` (feature `rpc`): the schemes a seller offers (x402 `exact`, MPP `charge`
//!   sponsored or not, MPP `channel`), made and checked together from one set of settings.
//! - `sandbox` (feature `sandbox`): an offline ledger, and a development stack on it (its RPC
//!   and a facilitator served on loopback, funded demo wallets, a demo payment channel).
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![warn(rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::pin::Pin;

mod civil;
#[cfg(feature = "client")]
pub mod client;
#[cfg(any(feature = "http-facilitator", feature = "rpc"))]
mod http;
pub mod layer;
pub mod mpp;
pub mod price;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod scheme;
#[cfg(feature = "rpc")]
pub mod seller;
pub mod stellar;
pub mod store;
pub mod x402;

pub use layer::{
    Paid, PaymentLayer, PaymentLayerBuilder, PaymentService, SettleError, SettleGuard,
};
pub use price::{
    PaymentIdentifier, Price, PriceFuture, PriceRequest, Priced, Pricing, SettlementOrder, Unit,
};
pub use scheme::{Intent, PaymentScheme, Reconciled};
pub use store::{MemoryStore, PaymentStore};

/// A boxed, sendable future: what object-safe traits of this crate return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The README's examples, compiled with the features they use.
#[doc = include_str!("../README.md")]
#[cfg(all(
    doctest,
    feature = "client",
    feature = "sandbox",
    feature = "http-facilitator",
    feature = "redis"
))]
pub struct ReadmeDoctests;
