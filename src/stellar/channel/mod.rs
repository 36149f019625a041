//! The one-way payment channel contract (research: `one-way-channel`): the signed commitment
//! and the contract's state and calls on the ledger.
//!
//! A channel's funder signs, with the channel's 32-byte `commitment_key` (a bare ed25519 key), the
//! cumulative amount the recipient may withdraw. The signed bytes are what the contract's
//! `prepare_commitment(amount)` returns: the XDR of
//! `ScVal::Map{amount: I128, channel: Address(contract), domain: Symbol("chancmmt"), network:
//! Bytes(network id)}` (keys in order), always [`COMMITMENT_LEN`] bytes. The signature covers
//! those bytes as they are: no hash, no prefix. Building them here needs no simulation.
//!
//! ```
//! use tower_paywall::stellar::channel::commitment_bytes;
//! use tower_paywall::stellar::{Address, Keypair, Network, verify_ed25519};
//!
//! let channel = Address::Contract([7; 32]);
//! let bytes = commitment_bytes(&Network::testnet().id(), &channel, 10_000_000)?;
//! let key = Keypair::from_seed([1; 32]);
//! let signature = key.sign(&bytes);
//! assert!(verify_ed25519(&key.public_key(), &bytes, &signature));
//! # Ok::<(), tower_paywall::stellar::channel::CommitmentError>(())
//! ```
//!
//! The ledger side (feature `rpc`): [`read_channel`] reads a channel's instance storage and
//! its token balance with one `getLedgerEntries`; [`channel_call`] builds the recipient's
//! `settle` and `close` calls; [`open_channel`] opens one from the funder's account.

mod commitment;
#[cfg(feature = "rpc")]
mod open;
#[cfg(feature = "rpc")]
mod state;

pub use commitment::{COMMITMENT_DOMAIN, COMMITMENT_LEN, CommitmentError, commitment_bytes};
#[cfg(feature = "rpc")]
pub use open::{OpenChannel, OpenChannelError, channel_address, open_channel};
#[cfg(feature = "sandbox")]
pub(crate) use open::{constructor_args, create_contract};
#[cfg(feature = "rpc")]
pub use state::{
    ChannelFunction, ChannelInfo, ChannelReadError, channel_call, read_channel,
    source_authorization,
};
