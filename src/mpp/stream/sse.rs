//! Server-sent events as a metered stream sees them: a byte stream cut into events (the
//! WHATWG `text/event-stream` rules: lines end with CRLF, LF or CR; a blank line ends an event;
//! a line starting with `:` is a comment), each kept whole as the bytes that carried it, so a
//! server can hold an event back until it is paid for and then send it exactly as its service
//! wrote it, and a client can read the payment events among the others.
//!
//! An event is a *unit* when it dispatches (it has at least one `data` line); a block of
//! comments only (a keep-alive) or fields without data dispatches nothing and is free.

use bytes::{Bytes, BytesMut};

/// The largest event read by default: 1 MiB.
pub const DEFAULT_MAX_EVENT: usize = 1 << 20;

/// One event block, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The bytes of the block, its blank line included.
    pub raw: Bytes,
    /// Whether it dispatches an event (it has a `data` line).
    pub dispatches: bool,
}

/// A block longer than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event of over {limit} bytes")]
pub struct EventTooLarge {
    /// The limit.
    pub limit: usize,
}

/// Cuts a byte stream into [`Block`]s as its chunks arrive.
#[derive(Debug)]
pub struct Splitter {
    buffer: BytesMut,
    /// How far `buffer` has been read into lines.
    scanned: usize,
    /// Where the current line starts in `buffer`.
    line_start: usize,
    /// The current block has a `data` line.
    has_data: bool,
    /// The last line ended with CR: a LF right after it is part of that line end.
    after_cr: bool,
    /// The bytes opening the current block that belong to no line (a byte order mark at the
    /// stream's start, the LF of a CRLF that ended the block before).
    blank_prefix: usize,
    /// The stream's start (where a byte order mark may be) is behind.
    started: bool,
    max_event: usize,
}

/// A byte order mark, which readers skip at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(DEFAULT_MAX_EVENT)
    }
}

impl Splitter {
    /// A splitter refusing events over `max_event` bytes.
    pub fn new(max_event: usize) -> Splitter {
        Splitter {
            buffer: BytesMut::new(),
            scanned: 0,
            line_start: 0,
            has_data: false,
            after_cr: false,
            blank_prefix: 0,
            started: false,
            max_event,
        }
    }

    /// Adds a chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole block, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`EventTooLarge`] when the block being read is over the limit (the splitter is then
    /// of no further use).
    pub fn next_block(&mut self) -> Result<Option<Block>, EventTooLarge> {
        if !self.started {
            let seen = self.buffer.len().min(BOM.len());
            if self.buffer[..seen] == BOM[..seen] {
                if seen < BOM.len() {
                    return Ok(None);
                }
                (self.scanned, self.line_start, self.blank_prefix) = (seen, seen, seen);
            }
            self.started = true;
        }
        while self.scanned < self.buffer.len() {
            let at = self.scanned;
            let byte = self.buffer[at];
            self.scanned += 1;
            if self.scanned > self.max_event {
                return Err(EventTooLarge {
                    limit: self.max_event,
                });
            }
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                // The LF of a CRLF: the line ended at the CR.
                if at == self.blank_prefix {
                    self.blank_prefix += 1;
                }
                self.line_start = self.scanned;
                continue;
            }
            if byte != b'\n' && byte != b'\r' {
                continue;
            }
            self.after_cr = byte == b'\r';
            let blank = at == self.line_start;
            if !blank && field_is_data(&self.buffer[self.line_start..at]) {
                self.has_data = true;
            }
            self.line_start = self.scanned;
            if blank {
                let dispatches = std::mem::take(&mut self.has_data);
                return Ok(Some(self.cut(dispatches)));
            }
        }
        Ok(None)
    }

    /// What is left unread at the end of the stream (an event without its blank line, which
    /// dispatches nothing), if anything but line ends and a byte order mark.
    pub fn finish(self) -> Option<Bytes> {
        (self.buffer.len() > self.blank_prefix).then(|| self.buffer.freeze())
    }

    fn cut(&mut self, dispatches: bool) -> Block {
        let raw = self.buffer.split_to(self.scanned).freeze();
        self.scanned = 0;
        self.line_start = 0;
        self.blank_prefix = 0;
        Block { raw, dispatches }
    }
}

/// The lines of `text`, split at CRLF, LF or CR.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split("\r\n").flat_map(|line| line.split(['\r', '\n']))
}

/// Whether a line is a `data` field: `data` alone, or followed by `:`.
fn field_is_data(line: &[u8]) -> bool {
    line.strip_prefix(b"data")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b':')
}

/// An event, read from a [`Block`] the way a browser reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `event` (empty: `message`).
    pub event: String,
    /// The `data` lines, joined by LF.
    pub data: String,
    /// `id`, when one was given.
    pub id: Option<String>,
}

impl Event {
    /// The event's type: `event`, or `message` when none was given.
    pub fn kind(&self) -> &str {
        if self.event.is_empty() {
            "message"
        } else {
            &self.event
        }
    }

    /// The event a block dispatches, `None` when it dispatches none. Invalid UTF-8 is read as
    /// U+FFFD, as a browser does.
    pub fn read(block: &[u8]) -> Option<Event> {
        let text = String::from_utf8_lossy(block);
        let mut event = Event::default();
        let mut data: Option<String> = None;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for line in lines(text) {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "event" => event.event = value.to_owned(),
                "data" => match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                "id" if !value.contains('\0') => event.id = Some(value.to_owned()),
                _ => {}
            }
        }
        event.data = data?;
        Some(event)
    }

    /// The event as it goes on the wire: `event: <kind>`, one `data:` line per line of `data`
    /// (split at CRLF, LF or CR, as a reader splits them), and the blank line. `None` when
    /// `kind` holds a line end.
    pub fn encode(kind: &str, data: &str) -> Option<Bytes> {
        if kind.contains(['\r', '\n']) {
            return None;
        }
        let mut out = String::with_capacity(kind.len() + data.len() + 16);
        out.push_str("event: ");
        out.push_str(kind);
        out.push('\n');
        for line in lines(data) {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block of `stream` fed in chunks of `size`, then what is left.
    fn split(stream: &[u8], size: usize) -> (Vec<Block>, Option<Bytes>) {
        let mut splitter = Splitter::new(1024);
        let mut blocks = Vec::new();
        for chunk in stream.chunks(size) {
            splitter.push(chunk);
            while let Some(block) = splitter.next_block().unwrap() {
                blocks.push(block);
            }
        }
        (blocks, splitter.finish())
    }

    #[test]
    fn events_are_cut_whole_whatever_the_chunks_and_line_ends() {
        let stream = b"event: token\ndata: a\n\n: keep-alive\n\ndata: b\r\ndata: c\r\n\r\nid: 7\rdata\r\rdata: tail";
        for size in 1..=stream.len() {
            let (blocks, rest) = split(stream, size);
            let raw: Vec<&[u8]> = blocks.iter().map(|b| b.raw.as_ref()).collect();
            let dispatches: Vec<bool> = blocks.iter().map(|b| b.dispatches).collect();
            assert_eq!(dispatches, [true, false, true, true], "chunks of {size}");
            assert_eq!(raw[0], b"event: token\ndata: a\n\n");
            assert_eq!(raw[1], b": keep-alive\n\n");
            assert_eq!(raw[2], b"data: b\r\ndata: c\r\n\r");
            assert_eq!(
                raw[3], b"\nid: 7\rdata\r\r",
                "a CRLF's LF opens the next block"
            );
            assert_eq!(rest.as_deref(), Some(&b"data: tail"[..]));
            let whole: Vec<u8> = raw
                .concat()
                .into_iter()
                .chain(b"data: tail".iter().copied())
                .collect();
            assert_eq!(whole, stream, "nothing added or lost");
        }
    }

    #[test]
    fn events_read_as_a_browser_reads_them() {
        let (blocks, _) = split(
            b"event: token\ndata: a\ndata:b\nid: 7\n\n: c\n\ndata\r\n\r\n",
            5,
        );
        let events: Vec<Option<Event>> = blocks.iter().map(|b| Event::read(&b.raw)).collect();
        assert_eq!(
            events,
            [
                Some(Event {
                    event: "token".into(),
                    data: "a\nb".into(),
                    id: Some("7".into()),
                }),
                None,
                Some(Event::default()),
            ]
        );
        assert_eq!(events[2].as_ref().unwrap().kind(), "message");
    }

    #[test]
    fn a_byte_order_mark_and_a_last_crlf_are_not_content() {
        let stream = b"\xEF\xBB\xBFdata: a\r\n\r\n";
        for size in 1..=stream.len() {
            let (blocks, rest) = split(stream, size);
            assert_eq!(blocks.len(), 1, "chunks of {size}");
            assert!(blocks[0].dispatches);
            assert_eq!(Event::read(&blocks[0].raw).unwrap().data, "a");
            assert_eq!(rest, None, "the last LF is the CRLF's");
        }
        let (blocks, rest) = split(b"\xEF\xBB\xBF", 1);
        assert_eq!((blocks.len(), rest), (0, None), "a byte order mark alone");
        let (_, rest) = split(b"\xEF\xBB", 1);
        assert_eq!(
            rest.as_deref(),
            Some(&b"\xEF\xBB"[..]),
            "not a byte order mark"
        );
        let (_, rest) = split(b"data: a\n\ndata: b\n", 4);
        assert_eq!(
            rest.as_deref(),
            Some(&b"data: b\n"[..]),
            "an event cut short"
        );
    }

    #[test]
    fn encoding_splits_data_at_every_line_end_and_refuses_a_kind_with_one() {
        let raw = Event::encode("message", "a\rb\r\nc").unwrap();
        assert_eq!(raw, "event: message\ndata: a\ndata: b\ndata: c\n\n");
        assert_eq!(Event::read(&raw).unwrap().data, "a\nb\nc");
        assert_eq!(Event::encode("mes\nsage", "x"), None);
        assert_eq!(Event::encode("mes\rsage", "x"), None);
    }

    #[test]
    fn an_encoded_event_reads_back() {
        let raw = Event::encode("payment-need-voucher", "{\"a\":1}\nsecond").unwrap();
        assert_eq!(
            raw,
            "event: payment-need-voucher\ndata: {\"a\":1}\ndata: second\n\n"
        );
        let (blocks, rest) = split(&raw, 3);
        assert_eq!((blocks.len(), rest), (1, None));
        let event = Event::read(&blocks[0].raw).unwrap();
        assert_eq!(
            (event.kind(), event.data.as_str()),
            ("payment-need-voucher", "{\"a\":1}\nsecond")
        );
    }

    #[test]
    fn an_event_over_the_limit_is_refused() {
        let mut splitter = Splitter::new(16);
        splitter.push(b"data: 0123456789abcdef");
        assert_eq!(splitter.next_block(), Err(EventTooLarge { limit: 16 }));
        let mut splitter = Splitter::new(16);
        splitter.push(b"data: 0123456\n\n");
        assert!(
            splitter.next_block().unwrap().is_some(),
            "at the limit: read"
        );
    }

    #[test]
    fn only_data_fields_dispatch() {
        for (line, dispatches) in [
            (&b"data: x"[..], true),
            (b"data", true),
            (b"data:", true),
            (b"database: x", false),
            (b"event: data", false),
            (b" data: x", false),
        ] {
            let mut stream = line.to_vec();
            stream.extend_from_slice(b"\n\n");
            let (blocks, _) = split(&stream, 64);
            assert_eq!(
                blocks[0].dispatches,
                dispatches,
                "{}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(Event::read(&blocks[0].raw).is_some(), dispatches);
        }
    }
}
