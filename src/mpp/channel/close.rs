//! A close whose answer was lost, ended from the channel contract's state.
//!
//! Before a close settles, its payment's record keeps [`CloseEvidence`]: the channel, the
//! cumulative amount the close withdraws up to, and the challenge's reference. Asked later,
//! the contract's state answers (read with one `getLedgerEntries`):
//!
//! | the contract says | the close |
//! |---|---|
//! | closed, withdrawn ≥ the close's amount | settled: the receipt names the close transaction when the channel store kept its hash, else the challenge's reference |
//! | closed, withdrawn < the close's amount (the funder took the deposit back first) | not settled, and cannot be any more: `channel-finalized` (410), as for any voucher on the channel now |
//! | open, or closing with the refund period still running | not known yet: the watcher submits the close again while the channel is stored `Closing` |

use crate::scheme::Reconciled;
use crate::stellar::read_channel;
use crate::store::{ChannelId, ChannelPhase, MAX_EVIDENCE_LEN};

use super::StellarChannel;
use crate::mpp::problem::ProblemCode;
use crate::mpp::server::{self, problem};

/// The evidence's format tag (version 1).
const TAG: u8 = 0xC1;
/// The longest reference kept (the layer's own are 36 characters).
const MAX_REFERENCE_LEN: usize = 128;

/// What a channel close leaves for reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CloseEvidence {
    pub(super) channel: ChannelId,
    pub(super) cumulative: i128,
    pub(super) reference: String,
}

impl CloseEvidence {
    /// `TAG ‖ channel (32) ‖ cumulative (16, big-endian) ‖ reference (UTF-8, to the end)`.
    pub(super) fn encode(&self) -> Vec<u8> {
        let reference = self.reference.as_bytes();
        let reference = &reference[..reference.len().min(MAX_REFERENCE_LEN)];
        let mut bytes = Vec::with_capacity(1 + 32 + 16 + reference.len());
        bytes.push(TAG);
        bytes.extend_from_slice(&self.channel.0);
        bytes.extend_from_slice(&self.cumulative.to_be_bytes());
        bytes.extend_from_slice(reference);
        debug_assert!(bytes.len() <= MAX_EVIDENCE_LEN);
        bytes
    }

    /// The evidence `bytes` encode, if they are close evidence.
    pub(super) fn decode(bytes: &[u8]) -> Option<CloseEvidence> {
        let (&tag, rest) = bytes.split_first()?;
        if tag != TAG || rest.len() < 48 || rest.len() > 48 + MAX_REFERENCE_LEN {
            return None;
        }
        let (channel, rest) = rest.split_at(32);
        let (cumulative, reference) = rest.split_at(16);
        Some(CloseEvidence {
            channel: ChannelId(channel.try_into().ok()?),
            cumulative: i128::from_be_bytes(cumulative.try_into().ok()?),
            reference: String::from_utf8(reference.to_vec()).ok()?,
        })
    }
}

impl StellarChannel {
    /// How the close of `evidence` ended, from the contract's state (see the
    /// [module docs](self)).
    pub(super) async fn reconcile_close(&self, evidence: &CloseEvidence) -> Reconciled {
        let channel = evidence.channel;
        let info = match read_channel(&*self.rpc, &channel.address(), Some(&self.currency)).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, %channel, "cannot read a channel to reconcile its close");
                return Reconciled::Unknown;
            }
        };
        if !info.is_closed() {
            return Reconciled::Unknown;
        }
        if info.withdrawn < evidence.cumulative {
            // The channel is finalized without it: 410, as for any voucher on it now.
            return Reconciled::NotSettled(problem(ProblemCode::ChannelFinalized));
        }
        let transaction = match self.store.load(channel).await {
            Ok(Some(state)) => match state.phase {
                ChannelPhase::Closed { transaction } => transaction,
                _ => None,
            },
            _ => None,
        };
        let reference = match transaction {
            Some(hash) => hex::encode(hash),
            None => evidence.reference.clone(),
        };
        Reconciled::Settled(server::receipt(reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_and_refuses_what_it_did_not_write() {
        let evidence = CloseEvidence {
            channel: ChannelId([7; 32]),
            cumulative: 1_234_567,
            reference: "0190f3b2-7d5d-4e3b-9c1e-2f6a5b4c3d2e".into(),
        };
        let bytes = evidence.encode();
        assert_eq!(CloseEvidence::decode(&bytes), Some(evidence.clone()));
        assert_eq!(CloseEvidence::decode(&[]), None);
        assert_eq!(CloseEvidence::decode(&bytes[..48]), None, "cut short");
        let mut other = bytes.clone();
        other[0] = 0x01;
        assert_eq!(CloseEvidence::decode(&other), None, "another tag");
        let mut long = bytes.clone();
        long.extend_from_slice(&[b'x'; MAX_REFERENCE_LEN]);
        assert_eq!(CloseEvidence::decode(&long), None, "too long");
        let mut invalid = bytes;
        invalid.push(0xFF);
        assert_eq!(CloseEvidence::decode(&invalid), None, "not UTF-8");
        let empty = CloseEvidence {
            reference: String::new(),
            ..evidence
        };
        assert_eq!(CloseEvidence::decode(&empty.encode()), Some(empty));
    }
}
