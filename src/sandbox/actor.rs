//! The sandbox thread: it owns the [`Ledger`] (and with it every `!Send` host value), takes
//! commands from a channel, answers each over a oneshot channel, and closes ledgers on time.
//! It stops when the last [`Sandbox`](super::Sandbox) handle is dropped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use stellar_xdr::{LedgerKey, TransactionEnvelope};
use tokio::sync::oneshot;

use super::deploy::Deployment;
use super::ledger::Ledger;
use super::{ClosedLedger, SandboxConfig, SandboxError};
use crate::stellar::Address;
use crate::stellar::rpc::{
    Events, EventsRequest, Health, LatestLedger, LedgerEntries, NetworkInfo, RpcError, SendResult,
    Simulation, TransactionHash, TransactionInfo,
};

/// Where the thread sends one answer.
pub(super) type Reply<T> = oneshot::Sender<T>;

/// What the thread is asked to do.
pub(super) enum Command {
    Simulate(Box<TransactionEnvelope>, Reply<Simulation>),
    Send(Box<TransactionEnvelope>, Reply<SendResult>),
    Transaction(TransactionHash, Reply<TransactionInfo>),
    LedgerEntries(Vec<LedgerKey>, Reply<LedgerEntries>),
    Events(Box<EventsRequest>, Reply<Result<Events, RpcError>>),
    LatestLedger(Reply<LatestLedger>),
    Health(Reply<Health>),
    Network(Reply<NetworkInfo>),
    Fund(Address, Reply<Result<(), SandboxError>>),
    Balance(Address, Address, Reply<Result<i128, SandboxError>>),
    Deploy(Box<Deployment>, Reply<Result<Address, SandboxError>>),
    Close(Reply<ClosedLedger>),
}

/// What a started thread tells its handle.
pub(super) struct Started {
    /// Where commands go.
    pub(super) commands: mpsc::Sender<Command>,
    /// USDC's contract.
    pub(super) usdc: Address,
    /// XLM's contract.
    pub(super) xlm: Address,
}

/// Starts the thread and waits for genesis.
///
/// # Errors
///
/// [`SandboxError::Start`] if the thread could not start or genesis failed.
pub(super) fn spawn(config: &SandboxConfig) -> Result<Started, SandboxError> {
    let (commands, inbox) = mpsc::channel();
    let (ready, started) = mpsc::sync_channel(1);
    let network = config.network.clone();
    let base_fee = config.base_fee;
    let period = config.ledger_period;
    let auto_close = config.auto_close;
    let retention_window = config.retention_window;
    thread::Builder::new()
        .name("tower-paywall-sandbox".into())
        .spawn(move || {
            let mut ledger = match Ledger::genesis(network, base_fee) {
                Ok(ledger) => ledger,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return;
                }
            };
            ledger.retention_window = retention_window;
            let _ = ready.send(Ok((ledger.assets.usdc, ledger.assets.xlm)));
            run(ledger, &inbox, auto_close.then_some(period));
        })
        .map_err(|error| SandboxError::Start(format!("could not start its thread: {error}")))?;
    let (usdc, xlm) = started
        .recv()
        .map_err(|_| SandboxError::Start("its thread stopped during genesis".into()))??;
    Ok(Started {
        commands,
        usdc,
        xlm,
    })
}

/// Serves commands until every sender is gone, closing a ledger every `period` if set.
fn run(mut ledger: Ledger, inbox: &Receiver<Command>, period: Option<Duration>) {
    let mut next_close = period.and_then(|period| Instant::now().checked_add(period));
    loop {
        let received = match (period, next_close) {
            (Some(period), Some(due)) => {
                let now = Instant::now();
                if now >= due {
                    let closed = ledger.close();
                    tracing::debug!(sequence = closed.sequence, "sandbox closed a ledger");
                    next_close = due
                        .checked_add(period)
                        .filter(|next| *next > now)
                        .or_else(|| now.checked_add(period));
                    continue;
                }
                match inbox.recv_timeout(due - now) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            _ => match inbox.recv() {
                Ok(command) => command,
                Err(_) => return,
            },
        };
        // A bug must not take the ledger down: the caller of the failed command sees its
        // reply dropped, the others carry on.
        if catch_unwind(AssertUnwindSafe(|| handle(&mut ledger, received))).is_err() {
            tracing::error!("the sandbox panicked while handling a command");
        }
    }
}

fn handle(ledger: &mut Ledger, command: Command) {
    match command {
        Command::Simulate(envelope, reply) => {
            let _ = reply.send(ledger.simulate(&envelope));
        }
        Command::Send(envelope, reply) => {
            let _ = reply.send(ledger.send(&envelope));
        }
        Command::Transaction(hash, reply) => {
            let _ = reply.send(ledger.transaction(&hash));
        }
        Command::LedgerEntries(keys, reply) => {
            let _ = reply.send(ledger.ledger_entries(&keys));
        }
        Command::Events(request, reply) => {
            let _ = reply.send(ledger.events(&request));
        }
        Command::LatestLedger(reply) => {
            let _ = reply.send(ledger.latest_ledger());
        }
        Command::Health(reply) => {
            let _ = reply.send(ledger.health());
        }
        Command::Network(reply) => {
            let _ = reply.send(ledger.network_info());
        }
        Command::Fund(account, reply) => {
            let _ = reply.send(ledger.fund(&account));
        }
        Command::Balance(token, holder, reply) => {
            let _ = reply.send(ledger.balance(&token, &holder));
        }
        Command::Deploy(deployment, reply) => {
            let _ = reply.send(ledger.deploy(*deployment));
        }
        Command::Close(reply) => {
            let _ = reply.send(ledger.close());
        }
    }
}
