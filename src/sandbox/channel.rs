//! The sandbox's one-way payment channel contract: written in WebAssembly text
//! (`channel.wat`, next to this file) with the ABI, storage keys, errors and signed commitment of
//! the public `one-way-channel` contract, assembled once, and deployed with
//! [`Sandbox::deploy_channel`].
//!
//! | function | what it does |
//! |---|---|
//! | `__constructor(token, from, commitment_key, to, amount, refund_waiting_period)` | stores the channel; `from` authorizes and deposits `amount` when it is positive; `open` event |
//! | `top_up(amount)` | `from` deposits more |
//! | `prepare_commitment(amount) -> Bytes` | the bytes to sign ([`commitment_bytes`](crate::stellar::commitment_bytes)) |
//! | `settle(amount, signature)` | `to` authorizes; the commitment key's signature over the commitment must verify; pays `to` `amount − withdrawn`; `withdraw` event |
//! | `close(amount, signature)` | `settle`, then the close is effective now (`close` event) and the rest goes back to `from` (`refund` event) |
//! | `close_start()` | `from` authorizes; the close is effective `refund_waiting_period` ledgers from now; `close` event |
//! | `refund()` | `from` authorizes; once the close is effective, the whole balance goes back to `from`; `refund` event |
//! | `token`, `from`, `to`, `refund_waiting_period`, `balance`, `deposited`, `withdrawn` | getters (`deposited = balance + withdrawn`) |
//!
//! Failures are contract errors ([`ChannelError`]). A cumulative amount below what was already
//! withdrawn is [`ChannelError::NegativeAmount`] (the payout would be negative). Events have
//! the topic `[Symbol(name)]` and a map of their fields as data.

use std::sync::OnceLock;

use stellar_xdr::ScVal;

use super::{Sandbox, SandboxError};
use crate::stellar::{Address, Keypair};

/// The contract's text.
const CHANNEL_WAT: &str = include_str!("channel.wat");

/// The contract errors of the channel, `Error(Contract, code)` on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelError {
    /// A negative deposit, or a cumulative amount below what was already withdrawn.
    NegativeAmount = 1,
    /// `refund` before any `close_start` or `close`.
    NotClosed = 2,
    /// `refund` before the close is effective.
    RefundWaitingPeriodNotElapsed = 3,
    /// `close_start` once the close is effective.
    AlreadyClosed = 4,
}

impl ChannelError {
    /// The contract error code.
    #[must_use]
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// A channel to open with [`Sandbox::deploy_channel`].
#[derive(Clone, Debug)]
pub struct ChannelParams<'a> {
    /// The token contract (a SAC, such as [`Sandbox::usdc`]).
    pub token: Address,
    /// The funder: deploys the channel and deposits `amount`.
    pub from: &'a Keypair,
    /// The ed25519 public key that signs commitments (a bare key, not necessarily an account).
    pub commitment_key: [u8; 32],
    /// The recipient.
    pub to: Address,
    /// The first deposit, in the token's atomic units (0 for none).
    pub amount: i128,
    /// How many ledgers after `close_start` the funder may take the balance back.
    pub refund_waiting_period: u32,
}

/// The channel contract's Wasm code, assembled from its text on first use.
///
/// # Errors
///
/// [`SandboxError::Host`] if the text does not assemble (a bug).
pub fn channel_wasm() -> Result<&'static [u8], SandboxError> {
    static WASM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    WASM.get_or_init(|| wat::parse_str(CHANNEL_WAT).map_err(|error| error.to_string()))
        .as_deref()
        .map_err(|error| {
            SandboxError::Host(format!("the channel contract does not assemble: {error}"))
        })
}

impl Sandbox {
    /// Deploys a one-way payment channel (see [`deploy_wasm`](Self::deploy_wasm)): `from`
    /// creates it and, when `amount` is positive, deposits `amount` of `token` from its balance,
    /// both authorized by `from`'s signature. Takes effect at once; returns the channel's
    /// address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_paywall::sandbox::{ChannelParams, ContractCall, Sandbox, SandboxConfig};
    /// use tower_paywall::stellar::Keypair;
    /// use tower_paywall::stellar::xdr::ScVal;
    ///
    /// let sandbox = Sandbox::start(SandboxConfig::default().auto_close(false))?;
    /// let funder = sandbox.funded_keypair().await?;
    /// let recipient = sandbox.funded_keypair().await?;
    /// let commitment_key = Keypair::from_seed([9; 32]);
    /// let channel = sandbox
    ///     .deploy_channel(ChannelParams {
    ///         token: sandbox.usdc(),
    ///         from: &funder,
    ///         commitment_key: commitment_key.public_key(),
    ///         to: recipient.address(),
    ///         amount: 100_000_000,
    ///         refund_waiting_period: 17_280,
    ///     })
    ///     .await?;
    /// assert_eq!(sandbox.balance(&sandbox.usdc(), &channel).await?, 100_000_000);
    /// let period = sandbox
    ///     .simulate_call(&ContractCall::new(channel, "refund_waiting_period", vec![]))
    ///     .await?;
    /// assert_eq!(period, ScVal::U32(17_280));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] with the host's message if the constructor failed (a negative
    /// amount, a balance too small …); [`SandboxError::Stopped`].
    pub async fn deploy_channel(&self, params: ChannelParams<'_>) -> Result<Address, SandboxError> {
        let args = constructor_args(&params)?;
        self.deploy_wasm(channel_wasm()?, params.from, args).await
    }
}

/// The channel constructor's arguments.
pub(super) fn constructor_args(params: &ChannelParams<'_>) -> Result<Vec<ScVal>, SandboxError> {
    crate::stellar::channel::constructor_args(
        &params.token,
        &params.from.address(),
        &params.commitment_key,
        &params.to,
        params.amount,
        params.refund_waiting_period,
    )
    .map_err(|error| SandboxError::Host(error.to_string()))
}

#[cfg(test)]
mod tests {
    use soroban_env_host::SymbolSmall;

    use super::*;
    use crate::sandbox::invoke::PROTOCOL_VERSION;

    /// Every `(global $… i64 (i64.const 0x…)) ;; Symbol("…")` line of the text holds that
    /// symbol's small Val.
    #[test]
    fn symbol_constants_are_the_small_symbols() {
        let mut checked = 0;
        for line in CHANNEL_WAT.lines() {
            let Some((code, comment)) = line.split_once(";; Symbol(\"") else {
                continue;
            };
            let name = comment.trim_end().trim_end_matches("\")");
            let hex = code
                .split("(i64.const 0x")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .unwrap_or_else(|| panic!("no constant on {line:?}"));
            let constant = u64::from_str_radix(hex, 16).unwrap();
            let symbol = SymbolSmall::try_from_str(name).unwrap();
            assert_eq!(symbol.to_val().get_payload(), constant, "Symbol({name:?})");
            checked += 1;
        }
        assert_eq!(checked, 17);
    }

    #[test]
    fn the_contract_assembles_with_its_interface_version() {
        let wasm = channel_wasm().unwrap();
        assert_eq!(&wasm[..4], b"\0asm");
        let section = b"contractenvmetav0";
        let at = wasm
            .windows(section.len())
            .position(|window| window == section)
            .expect("the env meta section");
        let meta = &wasm[at + section.len()..at + section.len() + 12];
        // ScEnvMetaKindInterfaceVersion (0), protocol, pre-release 0.
        assert_eq!(meta[..4], [0; 4]);
        let protocol = u32::from_be_bytes(meta[4..8].try_into().unwrap());
        assert!((22..=PROTOCOL_VERSION).contains(&protocol), "{protocol}");
        assert_eq!(meta[8..], [0; 4]);
    }
}
