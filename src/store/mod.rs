//! What the layer and the schemes keep between requests.
//!
//! | store | what it keeps | implementations |
//! |---|---|---|
//! | [`PaymentStore`] | each payment's reservation and recorded answer, single-use claims (challenge ids, transaction hashes) | [`MemoryStore`] (one process), [`BackedStore`] over any [`PaymentBackend`] (durable, shared by nodes) |
//! | [`ChannelStore`] | each payment channel's best voucher (cumulative amount and signature) and its phase | [`MemoryChannelStore`], [`FileChannelStore`] (durable) |
//! | [`Leases`] | who does a piece of work among several nodes (closes a channel, sends from an account), until a deadline | [`MemoryLeases`] (one process) |
//!
//! Feature `redis` adds all three in Redis, one server or a Redis Cluster, shared by every
//! replica of a service (`store::redis`). Every operation is atomic; all report failures as
//! [`StoreError`].
//!
//! # Payments
//!
//! Every payment the layer sees is reserved under its [`PaymentKey`] before verification, and
//! walks this state machine:
//!
//! ```text
//!  reserve ─► Reserved ─► Executing ─► Settling ─► Executing(settled) ─► Completed
//!                │            │            │  └────► Failed | Unknown       (response recorded)
//!                │            │            └──(requester gone)──► Settled
//!                └─ release ◄─┘ (verify refused, handler answered ≥ 400, request dropped)
//! ```
//!
//! | state found by `reserve` | answer |
//! |---|---|
//! | none, or `Failed` | [`Reservation::New`]: the caller owns the payment |
//! | any other, held by another presentation of the payment | [`Reservation::Mismatch`]: 409 |
//! | `Reserved`, `Executing` | [`Reservation::Busy`]: a concurrent use, 409 |
//! | `Settling`, `Unknown` | [`Reservation::Pending`]: outcome not known yet, 503 + `Retry-After` (the layer first [reconciles](crate::layer#reconciliation) it from the [`PendingSettlement`] it carries: `Unknown` or `Settling` → `Settled` or `Failed`) |
//! | `Settled` | [`Reservation::Resume`]: the money moved but no response was recorded; the caller owns it again (state becomes `Executing(settled)`) and runs the handler without settling |
//! | `Completed` | [`Reservation::Replay`]: answer with the recorded response (or 409 when the body was too large to record), never settle again |
//!
//! A payment's key names the payment (for x402: network, payer, nonce), which is public once it
//! settles; its [`Fingerprint`] names the exact credential presented (the signed transaction). A
//! record answers only the credential that made it, so nobody can replay a payment they could
//! merely name.
//!
//! [`PaymentStore::claim`] adds plain single-use claims (challenge ids, transaction hashes).
//!
//! A [`MemoryStore`] forgets on restart: a payment that settled but was not answered then cannot
//! be resumed (its retry gets a 402, since the ledger has spent it), and two processes behind one
//! service each keep their own records, so one MPP push could be served by each. Keep payments
//! in a [`BackedStore`] when either matters: records are [`encoded`](PaymentRecord::encode)
//! into bytes and every change is a compare-and-swap on one key, which any database with
//! transactions or scripts can do.
//!
//! # Channels
//!
//! A channel's state is one [`ChannelState`]: the highest cumulative amount accepted, the
//! commitment key's signature over it (the money: only it lets the recipient withdraw), and
//! the [`ChannelPhase`]. It changes only by [`ChannelStore::compare_and_set`], so two requests
//! that offer vouchers on one channel at once are never both credited for one increment.

mod backed;
mod channel;
pub mod conformance;
mod file;
mod lease;
mod payment;
mod record;
#[cfg(feature = "redis")]
pub mod redis;

pub use backed::{BackedStore, PaymentBackend, RecordWrite};
pub use channel::{
    ChannelId, ChannelPhase, ChannelState, ChannelStore, MemoryChannelStore, NotAContract,
    all_channels,
};
pub use file::{CHANNEL_RECORD_LEN, FileChannelStore};
pub use lease::{LeaseHolder, Leases, MemoryLeases};
pub use payment::{
    CompletedPayment, Fingerprint, MemoryStore, PaymentKey, PaymentRecord, PaymentState,
    PaymentStore, PendingSettlement, RecordedResponse, Reservation, SettledPayment, StateKind,
    StoreError,
};
pub use record::{MAX_EVIDENCE_LEN, RECORD_TAG_LEN, RecordError};
