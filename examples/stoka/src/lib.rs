//! stoka: pay-per-request storage for encrypted blobs and wallet mailbox queues, built on
//! `tower-paywall` (see `STOKA.md` in the repository for the API).
//!
//! Built so far: the prices and limits ([`pricing`]) and the storage ([`storage`]: blobs,
//! mailbox queues, usage counters, wallet challenges, profiles) with its embedded back end,
//! [`storage::RedbStorage`].

pub mod pricing;
pub mod storage;
