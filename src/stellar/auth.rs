//! Soroban authorization entries: the signature payload, the account signature format, signing and
//! offline verification.
//!
//! An entry with `Address` credentials is signed over
//! `sha256(XDR(HashIdPreimage::SorobanAuthorization { network_id, nonce, signature_expiration_ledger,
//! invocation }))` (envelope type 9); `AddressV2` credentials (CAP-71) sign
//! `HashIdPreimage::SorobanAuthorizationWithAddress`, which also binds the `address` (envelope type 10).
//! A Stellar account (`G…`) puts its ed25519 signatures in the credentials as
//! `Vec[Map{ public_key: Bytes(32), signature: Bytes(64) }, …]`.
//!
//! Offline verification checks the signatures only. Whether the keys carry enough weight for the account,
//! whether the nonce is unused and whether the expiration ledger is still ahead are ledger state: a
//! simulation or submission checks them.

use sha2::{Digest, Sha256};
use stellar_xdr::{
    BytesM, HashIdPreimage, HashIdPreimageSorobanAuthorization,
    HashIdPreimageSorobanAuthorizationWithAddress, Limits, ScAddress, ScBytes, ScMap, ScMapEntry,
    ScSymbol, ScVal, ScVec, SorobanAddressCredentials, SorobanAuthorizationEntry,
    SorobanCredentials, StringM, VecM, WriteXdr,
};

use super::signer::{SignError, Signer, sign_checked};
use super::{Address, Keypair, NetworkId, verify_ed25519};

/// The most signatures an account authorization may carry (the host's limit).
pub const MAX_ACCOUNT_SIGNATURES: usize = 20;

const PUBLIC_KEY: &str = "public_key";
const SIGNATURE: &str = "signature";

/// Why an authorization entry could not be signed or verified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials are `SourceAccount` or `AddressWithDelegates`; only `Address` and `AddressV2` are
    /// handled.
    #[error("unsupported soroban credentials: only address credentials are accepted")]
    UnsupportedCredentials,
    /// The credential address is not a Stellar account (`G…`): a contract account defines its own
    /// signature format, which only a simulation can check.
    #[error("credential address is not a stellar account")]
    UnsupportedAddress,
    /// The signature is `Void` or an empty vector.
    #[error("authorization entry is not signed")]
    Unsigned,
    /// The signature is not `Vec[Map{public_key: Bytes(32), signature: Bytes(64)}]` with 1 to 20
    /// elements in strictly increasing public key order.
    #[error("authorization signature is malformed")]
    MalformedSignature,
    /// A signature does not verify over the payload.
    #[error("authorization signature does not verify")]
    BadSignature,
    /// The signature payload could not be encoded as XDR.
    #[error("authorization entry could not be encoded")]
    Encoding,
    /// The signer did not sign.
    #[error(transparent)]
    Signer(#[from] SignError),
}

/// One ed25519 signature in an account's authorization: the signer's public key and its signature over
/// the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountSignature {
    /// The signer's raw ed25519 public key.
    pub public_key: [u8; 32],
    /// The ed25519 signature over the 32-byte authorization payload.
    pub signature: [u8; 64],
}

/// The address credentials of an entry (`Address` or `AddressV2` arm).
///
/// # Errors
///
/// [`AuthError::UnsupportedCredentials`] for `SourceAccount` and `AddressWithDelegates`.
pub fn address_credentials(
    entry: &SorobanAuthorizationEntry,
) -> Result<&SorobanAddressCredentials, AuthError> {
    match &entry.credentials {
        SorobanCredentials::Address(credentials) | SorobanCredentials::AddressV2(credentials) => {
            Ok(credentials)
        }
        SorobanCredentials::SourceAccount | SorobanCredentials::AddressWithDelegates(_) => {
            Err(AuthError::UnsupportedCredentials)
        }
    }
}

fn address_credentials_mut(
    entry: &mut SorobanAuthorizationEntry,
) -> Result<&mut SorobanAddressCredentials, AuthError> {
    match &mut entry.credentials {
        SorobanCredentials::Address(credentials) | SorobanCredentials::AddressV2(credentials) => {
            Ok(credentials)
        }
        SorobanCredentials::SourceAccount | SorobanCredentials::AddressWithDelegates(_) => {
            Err(AuthError::UnsupportedCredentials)
        }
    }
}

/// The preimage the entry's signature covers: `SorobanAuthorization` (envelope type 9) for `Address`
/// credentials, `SorobanAuthorizationWithAddress` (type 10) for `AddressV2`.
///
/// # Errors
///
/// [`AuthError::UnsupportedCredentials`] for `SourceAccount` and `AddressWithDelegates`.
pub fn authorization_preimage(
    network: &NetworkId,
    entry: &SorobanAuthorizationEntry,
) -> Result<HashIdPreimage, AuthError> {
    let network_id = network.to_xdr_hash();
    let invocation = entry.root_invocation.clone();
    match &entry.credentials {
        SorobanCredentials::Address(credentials) => Ok(HashIdPreimage::SorobanAuthorization(
            HashIdPreimageSorobanAuthorization {
                network_id,
                nonce: credentials.nonce,
                signature_expiration_ledger: credentials.signature_expiration_ledger,
                invocation,
            },
        )),
        SorobanCredentials::AddressV2(credentials) => {
            Ok(HashIdPreimage::SorobanAuthorizationWithAddress(
                HashIdPreimageSorobanAuthorizationWithAddress {
                    network_id,
                    nonce: credentials.nonce,
                    signature_expiration_ledger: credentials.signature_expiration_ledger,
                    address: credentials.address.clone(),
                    invocation,
                },
            ))
        }
        SorobanCredentials::SourceAccount | SorobanCredentials::AddressWithDelegates(_) => {
            Err(AuthError::UnsupportedCredentials)
        }
    }
}

/// The 32-byte payload an entry's signers sign: `sha256(XDR(preimage))`, see [`authorization_preimage`].
///
/// # Errors
///
/// [`AuthError::UnsupportedCredentials`] for `SourceAccount` and `AddressWithDelegates`.
pub fn authorization_payload(
    network: &NetworkId,
    entry: &SorobanAuthorizationEntry,
) -> Result<[u8; 32], AuthError> {
    let preimage = authorization_preimage(network, entry)?;
    let xdr = preimage
        .to_xdr(Limits::none())
        .map_err(|_| AuthError::Encoding)?;
    Ok(Sha256::digest(xdr).into())
}

/// Reads an account's signatures from a credentials `signature` value.
///
/// The shape is exactly `Vec[Map{ Symbol("public_key"): Bytes(32), Symbol("signature"): Bytes(64) }, …]`
/// (those two keys, in that order), with 1 to [`MAX_ACCOUNT_SIGNATURES`] elements whose public keys are
/// strictly increasing, as the host requires.
///
/// # Errors
///
/// [`AuthError::Unsigned`] for `Void` or an empty vector, [`AuthError::MalformedSignature`] for any
/// other shape.
pub fn account_signatures(signature: &ScVal) -> Result<Vec<AccountSignature>, AuthError> {
    let elements = match signature {
        ScVal::Void | ScVal::Vec(None) => return Err(AuthError::Unsigned),
        ScVal::Vec(Some(ScVec(elements))) => elements,
        _ => return Err(AuthError::MalformedSignature),
    };
    if elements.is_empty() {
        return Err(AuthError::Unsigned);
    }
    if elements.len() > MAX_ACCOUNT_SIGNATURES {
        return Err(AuthError::MalformedSignature);
    }
    let signatures = elements
        .iter()
        .map(account_signature)
        .collect::<Result<Vec<_>, _>>()?;
    let increasing = signatures
        .iter()
        .zip(signatures.iter().skip(1))
        .all(|(previous, next)| previous.public_key < next.public_key);
    if increasing {
        Ok(signatures)
    } else {
        Err(AuthError::MalformedSignature)
    }
}

fn account_signature(element: &ScVal) -> Result<AccountSignature, AuthError> {
    let ScVal::Map(Some(ScMap(fields))) = element else {
        return Err(AuthError::MalformedSignature);
    };
    let [public_key, signature] = fields.as_slice() else {
        return Err(AuthError::MalformedSignature);
    };
    Ok(AccountSignature {
        public_key: bytes_field(public_key, PUBLIC_KEY)?,
        signature: bytes_field(signature, SIGNATURE)?,
    })
}

/// The value of a `Symbol(name): Bytes(N)` map entry.
fn bytes_field<const N: usize>(field: &ScMapEntry, name: &str) -> Result<[u8; N], AuthError> {
    match field {
        ScMapEntry {
            key: ScVal::Symbol(ScSymbol(key)),
            val: ScVal::Bytes(ScBytes(bytes)),
        } if key.as_slice() == name.as_bytes() => bytes
            .as_slice()
            .try_into()
            .map_err(|_| AuthError::MalformedSignature),
        _ => Err(AuthError::MalformedSignature),
    }
}

/// Writes account signatures in the shape [`account_signatures`] reads. Sort them by public key first
/// when there are several.
///
/// # Errors
///
/// [`AuthError::Encoding`] if there are more than `u32::MAX` signatures.
pub fn encode_account_signatures(signatures: &[AccountSignature]) -> Result<ScVal, AuthError> {
    let elements = signatures
        .iter()
        .map(|signature| {
            let fields = vec![
                bytes_entry(PUBLIC_KEY, &signature.public_key)?,
                bytes_entry(SIGNATURE, &signature.signature)?,
            ];
            Ok(ScVal::Map(Some(ScMap(vec_m(fields)?))))
        })
        .collect::<Result<Vec<_>, AuthError>>()?;
    Ok(ScVal::Vec(Some(ScVec(vec_m(elements)?))))
}

fn bytes_entry(name: &str, bytes: &[u8]) -> Result<ScMapEntry, AuthError> {
    let key = StringM::try_from(name).map_err(|_| AuthError::Encoding)?;
    let val = BytesM::try_from(bytes).map_err(|_| AuthError::Encoding)?;
    Ok(ScMapEntry {
        key: ScVal::Symbol(ScSymbol(key)),
        val: ScVal::Bytes(ScBytes(val)),
    })
}

fn vec_m<T>(items: Vec<T>) -> Result<VecM<T>, AuthError> {
    VecM::try_from(items).map_err(|_| AuthError::Encoding)
}

/// The credential address as a Stellar account key, or [`AuthError::UnsupportedAddress`].
fn account_key(address: &ScAddress) -> Result<[u8; 32], AuthError> {
    match Address::from_sc_address(address) {
        Ok(Address::Account(key)) => Ok(key),
        Ok(Address::Contract(_) | Address::MuxedAccount { .. }) | Err(_) => {
            Err(AuthError::UnsupportedAddress)
        }
    }
}

/// Verifies every signature of an account's authorization entry over its payload (`verify_strict`), and
/// returns the signing public keys.
///
/// The entry must have `Address` or `AddressV2` credentials for a Stellar account (`G…`). This does not
/// check that the keys are signers of that account with enough weight (normally the one signer is the
/// account's own key: compare with [`Address::ed25519_key`]), nor the nonce or the expiration: those are
/// ledger state.
///
/// # Errors
///
/// [`AuthError::UnsupportedCredentials`], [`AuthError::UnsupportedAddress`], [`AuthError::Unsigned`],
/// [`AuthError::MalformedSignature`] or [`AuthError::BadSignature`].
pub fn verify_authorization(
    network: &NetworkId,
    entry: &SorobanAuthorizationEntry,
) -> Result<Vec<[u8; 32]>, AuthError> {
    let credentials = address_credentials(entry)?;
    account_key(&credentials.address)?;
    let signatures = account_signatures(&credentials.signature)?;
    let payload = authorization_payload(network, entry)?;
    signatures
        .iter()
        .map(|signature| {
            if verify_ed25519(&signature.public_key, &payload, &signature.signature) {
                Ok(signature.public_key)
            } else {
                Err(AuthError::BadSignature)
            }
        })
        .collect()
}

/// Signs an account's authorization entry with one key: sets `signature_expiration_ledger`, then writes
/// `Vec[Map{public_key, signature}]` over the payload. Works for `Address` and `AddressV2` credentials.
///
/// `keypair` must be a signer of the credential account, normally its own key. On error the entry is
/// left unchanged.
///
/// # Errors
///
/// [`AuthError::UnsupportedCredentials`] or [`AuthError::UnsupportedAddress`] (the credential address is
/// not a `G…` account).
pub fn sign_authorization(
    entry: &mut SorobanAuthorizationEntry,
    keypair: &Keypair,
    network: &NetworkId,
    signature_expiration_ledger: u32,
) -> Result<(), AuthError> {
    let (mut signed, payload) = to_sign(entry, network, signature_expiration_ledger)?;
    put_signature(&mut signed, keypair.public_key(), keypair.sign(&payload))?;
    *entry = signed;
    Ok(())
}

/// [`sign_authorization`] by any [`Signer`] (a remote or hardware one too). The signature is
/// checked under the signer's key before it is put in; on error the entry is left unchanged.
///
/// # Errors
///
/// As [`sign_authorization`], and [`AuthError::Signer`] when the signer refuses or answers with
/// a signature that does not verify.
pub async fn sign_authorization_by(
    entry: &mut SorobanAuthorizationEntry,
    signer: &dyn Signer,
    network: &NetworkId,
    signature_expiration_ledger: u32,
) -> Result<(), AuthError> {
    let (mut signed, payload) = to_sign(entry, network, signature_expiration_ledger)?;
    let signature = sign_checked(signer, &payload).await?;
    put_signature(&mut signed, signer.public_key(), signature)?;
    *entry = signed;
    Ok(())
}

/// The entry with its expiration set, and the payload its account signs.
fn to_sign(
    entry: &SorobanAuthorizationEntry,
    network: &NetworkId,
    signature_expiration_ledger: u32,
) -> Result<(SorobanAuthorizationEntry, [u8; 32]), AuthError> {
    let mut signed = entry.clone();
    let credentials = address_credentials_mut(&mut signed)?;
    account_key(&credentials.address)?;
    credentials.signature_expiration_ledger = signature_expiration_ledger;
    let payload = authorization_payload(network, &signed)?;
    Ok((signed, payload))
}

fn put_signature(
    entry: &mut SorobanAuthorizationEntry,
    public_key: [u8; 32],
    signature: [u8; 64],
) -> Result<(), AuthError> {
    address_credentials_mut(entry)?.signature = encode_account_signatures(&[AccountSignature {
        public_key,
        signature,
    }])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stellar::{Network, USDC_TESTNET};
    use stellar_xdr::{
        Int128Parts, InvokeContractArgs, SorobanAddressCredentialsWithDelegates,
        SorobanAuthorizedFunction, SorobanAuthorizedInvocation,
    };

    /// The payer: seed 32×0x01, `GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR`.
    pub(crate) fn payer() -> Keypair {
        Keypair::from_seed([1; 32])
    }

    /// The payee: the account of seed 32×0x02, `PAY_TO`.
    pub(crate) fn pay_to() -> Address {
        Keypair::from_seed([2; 32]).address()
    }

    const PAY_TO: &str = "GCATS5YOVB6ROX2WUNKGNQ2MP3GMXDMKSG2O4N5CLX3A6W4PZGZZI55U";

    fn address(strkey: &str) -> Address {
        strkey.parse().expect("valid strkey")
    }

    use hex::encode as hex;

    fn transfer_args(amount: i128) -> InvokeContractArgs {
        let symbol = StringM::try_from("transfer").expect("short symbol");
        let amount = Int128Parts {
            hi: (amount >> 64) as i64,
            lo: amount as u64,
        };
        let args = vec![
            ScVal::Address(payer().address().to_sc_address()),
            ScVal::Address(pay_to().to_sc_address()),
            ScVal::I128(amount),
        ];
        InvokeContractArgs {
            contract_address: address(USDC_TESTNET).to_sc_address(),
            function_name: ScSymbol(symbol),
            args: args.try_into().expect("three args"),
        }
    }

    /// The golden entry: credentials for `GCFIRY65…YOJR` (seed 32×0x01), nonce 1234567890123,
    /// signature expiration ledger 1000, unsigned (`Void`); root invocation USDC testnet
    /// `transfer(GCFIRY65…YOJR, PAY_TO, 10000000)` with no sub-invocations.
    pub(crate) fn golden_entry(v2: bool) -> SorobanAuthorizationEntry {
        let credentials = SorobanAddressCredentials {
            address: payer().address().to_sc_address(),
            nonce: 1_234_567_890_123,
            signature_expiration_ledger: 1000,
            signature: ScVal::Void,
        };
        SorobanAuthorizationEntry {
            credentials: if v2 {
                SorobanCredentials::AddressV2(credentials)
            } else {
                SorobanCredentials::Address(credentials)
            },
            root_invocation: SorobanAuthorizedInvocation {
                function: SorobanAuthorizedFunction::ContractFn(transfer_args(10_000_000)),
                sub_invocations: VecM::default(),
            },
        }
    }

    fn signed_entry(v2: bool) -> SorobanAuthorizationEntry {
        let mut entry = golden_entry(v2);
        sign_authorization(&mut entry, &payer(), &Network::testnet().id(), 2000).expect("signs");
        entry
    }

    fn credentials_mut(entry: &mut SorobanAuthorizationEntry) -> &mut SorobanAddressCredentials {
        address_credentials_mut(entry).expect("address credentials")
    }

    fn testnet() -> NetworkId {
        Network::testnet().id()
    }

    // Golden vectors for `golden_entry` signed by `payer()` on testnet with expiration ledger 2000.
    // Cross-checked: @stellar/stellar-sdk 17.2.0 `authorizeEntry(entry, signer, 2000, Networks.TESTNET)`
    // on the same unsigned entries gives the same payloads and byte-identical signed entries.
    const GOLDEN_PAYLOAD_ADDRESS: &str =
        "c61f2e46f6222950c85ff4b1311e8c883fbcf5dcbb55a20920ed3d1ceb52c368";
    const GOLDEN_PAYLOAD_ADDRESS_V2: &str =
        "dfcde7a75a2b3af263a0dbd3ae42f35d0982c06d9cd115709a6be467ec654245";
    const GOLDEN_SIGNED_ADDRESS: &str = "\
        AAAAAQAAAAAAAAAAiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wAAAEfcfsEywAAB9AAAAAQAAAAAQAAAAEAAAARAAAAAQAA\
        AAIAAAAPAAAACnB1YmxpY19rZXkAAAAAAA0AAAAgiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wAAAAPAAAACXNpZ25hdHVy\
        ZQAAAAAAAA0AAABAL5UvQFp1ZiCwmRH4lgYHAZW1jPnWo0tC+Muek/+P46leqeszla3R5ik1dHC5cNzehpRbHUSZQ7yhNG9agtwuAAAA\
        AAAAAAABUEXNXsBymnaP1a0CUFhS308Cjc6DDlrFIgm6SEg7LwEAAAAIdHJhbnNmZXIAAAADAAAAEgAAAAAAAAAAiojj3XQJ8ZX9Utst\
        PLpdcspnCb8dlBIb83SIAbQPb1wAAAASAAAAAAAAAACBOXcOqH0XX1ajVGbDTH7My42KkbTuN6Jd9g9bj8mzlAAAAAoAAAAAAAAAAAAA\
        AAAAmJaAAAAAAA==";
    const GOLDEN_SIGNED_ADDRESS_V2: &str = "\
        AAAAAgAAAAAAAAAAiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wAAAEfcfsEywAAB9AAAAAQAAAAAQAAAAEAAAARAAAAAQAA\
        AAIAAAAPAAAACnB1YmxpY19rZXkAAAAAAA0AAAAgiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wAAAAPAAAACXNpZ25hdHVy\
        ZQAAAAAAAA0AAABA2IRofsx8G7d/aw2rANpFi1LZ42OjyIcYpRxDxCuMDqYFrYCTbgxgn5A7SU8tcgF2VOvC5eYDeU007J/7QYQnDgAA\
        AAAAAAABUEXNXsBymnaP1a0CUFhS308Cjc6DDlrFIgm6SEg7LwEAAAAIdHJhbnNmZXIAAAADAAAAEgAAAAAAAAAAiojj3XQJ8ZX9Utst\
        PLpdcspnCb8dlBIb83SIAbQPb1wAAAASAAAAAAAAAACBOXcOqH0XX1ajVGbDTH7My42KkbTuN6Jd9g9bj8mzlAAAAAoAAAAAAAAAAAAA\
        AAAAmJaAAAAAAA==";

    #[test]
    fn pay_to_is_the_seed_2_account() {
        assert_eq!(pay_to().to_string(), PAY_TO);
    }

    #[test]
    fn golden_payloads() {
        for (v2, expected) in [
            (false, GOLDEN_PAYLOAD_ADDRESS),
            (true, GOLDEN_PAYLOAD_ADDRESS_V2),
        ] {
            let mut entry = golden_entry(v2);
            credentials_mut(&mut entry).signature_expiration_ledger = 2000;
            let payload = authorization_payload(&testnet(), &entry).expect("payload");
            assert_eq!(hex(payload), expected);
            let preimage = authorization_preimage(&testnet(), &entry).expect("preimage");
            let xdr = preimage.to_xdr(Limits::none()).expect("encodes");
            let envelope_type = if v2 { 10 } else { 9 };
            assert_eq!(xdr.get(..4), Some(&[0, 0, 0, envelope_type][..]));
        }
    }

    #[test]
    fn golden_signed_entries() {
        for (v2, expected) in [
            (false, GOLDEN_SIGNED_ADDRESS),
            (true, GOLDEN_SIGNED_ADDRESS_V2),
        ] {
            let signed = signed_entry(v2)
                .to_xdr_base64(Limits::none())
                .expect("encodes");
            assert_eq!(signed, expected);
        }
    }

    /// Rebuilds the preimage bytes field by field, independently of `HashIdPreimage`'s encoder.
    fn manual_preimage(
        envelope_type: u8,
        entry: &SorobanAuthorizationEntry,
        with_address: bool,
    ) -> Vec<u8> {
        let credentials = address_credentials(entry).expect("address credentials");
        let mut bytes = vec![0, 0, 0, envelope_type];
        bytes.extend_from_slice(testnet().as_bytes());
        bytes.extend_from_slice(&credentials.nonce.to_be_bytes());
        bytes.extend_from_slice(&credentials.signature_expiration_ledger.to_be_bytes());
        if with_address {
            bytes.extend(credentials.address.to_xdr(Limits::none()).expect("encodes"));
        }
        bytes.extend(
            entry
                .root_invocation
                .to_xdr(Limits::none())
                .expect("encodes"),
        );
        bytes
    }

    #[test]
    fn preimage_layouts() {
        for (v2, envelope_type) in [(false, 9), (true, 10)] {
            let entry = golden_entry(v2);
            let preimage = authorization_preimage(&testnet(), &entry).expect("preimage");
            let xdr = preimage.to_xdr(Limits::none()).expect("encodes");
            assert_eq!(xdr.get(..4), Some(&[0, 0, 0, envelope_type][..]));
            assert_eq!(xdr, manual_preimage(envelope_type, &entry, v2));
            let payload: [u8; 32] = Sha256::digest(&xdr).into();
            assert_eq!(authorization_payload(&testnet(), &entry), Ok(payload));
        }
    }

    #[test]
    fn sign_then_verify_both_arms() {
        for v2 in [false, true] {
            let entry = signed_entry(v2);
            assert_eq!(
                verify_authorization(&testnet(), &entry),
                Ok(vec![payer().public_key()])
            );
            let credentials = address_credentials(&entry).expect("address credentials");
            assert_eq!(credentials.signature_expiration_ledger, 2000);
            let signatures = account_signatures(&credentials.signature).expect("one signature");
            assert_eq!(signatures.len(), 1);
        }
    }

    #[test]
    fn flipped_signature_bit_fails() {
        for v2 in [false, true] {
            let mut entry = signed_entry(v2);
            let credentials = credentials_mut(&mut entry);
            let mut signatures = account_signatures(&credentials.signature).expect("signed");
            for signature in &mut signatures {
                signature.signature[10] ^= 0x04;
            }
            credentials.signature = encode_account_signatures(&signatures).expect("encodes");
            assert_eq!(
                verify_authorization(&testnet(), &entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn other_network_fails() {
        for v2 in [false, true] {
            let entry = signed_entry(v2);
            let pubnet = Network::pubnet().id();
            assert_eq!(
                verify_authorization(&pubnet, &entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn changed_nonce_fails() {
        for v2 in [false, true] {
            let mut entry = signed_entry(v2);
            credentials_mut(&mut entry).nonce += 1;
            assert_eq!(
                verify_authorization(&testnet(), &entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn changed_expiration_fails() {
        for v2 in [false, true] {
            let mut entry = signed_entry(v2);
            credentials_mut(&mut entry).signature_expiration_ledger += 1;
            assert_eq!(
                verify_authorization(&testnet(), &entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn changed_amount_fails() {
        for v2 in [false, true] {
            let mut entry = signed_entry(v2);
            entry.root_invocation.function =
                SorobanAuthorizedFunction::ContractFn(transfer_args(10_000_001));
            assert_eq!(
                verify_authorization(&testnet(), &entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn changed_address_fails_only_for_address_v2() {
        // Address (v1) credentials do not sign the address: a signature by the right key still verifies
        // for another address (the host then checks that the key belongs to that account).
        let other = Keypair::from_seed([3; 32]).address().to_sc_address();
        let mut v1 = signed_entry(false);
        credentials_mut(&mut v1).address = other.clone();
        assert_eq!(
            verify_authorization(&testnet(), &v1),
            Ok(vec![payer().public_key()])
        );
        let mut v2 = signed_entry(true);
        credentials_mut(&mut v2).address = other;
        assert_eq!(
            verify_authorization(&testnet(), &v2),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn switching_arms_after_signing_fails() {
        let mut entry = signed_entry(false);
        let SorobanCredentials::Address(credentials) = entry.credentials else {
            panic!("address credentials")
        };
        entry.credentials = SorobanCredentials::AddressV2(credentials);
        assert_eq!(
            verify_authorization(&testnet(), &entry),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn unsupported_credentials_are_refused() {
        let mut entry = golden_entry(false);
        entry.credentials = SorobanCredentials::SourceAccount;
        assert_eq!(
            authorization_payload(&testnet(), &entry),
            Err(AuthError::UnsupportedCredentials)
        );
        assert_eq!(
            verify_authorization(&testnet(), &entry),
            Err(AuthError::UnsupportedCredentials)
        );
        let keypair = payer();
        let result = sign_authorization(&mut entry, &keypair, &testnet(), 1);
        assert_eq!(result, Err(AuthError::UnsupportedCredentials));

        let SorobanCredentials::Address(credentials) = golden_entry(false).credentials else {
            panic!("address credentials")
        };
        entry.credentials =
            SorobanCredentials::AddressWithDelegates(SorobanAddressCredentialsWithDelegates {
                address_credentials: credentials,
                delegates: VecM::default(),
            });
        assert_eq!(
            authorization_payload(&testnet(), &entry),
            Err(AuthError::UnsupportedCredentials)
        );
        assert_eq!(
            verify_authorization(&testnet(), &entry),
            Err(AuthError::UnsupportedCredentials)
        );
    }

    #[test]
    fn contract_credentials_are_not_verified_offline() {
        for v2 in [false, true] {
            let mut entry = signed_entry(v2);
            credentials_mut(&mut entry).address = address(USDC_TESTNET).to_sc_address();
            assert_eq!(
                verify_authorization(&testnet(), &entry),
                Err(AuthError::UnsupportedAddress)
            );
            let before = entry.clone();
            let result = sign_authorization(&mut entry, &payer(), &testnet(), 5);
            assert_eq!(result, Err(AuthError::UnsupportedAddress));
            assert_eq!(entry, before, "unchanged on error");
        }
    }

    #[test]
    fn unsigned_entries() {
        assert_eq!(
            verify_authorization(&testnet(), &golden_entry(false)),
            Err(AuthError::Unsigned)
        );
        assert_eq!(account_signatures(&ScVal::Void), Err(AuthError::Unsigned));
        assert_eq!(
            account_signatures(&ScVal::Vec(None)),
            Err(AuthError::Unsigned)
        );
        assert_eq!(
            account_signatures(&ScVal::Vec(Some(ScVec::default()))),
            Err(AuthError::Unsigned)
        );
    }

    fn symbol(name: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(StringM::try_from(name).expect("short symbol")))
    }

    fn bytes(len: usize) -> ScVal {
        ScVal::Bytes(ScBytes(
            BytesM::try_from(vec![7; len]).expect("short bytes"),
        ))
    }

    fn map(fields: Vec<(ScVal, ScVal)>) -> ScVal {
        let entries: Vec<ScMapEntry> = fields
            .into_iter()
            .map(|(key, val)| ScMapEntry { key, val })
            .collect();
        ScVal::Map(Some(ScMap(entries.try_into().expect("small map"))))
    }

    fn vec_of(elements: Vec<ScVal>) -> ScVal {
        ScVal::Vec(Some(ScVec(elements.try_into().expect("small vec"))))
    }

    fn well_formed_map() -> ScVal {
        map(vec![
            (symbol(PUBLIC_KEY), bytes(32)),
            (symbol(SIGNATURE), bytes(64)),
        ])
    }

    #[test]
    fn account_signature_shape() {
        let parsed = account_signatures(&vec_of(vec![well_formed_map()])).expect("well formed");
        assert_eq!(
            parsed,
            vec![AccountSignature {
                public_key: [7; 32],
                signature: [7; 64]
            }]
        );
    }

    #[test]
    fn malformed_account_signatures() {
        let malformed = [
            ScVal::U32(1),
            bytes(64),
            well_formed_map(),
            vec_of(vec![ScVal::Void]),
            vec_of(vec![map(vec![])]),
            vec_of(vec![ScVal::Map(None)]),
            vec_of(vec![map(vec![(symbol(PUBLIC_KEY), bytes(32))])]),
            vec_of(vec![map(vec![
                (symbol(SIGNATURE), bytes(64)),
                (symbol(PUBLIC_KEY), bytes(32)),
            ])]),
            vec_of(vec![map(vec![
                (symbol(PUBLIC_KEY), bytes(31)),
                (symbol(SIGNATURE), bytes(64)),
            ])]),
            vec_of(vec![map(vec![
                (symbol(PUBLIC_KEY), bytes(32)),
                (symbol(SIGNATURE), bytes(65)),
            ])]),
            vec_of(vec![map(vec![
                (symbol("public_keys"), bytes(32)),
                (symbol(SIGNATURE), bytes(64)),
            ])]),
            vec_of(vec![map(vec![
                (ScVal::String(Default::default()), bytes(32)),
                (symbol(SIGNATURE), bytes(64)),
            ])]),
            vec_of(vec![map(vec![
                (symbol(PUBLIC_KEY), bytes(32)),
                (symbol(SIGNATURE), bytes(64)),
                (symbol("extra"), bytes(1)),
            ])]),
            // The same key twice: not strictly increasing.
            vec_of(vec![well_formed_map(), well_formed_map()]),
            vec_of(vec![well_formed_map(); MAX_ACCOUNT_SIGNATURES + 1]),
        ];
        for value in malformed {
            assert_eq!(
                account_signatures(&value),
                Err(AuthError::MalformedSignature),
                "{value:?}"
            );
        }
    }

    #[test]
    fn several_signatures_must_be_sorted() {
        let low = AccountSignature {
            public_key: [1; 32],
            signature: [0; 64],
        };
        let high = AccountSignature {
            public_key: [2; 32],
            signature: [0; 64],
        };
        let sorted = encode_account_signatures(&[low, high]).expect("encodes");
        assert_eq!(account_signatures(&sorted), Ok(vec![low, high]));
        let unsorted = encode_account_signatures(&[high, low]).expect("encodes");
        assert_eq!(
            account_signatures(&unsorted),
            Err(AuthError::MalformedSignature)
        );
    }

    #[test]
    fn twenty_signatures_are_accepted() {
        let signatures: Vec<AccountSignature> = (0..MAX_ACCOUNT_SIGNATURES as u8)
            .map(|i| AccountSignature {
                public_key: [i; 32],
                signature: [0; 64],
            })
            .collect();
        let value = encode_account_signatures(&signatures).expect("encodes");
        assert_eq!(account_signatures(&value), Ok(signatures));
    }

    #[test]
    fn a_second_signer_with_a_bad_signature_fails() {
        let mut entry = signed_entry(false);
        let credentials = credentials_mut(&mut entry);
        let mut signatures = account_signatures(&credentials.signature).expect("signed");
        signatures.push(AccountSignature {
            public_key: [0xff; 32],
            signature: [0; 64],
        });
        credentials.signature = encode_account_signatures(&signatures).expect("encodes");
        assert_eq!(
            verify_authorization(&testnet(), &entry),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn encoded_signature_matches_the_documented_shape() {
        let entry = signed_entry(false);
        let credentials = address_credentials(&entry).expect("address credentials");
        let ScVal::Vec(Some(ScVec(elements))) = &credentials.signature else {
            panic!("a vec")
        };
        let [ScVal::Map(Some(ScMap(fields)))] = elements.as_slice() else {
            panic!("one map")
        };
        let [first, second] = fields.as_slice() else {
            panic!("two fields")
        };
        assert_eq!(first.key, symbol("public_key"));
        assert_eq!(
            first.val,
            ScVal::Bytes(ScBytes(payer().public_key().try_into().expect("32")))
        );
        assert_eq!(second.key, symbol("signature"));
    }
}
