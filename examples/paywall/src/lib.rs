//! `paywall`: sell any HTTP API with x402 `exact` and MPP on Stellar, from a routes file, and
//! pay for any agent through a local endpoint.
//!
//! - [`routes`]: the routes file, read strictly.
//! - [`gateway`]: routing, pricing and the payment layer per set of intents; [`upstream`]:
//!   forwarding, bodies streamed; [`payer`]: the signed headers naming the payer;
//!   [`discovery`]: `/openapi.json` and the x402 index; [`server`]: serving and reloading.
//! - [`setup`]: the schemes from settings; [`dev`]: the same on a sandbox ledger.
//! - [`pay`]: `paywall pay`, the paying proxy for agents.

pub mod dev;
pub mod discovery;
pub mod gateway;
pub mod pay;
pub mod payer;
pub mod routes;
pub mod server;
pub mod setup;
pub mod upstream;
