//! `paywall`: sell any HTTP API with x402 `exact` and MPP on Stellar, from a routes file.
//!
//! This first piece reads and checks the routes file ([`routes`]); the gateway that serves
//! it, and the paying proxy for agents, come next.

pub mod routes;
