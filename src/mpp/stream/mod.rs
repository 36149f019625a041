//! The wire of metered streams (pay as you stream): a response priced per unit (an SSE event,
//! a WebSocket message) draws on an MPP `channel`'s credit as units go out, and asks in band
//! for a higher cumulative voucher when the credit runs out. This module is the wire only:
//! [`sse`] cuts an event stream into events, [`messages`] reads and writes the in-band
//! payment messages.

pub mod messages;
pub mod sse;

pub use messages::{Frame, MessageError, NeedVoucher, StreamReceipt};
pub use sse::{Block, Event, EventTooLarge, Splitter};
