//! The first ledger: the root (friendbot) account, the USDC issuer account (testnet's; pubnet's on
//! a pubnet sandbox), and the Stellar Asset
//! Contracts of XLM and USDC, deployed through the host so their ids are the network's.
//!
//! Setup work runs on the host in recording mode: authorization is recorded, never checked. That is
//! how the sandbox deploys and mints without the issuer's key. Setup that spends a user's money
//! (deploying a funded channel) signs and enforces that user's authorization instead.

use stellar_xdr::{
    Asset, ContractExecutable, ContractIdPreimage, CreateContractArgs, HostFunction,
    InvokeContractArgs, ScAddress, ScSymbol, ScVal, SorobanAuthorizationEntry, StringM, VecM,
};

use super::SandboxError;
use super::account::{account_id, new_account, starting_sequence, usdc_asset};
use super::invoke::{self, Change};
use super::ledger::{Assets, Delta, Ledger};
use crate::stellar::{
    Address, Keypair, Network, USDC_ISSUER_PUBNET, USDC_ISSUER_TESTNET, address_credentials,
    sign_authorization, stellar_asset_contract,
};

/// The sequence of the first ledger.
pub(super) const GENESIS_SEQUENCE: u32 = 1;

/// All lumens, in stroops (100 billion XLM), held by the root account at genesis.
const TOTAL_LUMENS: i64 = 1_000_000_000_000_000_000;

/// The USDC issuer's balance (it needs none to issue; a plain account).
const ISSUER_BALANCE: i64 = 100_000_000_000;

/// For how many ledgers past the next one the signatures of a signed setup run stay valid.
const SETUP_SIGNATURE_LEDGERS: u32 = 100;

impl Ledger {
    /// A new ledger on `network`: accounts, then the two asset contracts.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Start`] if a contract could not be deployed or its id is not the one the
    /// network uses.
    pub(super) fn genesis(network: Network, base_fee: u32) -> Result<Ledger, SandboxError> {
        let issuer = if network.id() == Network::pubnet().id() {
            USDC_ISSUER_PUBNET
        } else {
            USDC_ISSUER_TESTNET
        };
        let issuer: Address = issuer
            .parse()
            .map_err(|_| SandboxError::Start("the USDC issuer is not an address".into()))?;
        let issuer = account_id(
            issuer
                .ed25519_key()
                .ok_or_else(|| SandboxError::Start("the USDC issuer is not an account".into()))?,
        );
        let usdc_asset = usdc_asset(&issuer);
        let usdc = network
            .usdc()
            .unwrap_or_else(|| stellar_asset_contract(&network.id(), &usdc_asset));
        let xlm = network.native_asset_contract();
        let root = Keypair::from_seed(network.id().0);
        let root_id = account_id(root.public_key());
        let assets = Assets {
            usdc_issuer: issuer.clone(),
            usdc_asset: usdc_asset.clone(),
            usdc,
            xlm,
        };
        let mut ledger = Ledger::empty(network, base_fee, GENESIS_SEQUENCE, root, assets);

        let mut accounts = Delta::default();
        let sequence = starting_sequence(GENESIS_SEQUENCE);
        accounts.put_account(
            new_account(root_id, TOTAL_LUMENS - ISSUER_BALANCE, sequence),
            GENESIS_SEQUENCE,
        );
        accounts.put_account(
            new_account(issuer, ISSUER_BALANCE, sequence),
            GENESIS_SEQUENCE,
        );
        ledger.commit(accounts, GENESIS_SEQUENCE);

        for (asset, expected) in [(Asset::Native, xlm), (usdc_asset, usdc)] {
            let deployed = ledger.deploy_asset_contract(asset)?;
            if deployed != expected {
                return Err(SandboxError::Start(format!(
                    "the host deployed {deployed}, the network uses {expected}"
                )));
            }
        }
        Ok(ledger)
    }

    /// Deploys the Stellar Asset Contract of `asset` (`CreateContract` with an asset preimage).
    fn deploy_asset_contract(&mut self, asset: Asset) -> Result<Address, SandboxError> {
        let create = HostFunction::CreateContract(CreateContractArgs {
            contract_id_preimage: ContractIdPreimage::Asset(asset),
            executable: ContractExecutable::StellarAsset,
        });
        match self.run_setup(&create, true) {
            Ok(ScVal::Address(address @ ScAddress::Contract(_))) => {
                Address::from_sc_address(&address).map_err(|_| {
                    SandboxError::Start("the host returned an unusable address".into())
                })
            }
            Ok(_) => Err(SandboxError::Start(
                "the host did not return a contract address".into(),
            )),
            Err(SandboxError::Host(message)) => Err(SandboxError::Start(message)),
            Err(other) => Err(other),
        }
    }

    /// Calls `contract.function(args)` as the root account in recording mode; with `apply`, its
    /// ledger changes take effect at once (in the latest ledger).
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] with the host's message if the call failed.
    pub(super) fn call_contract(
        &mut self,
        contract: &Address,
        function: &str,
        args: Vec<ScVal>,
        apply: bool,
    ) -> Result<ScVal, SandboxError> {
        let function_name = StringM::try_from(function)
            .map_err(|_| SandboxError::Host(format!("`{function}` is not a symbol")))?;
        let args =
            VecM::try_from(args).map_err(|_| SandboxError::Host("too many arguments".into()))?;
        let call = HostFunction::InvokeContract(InvokeContractArgs {
            contract_address: contract.to_sc_address(),
            function_name: ScSymbol(function_name),
            args,
        });
        self.run_setup(&call, apply)
    }

    /// Runs a host function as the root account in recording mode (authorization recorded,
    /// not checked); with `apply`, commits its changes in the latest ledger.
    pub(super) fn run_setup(
        &mut self,
        host_function: &HostFunction,
        apply: bool,
    ) -> Result<ScVal, SandboxError> {
        let (value, changes, _) = self.record_setup(host_function, None)?;
        if apply {
            self.commit_setup(changes);
        }
        Ok(value)
    }

    /// Runs a host function as the root account with the authorization of `signers` really
    /// given, and commits its changes in the latest ledger. The authorization is recorded
    /// first; the recorded entries of each signer's address are signed (valid for
    /// [`SETUP_SIGNATURE_LEDGERS`]), and the function runs again enforcing them: the host checks
    /// each signature against the account's signers and thresholds, and consumes its nonce.
    /// Entries of any other address but the root (the source) stay unsigned, and fail.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] with the host's message if either run failed.
    pub(super) fn run_setup_signed(
        &mut self,
        host_function: &HostFunction,
        signers: &[&Keypair],
    ) -> Result<ScVal, SandboxError> {
        let (_, _, mut auth) = self.record_setup(host_function, None)?;
        let expiration = self.next_sequence().saturating_add(SETUP_SIGNATURE_LEDGERS);
        let network = self.network.id();
        for entry in &mut auth {
            // `SourceAccount` credentials (the root) need no signature.
            let Ok(credentials) = address_credentials(entry) else {
                continue;
            };
            let signer = signers
                .iter()
                .find(|signer| signer.address().to_sc_address() == credentials.address);
            if let Some(signer) = signer {
                sign_authorization(entry, signer, &network, expiration)
                    .map_err(|error| SandboxError::Host(error.to_string()))?;
            }
        }
        let (value, changes, _) = self.record_setup(host_function, Some(auth))?;
        self.commit_setup(changes);
        Ok(value)
    }

    /// Runs a host function as the root account in recording mode, recording authorization
    /// (`None`) or enforcing the given entries: its value, its changes and its authorization.
    fn record_setup(
        &mut self,
        host_function: &HostFunction,
        auth: Option<Vec<SorobanAuthorizationEntry>>,
    ) -> Result<(ScVal, Vec<Change>, Vec<SorobanAuthorizationEntry>), SandboxError> {
        let source = account_id(self.root.public_key());
        let seed = self.seed(b"tower-paywall sandbox setup");
        let recorded = invoke::record(
            self.snapshot(),
            self.next_ledger_info(),
            host_function,
            &source,
            auth,
            seed,
        )
        .map_err(|failure| SandboxError::Host(failure.message))?;
        let value = recorded
            .outcome
            .result
            .map_err(|failure| SandboxError::Host(failure.message))?;
        Ok((value, recorded.outcome.changes, recorded.auth))
    }

    /// Commits a setup run's changes in the latest ledger.
    fn commit_setup(&mut self, changes: Vec<Change>) {
        let mut delta = Delta::default();
        let latest = self.header.sequence;
        delta.put_host_changes(self, changes, latest, true);
        let next = self.next_sequence();
        self.commit(delta, next);
    }
}
