//! Stellar Asset Contracts (SAC): the Soroban token contract of a classic asset, and well-known ids.

use sha2::{Digest, Sha256};
use stellar_xdr::{ContractIdPreimage, HashIdPreimage, HashIdPreimageContractId, Limits, WriteXdr};

use super::{Address, Network, NetworkId};

/// USDC's SAC on testnet (`USDC:`[`USDC_ISSUER_TESTNET`]).
pub const USDC_TESTNET: &str = "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA";
/// USDC's SAC on pubnet (`USDC:`[`USDC_ISSUER_PUBNET`], Circle).
pub const USDC_PUBNET: &str = "CCW67TSZV3SSS2HXMBQ5JFGCKJNXKZM7UQUWUZPUTHXSTZLEO7SJMI75";
/// The native asset's (XLM) SAC on testnet.
pub const XLM_TESTNET: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";
/// The native asset's (XLM) SAC on pubnet.
pub const XLM_PUBNET: &str = "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA";
/// The issuer of USDC on testnet.
pub const USDC_ISSUER_TESTNET: &str = "GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5";
/// The issuer of USDC on pubnet (Circle).
pub const USDC_ISSUER_PUBNET: &str = "GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN";

/// The contract id of the Stellar Asset Contract of `asset` on the network `network`.
///
/// It is `sha256(XDR(HashIdPreimage::ContractId { network_id, contract_id_preimage: Asset(asset) }))`:
/// deterministic, so it can be computed offline.
///
/// ```
/// use tower_paywall::stellar::{Network, XLM_TESTNET, stellar_asset_contract, xdr::Asset};
///
/// let xlm = stellar_asset_contract(&Network::testnet().id(), &Asset::Native);
/// assert_eq!(xlm.to_string(), XLM_TESTNET);
/// ```
#[must_use]
pub fn stellar_asset_contract(network: &NetworkId, asset: &stellar_xdr::Asset) -> Address {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: network.to_xdr_hash(),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    // Invariant: encoding a well-formed in-memory value into a Vec without limits cannot fail (an asset
    // has no variable-length parts that could exceed their XDR maximum).
    let xdr = preimage
        .to_xdr(Limits::none())
        .expect("an asset preimage always encodes");
    Address::Contract(Sha256::digest(xdr).into())
}

impl Network {
    /// USDC's Stellar Asset Contract on this network: [`USDC_TESTNET`] or [`USDC_PUBNET`]; `None` on any
    /// other network.
    #[must_use]
    pub fn usdc(&self) -> Option<Address> {
        let strkey = if self.id() == Network::testnet().id() {
            USDC_TESTNET
        } else if self.id() == Network::pubnet().id() {
            USDC_PUBNET
        } else {
            return None;
        };
        strkey.parse().ok()
    }

    /// The native asset's (XLM) Stellar Asset Contract on this network (any network).
    #[must_use]
    pub fn native_asset_contract(&self) -> Address {
        stellar_asset_contract(&self.id(), &stellar_xdr::Asset::Native)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::address::account_id;
    use stellar_xdr::{AlphaNum4, Asset, AssetCode4};

    fn usdc(issuer: &str) -> Asset {
        let issuer: Address = issuer.parse().expect("valid issuer");
        let key = issuer.ed25519_key().expect("an account");
        Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(*b"USDC"),
            issuer: account_id(key),
        })
    }

    fn derive(network: &Network, asset: &Asset) -> String {
        stellar_asset_contract(&network.id(), asset).to_string()
    }

    #[test]
    fn usdc_testnet_is_derived_from_its_issuer() {
        assert_eq!(
            derive(&Network::testnet(), &usdc(USDC_ISSUER_TESTNET)),
            USDC_TESTNET
        );
    }

    #[test]
    fn usdc_pubnet_is_derived_from_its_issuer() {
        assert_eq!(
            derive(&Network::pubnet(), &usdc(USDC_ISSUER_PUBNET)),
            USDC_PUBNET
        );
    }

    #[test]
    fn xlm_contracts_are_derived_from_the_native_asset() {
        assert_eq!(derive(&Network::testnet(), &Asset::Native), XLM_TESTNET);
        assert_eq!(derive(&Network::pubnet(), &Asset::Native), XLM_PUBNET);
        assert_eq!(
            Network::testnet().native_asset_contract().to_string(),
            XLM_TESTNET
        );
        assert_eq!(
            Network::pubnet().native_asset_contract().to_string(),
            XLM_PUBNET
        );
    }

    #[test]
    fn the_same_asset_differs_per_network() {
        let asset = usdc(USDC_ISSUER_TESTNET);
        assert_ne!(
            derive(&Network::testnet(), &asset),
            derive(&Network::pubnet(), &asset)
        );
    }

    #[test]
    fn network_usdc() {
        assert_eq!(
            Network::testnet().usdc().map(|a| a.to_string()).as_deref(),
            Some(USDC_TESTNET)
        );
        assert_eq!(
            Network::pubnet().usdc().map(|a| a.to_string()).as_deref(),
            Some(USDC_PUBNET)
        );
        let local = Network::custom("stellar:local", "Standalone Network ; February 2017");
        assert_eq!(local.expect("valid network").usdc(), None);
    }

    #[test]
    fn constants_are_valid_strkeys_of_the_right_kind() {
        for contract in [USDC_TESTNET, USDC_PUBNET, XLM_TESTNET, XLM_PUBNET] {
            assert!(contract.parse::<Address>().expect(contract).is_contract());
        }
        for issuer in [USDC_ISSUER_TESTNET, USDC_ISSUER_PUBNET] {
            assert!(
                matches!(issuer.parse::<Address>(), Ok(Address::Account(_))),
                "{issuer}"
            );
        }
    }
}
