//! The in-band payment messages of a metered stream, in the shapes mppx's sessions use (its
//! SSE events and WebSocket frames are the same on every version line from 0.6 to 0.11), with
//! our channel's contract address as `channelId`:
//!
//! | message | SSE | WebSocket text frame |
//! |---|---|---|
//! | the server needs a higher voucher | `event: payment-need-voucher` with [`NeedVoucher`] | `{"mpp":"payment-need-voucher","data":{…}}` |
//! | the state at the end (or after a voucher) | `event: payment-receipt` with a [`StreamReceipt`] | `{"mpp":"payment-receipt","data":{…}}` |
//! | the application's own message | `event: message` (or its own type) | `{"mpp":"message","data":"…"}` |
//! | the client's voucher | a `POST` of `Authorization: Payment …` to the stream's resource | `{"mpp":"authorization","authorization":"Payment …"}` |
//! | the client stops | it disconnects | `{"mpp":"payment-close-request"}` |
//! | the server has stopped | the stream ends | `{"mpp":"payment-close-ready","data":{receipt}}` |
//! | an error | the stream ends | `{"mpp":"payment-error","status":402,"message":"…"}` |
//!
//! Amounts are decimal strings of the token's atomic units. Payment frames are read with a size
//! limit ([`MAX_FRAME`]; an application `message` is as large as its socket allows) and nothing
//! in them is trusted beyond its shape.

use serde::{Deserialize, Serialize};

/// The largest payment frame or event read, in bytes (64 KiB).
pub const MAX_FRAME: usize = 64 * 1024;

/// The SSE event type of [`NeedVoucher`].
pub const NEED_VOUCHER: &str = "payment-need-voucher";
/// The SSE event type of [`StreamReceipt`].
pub const RECEIPT: &str = "payment-receipt";

/// The server stopped before a unit its credit does not cover, and asks for a voucher of at
/// least `required_cumulative`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedVoucher {
    /// The channel (`C…`).
    pub channel_id: String,
    /// The least cumulative amount that covers the next unit.
    #[serde(with = "text")]
    pub required_cumulative: i128,
    /// The highest cumulative amount accepted so far.
    #[serde(with = "text")]
    pub accepted_cumulative: i128,
    /// The channel's deposit: a voucher above it needs a top-up first.
    #[serde(with = "text")]
    pub deposit: i128,
}

/// Where a metered stream stands: in the final event, and after each voucher on a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamReceipt {
    /// `stellar`.
    pub method: String,
    /// The intent the stream was paid with.
    pub intent: String,
    /// `success`.
    pub status: String,
    /// RFC 3339.
    pub timestamp: String,
    /// The channel (`C…`).
    pub reference: String,
    /// The challenge the stream (or the last voucher) answered.
    pub challenge_id: String,
    /// The channel (`C…`).
    pub channel_id: String,
    /// The highest cumulative amount accepted.
    #[serde(with = "text")]
    pub accepted_cumulative: i128,
    /// What the channel has paid for, delivered units included.
    #[serde(with = "text")]
    pub spent: i128,
    /// The units this stream delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<u64>,
}

/// A WebSocket text frame of the payment protocol (the key `mpp` names it); frames without it
/// are the application's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mpp")]
pub enum Frame {
    /// Client → server: a credential (`Payment …`, the whole header value).
    #[serde(rename = "authorization")]
    Authorization {
        /// The credential.
        authorization: String,
    },
    /// Client → server: stop the stream.
    #[serde(rename = "payment-close-request")]
    CloseRequest,
    /// Server → client: an application message.
    #[serde(rename = "message")]
    Message {
        /// The message.
        data: String,
    },
    /// Server → client: a voucher is needed.
    #[serde(rename = "payment-need-voucher")]
    NeedVoucher {
        /// What is needed.
        data: NeedVoucher,
    },
    /// Server → client: a voucher was accepted, or the stream's state at its end.
    #[serde(rename = "payment-receipt")]
    Receipt {
        /// The state.
        data: StreamReceipt,
    },
    /// Server → client: the stream has stopped; what was spent.
    #[serde(rename = "payment-close-ready")]
    CloseReady {
        /// The state.
        data: StreamReceipt,
    },
    /// Server → client: a payment error; the socket closes after it.
    #[serde(rename = "payment-error")]
    Error {
        /// An HTTP status (402, 400, 429 …).
        status: u16,
        /// Why.
        message: String,
    },
}

/// Why a frame or event was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A payment frame (not a `message`) over [`MAX_FRAME`] bytes.
    #[error("a payment message of over {MAX_FRAME} bytes")]
    TooLarge,
    /// Not one of the shapes above.
    #[error("not a payment message")]
    WrongShape,
}

impl Frame {
    /// Reads a text frame: `Ok(None)` when it is not a payment frame (no `mpp` key: the
    /// application's).
    ///
    /// # Errors
    ///
    /// [`MessageError`] for a payment frame over the limit or of the wrong shape.
    pub fn read(text: &str) -> Result<Option<Frame>, MessageError> {
        #[derive(Deserialize)]
        struct Tagged<'a> {
            #[serde(borrow)]
            mpp: Option<&'a serde_json::value::RawValue>,
        }
        // Only an object names a payment frame (serde would read an array as one too).
        if !text.trim_start().starts_with('{') {
            return Ok(None);
        }
        match serde_json::from_str::<Tagged<'_>>(text) {
            Ok(Tagged { mpp: Some(tag) }) => {
                // An application message is as large as its socket allows; payment frames are
                // small.
                if text.len() > MAX_FRAME && tag.get() != "\"message\"" {
                    return Err(MessageError::TooLarge);
                }
                serde_json::from_str(text)
                    .map(Some)
                    .map_err(|_| MessageError::WrongShape)
            }
            _ => Ok(None),
        }
    }

    /// The frame as text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads the data of a payment event (`payment-need-voucher`, `payment-receipt`).
///
/// # Errors
///
/// [`MessageError`] when it is over the limit or of the wrong shape.
pub fn read_event<T: for<'de> Deserialize<'de>>(data: &str) -> Result<T, MessageError> {
    if data.len() > MAX_FRAME {
        return Err(MessageError::TooLarge);
    }
    serde_json::from_str(data).map_err(|_| MessageError::WrongShape)
}

/// Amounts as decimal strings, read strictly (digits only, at most 39 of them).
mod text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        amount: &i128,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(amount)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<i128, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let digits =
            !text.is_empty() && text.len() <= 39 && text.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| text.parse().ok())
            .flatten()
            .ok_or_else(|| serde::de::Error::custom("not an amount"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";

    fn need() -> NeedVoucher {
        NeedVoucher {
            channel_id: CHANNEL.into(),
            required_cumulative: 250_025,
            accepted_cumulative: 250_000,
            deposit: 500_000,
        }
    }

    #[test]
    fn need_voucher_is_mppx_shaped() {
        let json = serde_json::to_string(&need()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"channelId":"{CHANNEL}","requiredCumulative":"250025","acceptedCumulative":"250000","deposit":"500000"}}"#
            )
        );
        assert_eq!(read_event::<NeedVoucher>(&json).unwrap(), need());
    }

    #[test]
    fn frames_round_trip_and_application_frames_pass() {
        let frames = [
            Frame::Authorization {
                authorization: "Payment eyJ".into(),
            },
            Frame::CloseRequest,
            Frame::Message { data: "hi".into() },
            Frame::NeedVoucher { data: need() },
            Frame::Error {
                status: 402,
                message: "no".into(),
            },
        ];
        for frame in frames {
            assert_eq!(Frame::read(&frame.to_text()), Ok(Some(frame)));
        }
        assert_eq!(
            Frame::CloseRequest.to_text(),
            r#"{"mpp":"payment-close-request"}"#
        );
        for application in [
            r#"{"type":"chat","text":"hi"}"#,
            "plain text",
            "[1,2]",
            r#"["x"]"#,
            r#"[{"a":1}]"#,
            "{",
        ] {
            assert_eq!(Frame::read(application), Ok(None), "{application}");
        }
    }

    #[test]
    fn bad_payment_messages_are_refused() {
        for (text, error) in [
            (
                r#"{"mpp":"payment-need-voucher"}"#.to_owned(),
                MessageError::WrongShape,
            ),
            (
                r#"{"mpp":"no-such-frame"}"#.to_owned(),
                MessageError::WrongShape,
            ),
            (
                r#"{"mpp":"authorization","authorization":7}"#.to_owned(),
                MessageError::WrongShape,
            ),
            (
                format!(
                    r#"{{"mpp":"payment-error","status":402,"message":"{}"}}"#,
                    "x".repeat(MAX_FRAME)
                ),
                MessageError::TooLarge,
            ),
        ] {
            assert_eq!(Frame::read(&text), Err(error), "{text:.60}");
        }
        // An application message larger than a payment frame is read whole.
        let large = "x".repeat(4 * MAX_FRAME);
        assert_eq!(
            Frame::read(
                &Frame::Message {
                    data: large.clone()
                }
                .to_text()
            ),
            Ok(Some(Frame::Message { data: large }))
        );
        for amount in [
            "-1",
            "",
            "1e3",
            "0x10",
            " 1",
            "1234567890123456789012345678901234567890",
        ] {
            let json = format!(
                r#"{{"channelId":"C","requiredCumulative":"{amount}","acceptedCumulative":"0","deposit":"0"}}"#
            );
            assert_eq!(
                read_event::<NeedVoucher>(&json),
                Err(MessageError::WrongShape),
                "{amount}"
            );
        }
    }
}
