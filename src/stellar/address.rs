//! Stellar addresses: accounts (`G…`), contracts (`C…`) and muxed accounts (`M…`).

use std::fmt;
use std::str::FromStr;

use stellar_strkey::Strkey;
use stellar_xdr::{
    AccountId, ContractId, Hash, MuxedAccount, MuxedAccountMed25519, MuxedEd25519Account,
    PublicKey, ScAddress, Uint256,
};

/// Why a strkey or an XDR address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The text is not a valid strkey (bad base32, checksum or length). Secret seeds (`S…`) land here too.
    #[error("invalid stellar address")]
    Invalid,
    /// A valid strkey of a kind that is not an address this crate handles (pre-auth tx, hash-x, signed
    /// payload, liquidity pool, claimable balance, muxed contract).
    #[error("unsupported stellar address kind")]
    UnsupportedKind,
}

/// A Stellar address that can send or receive a token: an account (`G…`), a contract (`C…`) or a muxed
/// account (`M…`, an account plus a 64-bit id).
///
/// Parsed from and displayed as its strkey:
///
/// ```
/// use tower_paywall::stellar::Address;
///
/// let strkey = "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR";
/// let account: Address = strkey.parse()?;
/// assert!(account.is_account());
/// assert_eq!(account.to_string(), strkey);
/// # Ok::<(), tower_paywall::stellar::AddressError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// An account (`G…`): its ed25519 public key.
    Account([u8; 32]),
    /// A contract (`C…`): its contract id.
    Contract([u8; 32]),
    /// A muxed account (`M…`): an account's ed25519 public key and a 64-bit id.
    MuxedAccount {
        /// The account's ed25519 public key.
        ed25519: [u8; 32],
        /// The multiplexing id.
        id: u64,
    },
}

impl Address {
    /// The address as an `ScAddress`, the form used in contract arguments and authorization entries.
    #[must_use]
    pub fn to_sc_address(&self) -> ScAddress {
        match *self {
            Address::Account(key) => ScAddress::Account(account_id(key)),
            Address::Contract(id) => ScAddress::Contract(ContractId(Hash(id))),
            Address::MuxedAccount { ed25519, id } => ScAddress::MuxedAccount(MuxedEd25519Account {
                id,
                ed25519: Uint256(ed25519),
            }),
        }
    }

    /// Reads an `ScAddress`.
    ///
    /// # Errors
    ///
    /// [`AddressError::UnsupportedKind`] for the claimable-balance, liquidity-pool and muxed-contract arms.
    pub fn from_sc_address(address: &ScAddress) -> Result<Address, AddressError> {
        match address {
            ScAddress::Account(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))) => {
                Ok(Address::Account(*key))
            }
            ScAddress::Contract(ContractId(Hash(id))) => Ok(Address::Contract(*id)),
            ScAddress::MuxedAccount(MuxedEd25519Account { id, ed25519 }) => {
                Ok(Address::MuxedAccount {
                    ed25519: ed25519.0,
                    id: *id,
                })
            }
            ScAddress::ClaimableBalance(_)
            | ScAddress::LiquidityPool(_)
            | ScAddress::MuxedContract(_) => Err(AddressError::UnsupportedKind),
        }
    }

    /// Reads a transaction or operation source (`MuxedAccount`): always an account or a muxed account.
    #[must_use]
    pub fn from_muxed_account(account: &MuxedAccount) -> Address {
        match account {
            MuxedAccount::Ed25519(Uint256(key)) => Address::Account(*key),
            MuxedAccount::MuxedEd25519(MuxedAccountMed25519 { id, ed25519 }) => {
                Address::MuxedAccount {
                    ed25519: ed25519.0,
                    id: *id,
                }
            }
        }
    }

    /// The address as a transaction or operation source (`MuxedAccount`); `None` for a contract, which
    /// cannot be a source.
    #[must_use]
    pub fn to_muxed_account(&self) -> Option<MuxedAccount> {
        match *self {
            Address::Account(key) => Some(MuxedAccount::Ed25519(Uint256(key))),
            Address::MuxedAccount { ed25519, id } => {
                Some(MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                    id,
                    ed25519: Uint256(ed25519),
                }))
            }
            Address::Contract(_) => None,
        }
    }

    /// The ed25519 public key of an account or muxed account; `None` for a contract.
    #[must_use]
    pub const fn ed25519_key(&self) -> Option<[u8; 32]> {
        match *self {
            Address::Account(key) | Address::MuxedAccount { ed25519: key, .. } => Some(key),
            Address::Contract(_) => None,
        }
    }

    /// Whether this is an account (`G…`) or a muxed account (`M…`).
    #[must_use]
    pub const fn is_account(&self) -> bool {
        matches!(self, Address::Account(_) | Address::MuxedAccount { .. })
    }

    /// Whether this is a contract (`C…`).
    #[must_use]
    pub const fn is_contract(&self) -> bool {
        matches!(self, Address::Contract(_))
    }
}

/// An `AccountId` for an ed25519 public key.
pub(crate) fn account_id(key: [u8; 32]) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))
}

impl FromStr for Address {
    type Err = AddressError;

    /// Parses a `G…`, `C…` or `M…` strkey. The error never echoes the input.
    fn from_str(strkey: &str) -> Result<Address, AddressError> {
        match Strkey::from_string(strkey).map_err(|_| AddressError::Invalid)? {
            Strkey::PublicKeyEd25519(key) => Ok(Address::Account(key.0)),
            Strkey::Contract(contract) => Ok(Address::Contract(contract.0)),
            Strkey::MuxedAccountEd25519(muxed) => Ok(Address::MuxedAccount {
                ed25519: muxed.ed25519,
                id: muxed.id,
            }),
            Strkey::PreAuthTx(_)
            | Strkey::HashX(_)
            | Strkey::SignedPayloadEd25519(_)
            | Strkey::LiquidityPool(_)
            | Strkey::ClaimableBalance(_)
            | Strkey::MuxedContract(_) => Err(AddressError::UnsupportedKind),
        }
    }
}

impl fmt::Display for Address {
    /// Writes the strkey.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Address::Account(key) => fmt::Display::fmt(&stellar_strkey::ed25519::PublicKey(key), f),
            Address::Contract(id) => fmt::Display::fmt(&stellar_strkey::Contract(id), f),
            Address::MuxedAccount { ed25519, id } => {
                fmt::Display::fmt(&stellar_strkey::ed25519::MuxedAccount { ed25519, id }, f)
            }
        }
    }
}

impl serde::Serialize for Address {
    /// Serializes as the strkey string.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    /// Deserializes from a strkey string.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        let strkey = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        strkey.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{ClaimableBalanceId, MuxedContract, PoolId};

    const ACCOUNT: &str = "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR";
    const NULL_ACCOUNT: &str = "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF";
    const CONTRACT: &str = "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA";
    /// SEP-23 test vector: account `GA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVSGZ` with id 0.
    const MUXED: &str = "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJUAAAAAAAAAAAACJUQ";
    const MUXED_ACCOUNT: &str = "GA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVSGZ";
    /// SEP-23 test vector: the same account with id 2^63 (above `i64::MAX`).
    const MUXED_HIGH_ID: &str =
        "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVAAAAAAAAAAAAAJLK";

    fn parse(strkey: &str) -> Address {
        strkey.parse().expect("valid strkey")
    }

    #[test]
    fn strkeys_round_trip() {
        for strkey in [ACCOUNT, NULL_ACCOUNT, CONTRACT, MUXED, MUXED_HIGH_ID] {
            assert_eq!(parse(strkey).to_string(), strkey);
        }
    }

    #[test]
    fn null_account_is_all_zeros() {
        assert_eq!(parse(NULL_ACCOUNT), Address::Account([0; 32]));
    }

    #[test]
    fn kinds() {
        assert!(parse(ACCOUNT).is_account());
        assert!(parse(MUXED).is_account());
        assert!(parse(CONTRACT).is_contract());
        assert!(!parse(CONTRACT).is_account());
        assert_eq!(parse(CONTRACT).ed25519_key(), None);
        let Address::MuxedAccount { ed25519, id } = parse(MUXED) else {
            panic!("expected a muxed account")
        };
        assert_eq!(id, 0);
        assert_eq!(parse(MUXED_ACCOUNT), Address::Account(ed25519));
        assert_eq!(parse(MUXED).ed25519_key(), Some(ed25519));
        assert_eq!(parse(MUXED_ACCOUNT).ed25519_key(), Some(ed25519));
    }

    #[test]
    fn muxed_id_above_i64_max() {
        let account = parse(MUXED_ACCOUNT).ed25519_key().expect("an account");
        assert_eq!(
            parse(MUXED_HIGH_ID),
            Address::MuxedAccount {
                ed25519: account,
                id: 1 << 63
            }
        );
    }

    #[test]
    fn muxed_id_is_big_endian() {
        let muxed = Address::MuxedAccount {
            ed25519: [7; 32],
            id: 0x0102_0304_0506_0708,
        };
        assert_eq!(parse(&muxed.to_string()), muxed);
    }

    #[test]
    fn invalid_strkeys_are_refused_without_echo() {
        let seed = "SAAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQC526";
        for bad in [
            "",
            " ",
            "G",
            "gcfiry65oqe7dfp5klns2pf2lvzmuzyjx4oziEQ36N2IQANUB5XVYOJR",
            "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJS",
            "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR ",
            seed,
        ] {
            let error = bad.parse::<Address>().expect_err(bad);
            assert_eq!(error, AddressError::Invalid, "{bad:?}");
            assert!(!error.to_string().contains("SAAQ"));
        }
    }

    #[test]
    fn non_address_strkeys_are_unsupported() {
        let pre_auth_tx = stellar_strkey::PreAuthTx([1; 32]).to_string();
        let pool = stellar_strkey::LiquidityPool([1; 32]).to_string();
        let muxed_contract = stellar_strkey::MuxedContract {
            contract_id: [1; 32],
            id: 1,
        }
        .to_string();
        for strkey in [pre_auth_tx.as_str(), pool.as_str(), muxed_contract.as_str()] {
            assert_eq!(
                strkey.parse::<Address>(),
                Err(AddressError::UnsupportedKind),
                "{strkey}"
            );
        }
    }

    #[test]
    fn sc_address_round_trip() {
        for strkey in [ACCOUNT, CONTRACT, MUXED] {
            let address = parse(strkey);
            assert_eq!(
                Address::from_sc_address(&address.to_sc_address()),
                Ok(address)
            );
        }
    }

    #[test]
    fn sc_address_arms() {
        assert_eq!(
            parse(ACCOUNT).to_sc_address().to_string(),
            ACCOUNT,
            "stellar-xdr renders the same strkey"
        );
        assert_eq!(parse(CONTRACT).to_sc_address().to_string(), CONTRACT);
        assert_eq!(parse(MUXED).to_sc_address().to_string(), MUXED);
    }

    #[test]
    fn sc_address_non_addresses_are_refused() {
        let refused = [
            ScAddress::ClaimableBalance(ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(
                [1; 32],
            ))),
            ScAddress::LiquidityPool(PoolId(Hash([1; 32]))),
            ScAddress::MuxedContract(MuxedContract {
                id: 1,
                contract_id: ContractId(Hash([1; 32])),
            }),
        ];
        for address in refused {
            assert_eq!(
                Address::from_sc_address(&address),
                Err(AddressError::UnsupportedKind)
            );
        }
    }

    #[test]
    fn muxed_account_sources() {
        for strkey in [ACCOUNT, MUXED] {
            let address = parse(strkey);
            let source = address.to_muxed_account().expect("accounts can be sources");
            assert_eq!(Address::from_muxed_account(&source), address);
        }
        assert_eq!(parse(CONTRACT).to_muxed_account(), None);
    }

    #[test]
    fn serde_uses_the_strkey() {
        let json = serde_json::to_string(&parse(CONTRACT)).expect("serializes");
        assert_eq!(json, format!("\"{CONTRACT}\""));
        let back: Address = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, parse(CONTRACT));
        assert!(serde_json::from_str::<Address>("\"nope\"").is_err());
    }
}
