//! stoka: pay-per-request storage for encrypted blobs and wallet mailbox queues, built on
//! `tower-paywall` (see `STOKA.md` in the repository for the API).
//!
//! - [`api`]: the HTTP service, its payment layers and pricing hook;
//! - [`auth`]: wallet-signed routes (single-use challenges, SEP-53 and raw ed25519);
//! - [`pricing`]: the rates and limits;
//! - [`storage`]: what stoka keeps, behind one trait, on redb or Redis;
//! - [`clock`]: time, injectable for tests.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod listen;
pub mod metrics;
pub mod pricing;
pub mod server;
pub mod storage;
