//! Friendbot: funding accounts with lumens and USDC, and reading token balances.
//!
//! Funding takes effect at once, in the latest ledger (the network's friendbot submits a
//! transaction that lands in the next one).

use stellar_xdr::{Int128Parts, LedgerEntryData, ScAddress, ScVal};

use super::account::{
    AUTHORIZED_FLAG, account_id, max_balance, min_balance, new_account, new_trustline,
    starting_sequence, trustline_asset, trustline_ledger_key,
};
use super::ledger::{Delta, Ledger};
use super::{FRIENDBOT_USDC, FRIENDBOT_XLM, SandboxError};
use crate::stellar::Address;

impl Ledger {
    /// Creates the account (or tops it up) with [`FRIENDBOT_XLM`], gives it an authorized USDC
    /// trustline, and mints it [`FRIENDBOT_USDC`] through the USDC contract.
    ///
    /// # Errors
    ///
    /// [`SandboxError::NotAnAccount`] for a contract; [`SandboxError::Funding`] if a balance
    /// would overflow or the root account ran out of lumens; [`SandboxError::Host`] if minting
    /// failed.
    pub(super) fn fund(&mut self, address: &Address) -> Result<(), SandboxError> {
        let Some(key) = address.ed25519_key() else {
            return Err(SandboxError::NotAnAccount(*address));
        };
        let id = account_id(key);
        let latest = self.header.sequence;
        let root_id = account_id(self.root.public_key());
        let mut delta = Delta::default();

        let mut root = delta
            .account(self, &root_id)
            .ok_or(SandboxError::Funding("the root account is missing"))?;
        root.balance = root
            .balance
            .checked_sub(FRIENDBOT_XLM)
            .filter(|left| *left >= min_balance(&root))
            .ok_or(SandboxError::Funding("the root account is out of lumens"))?;
        delta.put_account(root, latest);

        let mut account = delta
            .account(self, &id)
            .unwrap_or_else(|| new_account(id.clone(), 0, starting_sequence(latest)));
        account.balance = account
            .balance
            .checked_add(FRIENDBOT_XLM)
            .filter(|balance| *balance <= max_balance(&account))
            .ok_or(SandboxError::Funding("the lumen balance would overflow"))?;

        let asset = trustline_asset(&self.assets.usdc_asset)
            .ok_or(SandboxError::Funding("USDC has no trustline"))?;
        if id != self.assets.usdc_issuer {
            let key = trustline_ledger_key(&id, &asset);
            match delta
                .entry(self, &key)
                .map(|stored| stored.entry.data.clone())
            {
                Some(LedgerEntryData::Trustline(mut trustline)) => {
                    if trustline.flags & AUTHORIZED_FLAG == 0 {
                        trustline.flags |= AUTHORIZED_FLAG;
                        delta.put_data(LedgerEntryData::Trustline(trustline), latest);
                    }
                }
                _ => {
                    account.num_sub_entries = account.num_sub_entries.saturating_add(1);
                    delta.put_data(
                        LedgerEntryData::Trustline(new_trustline(id.clone(), asset)),
                        latest,
                    );
                }
            }
        }
        delta.put_account(account, latest);
        let next = self.next_sequence();
        self.commit(delta, next);

        let usdc = self.assets.usdc;
        let amount = i128_value(FRIENDBOT_USDC);
        let to = ScVal::Address(ScAddress::Account(id));
        self.call_contract(&usdc, "mint", vec![to, amount], true)?;
        Ok(())
    }

    /// The balance of `holder` in the token contract `token`, from its `balance` function.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] if the call failed or did not return an `i128`.
    pub(super) fn balance(
        &mut self,
        token: &Address,
        holder: &Address,
    ) -> Result<i128, SandboxError> {
        let holder = ScVal::Address(holder.to_sc_address());
        match self.call_contract(token, "balance", vec![holder], false)? {
            ScVal::I128(parts) => Ok((i128::from(parts.hi) << 64) | i128::from(parts.lo)),
            other => Err(SandboxError::Host(format!(
                "`balance` returned {other:?}, not an i128"
            ))),
        }
    }
}

/// An `i128` as a contract value.
pub(super) fn i128_value(value: i128) -> ScVal {
    ScVal::I128(Int128Parts {
        // Truncating casts on purpose: the high and the low 64 bits.
        hi: (value >> 64) as i64,
        lo: value as u64,
    })
}
