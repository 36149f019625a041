//! Stellar networks: CAIP-2 names, passphrases and network ids.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The id of a Stellar network: `sha256(passphrase)`.
///
/// It is mixed into every signature payload (transactions and Soroban authorization entries), so a
/// signature made for one network never verifies on another.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkId(pub [u8; 32]);

impl NetworkId {
    /// Computes the id of the network with this passphrase.
    #[must_use]
    pub fn from_passphrase(passphrase: &str) -> NetworkId {
        NetworkId(Sha256::digest(passphrase.as_bytes()).into())
    }

    /// The 32 id bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id as the XDR `Hash` used in signature preimages.
    #[must_use]
    pub fn to_xdr_hash(&self) -> stellar_xdr::Hash {
        stellar_xdr::Hash(self.0)
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkId(")?;
        f.write_str(&hex::encode(self.0))?;
        f.write_str(")")
    }
}

/// Why a network name or passphrase was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The name is not `stellar:<reference>` with a CAIP-2 reference (`[-_a-zA-Z0-9]{1,32}`).
    #[error("network is not a CAIP-2 `stellar:<reference>` name")]
    InvalidCaip2,
    /// The name is well formed but is not a network this crate knows (`stellar:testnet`, `stellar:pubnet`).
    #[error("unknown stellar network")]
    UnknownNetwork,
    /// `stellar:testnet` or `stellar:pubnet` was given with a passphrase other than its real one.
    #[error("`stellar:testnet` and `stellar:pubnet` must use their real passphrases")]
    ReservedName,
    /// The passphrase is empty.
    #[error("network passphrase is empty")]
    EmptyPassphrase,
}

/// A Stellar network: its CAIP-2 name (`stellar:testnet`), its passphrase and its [`NetworkId`].
///
/// ```
/// use tower_paywall::stellar::Network;
///
/// let testnet: Network = "stellar:testnet".parse()?;
/// assert_eq!(testnet, Network::testnet());
/// assert_eq!(testnet.passphrase(), Network::TESTNET_PASSPHRASE);
///
/// let local = Network::custom("stellar:local", "Standalone Network ; February 2017")?;
/// assert_eq!(local.caip2(), "stellar:local");
/// # Ok::<(), tower_paywall::stellar::NetworkError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    caip2: Cow<'static, str>,
    passphrase: Cow<'static, str>,
    id: NetworkId,
}

impl Network {
    /// The passphrase of the public test network.
    pub const TESTNET_PASSPHRASE: &'static str = "Test SDF Network ; September 2015";
    /// The passphrase of the public main network.
    pub const PUBNET_PASSPHRASE: &'static str = "Public Global Stellar Network ; September 2015";

    const CAIP2_NAMESPACE: &'static str = "stellar:";
    const TESTNET_CAIP2: &'static str = "stellar:testnet";
    const PUBNET_CAIP2: &'static str = "stellar:pubnet";
    const MAX_REFERENCE_LEN: usize = 32;

    /// The public test network, `stellar:testnet`.
    #[must_use]
    pub fn testnet() -> Network {
        Network::known(Network::TESTNET_CAIP2, Network::TESTNET_PASSPHRASE)
    }

    /// The public main network, `stellar:pubnet`.
    #[must_use]
    pub fn pubnet() -> Network {
        Network::known(Network::PUBNET_CAIP2, Network::PUBNET_PASSPHRASE)
    }

    fn known(caip2: &'static str, passphrase: &'static str) -> Network {
        Network {
            caip2: Cow::Borrowed(caip2),
            passphrase: Cow::Borrowed(passphrase),
            id: NetworkId::from_passphrase(passphrase),
        }
    }

    /// Any other network (a standalone or private one), by CAIP-2 name and passphrase.
    ///
    /// `caip2` must be `stellar:<reference>` with a CAIP-2 reference (`[-_a-zA-Z0-9]{1,32}`). The names
    /// `stellar:testnet` and `stellar:pubnet` are accepted only with their real passphrase.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidCaip2`], [`NetworkError::ReservedName`] or [`NetworkError::EmptyPassphrase`].
    pub fn custom(caip2: &str, passphrase: &str) -> Result<Network, NetworkError> {
        validate_caip2(caip2)?;
        if passphrase.is_empty() {
            return Err(NetworkError::EmptyPassphrase);
        }
        for known in [Network::testnet(), Network::pubnet()] {
            if known.caip2 == caip2 {
                return if known.passphrase == passphrase {
                    Ok(known)
                } else {
                    Err(NetworkError::ReservedName)
                };
            }
        }
        Ok(Network {
            caip2: Cow::Owned(caip2.to_owned()),
            passphrase: Cow::Owned(passphrase.to_owned()),
            id: NetworkId::from_passphrase(passphrase),
        })
    }

    /// A known network by CAIP-2 name: `stellar:testnet` or `stellar:pubnet`.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidCaip2`] for a malformed name, [`NetworkError::UnknownNetwork`] for any other
    /// well-formed one (use [`Network::custom`] for those).
    pub fn from_caip2(caip2: &str) -> Result<Network, NetworkError> {
        match caip2 {
            Network::TESTNET_CAIP2 => Ok(Network::testnet()),
            Network::PUBNET_CAIP2 => Ok(Network::pubnet()),
            other => {
                validate_caip2(other)?;
                Err(NetworkError::UnknownNetwork)
            }
        }
    }

    /// A known network by the name an operator writes: `testnet`, `pubnet` (or `mainnet`), or
    /// a CAIP-2 name ([`Network::from_caip2`]).
    ///
    /// ```
    /// use tower_paywall::stellar::{Network, NetworkError};
    ///
    /// assert_eq!(Network::from_name("testnet")?, Network::testnet());
    /// assert_eq!(Network::from_name("mainnet")?, Network::pubnet());
    /// assert_eq!(Network::from_name("stellar:pubnet")?, Network::pubnet());
    /// assert_eq!(Network::from_name("futurenet"), Err(NetworkError::InvalidCaip2));
    /// # Ok::<(), NetworkError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Network::from_caip2`], for any other name.
    pub fn from_name(name: &str) -> Result<Network, NetworkError> {
        match name {
            "testnet" => Ok(Network::testnet()),
            "pubnet" | "mainnet" => Ok(Network::pubnet()),
            caip2 => Network::from_caip2(caip2),
        }
    }

    /// The CAIP-2 name, e.g. `stellar:testnet`.
    #[must_use]
    pub fn caip2(&self) -> &str {
        &self.caip2
    }

    /// The network passphrase.
    #[must_use]
    pub fn passphrase(&self) -> &str {
        &self.passphrase
    }

    /// The network id, `sha256(passphrase)` (computed once, at construction).
    #[must_use]
    pub const fn id(&self) -> NetworkId {
        self.id
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    /// Same as [`Network::from_caip2`].
    fn from_str(caip2: &str) -> Result<Network, NetworkError> {
        Network::from_caip2(caip2)
    }
}

impl fmt::Display for Network {
    /// Writes the CAIP-2 name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.caip2)
    }
}

/// Checks `stellar:<reference>` with a CAIP-2 reference `[-_a-zA-Z0-9]{1,32}`.
fn validate_caip2(caip2: &str) -> Result<(), NetworkError> {
    let reference = caip2
        .strip_prefix(Network::CAIP2_NAMESPACE)
        .ok_or(NetworkError::InvalidCaip2)?;
    let valid = (1..=Network::MAX_REFERENCE_LEN).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(NetworkError::InvalidCaip2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hex::encode as hex;

    #[test]
    fn network_ids_match_the_published_values() {
        assert_eq!(
            hex(Network::testnet().id().as_bytes()),
            "cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472"
        );
        assert_eq!(
            hex(Network::pubnet().id().as_bytes()),
            "7ac33997544e3175d266bd022439b22cdb16508c01163f26e5cb2a3e1045a979"
        );
    }

    #[test]
    fn network_id_debug_is_hex() {
        assert_eq!(
            format!("{:?}", Network::testnet().id()),
            "NetworkId(cee0302d59844d32bdca915c8203dd44b33fbb7edc19051ea37abedf28ecd472)"
        );
    }

    #[test]
    fn known_networks_parse_from_caip2() {
        assert_eq!(
            Network::from_caip2("stellar:testnet"),
            Ok(Network::testnet())
        );
        assert_eq!("stellar:pubnet".parse(), Ok(Network::pubnet()));
        assert_eq!(Network::testnet().caip2(), "stellar:testnet");
        assert_eq!(Network::pubnet().to_string(), "stellar:pubnet");
        assert_eq!(Network::pubnet().passphrase(), Network::PUBNET_PASSPHRASE);
    }

    #[test]
    fn unknown_and_malformed_caip2_are_refused() {
        for unknown in ["stellar:local", "stellar:public", "stellar:mainnet"] {
            assert_eq!(
                Network::from_caip2(unknown),
                Err(NetworkError::UnknownNetwork),
                "{unknown}"
            );
        }
        let too_long = format!("stellar:{}", "a".repeat(33));
        for malformed in [
            "",
            "testnet",
            "stellar:",
            "Stellar:testnet",
            "stellar:test net",
            "stellar:testnet ",
            "stellar:test.net",
            "stellar:tëst",
            "eip155:1",
            too_long.as_str(),
        ] {
            assert_eq!(
                Network::from_caip2(malformed),
                Err(NetworkError::InvalidCaip2),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn operator_names() {
        assert_eq!(Network::from_name("testnet"), Ok(Network::testnet()));
        assert_eq!(Network::from_name("pubnet"), Ok(Network::pubnet()));
        assert_eq!(Network::from_name("mainnet"), Ok(Network::pubnet()));
        assert_eq!(
            Network::from_name("stellar:testnet"),
            Ok(Network::testnet())
        );
        assert_eq!(
            Network::from_name("stellar:local"),
            Err(NetworkError::UnknownNetwork)
        );
        for refused in ["", "Testnet", "public", " testnet"] {
            assert_eq!(
                Network::from_name(refused),
                Err(NetworkError::InvalidCaip2),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn custom_networks() {
        let local = Network::custom("stellar:local", "Standalone Network ; February 2017");
        let local = local.expect("valid custom network");
        assert_eq!(local.caip2(), "stellar:local");
        assert_eq!(
            local.id(),
            NetworkId::from_passphrase("Standalone Network ; February 2017")
        );
        let longest = format!("stellar:{}", "a-_Z9".repeat(6) + "ab");
        assert!(Network::custom(&longest, "x").is_ok());
    }

    #[test]
    fn custom_refuses_bad_input() {
        assert_eq!(
            Network::custom("stellar:local", ""),
            Err(NetworkError::EmptyPassphrase)
        );
        assert_eq!(
            Network::custom("local", "x"),
            Err(NetworkError::InvalidCaip2)
        );
        assert_eq!(
            Network::custom("stellar:testnet", Network::PUBNET_PASSPHRASE),
            Err(NetworkError::ReservedName)
        );
        assert_eq!(
            Network::custom("stellar:pubnet", "mine"),
            Err(NetworkError::ReservedName)
        );
    }

    #[test]
    fn custom_with_a_real_passphrase_is_the_known_network() {
        assert_eq!(
            Network::custom("stellar:testnet", Network::TESTNET_PASSPHRASE),
            Ok(Network::testnet())
        );
        assert_eq!(
            Network::custom("stellar:pubnet", Network::PUBNET_PASSPHRASE),
            Ok(Network::pubnet())
        );
    }
}
