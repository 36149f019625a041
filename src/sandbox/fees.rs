//! Soroban resource fees and limits, computed with the host's own fee functions
//! (`soroban_env_host::fees`) over the sandbox's fee schedule.
//!
//! The schedule: today's testnet rate for instructions (25 stroops per 10 000), and the first
//! published testnet rates for the rest (1 000 per disk-read entry, 3 000 per written entry,
//! 1 000 per KB read, 1 000 per KB written, 500 per KB of transaction, 5 000 per KB of history,
//! 300 per KB of events, rent at 1 000 per KB written). Those keep a SAC transfer between two
//! `G…` accounts well under the 50 000-stroop fee cap the x402 facilitators apply by default;
//! today's network rates for entries would not.

use soroban_env_host::fees::{
    FeeConfiguration, LedgerEntryRentChange, RentFeeConfiguration, TransactionResources,
    compute_rent_fee, compute_transaction_resource_fee,
};
use stellar_xdr::{LedgerFootprint, LedgerKey, SorobanResources};

/// Per-transaction resource limits (the networks' current ones).
pub(super) mod limits {
    /// Most instructions.
    pub(crate) const INSTRUCTIONS: u32 = 100_000_000;
    /// Most keys in the footprint.
    pub(crate) const FOOTPRINT_KEYS: usize = 100;
    /// Most disk-read entries (classic entries in the footprint).
    pub(crate) const DISK_READ_ENTRIES: u32 = 100;
    /// Most written entries (the read-write footprint).
    pub(crate) const WRITE_ENTRIES: usize = 50;
    /// Most bytes read from disk.
    pub(crate) const DISK_READ_BYTES: u32 = 200 * 1024;
    /// Most bytes written.
    pub(crate) const WRITE_BYTES: u32 = 132 * 1024;
    /// Largest transaction, in XDR bytes.
    pub(crate) const TRANSACTION_BYTES: usize = 132 * 1024;
}

/// Margins a simulation adds to what it measured, as Soroban RPC does: instructions × 1.04 +
/// 50 000, refundable fee × 1.15.
pub(super) mod margins {
    /// Extra instructions, in percent.
    pub(crate) const INSTRUCTIONS_PERCENT: u64 = 4;
    /// Extra instructions, flat.
    pub(crate) const INSTRUCTIONS_FLAT: u64 = 50_000;
    /// Extra refundable fee, in percent.
    pub(crate) const REFUNDABLE_PERCENT: i64 = 15;
}

fn fee_configuration() -> FeeConfiguration {
    FeeConfiguration {
        fee_per_instruction_increment: 25,
        fee_per_disk_read_entry: 1_000,
        fee_per_write_entry: 3_000,
        fee_per_disk_read_1kb: 1_000,
        fee_per_write_1kb: 1_000,
        fee_per_historical_1kb: 5_000,
        fee_per_contract_event_1kb: 300,
        fee_per_transaction_size_1kb: 500,
    }
}

fn rent_configuration() -> RentFeeConfiguration {
    RentFeeConfiguration {
        fee_per_write_1kb: 1_000,
        fee_per_rent_1kb: 1_000,
        fee_per_write_entry: 3_000,
        // 1 KB of persistent state costs its write fee every ~30 days of 5 s ledgers;
        // temporary state ten times less.
        persistent_rent_rate_denominator: 518_400,
        temporary_rent_rate_denominator: 5_184_000,
    }
}

/// Whether the key is a classic entry, which counts as a disk read (live contract state is
/// in memory and does not).
pub(super) fn is_disk_entry(key: &LedgerKey) -> bool {
    match key {
        LedgerKey::Account(_)
        | LedgerKey::Trustline(_)
        | LedgerKey::Offer(_)
        | LedgerKey::Data(_)
        | LedgerKey::ClaimableBalance(_)
        | LedgerKey::LiquidityPool(_)
        | LedgerKey::ConfigSetting(_)
        | LedgerKey::Ttl(_) => true,
        LedgerKey::ContractData(_) | LedgerKey::ContractCode(_) => false,
    }
}

/// The classic entries of the footprint.
pub(super) fn disk_read_entries(footprint: &LedgerFootprint) -> u32 {
    let count = footprint
        .read_only
        .iter()
        .chain(footprint.read_write.iter())
        .filter(|key| is_disk_entry(key))
        .count();
    count.try_into().unwrap_or(u32::MAX)
}

/// The part of the resource fee charged whatever happens: instructions, entries, bytes and
/// transaction size, for the declared resources and a transaction of `transaction_size` bytes.
pub(super) fn non_refundable_fee(resources: &SorobanResources, transaction_size: u32) -> i64 {
    let footprint = &resources.footprint;
    let (non_refundable, _) = compute_transaction_resource_fee(
        &TransactionResources {
            instructions: resources.instructions,
            disk_read_entries: disk_read_entries(footprint),
            write_entries: footprint.read_write.len().try_into().unwrap_or(u32::MAX),
            disk_read_bytes: resources.disk_read_bytes,
            write_bytes: resources.write_bytes,
            contract_events_size_bytes: 0,
            transaction_size_bytes: transaction_size,
        },
        &fee_configuration(),
    );
    non_refundable
}

/// The fee for contract events and a return value of `size` bytes (refundable).
pub(super) fn events_fee(size: u32) -> i64 {
    let (_, refundable) = compute_transaction_resource_fee(
        &TransactionResources {
            instructions: 0,
            disk_read_entries: 0,
            write_entries: 0,
            disk_read_bytes: 0,
            write_bytes: 0,
            contract_events_size_bytes: size,
            transaction_size_bytes: 0,
        },
        &fee_configuration(),
    );
    refundable
}

/// The rent of `changes` in ledger `ledger` (refundable).
pub(super) fn rent_fee(changes: &[LedgerEntryRentChange], ledger: u32) -> i64 {
    compute_rent_fee(changes, &rent_configuration(), ledger)
}

/// `value × (100 + percent) / 100`, rounded up, saturating.
pub(super) fn with_margin(value: i64, percent: i64) -> i64 {
    let scaled = i128::from(value) * i128::from(100 + percent);
    i64::try_from((scaled + 99) / 100).unwrap_or(i64::MAX)
}

/// The instructions to declare for `measured` ones.
pub(super) fn instructions_with_margin(measured: u64) -> u32 {
    let extra = measured.saturating_mul(margins::INSTRUCTIONS_PERCENT) / 100;
    let declared = measured
        .saturating_add(extra)
        .saturating_add(margins::INSTRUCTIONS_FLAT);
    declared.try_into().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        AccountId, ContractDataDurability, ContractId, Hash, LedgerKeyAccount,
        LedgerKeyContractData, PublicKey, ScAddress, ScVal, Uint256, VecM,
    };

    fn account_key() -> LedgerKey {
        LedgerKey::Account(LedgerKeyAccount {
            account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256([1; 32]))),
        })
    }

    fn data_key() -> LedgerKey {
        LedgerKey::ContractData(LedgerKeyContractData {
            contract: ScAddress::Contract(ContractId(Hash([2; 32]))),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
        })
    }

    #[test]
    fn only_classic_entries_are_disk_reads() {
        let footprint = LedgerFootprint {
            read_only: VecM::try_from(vec![account_key(), data_key()]).unwrap(),
            read_write: VecM::try_from(vec![account_key()]).unwrap(),
        };
        assert_eq!(disk_read_entries(&footprint), 2);
    }

    #[test]
    fn fees_grow_with_resources() {
        let mut resources = SorobanResources {
            footprint: LedgerFootprint {
                read_only: VecM::default(),
                read_write: VecM::default(),
            },
            instructions: 1_000_000,
            disk_read_bytes: 0,
            write_bytes: 0,
        };
        let base = non_refundable_fee(&resources, 1_000);
        // 100 × 25 for the instructions, (1000 + 300) B of history, 1000 B of bandwidth.
        assert_eq!(base, 2_500 + 6_348 + 489);
        resources.instructions = 2_000_000;
        assert_eq!(non_refundable_fee(&resources, 1_000), base + 2_500);
        assert_eq!(events_fee(1024), 300);
        assert_eq!(rent_fee(&[], 10), 0);
    }

    #[test]
    fn margins() {
        assert_eq!(with_margin(100, 15), 115);
        assert_eq!(with_margin(1, 15), 2);
        assert_eq!(with_margin(i64::MAX, 15), i64::MAX);
        assert_eq!(instructions_with_margin(1_000_000), 1_090_000);
        assert_eq!(instructions_with_margin(u64::MAX), u32::MAX);
    }
}
