//! Host failures as text: the error, then the diagnostic event log, newest first (the shape of
//! Soroban RPC's `error` strings).

use std::fmt::Write as _;

use stellar_xdr::{ContractEventBody, DiagnosticEvent, ScMap, ScVal, ScVec};

use crate::stellar::Address;

/// Most events written into one message.
const MAX_EVENTS: usize = 16;
/// Longest message, in characters (a little more may be written to finish a character).
const MAX_MESSAGE_CHARS: usize = 4096;
/// Deepest value nesting rendered; deeper parts are written `…`.
const MAX_DEPTH: usize = 6;

/// `HostError: Error(Auth, InvalidAction)` followed by the event log.
pub(super) fn describe(error: &impl std::fmt::Debug, events: &[DiagnosticEvent]) -> String {
    let mut text = format!("HostError: {error:?}");
    if !events.is_empty() {
        text.push_str("\n\nEvent log (newest first):");
        for (index, event) in events.iter().rev().take(MAX_EVENTS).enumerate() {
            let _ = write!(text, "\n   {index}: ");
            render_event(&mut text, event);
            if text.len() > MAX_MESSAGE_CHARS {
                break;
            }
        }
    }
    shorten(text)
}

fn render_event(out: &mut String, event: &DiagnosticEvent) {
    let kind = match event.event.type_ {
        stellar_xdr::ContractEventType::System => "System Event",
        stellar_xdr::ContractEventType::Contract => "Contract Event",
        stellar_xdr::ContractEventType::Diagnostic => "Diagnostic Event",
    };
    let _ = write!(out, "[{kind}]");
    if !event.in_successful_contract_call {
        out.push_str(" [failed call]");
    }
    if let Some(contract) = &event.event.contract_id {
        let _ = write!(out, " contract:{}", Address::Contract(contract.0.0));
    }
    let ContractEventBody::V0(body) = &event.event.body;
    out.push_str(", topics:[");
    for (index, topic) in body.topics.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        render_value(out, topic, 0);
    }
    out.push_str("], data:");
    render_value(out, &body.data, 0);
}

/// A compact rendering of a value: symbols bare, strings quoted, addresses as strkeys, bytes as hex.
fn render_value(out: &mut String, value: &ScVal, depth: usize) {
    if depth > MAX_DEPTH {
        out.push('…');
        return;
    }
    let _ = match value {
        ScVal::Bool(b) => write!(out, "{b}"),
        ScVal::Void => write!(out, "Void"),
        ScVal::Error(error) => write!(out, "{error:?}"),
        ScVal::U32(n) => write!(out, "{n}"),
        ScVal::I32(n) => write!(out, "{n}"),
        ScVal::U64(n) => write!(out, "{n}"),
        ScVal::I64(n) => write!(out, "{n}"),
        ScVal::Timepoint(t) => write!(out, "Timepoint({})", t.0),
        ScVal::Duration(d) => write!(out, "Duration({})", d.0),
        ScVal::U128(parts) => {
            write!(
                out,
                "{}",
                (u128::from(parts.hi) << 64) | u128::from(parts.lo)
            )
        }
        ScVal::I128(parts) => {
            write!(
                out,
                "{}",
                (i128::from(parts.hi) << 64) | i128::from(parts.lo)
            )
        }
        ScVal::U256(_) | ScVal::I256(_) => write!(out, "<256-bit>"),
        ScVal::Bytes(bytes) => {
            out.push_str("Bytes(");
            bytes.iter().for_each(|b| {
                let _ = write!(out, "{b:02x}");
            });
            write!(out, ")")
        }
        ScVal::String(text) => write!(out, "{:?}", String::from_utf8_lossy(text.as_slice())),
        ScVal::ExecutableTag(tag) => {
            write!(
                out,
                "ExecutableTag({:?})",
                String::from_utf8_lossy(tag.as_slice())
            )
        }
        ScVal::Symbol(symbol) => write!(out, "{}", String::from_utf8_lossy(symbol.as_slice())),
        ScVal::Vec(None) | ScVal::Map(None) => write!(out, "None"),
        ScVal::Vec(Some(ScVec(items))) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render_value(out, item, depth + 1);
            }
            write!(out, "]")
        }
        ScVal::Map(Some(ScMap(entries))) => {
            out.push('{');
            for (index, entry) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render_value(out, &entry.key, depth + 1);
                out.push_str(": ");
                render_value(out, &entry.val, depth + 1);
            }
            write!(out, "}}")
        }
        ScVal::Address(address) => match Address::from_sc_address(address) {
            Ok(address) => write!(out, "{address}"),
            Err(_) => write!(out, "{address:?}"),
        },
        ScVal::ContractInstance(_) => write!(out, "ContractInstance"),
        ScVal::LedgerKeyContractInstance => write!(out, "LedgerKeyContractInstance"),
        ScVal::LedgerKeyNonce(nonce) => write!(out, "LedgerKeyNonce({})", nonce.nonce),
    };
}

fn shorten(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_CHARS {
        let mut end = MAX_MESSAGE_CHARS;
        while !text.is_char_boundary(end) {
            end += 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        ContractEvent, ContractEventType, ContractEventV0, ContractId, ExtensionPoint, Hash,
        ScSymbol, StringM, VecM,
    };

    fn symbol(text: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(StringM::try_from(text).unwrap()))
    }

    #[test]
    fn events_are_listed_newest_first() {
        let event = |topic: &str| DiagnosticEvent {
            in_successful_contract_call: false,
            event: ContractEvent {
                ext: ExtensionPoint::V0,
                contract_id: Some(ContractId(Hash([0; 32]))),
                type_: ContractEventType::Diagnostic,
                body: ContractEventBody::V0(ContractEventV0 {
                    topics: VecM::try_from(vec![symbol(topic)]).unwrap(),
                    data: ScVal::Vec(Some(ScVec(
                        VecM::try_from(vec![
                            ScVal::U32(7),
                            ScVal::Bytes(vec![1, 255].try_into().unwrap()),
                        ])
                        .unwrap(),
                    ))),
                }),
            },
        };
        let text = describe(
            &"Error(Auth, InvalidAction)",
            &[event("older"), event("newer")],
        );
        assert!(text.starts_with("HostError: \"Error(Auth, InvalidAction)\"\n\nEvent log (newest first):\n   0: [Diagnostic Event] [failed call] contract:CAAAA"), "{text}");
        assert!(
            text.contains("topics:[newer], data:[7, Bytes(01ff)]"),
            "{text}"
        );
        assert!(text.find("newer").unwrap() < text.find("older").unwrap());
        assert_eq!(describe(&1, &[]), "HostError: 1");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let text = shorten("é".repeat(MAX_MESSAGE_CHARS));
        assert!(text.ends_with('…'));
        assert!(text.len() <= MAX_MESSAGE_CHARS + 4);
    }
}
