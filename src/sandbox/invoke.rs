//! Running host functions on the real Soroban host, through the two entry points its embedders use:
//! [`record`] (`invoke_host_function_in_recording_mode`, what RPC's `simulateTransaction` runs) and
//! [`enforce`] (`invoke_host_function`, what stellar-core runs when it applies a transaction).
//!
//! Each call gets a fresh host and a fresh default budget (100 M instructions, 40 MB). A panic inside
//! the host is caught and reported as a failure, so untrusted input can never take the ledger thread
//! down.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use soroban_env_host::budget::AsBudget;
use soroban_env_host::budget::Budget;
use soroban_env_host::e2e_invoke::{
    self, LedgerEntryChange as HostChange, RecordingInvocationAuthMode, TtlLedgerEntryMeta,
};
use soroban_env_host::fees::LedgerEntryRentChange;
use soroban_env_host::storage::SnapshotSource;
use soroban_env_host::xdr::{ScErrorCode, ScErrorType};
use soroban_env_host::{
    CompilationContext, DEFAULT_XDR_RW_LIMITS, ErrorHandler, HostError, LedgerInfo, ModuleCache,
    Val,
};
use stellar_xdr::{
    AccountId, ContractEvent, DiagnosticEvent, HostFunction, LedgerEntry, LedgerKey, Limits,
    ReadXdr, ScVal, SorobanAuthorizationEntry, SorobanResources, WriteXdr,
};

use super::diagnostics::describe;
use crate::stellar::NetworkId;

/// The protocol version the host implements (and the only one it accepts).
pub(super) const PROTOCOL_VERSION: u32 = soroban_env_host::meta::INTERFACE_VERSION.protocol;

/// Shortest life of a new temporary entry, in ledgers (1 day of 5 s ledgers, as on the networks).
pub(super) const MIN_TEMPORARY_TTL: u32 = 17_280;
/// Shortest life of a new persistent entry, in ledgers (120 days).
pub(super) const MIN_PERSISTENT_TTL: u32 = 2_073_600;
/// Longest life of any entry, in ledgers (180 days).
pub(super) const MAX_ENTRY_TTL: u32 = 3_110_400;

/// The ledger the host sees: this network, sequence and close time, testnet-like settings.
pub(super) fn ledger_info(network: &NetworkId, sequence: u32, timestamp: u64) -> LedgerInfo {
    LedgerInfo {
        protocol_version: PROTOCOL_VERSION,
        sequence_number: sequence,
        timestamp,
        network_id: network.0,
        base_reserve: super::account::BASE_RESERVE
            .unsigned_abs()
            .try_into()
            .unwrap_or(u32::MAX),
        min_temp_entry_ttl: MIN_TEMPORARY_TTL,
        min_persistent_entry_ttl: MIN_PERSISTENT_TTL,
        max_entry_ttl: MAX_ENTRY_TTL,
    }
}

/// Why a host function failed: the host's error and a readable message with the event log.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    /// The host error (`Error(Auth, InvalidAction)`, …); `None` when the host panicked or its
    /// output could not be read.
    pub(super) error: Option<soroban_env_host::Error>,
    /// `HostError: …` and the diagnostic events, newest first.
    pub(super) message: String,
    /// The diagnostic events.
    pub(super) diagnostics: Vec<DiagnosticEvent>,
}

impl Failure {
    fn host(error: &HostError, diagnostics: &[DiagnosticEvent]) -> Failure {
        Failure {
            error: Some(error.error),
            message: describe(&error.error, diagnostics),
            diagnostics: diagnostics.to_vec(),
        }
    }

    fn internal(message: &str) -> Failure {
        Failure {
            error: None,
            message: message.to_owned(),
            diagnostics: Vec::new(),
        }
    }

    /// Whether the budget (instructions or memory) ran out.
    pub(super) fn is_budget_exceeded(&self) -> bool {
        self.error.is_some_and(|error| {
            error.is_type(ScErrorType::Budget) && error.is_code(ScErrorCode::ExceededLimit)
        })
    }
}

/// One footprint entry after an invocation.
#[derive(Clone, Debug)]
pub(super) struct Change {
    /// The entry's key.
    pub(super) key: LedgerKey,
    /// Whether the footprint declared it read-only (then only its TTL may have grown).
    pub(super) read_only: bool,
    /// The entry's new value; `None` for a removed or still-absent read-write entry.
    pub(super) new: Option<LedgerEntry>,
    /// The entry's new live-until ledger, for contract data and code.
    pub(super) live_until: Option<u32>,
    /// A read-write entry with neither a value nor a TTL: absent before and after, or (in
    /// recording mode only) known to the footprint but rolled back from storage. Never a removal
    /// of contract data or code.
    pub(super) untracked: bool,
}

/// What an invocation produced, in either mode.
pub(super) struct Outcome {
    /// The return value, or why the invocation failed.
    pub(super) result: Result<ScVal, Failure>,
    /// Every footprint entry after the invocation (empty on failure).
    pub(super) changes: Vec<Change>,
    /// The changes that count for rent (empty on failure).
    pub(super) rent_changes: Vec<LedgerEntryRentChange>,
    /// The contract events of the successful invocation.
    pub(super) events: Vec<ContractEvent>,
    /// Size of the contract events and the return value, in XDR bytes.
    pub(super) events_and_return_size: u32,
    /// The diagnostic events (contract, system and diagnostic ones), in order.
    pub(super) diagnostics: Vec<DiagnosticEvent>,
    /// The instructions the invocation used.
    pub(super) instructions: u64,
}

/// A recording-mode invocation: the outcome, the resources it needs, the authorization it needs.
pub(super) struct Recorded {
    /// The outcome.
    pub(super) outcome: Outcome,
    /// The footprint and resources recorded (instructions as measured, without margin).
    pub(super) resources: SorobanResources,
    /// The authorization entries: recorded ones (unsigned) or the ones passed in.
    pub(super) auth: Vec<SorobanAuthorizationEntry>,
}

/// Runs `host_function` in recording mode against `snapshot`: the footprint is recorded; with
/// `auth = None` authorization is recorded too (root authorization only, `Address` credentials),
/// otherwise the given entries are enforced.
///
/// # Errors
///
/// When the host could not run at all (the budget ran out outside the invocation, an internal
/// error, a panic); a failed invocation is an `Ok` outcome with `result` set to the failure.
pub(super) fn record(
    snapshot: Rc<dyn SnapshotSource>,
    info: LedgerInfo,
    host_function: &HostFunction,
    source: &AccountId,
    auth: Option<Vec<SorobanAuthorizationEntry>>,
    seed: [u8; 32],
) -> Result<Recorded, Failure> {
    let auth_mode = match auth {
        Some(entries) => RecordingInvocationAuthMode::Enforcing(entries),
        None => RecordingInvocationAuthMode::recording(true, false),
    };
    let budget = Budget::default();
    let mut diagnostics = Vec::new();
    let ran = catch_unwind(AssertUnwindSafe(|| {
        e2e_invoke::invoke_host_function_in_recording_mode(
            &budget,
            true,
            host_function,
            source,
            auth_mode,
            info,
            snapshot,
            seed,
            &mut diagnostics,
        )
    }));
    let recorded = match ran {
        Ok(Ok(recorded)) => recorded,
        Ok(Err(error)) => return Err(Failure::host(&error, &diagnostics)),
        Err(_) => return Err(Failure::internal("the host panicked")),
    };
    let instructions = budget.get_cpu_insns_consumed().unwrap_or(u64::MAX);
    let (result, changes, rent_changes) = match recorded.invoke_result {
        Ok(value) => {
            let changes = decode_changes(&recorded.ledger_changes)?;
            let rent = e2e_invoke::extract_rent_changes(&recorded.ledger_changes);
            (Ok(value), changes, rent)
        }
        Err(error) => (
            Err(Failure::host(&error, &diagnostics)),
            Vec::new(),
            Vec::new(),
        ),
    };
    Ok(Recorded {
        outcome: Outcome {
            result,
            changes,
            rent_changes,
            events: recorded.contract_events,
            events_and_return_size: recorded.contract_events_and_return_value_size,
            diagnostics,
            instructions,
        },
        resources: recorded.resources,
        auth: recorded.auth,
    })
}

/// The footprint entries of an enforcing invocation, in footprint order (read-only keys, then
/// read-write ones): each encoded entry if it exists, with its TTL for contract data and code.
pub(super) type FootprintEntries = Vec<(Option<Vec<u8>>, Option<TtlLedgerEntryMeta>)>;

/// What [`enforce`] runs.
pub(super) struct Enforcement<'a> {
    /// The operation's host function.
    pub(super) host_function: &'a HostFunction,
    /// The transaction's declared resources (its footprint is enforced).
    pub(super) resources: &'a SorobanResources,
    /// The operation's source account.
    pub(super) source: &'a AccountId,
    /// The operation's authorization entries (enforced).
    pub(super) auth: &'a [SorobanAuthorizationEntry],
    /// The footprint's entries.
    pub(super) entries: FootprintEntries,
    /// The Wasm code of the contracts in the footprint (see [`module_cache`]).
    pub(super) wasm: Vec<Vec<u8>>,
    /// The base seed of the invocation's PRNG.
    pub(super) seed: [u8; 32],
}

/// Runs a host function the way stellar-core applies it: enforcing footprint and authorization.
///
/// # Errors
///
/// Whenever the invocation did not succeed (the host's error, an unreadable input or output, a
/// panic). Diagnostic events come with the failure message.
pub(super) fn enforce(run: Enforcement<'_>, info: LedgerInfo) -> Result<Outcome, Failure> {
    let host_function = encode(run.host_function)?;
    let resources = encode(run.resources)?;
    let source = encode(run.source)?;
    let auth = run.auth.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    let seed = run.seed.to_vec();
    let entries = run
        .entries
        .iter()
        .map(|(entry, ttl)| (entry.as_ref(), *ttl));
    let protocol = info.protocol_version;
    let budget = Budget::default();
    let mut diagnostics = Vec::new();
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let modules = module_cache(&run.wasm, protocol)?;
        e2e_invoke::invoke_host_function(
            &budget,
            true,
            &host_function,
            &resources,
            &[],
            &source,
            auth.iter(),
            info,
            entries,
            &seed,
            &mut diagnostics,
            None,
            Some(modules),
        )
    }));
    let invoked = match ran {
        Ok(Ok(invoked)) => invoked,
        Ok(Err(error)) => return Err(Failure::host(&error, &diagnostics)),
        Err(_) => return Err(Failure::internal("the host panicked")),
    };
    let encoded = match invoked.encoded_invoke_result {
        Ok(encoded) => encoded,
        Err(error) => return Err(Failure::host(&error, &diagnostics)),
    };
    let value = ScVal::from_xdr(&encoded, DEFAULT_XDR_RW_LIMITS)
        .map_err(|_| Failure::internal("the host returned an unreadable value"))?;
    let events = invoked
        .encoded_contract_events
        .iter()
        .map(|event| ContractEvent::from_xdr(event, DEFAULT_XDR_RW_LIMITS))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Failure::internal("the host returned an unreadable event"))?;
    let events_and_return_size = invoked
        .encoded_contract_events
        .iter()
        .map(Vec::len)
        .fold(encoded.len(), usize::saturating_add);
    Ok(Outcome {
        result: Ok(value),
        changes: decode_changes(&invoked.ledger_changes)?,
        rent_changes: e2e_invoke::extract_rent_changes(&invoked.ledger_changes),
        events,
        events_and_return_size: events_and_return_size.try_into().unwrap_or(u32::MAX),
        diagnostics,
        instructions: budget.get_cpu_insns_consumed().unwrap_or(u64::MAX),
    })
}

/// Compiles contracts outside any invocation's budget, as stellar-core does.
#[derive(Clone, Default)]
struct Compiler(Budget);

impl AsBudget for Compiler {
    fn as_budget(&self) -> &Budget {
        &self.0
    }
}

impl ErrorHandler for Compiler {
    fn map_err<T, E>(&self, result: Result<T, E>) -> Result<T, HostError>
    where
        soroban_env_host::Error: From<E>,
        E: std::fmt::Debug,
    {
        result.map_err(HostError::from)
    }

    fn error(&self, error: soroban_env_host::Error, _: &str, _: &[Val]) -> HostError {
        HostError::from(error)
    }
}

impl CompilationContext for Compiler {}

/// The module cache an invocation runs with: its footprint's contracts, parsed beforehand on
/// their own budget. stellar-core keeps every live contract parsed this way, so an invocation
/// pays to instantiate a contract, not to parse it, and recording mode (simulation) charges
/// accordingly; without the cache an enforcing run would pay the parse too, and exceed the
/// instructions its simulation declared.
fn module_cache(wasm: &[Vec<u8>], protocol: u32) -> Result<ModuleCache, HostError> {
    let compiler = Compiler::default();
    let cache = ModuleCache::new(&compiler)?;
    for code in wasm {
        cache.parse_and_cache_module_simple(&compiler, protocol, code)?;
    }
    Ok(cache)
}

/// Encodes one of our own values for the host.
fn encode<T: WriteXdr>(value: &T) -> Result<Vec<u8>, Failure> {
    value
        .to_xdr(Limits::none())
        .map_err(|_| Failure::internal("a transaction field could not be encoded"))
}

fn decode_changes(changes: &[HostChange]) -> Result<Vec<Change>, Failure> {
    let unreadable = |_| Failure::internal("the host returned an unreadable ledger change");
    changes
        .iter()
        .map(|change| {
            let key = LedgerKey::from_xdr(&change.encoded_key, DEFAULT_XDR_RW_LIMITS)
                .map_err(unreadable)?;
            let new = change
                .encoded_new_value
                .as_ref()
                .map(|value| LedgerEntry::from_xdr(value, DEFAULT_XDR_RW_LIMITS))
                .transpose()
                .map_err(unreadable)?;
            Ok(Change {
                key,
                read_only: change.read_only,
                untracked: !change.read_only && new.is_none() && change.ttl_change.is_none(),
                new,
                live_until: change
                    .ttl_change
                    .as_ref()
                    .map(|ttl| ttl.new_live_until_ledger),
            })
        })
        .collect()
}
