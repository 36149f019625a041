//! The one-way payment channel contract's signed commitment.
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

use stellar_xdr::{
    BytesM, Int128Parts, Limits, ScBytes, ScMap, ScMapEntry, ScSymbol, ScVal, StringM, WriteXdr,
};

use super::{Address, NetworkId};

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
    if !channel.is_contract() {
        return Err(CommitmentError::NotAContract);
    }
    let entry = |key: &str, val: ScVal| ScMapEntry {
        key: symbol(key),
        val,
    };
    // Keys in symbol order, as the contract's map keeps them.
    let map = ScVal::Map(Some(ScMap(
        [
            entry(
                "amount",
                ScVal::I128(Int128Parts {
                    // Truncating casts on purpose: the high and the low 64 bits.
                    hi: (amount >> 64) as i64,
                    lo: amount as u64,
                }),
            ),
            entry("channel", ScVal::Address(channel.to_sc_address())),
            entry("domain", symbol(COMMITMENT_DOMAIN)),
            entry(
                "network",
                // Invariant: 32 bytes fit an unbounded BytesM.
                ScVal::Bytes(ScBytes(
                    BytesM::try_from(network.0.to_vec()).expect("32 bytes fit"),
                )),
            ),
        ]
        .to_vec()
        .try_into()
        // Invariant: four entries fit an unbounded VecM.
        .expect("four entries fit"),
    )));
    // Invariant: a contract address makes the map exactly COMMITMENT_LEN bytes of XDR.
    let xdr = map
        .to_xdr(Limits::none())
        .expect("a commitment map encodes");
    Ok(xdr.try_into().expect("a commitment is 192 bytes"))
}

/// A symbol of at most 32 characters.
fn symbol(text: &str) -> ScVal {
    // Invariant: only the short constant names above are passed.
    ScVal::Symbol(ScSymbol(StringM::try_from(text).expect("a short symbol")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::{Keypair, Network, verify_ed25519};

    /// research/mpp.md §3.2: computed with stellar-sdk 15.1.
    const VECTOR: &str = "0000001100000001000000040000000f00000006616d6f756e7400000000000a000000000000000000000000009896800000000f000000076368616e6e656c00000000120000000107070707070707070707070707070707070707070707070707070707070707070000000f00000006646f6d61696e00000000000f000000086368616e636d6d740000000f000000076e6574776f726b000000000d00000020cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472";
    const SIGNATURE: &str = "b2f3752900328a16c3b4ba4d6399376dff9a5db5dec3f9843dc1f3dfbdca66d22ebcbab9900204beba5ac1cc5778bd6b96d621582438e7ded07ff8db05c7e90b";

    use crate::hex::encode as hex;

    #[test]
    fn the_commitment_matches_the_sdk_vector() {
        let channel: Address = "CADQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQP5KR"
            .parse()
            .unwrap();
        assert_eq!(channel, Address::Contract([7; 32]));
        let bytes = commitment_bytes(&Network::testnet().id(), &channel, 10_000_000).unwrap();
        assert_eq!(hex(&bytes), VECTOR);

        let key = Keypair::from_seed([1; 32]);
        assert_eq!(
            hex(&key.public_key()),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        let signature = key.sign(&bytes);
        assert_eq!(hex(&signature), SIGNATURE);
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
