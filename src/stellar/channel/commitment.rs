//! The signed commitment: what the commitment key signs for a cumulative amount.

use crate::stellar::{Address, NetworkId};

/// The commitment's `domain`: `Symbol("chancmmt")`.
pub const COMMITMENT_DOMAIN: &str = "chancmmt";

/// The length of a commitment's bytes.
pub const COMMITMENT_LEN: usize = 192;

/// Why a commitment could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitmentError {
    /// The channel is an account, not a contract (`C…`).
    #[error("a channel is a contract address")]
    NotAContract,
}

/// The bytes the commitment key signs to let the channel `channel` pay out `amount` in total,
/// on the network `network`.
///
/// # Errors
///
/// [`CommitmentError::NotAContract`] when `channel` is not a contract.
pub fn commitment_bytes(
    network: &NetworkId,
    channel: &Address,
    amount: i128,
) -> Result<[u8; COMMITMENT_LEN], CommitmentError> {
    let Address::Contract(id) = channel else {
        return Err(CommitmentError::NotAContract);
    };
    // The XDR of the map, written out: every part but the amount, the contract id and the
    // network id is fixed (the tests rebuild it with the XDR types).
    let mut bytes = [0u8; COMMITMENT_LEN];
    let mut at = 0;
    for part in [
        &MAP_HEADER[..],
        &KEY_AMOUNT,
        &I128_TYPE,
        &amount.to_be_bytes(),
        &KEY_CHANNEL,
        &CONTRACT_ADDRESS_TYPE,
        id,
        &KEY_DOMAIN,
        &DOMAIN,
        &KEY_NETWORK,
        &BYTES_32_TYPE,
        &network.0,
    ] {
        bytes[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, COMMITMENT_LEN);
    Ok(bytes)
}

/// `ScVal::Map`, present, 4 entries.
const MAP_HEADER: [u8; 12] = [0, 0, 0, 0x11, 0, 0, 0, 1, 0, 0, 0, 4];
/// `Symbol("amount")`, padded to 4 bytes.
const KEY_AMOUNT: [u8; 16] = *b"\0\0\0\x0f\0\0\0\x06amount\0\0";
/// `ScVal::I128` (hi then lo follow, big-endian: the i128's own big-endian bytes).
const I128_TYPE: [u8; 4] = [0, 0, 0, 0x0a];
/// `Symbol("channel")`.
const KEY_CHANNEL: [u8; 16] = *b"\0\0\0\x0f\0\0\0\x07channel\0";
/// `ScVal::Address`, `ScAddress::Contract` (the id follows).
const CONTRACT_ADDRESS_TYPE: [u8; 8] = [0, 0, 0, 0x12, 0, 0, 0, 1];
/// `Symbol("domain")`.
const KEY_DOMAIN: [u8; 16] = *b"\0\0\0\x0f\0\0\0\x06domain\0\0";
/// `Symbol("chancmmt")`.
const DOMAIN: [u8; 16] = *b"\0\0\0\x0f\0\0\0\x08chancmmt";
/// `Symbol("network")`.
const KEY_NETWORK: [u8; 16] = *b"\0\0\0\x0f\0\0\0\x07network\0";
/// `ScVal::Bytes` of length 32 (the network id follows).
const BYTES_32_TYPE: [u8; 8] = [0, 0, 0, 0x0d, 0, 0, 0, 0x20];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::{Keypair, Network, verify_ed25519};

    /// research/mpp.md §3.2: computed with stellar-sdk 15.1.
    const VECTOR: &str = "0000001100000001000000040000000f00000006616d6f756e7400000000000a000000000000000000000000009896800000000f000000076368616e6e656c00000000120000000107070707070707070707070707070707070707070707070707070707070707070000000f00000006646f6d61696e00000000000f000000086368616e636d6d740000000f000000076e6574776f726b000000000d00000020cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472";
    const SIGNATURE: &str = "b2f3752900328a16c3b4ba4d6399376dff9a5db5dec3f9843dc1f3dfbdca66d22ebcbab9900204beba5ac1cc5778bd6b96d621582438e7ded07ff8db05c7e90b";

    use hex::encode as hex;
    use stellar_xdr::{
        BytesM, Int128Parts, Limits, ScBytes, ScMap, ScMapEntry, ScSymbol, ScVal, StringM, WriteXdr,
    };

    /// The commitment built with the XDR types, as the contract builds it.
    fn commitment_xdr(network: &NetworkId, channel: &Address, amount: i128) -> Vec<u8> {
        let symbol = |text: &str| ScVal::Symbol(ScSymbol(StringM::try_from(text).unwrap()));
        let entry = |key: &str, val: ScVal| ScMapEntry {
            key: symbol(key),
            val,
        };
        let map = ScVal::Map(Some(ScMap(
            vec![
                entry(
                    "amount",
                    ScVal::I128(Int128Parts {
                        hi: (amount >> 64) as i64,
                        lo: amount as u64,
                    }),
                ),
                entry("channel", ScVal::Address(channel.to_sc_address())),
                entry("domain", symbol(COMMITMENT_DOMAIN)),
                entry(
                    "network",
                    ScVal::Bytes(ScBytes(BytesM::try_from(network.0.to_vec()).unwrap())),
                ),
            ]
            .try_into()
            .unwrap(),
        )));
        map.to_xdr(Limits::none()).unwrap()
    }

    #[test]
    fn the_written_out_bytes_are_the_xdr_of_the_map() {
        let mut amount: i128 = 1;
        for round in 0..200u32 {
            let channel = Address::Contract([round as u8; 32]);
            let network = if round % 2 == 0 {
                Network::testnet()
            } else {
                Network::pubnet()
            };
            for value in [amount, -amount, i128::MAX, i128::MIN, 0] {
                assert_eq!(
                    commitment_bytes(&network.id(), &channel, value)
                        .unwrap()
                        .to_vec(),
                    commitment_xdr(&network.id(), &channel, value),
                    "{value}"
                );
            }
            amount = amount.wrapping_mul(7).wrapping_add(i128::from(round));
        }
    }

    #[test]
    fn the_commitment_matches_the_sdk_vector() {
        let channel: Address = "CADQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQP5KR"
            .parse()
            .unwrap();
        assert_eq!(channel, Address::Contract([7; 32]));
        let bytes = commitment_bytes(&Network::testnet().id(), &channel, 10_000_000).unwrap();
        assert_eq!(hex(bytes), VECTOR);

        let key = Keypair::from_seed([1; 32]);
        assert_eq!(
            hex(key.public_key()),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        let signature = key.sign(&bytes);
        assert_eq!(hex(signature), SIGNATURE);
        assert!(verify_ed25519(&key.public_key(), &bytes, &signature));
    }

    #[test]
    fn amounts_are_big_endian_i128_and_networks_differ() {
        let channel = Address::Contract([7; 32]);
        let testnet = Network::testnet().id();
        let big = commitment_bytes(&testnet, &channel, -2).unwrap();
        // The I128 body after the map header, the `amount` key and the type: hi then lo, both
        // big-endian two's complement.
        let mut minus_two = [0xff; 16];
        minus_two[15] = 0xfe;
        assert_eq!(big[32..48], minus_two);
        let pubnet = commitment_bytes(&Network::pubnet().id(), &channel, -2).unwrap();
        assert_ne!(big, pubnet);
        assert_eq!(big[..160], pubnet[..160]);
    }

    #[test]
    fn accounts_are_not_channels() {
        let account = Keypair::from_seed([1; 32]).address();
        assert_eq!(
            commitment_bytes(&Network::testnet().id(), &account, 1),
            Err(CommitmentError::NotAContract)
        );
    }
}
