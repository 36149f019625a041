//! Deploying Wasm contracts: the code is uploaded, then the contract is created from its
//! deployer's address with a salt, and its constructor runs, all through the host.
//!
//! The deployer really authorizes the creation: its authorization entry (the creation, the
//! constructor, and whatever the constructor requires of it, such as a deposit) is signed with
//! its key and enforced by the host (see `Ledger::run_setup_signed`). The root account is the
//! source and pays nothing. Both steps take effect at once, in the latest ledger.

use stellar_xdr::{BytesM, Hash, HostFunction, ScAddress, ScVal};

use super::actor::Command;
use super::ledger::Ledger;
use super::{Sandbox, SandboxError};
use crate::stellar::{Address, Keypair};

/// A contract to deploy.
pub(super) struct Deployment {
    /// Its Wasm code.
    pub(super) wasm: Vec<u8>,
    /// The account that creates it (its address and a salt make the contract id).
    pub(super) deployer: Keypair,
    /// The arguments of its `__constructor`.
    pub(super) constructor_args: Vec<ScVal>,
}

impl Ledger {
    /// Uploads the code (again, harmlessly, if it is already there), then creates the contract
    /// and runs its constructor with the deployer's signed authorization.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] if the code is not a valid contract, or the creation or the
    /// constructor failed.
    pub(super) fn deploy(&mut self, deployment: Deployment) -> Result<Address, SandboxError> {
        let hash = self.upload(deployment.wasm)?;
        let salt = self.seed(b"tower-paywall sandbox contract salt");
        let create = create_contract(
            &deployment.deployer.address(),
            salt,
            hash,
            deployment.constructor_args,
        )?;
        match self.run_setup_signed(&create, &[&deployment.deployer])? {
            ScVal::Address(address @ ScAddress::Contract(_)) => Address::from_sc_address(&address)
                .map_err(|_| SandboxError::Host("the host returned an unusable address".into())),
            other => Err(SandboxError::Host(format!(
                "creating returned {other:?}, not a contract address"
            ))),
        }
    }

    /// Uploads Wasm code; its hash.
    fn upload(&mut self, wasm: Vec<u8>) -> Result<Hash, SandboxError> {
        let code = BytesM::try_from(wasm)
            .map_err(|_| SandboxError::Host("the Wasm code is too large".into()))?;
        match self.run_setup(&HostFunction::UploadContractWasm(code), true)? {
            ScVal::Bytes(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(Hash)
                .map_err(|_| SandboxError::Host("the host returned a malformed code hash".into())),
            other => Err(SandboxError::Host(format!(
                "uploading returned {other:?}, not a code hash"
            ))),
        }
    }
}

/// `CreateContractV2`: the contract of code `hash`, from `deployer`'s address and `salt`, built
/// by its constructor with `args`.
fn create_contract(
    deployer: &Address,
    salt: [u8; 32],
    hash: Hash,
    args: Vec<ScVal>,
) -> Result<HostFunction, SandboxError> {
    crate::stellar::channel::create_contract(deployer, salt, hash.0, args)
        .map_err(|error| SandboxError::Host(error.to_string()))
}

impl Sandbox {
    /// Deploys a Wasm contract: uploads `wasm`, creates the contract from `deployer`'s address
    /// (with a fresh salt) and runs its `__constructor` with `constructor_args`. Takes effect at
    /// once, without a ledger close, and returns the new contract's address.
    ///
    /// `deployer` signs its authorization of the creation, and with it whatever the
    /// constructor requires of `deployer` (a deposit, say); the host verifies the signature
    /// against the account, as it would for a transaction. The sandbox's root account is the
    /// source and pays no fee. Any other address the constructor requires authorization of
    /// fails. The code must carry a `contractenvmetav0` section for a protocol no newer than the
    /// ledger's.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] with the host's message if the code is refused or the creation or
    /// the constructor failed; [`SandboxError::Stopped`].
    pub async fn deploy_wasm(
        &self,
        wasm: &[u8],
        deployer: &Keypair,
        constructor_args: Vec<ScVal>,
    ) -> Result<Address, SandboxError> {
        let deployment = Box::new(Deployment {
            wasm: wasm.to_vec(),
            deployer: deployer.clone(),
            constructor_args,
        });
        self.ask(|reply| Command::Deploy(deployment, reply)).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::channel::{ChannelParams, channel_wasm, constructor_args};
    use crate::stellar::Network;

    /// The funder's authorization of the creation and the deposit is enforced: recorded but
    /// unsigned, the host refuses it; signed, the channel is created and funded.
    #[test]
    fn the_deployer_really_authorizes() {
        let mut ledger = Ledger::genesis(Network::testnet(), 100).unwrap();
        let funder = Keypair::from_seed([5; 32]);
        ledger.fund(&funder.address()).unwrap();
        let hash = ledger.upload(channel_wasm().unwrap().to_vec()).unwrap();
        let usdc = ledger.assets.usdc;
        let args = constructor_args(&ChannelParams {
            token: usdc,
            from: &funder,
            commitment_key: [1; 32],
            to: Keypair::from_seed([6; 32]).address(),
            amount: 1_000,
            refund_waiting_period: 10,
        })
        .unwrap();
        let create = create_contract(&funder.address(), [9; 32], hash, args).unwrap();

        let stranger = Keypair::from_seed([7; 32]);
        let Err(SandboxError::Host(message)) = ledger.run_setup_signed(&create, &[&stranger])
        else {
            panic!("an unsigned creation succeeded");
        };
        assert!(message.starts_with("HostError: Error(Auth, "), "{message}");

        let ScVal::Address(channel) = ledger.run_setup_signed(&create, &[&funder]).unwrap() else {
            panic!("no address");
        };
        let channel = Address::from_sc_address(&channel).unwrap();
        assert_eq!(ledger.balance(&usdc, &channel).unwrap(), 1_000);
    }
}
