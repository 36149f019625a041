//! A metered stream's wire, as the paying client reads it from a server: an SSE byte stream
//! cut into events in chunks (the first byte sets the chunk size; nothing may be added, and
//! nothing lost but line ends and a byte order mark), each event read as a browser reads it
//! and as a payment event; and WebSocket text frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_paywall::mpp::stream::{Event, Frame, NeedVoucher, Splitter, StreamReceipt, messages};

fuzz_target!(|data: &[u8]| {
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let mut splitter = Splitter::new(4096);
    let mut seen = Vec::new();
    for chunk in stream.chunks(usize::from(size).max(1)) {
        splitter.push(chunk);
        loop {
            match splitter.next_block() {
                Ok(Some(block)) => {
                    seen.extend_from_slice(&block.raw);
                    if let Some(event) = Event::read(&block.raw) {
                        let _ = messages::read_event::<NeedVoucher>(&event.data);
                        let _ = messages::read_event::<StreamReceipt>(&event.data);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    seen.extend_from_slice(&splitter.finish().unwrap_or_default());
    // All of it, but for a last LF (a CRLF's) or a lone byte order mark, which are no content.
    let tail = stream.get(seen.len()..).unwrap_or_default();
    assert!(stream.starts_with(&seen), "the blocks are the stream");
    assert!(
        matches!(tail, b"" | b"\n" | b"\xEF\xBB\xBF"),
        "nothing lost: {tail:?}"
    );
    if let Ok(text) = std::str::from_utf8(stream) {
        if let Ok(Some(frame)) = Frame::read(text) {
            assert_eq!(Frame::read(&frame.to_text()), Ok(Some(frame)));
        }
    }
});
