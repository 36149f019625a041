//! Classic accounts and trustlines: keys, new entries, thresholds and reserves.

use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountEntryExtensionV1Ext, AccountId, AlphaNum4, Asset,
    LedgerKey, LedgerKeyAccount, LedgerKeyTrustLine, MuxedAccount, MuxedAccountMed25519, PublicKey,
    SequenceNumber, String32, Thresholds, TrustLineAsset, TrustLineEntry, TrustLineEntryExt,
    Uint256, VecM,
};

/// The base reserve, in stroops (0.5 XLM, as on testnet and pubnet).
pub(super) const BASE_RESERVE: i64 = 5_000_000;

/// `AUTHORIZED_FLAG` of a trustline.
pub(super) const AUTHORIZED_FLAG: u32 = 1;

/// The index of each weight in `Thresholds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Threshold {
    Low = 1,
    Medium = 2,
    High = 3,
}

/// The account id of an ed25519 key.
pub(super) fn account_id(key: [u8; 32]) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))
}

/// The ed25519 key of an account id.
pub(super) fn account_key_bytes(id: &AccountId) -> [u8; 32] {
    match &id.0 {
        PublicKey::PublicKeyTypeEd25519(Uint256(key)) => *key,
    }
}

/// The account behind a transaction or operation source (the id of a muxed account is dropped).
pub(super) fn muxed_account_id(account: &MuxedAccount) -> AccountId {
    match account {
        MuxedAccount::Ed25519(Uint256(key))
        | MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
            ed25519: Uint256(key),
            ..
        }) => account_id(*key),
    }
}

/// The ledger key of an account.
pub(super) fn account_ledger_key(id: &AccountId) -> LedgerKey {
    LedgerKey::Account(LedgerKeyAccount {
        account_id: id.clone(),
    })
}

/// The ledger key of a trustline.
pub(super) fn trustline_ledger_key(id: &AccountId, asset: &TrustLineAsset) -> LedgerKey {
    LedgerKey::Trustline(LedgerKeyTrustLine {
        account_id: id.clone(),
        asset: asset.clone(),
    })
}

/// A classic asset as a trustline asset (`None` for the native asset, which has no trustline).
pub(super) fn trustline_asset(asset: &Asset) -> Option<TrustLineAsset> {
    match asset {
        Asset::Native => None,
        Asset::CreditAlphanum4(code) => Some(TrustLineAsset::CreditAlphanum4(code.clone())),
        Asset::CreditAlphanum12(code) => Some(TrustLineAsset::CreditAlphanum12(code.clone())),
    }
}

/// `USDC:issuer`.
pub(super) fn usdc_asset(issuer: &AccountId) -> Asset {
    Asset::CreditAlphanum4(AlphaNum4 {
        asset_code: stellar_xdr::AssetCode4(*b"USDC"),
        issuer: issuer.clone(),
    })
}

/// A new account: master key weight 1, all thresholds 0, no signers, as `createAccount` makes it.
pub(super) fn new_account(id: AccountId, balance: i64, sequence: i64) -> AccountEntry {
    AccountEntry {
        account_id: id,
        balance,
        seq_num: SequenceNumber(sequence),
        num_sub_entries: 0,
        inflation_dest: None,
        flags: 0,
        home_domain: String32::default(),
        thresholds: Thresholds([1, 0, 0, 0]),
        signers: VecM::default(),
        ext: AccountEntryExt::V0,
    }
}

/// A new authorized trustline with no balance and the largest limit.
pub(super) fn new_trustline(id: AccountId, asset: TrustLineAsset) -> TrustLineEntry {
    TrustLineEntry {
        account_id: id,
        asset,
        balance: 0,
        limit: i64::MAX,
        flags: AUTHORIZED_FLAG,
        ext: TrustLineEntryExt::V0,
    }
}

/// The first sequence number of an account created in ledger `ledger`: `ledger << 32`.
pub(super) fn starting_sequence(ledger: u32) -> i64 {
    i64::from(ledger) << 32
}

/// The lowest balance the account may hold: `(2 + sub-entries + sponsoring − sponsored) × base
/// reserve + selling liabilities`.
pub(super) fn min_balance(account: &AccountEntry) -> i64 {
    let (sponsoring, sponsored, selling) = match &account.ext {
        AccountEntryExt::V0 => (0, 0, 0),
        AccountEntryExt::V1(v1) => {
            let (sponsoring, sponsored) = match &v1.ext {
                AccountEntryExtensionV1Ext::V0 => (0, 0),
                AccountEntryExtensionV1Ext::V2(v2) => {
                    (i64::from(v2.num_sponsoring), i64::from(v2.num_sponsored))
                }
            };
            (sponsoring, sponsored, v1.liabilities.selling)
        }
    };
    let entries = 2_i64
        .saturating_add(i64::from(account.num_sub_entries))
        .saturating_add(sponsoring)
        .saturating_sub(sponsored);
    entries.saturating_mul(BASE_RESERVE).saturating_add(selling)
}

/// The highest balance the account may hold: `i64::MAX − buying liabilities`.
pub(super) fn max_balance(account: &AccountEntry) -> i64 {
    match &account.ext {
        AccountEntryExt::V0 => i64::MAX,
        AccountEntryExt::V1(v1) => i64::MAX.saturating_sub(v1.liabilities.buying.max(0)),
    }
}

/// What the account can spend: its balance above [`min_balance`] (never negative).
pub(super) fn available_balance(account: &AccountEntry) -> i64 {
    account.balance.saturating_sub(min_balance(account)).max(0)
}

/// The weight an operation or transaction needs from the account's signers.
pub(super) fn needed_weight(account: &AccountEntry, threshold: Threshold) -> u32 {
    u32::from(account.thresholds.0[threshold as usize])
}

/// The weight of the account's master key (0: disabled).
pub(super) fn master_weight(account: &AccountEntry) -> u32 {
    u32::from(account.thresholds.0[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        AccountEntryExtensionV1, AccountEntryExtensionV2, AccountEntryExtensionV2Ext, Liabilities,
    };

    #[test]
    fn reserves_follow_sub_entries_sponsorship_and_liabilities() {
        let mut account = new_account(account_id([7; 32]), 100 * BASE_RESERVE, 1);
        assert_eq!(min_balance(&account), 2 * BASE_RESERVE);
        assert_eq!(available_balance(&account), 98 * BASE_RESERVE);
        account.num_sub_entries = 1;
        assert_eq!(min_balance(&account), 3 * BASE_RESERVE);
        account.ext = AccountEntryExt::V1(AccountEntryExtensionV1 {
            liabilities: Liabilities {
                buying: 10,
                selling: 20,
            },
            ext: AccountEntryExtensionV1Ext::V2(AccountEntryExtensionV2 {
                num_sponsored: 1,
                num_sponsoring: 3,
                signer_sponsoring_i_ds: VecM::default(),
                ext: AccountEntryExtensionV2Ext::V0,
            }),
        });
        assert_eq!(min_balance(&account), 5 * BASE_RESERVE + 20);
        assert_eq!(max_balance(&account), i64::MAX - 10);
        account.balance = 0;
        assert_eq!(available_balance(&account), 0);
    }

    #[test]
    fn muxed_sources_are_their_account() {
        let muxed = MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
            id: 9,
            ed25519: Uint256([3; 32]),
        });
        assert_eq!(muxed_account_id(&muxed), account_id([3; 32]));
        assert_eq!(account_key_bytes(&account_id([3; 32])), [3; 32]);
        assert_eq!(starting_sequence(2), 2 << 32);
    }
}
