//! A channel credential's payload and the rule that accepts a voucher.

use serde_json::Value;

use crate::mpp::problem::ProblemCode;
use crate::store::{ChannelPhase, ChannelState};

/// What the client asks with its voucher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Pay this request.
    Voucher,
    /// Pay this request and close the channel.
    Close,
}

/// A signed cumulative amount: `{action, amount, signature}`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Voucher {
    pub(crate) action: Action,
    pub(crate) amount: i128,
    pub(crate) signature: [u8; 64],
}

impl std::fmt::Debug for Voucher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voucher")
            .field("action", &self.action)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl Voucher {
    /// Reads a payload `{"action": "voucher" | "close", "amount": "^[1-9]\d*$", "signature":
    /// "<128 hex>"}`; anything else is `invalid-payload`.
    pub(crate) fn parse(payload: &Value) -> Result<Voucher, ProblemCode> {
        let invalid = ProblemCode::InvalidPayload;
        let field = |name| payload.get(name).and_then(Value::as_str).ok_or(invalid);
        let action = match field("action")? {
            "voucher" => Action::Voucher,
            "close" => Action::Close,
            _ => return Err(invalid),
        };
        let amount = field("amount")?;
        let canonical = amount.len() <= 39
            && amount.bytes().all(|byte| byte.is_ascii_digit())
            && !amount.starts_with('0');
        if !canonical {
            return Err(invalid);
        }
        let amount: i128 = amount.parse().map_err(|_| invalid)?;
        let signature = <[u8; 64] as hex::FromHex>::from_hex(field("signature")?)
            .ok()
            .ok_or(invalid)?;
        Ok(Voucher {
            action,
            amount,
            signature,
        })
    }

    /// The channel's next state if it accepts this voucher for a request of `price`, given
    /// that the channel holds `deposited` in all: the channel is open, the amount is above the
    /// stored one by at least the price, and the deposit covers it. A close leaves the
    /// channel `Closing`.
    pub(crate) fn accept(
        &self,
        state: &ChannelState,
        price: i128,
        deposited: i128,
    ) -> Result<ChannelState, ProblemCode> {
        if state.phase != ChannelPhase::Open {
            return Err(ProblemCode::ChannelFinalized);
        }
        // A voucher raises the cumulative amount; a close may settle for what was spent, leaving
        // out credit paid ahead and not drawn.
        let floor = match self.action {
            Action::Voucher => state.cumulative,
            Action::Close => state.spent(),
        };
        let least = floor.checked_add(price.max(1));
        if least.is_none_or(|least| self.amount < least) {
            return Err(ProblemCode::DeltaTooSmall);
        }
        if self.amount > deposited {
            return Err(ProblemCode::AmountExceedsDeposit);
        }
        let (unspent, phase) = match self.action {
            Action::Voucher => (state.unspent, ChannelPhase::Open),
            Action::Close => (0, ChannelPhase::Closing),
        };
        Ok(ChannelState {
            cumulative: self.amount,
            signature: Some(self.signature),
            unspent,
            phase,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SIGNATURE: &str = "b2f3752900328a16c3b4ba4d6399376dff9a5db5dec3f9843dc1f3dfbdca66d22ebcbab9900204beba5ac1cc5778bd6b96d621582438e7ded07ff8db05c7e90b";

    fn voucher(amount: i128) -> Voucher {
        Voucher {
            action: Action::Voucher,
            amount,
            signature: [1; 64],
        }
    }

    #[test]
    fn payloads_parse_exactly() {
        let good = json!({"action": "voucher", "amount": "10000000", "signature": SIGNATURE});
        let parsed = Voucher::parse(&good).unwrap();
        assert_eq!(parsed.action, Action::Voucher);
        assert_eq!(parsed.amount, 10_000_000);
        assert_eq!(hex::encode(parsed.signature), SIGNATURE);
        let close =
            json!({"action": "close", "amount": "1", "signature": SIGNATURE.to_uppercase()});
        assert_eq!(Voucher::parse(&close).unwrap().action, Action::Close);

        let bad = [
            json!({"action": "open", "amount": "1", "signature": SIGNATURE}),
            json!({"action": "topUp", "amount": "1", "signature": SIGNATURE}),
            json!({"amount": "1", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": 1, "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "0", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "01", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "-1", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "+1", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "1.5", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "", "signature": SIGNATURE}),
            // One past i128::MAX, and far past it.
            json!({"action": "voucher", "amount": "170141183460469231731687303715884105728", "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "9".repeat(400), "signature": SIGNATURE}),
            json!({"action": "voucher", "amount": "1", "signature": &SIGNATURE[2..]}),
            json!({"action": "voucher", "amount": "1", "signature": format!("{SIGNATURE}00")}),
            json!({"action": "voucher", "amount": "1", "signature": SIGNATURE.replace('b', "g")}),
            json!({"action": "voucher", "amount": "1"}),
            json!("voucher"),
            Value::Null,
        ];
        for payload in bad {
            assert_eq!(
                Voucher::parse(&payload),
                Err(ProblemCode::InvalidPayload),
                "{payload}"
            );
        }
        let max =
            json!({"action": "voucher", "amount": i128::MAX.to_string(), "signature": SIGNATURE});
        assert_eq!(Voucher::parse(&max).unwrap().amount, i128::MAX);
    }

    #[test]
    fn a_voucher_must_add_the_price_within_the_deposit() {
        let state = ChannelState {
            cumulative: 1_000,
            signature: Some([9; 64]),
            unspent: 0,
            phase: ChannelPhase::Open,
        };
        // Price 100, deposit 5 000.
        let next = voucher(1_100).accept(&state, 100, 5_000).unwrap();
        assert_eq!(next.cumulative, 1_100);
        assert_eq!(next.signature, Some([1; 64]));
        assert_eq!(next.phase, ChannelPhase::Open);
        assert_eq!(
            voucher(5_000)
                .accept(&state, 100, 5_000)
                .unwrap()
                .cumulative,
            5_000
        );
        for (amount, refusal) in [
            (1_000, ProblemCode::DeltaTooSmall),
            (999, ProblemCode::DeltaTooSmall),
            (1_099, ProblemCode::DeltaTooSmall),
            (1, ProblemCode::DeltaTooSmall),
            (5_001, ProblemCode::AmountExceedsDeposit),
        ] {
            assert_eq!(
                voucher(amount).accept(&state, 100, 5_000),
                Err(refusal),
                "{amount}"
            );
        }
        // A zero price still needs the amount to go up.
        assert_eq!(
            voucher(1_000).accept(&state, 0, 5_000),
            Err(ProblemCode::DeltaTooSmall)
        );
        assert!(voucher(1_001).accept(&state, 0, 5_000).is_ok());
        // No overflow at the top.
        let full = ChannelState {
            cumulative: i128::MAX,
            ..state
        };
        assert_eq!(
            voucher(i128::MAX).accept(&full, 1, i128::MAX),
            Err(ProblemCode::DeltaTooSmall)
        );
    }

    #[test]
    fn credit_paid_ahead_is_kept_by_a_voucher_and_left_out_by_a_close() {
        // 1 000 accepted, 300 of it paid ahead and not drawn: 700 spent.
        let state = ChannelState {
            cumulative: 1_000,
            signature: Some([9; 64]),
            unspent: 300,
            phase: ChannelPhase::Open,
        };
        let next = voucher(1_100).accept(&state, 100, 5_000).unwrap();
        assert_eq!((next.cumulative, next.unspent), (1_100, 300));
        assert_eq!(
            voucher(1_099).accept(&state, 100, 5_000),
            Err(ProblemCode::DeltaTooSmall),
            "a voucher raises the cumulative amount"
        );
        let close = |amount| Voucher {
            action: Action::Close,
            ..voucher(amount)
        };
        // A close for what was spent, plus the close's own price: the credit is not claimed.
        let closing = close(800).accept(&state, 100, 5_000).unwrap();
        assert_eq!(
            (closing.cumulative, closing.unspent, closing.phase),
            (800, 0, ChannelPhase::Closing)
        );
        assert_eq!(
            close(799).accept(&state, 100, 5_000),
            Err(ProblemCode::DeltaTooSmall)
        );
    }

    #[test]
    fn closing_and_closed_channels_take_no_voucher_and_close_moves_to_closing() {
        let open = ChannelState::NEW;
        let close = Voucher {
            action: Action::Close,
            ..voucher(100)
        };
        assert_eq!(
            close.accept(&open, 100, 100).unwrap().phase,
            ChannelPhase::Closing
        );
        for phase in [
            ChannelPhase::Closing,
            ChannelPhase::Closed { transaction: None },
        ] {
            let state = ChannelState { phase, ..open };
            assert_eq!(
                voucher(100).accept(&state, 100, 100),
                Err(ProblemCode::ChannelFinalized)
            );
            assert_eq!(
                close.accept(&state, 100, 100),
                Err(ProblemCode::ChannelFinalized)
            );
        }
    }
}
