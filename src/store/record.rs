//! The byte form of a [`PaymentRecord`], for stores that keep records outside the process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::payment::{
    CompletedPayment, Fingerprint, PaymentRecord, PaymentState, PendingSettlement,
    RecordedResponse, SettledPayment,
};
use crate::layer::Paid;
use crate::scheme::{Intent, Receipt};
use crate::stellar::Amount;

const VERSION: u8 = 2;
/// The bytes at the front of an encoded record that identify it: the version and a digest of
/// the rest. Two encodings with the same tag are the same record, so a back end may compare
/// tags rather than whole records.
pub const RECORD_TAG_LEN: usize = 17;
/// The longest custom intent protocol or name kept (they are interned for the process).
const MAX_INTENT_LEN: usize = 64;
/// The longest settlement evidence kept; a scheme's evidence is a few hundred bytes.
pub const MAX_EVIDENCE_LEN: usize = 4096;

/// A payment record that could not be decoded: written by another format, or damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payment record is not readable: {0}")]
pub struct RecordError(&'static str);

impl PaymentRecord {
    /// The record's bytes, with the lifetime a back end renews it for.
    ///
    /// Format version 2 (integers big-endian; `str` and `bytes` are a `u32` length then the bytes;
    /// a list is a `u32` count then its items):
    ///
    /// | bytes | field |
    /// |---|---|
    /// | 1 | format version (2) |
    /// | 16 | tag: the first 16 bytes of SHA-256 over everything after it |
    /// | 8 | the record's lifetime, in milliseconds |
    /// | 32 | fingerprint |
    /// | 1 | state: 0 `Reserved`, 1 `Executing(None)`, 2 `Executing(Some)`, 3 `Settling`, 4 `Settled`, 5 `Completed`, 6 `Failed`, 7 `Unknown` |
    /// | … | for 2, 4 and 5: the settled payment |
    /// | … | for 5: 0; 1 and the recorded response; or 2, the recorded response and its trailers (headers) |
    /// | … | for 3 and 7: the pending settlement |
    ///
    /// What was paid is the payer (`str`), the amount (16 bytes, `i128`), the asset (`str`), the
    /// intent (1 byte: 0 x402 `exact`, 1 MPP `charge`, 2 MPP `channel`, 255 followed by the
    /// protocol and the name as `str`) and the reference (0, or 1 and a `str`). A settled payment
    /// is what was paid, then the receipt's reference (`str`) and headers. A pending settlement is
    /// what was paid, when it started (`u64`, seconds since the Unix epoch) and the scheme's
    /// evidence (`bytes`, at most [`MAX_EVIDENCE_LEN`]). A recorded response is the status (`u16`), the headers and
    /// the body (`bytes`). Headers are a list of name (`str`) and value (`bytes`) pairs, in order.
    ///
    /// Decoding checks the tag, the version, every length against the bytes left (nothing is
    /// allocated for a length the input cannot hold), header names and values, and that nothing
    /// is left over.
    pub fn encode(&self, ttl: Duration) -> Vec<u8> {
        let mut out = Writer(vec![0; RECORD_TAG_LEN]);
        out.0[0] = VERSION;
        out.u64(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        out.raw(&self.fingerprint.0);
        match &self.state {
            PaymentState::Reserved => out.u8(0),
            PaymentState::Executing(None) => out.u8(1),
            PaymentState::Executing(Some(settled)) => {
                out.u8(2);
                out.settled(settled);
            }
            PaymentState::Settling(pending) => {
                out.u8(3);
                out.pending(pending);
            }
            PaymentState::Settled(settled) => {
                out.u8(4);
                out.settled(settled);
            }
            PaymentState::Completed(completed) => {
                out.u8(5);
                out.settled(&completed.settled);
                match &completed.response {
                    None => out.u8(0),
                    Some(response) => {
                        out.u8(if response.trailers.is_some() { 2 } else { 1 });
                        out.u16(response.status.as_u16());
                        out.headers(response.headers.len(), response.headers.iter());
                        out.bytes(&response.body);
                        if let Some(trailers) = &response.trailers {
                            out.headers(trailers.len(), trailers.iter());
                        }
                    }
                }
            }
            PaymentState::Failed => out.u8(6),
            PaymentState::Unknown(pending) => {
                out.u8(7);
                out.pending(pending);
            }
        }
        let digest = Sha256::digest(&out.0[RECORD_TAG_LEN..]);
        out.0[1..RECORD_TAG_LEN].copy_from_slice(&digest[..RECORD_TAG_LEN - 1]);
        out.0
    }

    /// The record and its lifetime from [`encode`](Self::encode)'s bytes.
    ///
    /// # Errors
    ///
    /// [`RecordError`] for anything but a whole, undamaged version-2 record (records of earlier
    /// versions included).
    pub fn decode(bytes: &[u8]) -> Result<(PaymentRecord, Duration), RecordError> {
        if bytes.len() < RECORD_TAG_LEN || bytes[0] != VERSION {
            return Err(RecordError("unknown format"));
        }
        let digest = Sha256::digest(&bytes[RECORD_TAG_LEN..]);
        if bytes[1..RECORD_TAG_LEN] != digest[..RECORD_TAG_LEN - 1] {
            return Err(RecordError("damaged"));
        }
        let mut input = Reader(&bytes[RECORD_TAG_LEN..]);
        let ttl = Duration::from_millis(input.u64()?);
        let fingerprint = Fingerprint(input.array()?);
        let state = match input.u8()? {
            0 => PaymentState::Reserved,
            1 => PaymentState::Executing(None),
            2 => PaymentState::Executing(Some(Arc::new(input.settled()?))),
            3 => PaymentState::Settling(Arc::new(input.pending()?)),
            4 => PaymentState::Settled(Arc::new(input.settled()?)),
            5 => {
                let settled = Arc::new(input.settled()?);
                let response = match input.u8()? {
                    0 => None,
                    flag @ (1 | 2) => Some(RecordedResponse {
                        status: StatusCode::from_u16(input.u16()?)
                            .map_err(|_| RecordError("bad status"))?,
                        headers: input.headers()?.into_iter().collect(),
                        body: Bytes::copy_from_slice(input.bytes()?),
                        trailers: if flag == 2 {
                            Some(input.headers()?.into_iter().collect())
                        } else {
                            None
                        },
                    }),
                    _ => return Err(RecordError("bad response flag")),
                };
                PaymentState::Completed(Arc::new(CompletedPayment { settled, response }))
            }
            6 => PaymentState::Failed,
            7 => PaymentState::Unknown(Arc::new(input.pending()?)),
            _ => return Err(RecordError("unknown state")),
        };
        if !input.0.is_empty() {
            return Err(RecordError("trailing bytes"));
        }
        Ok((PaymentRecord { state, fingerprint }, ttl))
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.raw(&value.to_be_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.raw(&value.to_be_bytes());
    }
    fn len(&mut self, len: usize) {
        // A record is far below 4 GiB: the layer records bodies up to a configured limit.
        self.raw(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.raw(bytes);
    }
    fn settled(&mut self, settled: &SettledPayment) {
        self.paid(&settled.paid);
        self.bytes(settled.receipt.reference.as_bytes());
        let headers = &settled.receipt.headers;
        self.headers(
            headers.len(),
            headers.iter().map(|(name, value)| (name, value)),
        );
    }
    fn pending(&mut self, pending: &PendingSettlement) {
        self.paid(&pending.paid);
        self.u64(pending.started);
        self.bytes(&pending.evidence);
    }
    fn paid(&mut self, paid: &Paid) {
        self.bytes(paid.payer.as_bytes());
        self.raw(&paid.amount.atomic().to_be_bytes());
        self.bytes(paid.asset.as_bytes());
        match paid.intent {
            Intent::X402_EXACT => self.u8(0),
            Intent::MPP_CHARGE => self.u8(1),
            Intent::MPP_CHANNEL => self.u8(2),
            Intent { protocol, name } => {
                self.u8(255);
                self.bytes(protocol.as_bytes());
                self.bytes(name.as_bytes());
            }
        }
        match &paid.reference {
            None => self.u8(0),
            Some(reference) => {
                self.u8(1);
                self.bytes(reference.as_bytes());
            }
        }
    }
    fn headers<'a>(
        &mut self,
        count: usize,
        headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) {
        self.len(count);
        for (name, value) in headers {
            self.bytes(name.as_str().as_bytes());
            self.bytes(value.as_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < len {
            return Err(RecordError("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn len(&mut self) -> Result<usize, RecordError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        // Checked before anything is allocated for it.
        if len > self.0.len() {
            return Err(RecordError("truncated"));
        }
        Ok(len)
    }
    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.len()?;
        self.take(len)
    }
    fn text(&mut self) -> Result<String, RecordError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| RecordError("text is not UTF-8"))
    }
    fn settled(&mut self) -> Result<SettledPayment, RecordError> {
        let paid = self.paid()?;
        let receipt = Receipt {
            reference: self.text()?,
            headers: self.headers()?,
        };
        Ok(SettledPayment { paid, receipt })
    }
    fn pending(&mut self) -> Result<PendingSettlement, RecordError> {
        let paid = self.paid()?;
        let started = self.u64()?;
        let evidence = self.bytes()?;
        if evidence.len() > MAX_EVIDENCE_LEN {
            return Err(RecordError("evidence too long"));
        }
        Ok(PendingSettlement {
            paid,
            started,
            evidence: Bytes::copy_from_slice(evidence),
        })
    }
    fn paid(&mut self) -> Result<Paid, RecordError> {
        let payer = self.text()?;
        let amount = Amount::from_atomic(i128::from_be_bytes(self.array()?))
            .map_err(|_| RecordError("bad amount"))?;
        let asset = self.text()?;
        let intent = match self.u8()? {
            0 => Intent::X402_EXACT,
            1 => Intent::MPP_CHARGE,
            2 => Intent::MPP_CHANNEL,
            255 => Intent {
                protocol: intern(self.bytes()?)?,
                name: intern(self.bytes()?)?,
            },
            _ => return Err(RecordError("unknown intent")),
        };
        let reference = match self.u8()? {
            0 => None,
            1 => Some(self.text()?),
            _ => return Err(RecordError("bad reference flag")),
        };
        Ok(Paid {
            payer,
            amount,
            asset,
            intent,
            reference,
        })
    }
    fn headers(&mut self) -> Result<Vec<(HeaderName, HeaderValue)>, RecordError> {
        let count = self.len()?;
        // Each header takes at least 8 bytes, so `count` is bounded by the input.
        let mut headers = Vec::with_capacity(count / 8);
        for _ in 0..count {
            let name = HeaderName::from_bytes(self.bytes()?)
                .map_err(|_| RecordError("bad header name"))?;
            let value = HeaderValue::from_bytes(self.bytes()?)
                .map_err(|_| RecordError("bad header value"))?;
            headers.push((name, value));
        }
        Ok(headers)
    }
}

/// A custom intent's protocol or name, as the `&'static str` [`Intent`] holds. Each distinct
/// string is kept once for the life of the process (intents are few: one per scheme).
fn intern(bytes: &[u8]) -> Result<&'static str, RecordError> {
    static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    if bytes.len() > MAX_INTENT_LEN {
        return Err(RecordError("intent too long"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| RecordError("text is not UTF-8"))?;
    let mut interned = INTERNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let interned = interned.get_or_insert_with(HashSet::new);
    if let Some(known) = interned.get(text) {
        return Ok(known);
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    interned.insert(leaked);
    Ok(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const TTL: Duration = Duration::from_secs(600);

    fn settled(intent: Intent) -> Arc<SettledPayment> {
        Arc::new(SettledPayment {
            paid: Paid {
                payer: "GPAYER".into(),
                amount: Amount::from_atomic(1_110).unwrap(),
                asset: "CASSET".into(),
                intent,
                reference: Some("ab12".into()),
            },
            receipt: Receipt {
                reference: "ab12".into(),
                headers: vec![(
                    HeaderName::from_static("payment-receipt"),
                    HeaderValue::from_static("eyJ4Ijoi"),
                )],
            },
        })
    }

    fn every_state() -> Vec<PaymentState> {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        vec![
            PaymentState::Reserved,
            PaymentState::Executing(None),
            PaymentState::Executing(Some(settled(Intent::MPP_CHARGE))),
            PaymentState::Settling(pending(Intent::X402_EXACT, b"")),
            PaymentState::Settled(settled(Intent::MPP_CHANNEL)),
            PaymentState::Completed(Arc::new(CompletedPayment {
                settled: settled(Intent::X402_EXACT),
                response: Some(RecordedResponse {
                    status: StatusCode::CREATED,
                    headers: headers.clone(),
                    body: Bytes::from_static(b"\x00\xffbinary body"),
                    trailers: None,
                }),
            })),
            // A gRPC answer: its status comes in the trailers.
            PaymentState::Completed(Arc::new(CompletedPayment {
                settled: settled(Intent::MPP_CHANNEL),
                response: Some(RecordedResponse {
                    status: StatusCode::OK,
                    headers,
                    body: Bytes::from_static(b"\x00\x00\x00\x00\x02\x08\x01"),
                    trailers: Some(HeaderMap::from_iter([(
                        http::header::HeaderName::from_static("grpc-status"),
                        HeaderValue::from_static("0"),
                    )])),
                }),
            })),
            PaymentState::Completed(Arc::new(CompletedPayment {
                settled: settled(Intent {
                    protocol: "custom",
                    name: "metered",
                }),
                response: None,
            })),
            PaymentState::Failed,
            PaymentState::Unknown(pending(Intent::MPP_CHARGE, &[7; MAX_EVIDENCE_LEN])),
        ]
    }

    fn pending(intent: Intent, evidence: &[u8]) -> Arc<PendingSettlement> {
        let mut paid = settled(intent).paid.clone();
        paid.reference = None;
        Arc::new(PendingSettlement {
            paid,
            started: 1_800_000_000,
            evidence: Bytes::copy_from_slice(evidence),
        })
    }

    #[test]
    fn every_state_round_trips_with_its_lifetime() {
        for state in every_state() {
            let record = PaymentRecord {
                state,
                fingerprint: Fingerprint([9; 32]),
            };
            let bytes = record.encode(TTL);
            assert_eq!(PaymentRecord::decode(&bytes), Ok((record, TTL)));
        }
    }

    #[test]
    fn equal_records_have_equal_tags_and_different_ones_do_not() {
        let encode = |state| {
            PaymentRecord {
                state,
                fingerprint: Fingerprint([9; 32]),
            }
            .encode(TTL)
        };
        let tags: Vec<Vec<u8>> = every_state()
            .into_iter()
            .map(|state| encode(state)[..RECORD_TAG_LEN].to_vec())
            .collect();
        for (i, tag) in tags.iter().enumerate() {
            assert_eq!(tags.iter().filter(|other| *other == tag).count(), 1, "{i}");
        }
        let unknown = || PaymentState::Unknown(pending(Intent::X402_EXACT, b"nonce"));
        assert_eq!(encode(unknown()), encode(unknown()));
    }

    #[test]
    fn damaged_truncated_or_foreign_bytes_are_refused() {
        let record = PaymentRecord {
            state: every_state().swap_remove(5),
            fingerprint: Fingerprint([9; 32]),
        };
        let bytes = record.encode(TTL);
        // Every truncation, every flipped byte: refused, never a panic or a wrong record.
        for len in 0..bytes.len() {
            assert!(PaymentRecord::decode(&bytes[..len]).is_err(), "{len}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(PaymentRecord::decode(&damaged).is_err(), "{at}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(PaymentRecord::decode(&longer), Err(RecordError("damaged")));
        let mut other_version = bytes;
        other_version[0] = 1;
        assert_eq!(
            PaymentRecord::decode(&other_version),
            Err(RecordError("unknown format"))
        );
    }

    /// Builds a record body with a correct tag, so that the checks after the tag are reached.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&Sha256::digest(body)[..RECORD_TAG_LEN - 1]);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn well_sealed_nonsense_is_refused_by_the_field_checks() {
        let head = |state: u8| {
            let mut body = 600_000u64.to_be_bytes().to_vec();
            body.extend_from_slice(&[9; 32]);
            body.push(state);
            body
        };
        assert_eq!(
            PaymentRecord::decode(&sealed(&head(8))),
            Err(RecordError("unknown state"))
        );
        // A settled payment whose payer claims 4 GiB: refused before any allocation.
        let mut huge = head(4);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            PaymentRecord::decode(&sealed(&huge)),
            Err(RecordError("truncated"))
        );
        // A payer that is not UTF-8.
        let mut latin = head(4);
        latin.extend_from_slice(&1u32.to_be_bytes());
        latin.push(0xff);
        assert_eq!(
            PaymentRecord::decode(&sealed(&latin)),
            Err(RecordError("text is not UTF-8"))
        );
        let mut trailing = head(6);
        trailing.push(0);
        assert_eq!(
            PaymentRecord::decode(&sealed(&trailing)),
            Err(RecordError("trailing bytes"))
        );
        // Evidence longer than any scheme writes.
        let mut long = PaymentRecord {
            state: PaymentState::Unknown(pending(Intent::X402_EXACT, &[1; MAX_EVIDENCE_LEN + 1])),
            fingerprint: Fingerprint([9; 32]),
        }
        .encode(TTL);
        assert_eq!(
            PaymentRecord::decode(&long),
            Err(RecordError("evidence too long"))
        );
        long.truncate(RECORD_TAG_LEN);
        assert!(PaymentRecord::decode(&long).is_err());
    }
}
