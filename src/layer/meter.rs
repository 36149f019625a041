//! Metered responses: an SSE body priced per event, drawing on credit paid ahead (a channel's)
//! as events go out. An event is held until a unit is drawn for it; when the credit runs out,
//! the body sends the in-band request for a voucher (`payment-need-voucher`) and waits for
//! credit (a voucher paid ahead, on this node or another), up to a deadline; then it ends
//! cleanly with a final `payment-receipt`. Nothing is sent beyond the credit; what was not
//! drawn is given back when the body ends or is dropped (the client hung up).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use crate::BoxFuture;
use crate::mpp::stream::messages::{NEED_VOUCHER, RECEIPT};
use crate::mpp::stream::sse::{Event, Splitter};
use crate::price::Unit;
use crate::scheme::CreditSource;

/// Whether a request on a metered route only pays ahead: a `POST` or `HEAD` without a body
/// (no `content-type`, no length or a zero one), as a client sends a voucher during an SSE
/// stream.
pub(crate) fn pays_ahead(request: &http::request::Parts) -> bool {
    let method = request.method == http::Method::POST || request.method == http::Method::HEAD;
    let headers = &request.headers;
    let empty = headers
        .get(http::header::CONTENT_LENGTH)
        .is_none_or(|length| length.as_bytes() == b"0")
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && !headers.contains_key(http::header::CONTENT_TYPE);
    method && empty
}

/// The answer to a request that paid ahead: `204 No Content` with the receipt.
pub(crate) fn paid_ahead<B: Default>(receipt: &crate::scheme::Receipt) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    for (name, value) in &receipt.headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("private"),
    );
    response
}

/// The credit a metered answer draws on, in its extensions, for a transport that carries its
/// payment messages itself (a WebSocket's receipts).
#[cfg(feature = "websocket")]
#[derive(Clone)]
pub(crate) struct StreamCredit(pub(crate) Arc<dyn CreditSource>);

/// What a metered body is doing.
enum State {
    /// Passing the inner body's events on, drawing a unit for each.
    Streaming,
    /// Waiting for credit to send the held event.
    Waiting(Waiting),
    /// Giving back what was not drawn, then writing the final receipt.
    Closing(BoxFuture<'static, String>),
    /// Done: the queue is all that is left to send.
    Done,
}

/// What a metered answer charges: `price` a `unit`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meter {
    pub(crate) unit: Unit,
    pub(crate) price: i128,
}

/// The largest count an event's `units` field may give (larger ones are refused: the stream
/// ends).
const MAX_UNITS: u64 = 1 << 40;

/// The units an event (a dispatching block) holds, by `unit`; `None` for a `units` field
/// that is not a count, or for more than one `units` field.
fn units_of(unit: Unit, block: &[u8]) -> Option<u64> {
    match unit {
        Unit::Event => Some(1),
        // The bytes of the data lines' values, as sent (a line end joining two is not one).
        Unit::Byte => Some(
            block_lines(block)
                .filter_map(|line| {
                    let value = line.strip_prefix(b"data")?;
                    match value.first() {
                        None => Some(0),
                        Some(b':') => {
                            let value = &value[1..];
                            Some(value.strip_prefix(b" ").unwrap_or(value).len() as u64)
                        }
                        Some(_) => None,
                    }
                })
                .sum(),
        ),
        Unit::Counted(_) => {
            let mut units = None;
            for line in block_lines(block) {
                let Some(value) = line.strip_prefix(b"units:") else {
                    continue;
                };
                let value = value.strip_prefix(b" ").unwrap_or(value);
                let digits =
                    !value.is_empty() && value.len() <= 13 && value.iter().all(u8::is_ascii_digit);
                let count: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
                if !digits || count > MAX_UNITS || units.is_some() {
                    return None;
                }
                units = Some(count);
            }
            Some(units.unwrap_or(1))
        }
    }
}

/// The lines of a block, however they end (CR, LF or CRLF).
fn block_lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block.split(|byte| *byte == b'\n' || *byte == b'\r')
}

/// The bytes of an event of `data` holding `units` units of a
/// [`Unit::Counted`](crate::Unit::Counted) price (the `units` field, then a `data` line for
/// each line of `data`, however it ends), for a handler to stream.
///
/// ```
/// let event = tower_paywall::layer::counted_event("Hello, world", 3);
/// assert_eq!(&event[..], b"units: 3\ndata: Hello, world\n\n");
/// ```
pub fn counted_event(data: &str, units: u64) -> Bytes {
    let mut event = format!("units: {units}\n");
    for line in crate::mpp::stream::sse::lines(data) {
        event.push_str("data: ");
        event.push_str(line);
        event.push('\n');
    }
    event.push('\n');
    Bytes::from(event)
}

/// A wait for credit, in a task of its own: it hands over what it takes (`None`: the deadline
/// passed), or gives it back once the body stopped listening.
struct Waiting {
    answer: tokio::sync::oneshot::Receiver<Option<i128>>,
    task: tokio::task::JoinHandle<()>,
}

/// An SSE body metered per event (see the [module docs](self)).
pub(crate) struct MeteredBody<B> {
    inner: B,
    source: Arc<dyn CreditSource>,
    splitter: Splitter,
    /// What a unit is, and its price.
    unit: Unit,
    price: i128,
    /// Credit taken and not drawn.
    credit: i128,
    /// Units sent.
    units: u64,
    /// A dispatching event waiting for its units to be drawn: the event, its units, their price.
    held: Option<(Bytes, u64, i128)>,
    /// The request for a voucher, once the wait has written it.
    need: Option<tokio::sync::oneshot::Receiver<String>>,
    /// Frames ready to send, in order.
    out: VecDeque<Frame<Bytes>>,
    trailers: Option<HeaderMap>,
    inner_done: bool,
    state: State,
    voucher_wait: Duration,
}

impl<B> MeteredBody<B> {
    /// `inner` (an event stream) metered by `meter`, drawing on `source`, waiting
    /// `voucher_wait` at most for a voucher.
    pub(crate) fn new(
        inner: B,
        source: Arc<dyn CreditSource>,
        meter: Meter,
        voucher_wait: Duration,
    ) -> Self {
        MeteredBody {
            inner,
            source,
            splitter: Splitter::default(),
            unit: meter.unit,
            price: meter.price.max(1),
            credit: 0,
            units: 0,
            held: None,
            need: None,
            out: VecDeque::new(),
            trailers: None,
            inner_done: false,
            state: State::Streaming,
            voucher_wait,
        }
    }

    /// Waits for credit: what was paid ahead already; or else, after the request for a
    /// voucher, what comes before the deadline. The wait runs in a task of its own: credit it
    /// takes for a body that stopped waiting goes back, never lost. `None` outside a runtime.
    fn wait(&mut self, cost: i128) -> Option<Waiting> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (source, wait) = (self.source.clone(), self.voucher_wait);
        let owed = cost - self.credit;
        let (need, needed) = tokio::sync::oneshot::channel();
        self.need = Some(needed);
        let (mut result, answer) = tokio::sync::oneshot::channel::<Option<i128>>();
        let waiting = async move {
            let now = tokio::time::Instant::now();
            // A wait too long to add means no deadline worth keeping: a day.
            let deadline = now
                .checked_add(wait)
                .unwrap_or(now + Duration::from_secs(86_400));
            let mut need = Some(need);
            loop {
                // Never cut short: what it takes is handed over or given back.
                let taken = source.take().await;
                if taken > 0 {
                    if let Err(Some(taken)) = result.send(Some(taken)) {
                        source.give_back(taken).await;
                    }
                    return;
                }
                if let Some(need) = need.take() {
                    let _ = need.send(source.need_voucher(owed).await);
                }
                tokio::select! {
                    // The body is gone: nothing more to wait for.
                    () = result.closed() => return,
                    changed = tokio::time::timeout_at(deadline, source.changed()) => {
                        if changed.is_err() {
                            let _ = result.send(None);
                            return;
                        }
                    }
                }
            }
        };
        let task = runtime.spawn(waiting);
        Some(Waiting { answer, task })
    }

    /// Stops waiting, if it was: what the wait handed over meanwhile joins the credit (the
    /// wait gives back anything it takes from now on). The wait's task, to let it end first.
    fn stop_waiting(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if !matches!(self.state, State::Waiting(_)) {
            return None;
        }
        let State::Waiting(mut waiting) = std::mem::replace(&mut self.state, State::Done) else {
            return None;
        };
        waiting.answer.close();
        if let Ok(Some(taken)) = waiting.answer.try_recv() {
            self.credit += taken;
        }
        Some(waiting.task)
    }

    /// The units this body has sent.
    #[cfg(feature = "websocket")]
    pub(crate) fn units(&self) -> u64 {
        self.units
    }

    /// The credit this body took and has not drawn yet.
    #[cfg(feature = "websocket")]
    pub(crate) fn held(&self) -> i128 {
        self.credit
    }

    /// Stops the stream where it is (the client asked to): what follows is its end, the final
    /// receipt.
    #[cfg(feature = "websocket")]
    pub(crate) fn stop(&mut self) {
        if matches!(self.state, State::Streaming | State::Waiting(_)) {
            self.need = None;
            self.close();
        }
    }

    /// Ends the stream: the credit not drawn goes back, then the final receipt (in a task of
    /// its own, so that a body dropped meanwhile still gives it back).
    fn close(&mut self) {
        // A wait cut short: what it handed over is given back with the rest, and it ends
        // (giving back anything it took after) before the receipt is read.
        let waiting = self.stop_waiting();
        self.need = None;
        let (source, credit, units) = (self.source.clone(), self.credit, self.units);
        self.credit = 0;
        self.held = None;
        let ending = async move {
            if let Some(waiting) = waiting {
                let _ = waiting.await;
            }
            if credit > 0 {
                source.give_back(credit).await;
            }
            source.receipt(units).await
        };
        self.state = State::Closing(match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(ending);
                Box::pin(async move { task.await.unwrap_or_default() })
            }
            Err(_) => Box::pin(ending),
        });
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Closing(receipt) => {
                    let data = std::task::ready!(receipt.as_mut().poll(cx));
                    if let Some(event) = Event::encode(RECEIPT, &data) {
                        this.out.push_back(Frame::data(event));
                    }
                    if let Some(trailers) = this.trailers.take() {
                        this.out.push_back(Frame::trailers(trailers));
                    }
                    this.state = State::Done;
                    continue;
                }
                State::Waiting(waiting) => {
                    if let Some(need) = &mut this.need
                        && let Poll::Ready(data) = Pin::new(need).poll(cx)
                    {
                        this.need = None;
                        if let Some(event) = data.ok().and_then(|d| Event::encode(NEED_VOUCHER, &d))
                        {
                            this.out.push_back(Frame::data(event));
                            continue;
                        }
                    }
                    match std::task::ready!(Pin::new(&mut waiting.answer).poll(cx))
                        .ok()
                        .flatten()
                    {
                        Some(taken) => {
                            this.credit += taken;
                            this.need = None;
                            this.state = State::Streaming;
                        }
                        // No voucher in time: the stream ends cleanly.
                        None => this.close(),
                    }
                    continue;
                }
                State::Streaming => {}
            }
            if let Some((event, units, cost)) = this.held.take() {
                if this.credit >= cost {
                    this.credit -= cost;
                    this.units += units;
                    this.out.push_back(Frame::data(event));
                } else {
                    this.held = Some((event, units, cost));
                    match this.wait(cost) {
                        Some(waiting) => this.state = State::Waiting(waiting),
                        None => this.close(),
                    }
                }
                continue;
            }
            match this.splitter.next_block() {
                Ok(Some(block)) if block.dispatches => match units_of(this.unit, &block.raw) {
                    // A free event (`units: 0`, or no data bytes) goes out as it is.
                    Some(0) => this.out.push_back(Frame::data(block.raw)),
                    Some(units) => {
                        let cost = i128::from(units).saturating_mul(this.price);
                        this.held = Some((block.raw, units, cost));
                    }
                    // An event whose count is not one: the stream ends before it.
                    None => this.close(),
                },
                Ok(Some(block)) => this.out.push_back(Frame::data(block.raw)),
                // An event larger than any the stream sends (or an unfinished one at its
                // end, which dispatches nothing): the stream ends.
                Err(_) => this.close(),
                Ok(None) if this.inner_done => this.close(),
                Ok(None) => match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => this.splitter.push(&data),
                        Err(frame) => this.trailers = frame.into_trailers().ok(),
                    },
                    Some(Err(error)) => {
                        // The credit not drawn goes back when the body is dropped.
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(error)));
                    }
                    None => this.inner_done = true,
                },
            }
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    /// A body dropped before its end (the client hung up) gives back what it did not draw.
    fn drop(&mut self) {
        // What a wait handed over and was not read yet goes back too.
        let _ = self.stop_waiting();
        let credit = std::mem::take(&mut self.credit);
        if credit > 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(self.source.give_back(credit));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::*;
    use crate::mpp::channel::credit::ChannelCredit;
    use crate::mpp::stream::{NeedVoucher, StreamReceipt, messages};
    use crate::store::{ChannelId, ChannelPhase, ChannelState, ChannelStore, MemoryChannelStore};

    const CHANNEL: ChannelId = ChannelId([5; 32]);
    const PRICE: i128 = 100;
    const EVENT: Meter = Meter {
        unit: Unit::Event,
        price: PRICE,
    };

    /// A body of `chunks`, one frame each.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    /// `count` events `data: n`, with a keep-alive after the first, cut into 7-byte chunks.
    fn events(count: usize) -> Chunks {
        let mut stream = String::new();
        for n in 0..count {
            stream.push_str(&format!("data: {n}\n\n"));
            if n == 0 {
                stream.push_str(": keep-alive\n\n");
            }
        }
        let bytes = Bytes::from(stream);
        Chunks(
            (0..bytes.len())
                .step_by(7)
                .map(|at| bytes.slice(at..(at + 7).min(bytes.len())))
                .collect(),
        )
    }

    struct Fixture {
        store: Arc<dyn ChannelStore>,
        paid: tokio::sync::watch::Sender<u64>,
        /// The channel's deposit as the ledger was last read.
        deposit: Arc<std::sync::atomic::AtomicU64>,
    }

    /// A channel with `cumulative` accepted, `unspent` of it paid ahead.
    async fn fixture(cumulative: i128, unspent: i128) -> (Fixture, Arc<dyn CreditSource>) {
        let store: Arc<dyn ChannelStore> = Arc::new(MemoryChannelStore::new());
        let state = ChannelState {
            cumulative,
            signature: Some([1; 64]),
            unspent,
            phase: ChannelPhase::Open,
        };
        store.compare_and_set(CHANNEL, None, state).await.unwrap();
        let paid = tokio::sync::watch::channel(0).0;
        let deposit = Arc::new(std::sync::atomic::AtomicU64::new(10_000));
        let read = deposit.clone();
        let source = ChannelCredit {
            store: store.clone(),
            channel: CHANNEL,
            paid: tokio::sync::Mutex::new(paid.subscribe()),
            poll: Duration::from_secs(1),
            deposit: Box::new(move || i128::from(read.load(std::sync::atomic::Ordering::Relaxed))),
            intent: "channel",
            challenge_id: "challenge".into(),
        };
        (
            Fixture {
                store,
                paid,
                deposit,
            },
            Arc::new(source),
        )
    }

    impl Fixture {
        /// A voucher of `amount` paid ahead, as a management request stores it.
        async fn pay_ahead(&self, amount: i128) {
            let mut state = self.store.load(CHANNEL).await.unwrap().unwrap();
            let current = state;
            state.unspent += amount - state.cumulative;
            state.cumulative = amount;
            assert!(
                self.store
                    .compare_and_set(CHANNEL, Some(current), state)
                    .await
                    .unwrap()
            );
            self.paid.send_modify(|count| *count += 1);
        }

        async fn state(&self) -> ChannelState {
            self.store.load(CHANNEL).await.unwrap().unwrap()
        }
    }

    /// What a reader sees: each event's kind and data, in order.
    async fn next_event<B: Body<Data = Bytes> + Unpin>(
        body: &mut B,
        text: &mut String,
    ) -> Option<Event>
    where
        B::Error: std::fmt::Debug,
    {
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if let Some(event) = Event::read(block.as_bytes()) {
                    return Some(event);
                }
                continue;
            }
            let frame = body.frame().await?.unwrap();
            text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
    }

    #[tokio::test]
    async fn events_go_out_as_credit_allows_and_a_voucher_resumes_the_stream() {
        // 1 000 accepted, 300 of it paid ahead: three events.
        let (fixture, source) = fixture(1_000, 300).await;
        let mut body = MeteredBody::new(events(6), source, EVENT, Duration::from_secs(60));
        let mut text = String::new();
        for n in 0..3 {
            let event = next_event(&mut body, &mut text).await.unwrap();
            assert_eq!(
                (event.kind(), event.data.as_str()),
                ("message", &*n.to_string())
            );
        }
        let need = next_event(&mut body, &mut text).await.unwrap();
        assert_eq!(need.kind(), messages::NEED_VOUCHER);
        let need: NeedVoucher = messages::read_event(&need.data).unwrap();
        assert_eq!(
            (
                need.required_cumulative,
                need.accepted_cumulative,
                need.deposit
            ),
            (1_100, 1_000, 10_000)
        );
        assert_eq!(need.channel_id, CHANNEL.address().to_string());
        assert_eq!(
            fixture.state().await.unspent,
            0,
            "the credit is the stream's"
        );

        // A voucher three events ahead (one at a time would do too).
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = next_event(&mut body, &mut text).await {
                seen.push((event.kind().to_owned(), event.data));
            }
            seen
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        fixture.pay_ahead(1_300).await;
        let seen = reader.await.unwrap();
        let kinds: Vec<&str> = seen.iter().map(|(kind, _)| kind.as_str()).collect();
        assert_eq!(kinds, ["message", "message", "message", messages::RECEIPT]);
        assert_eq!(seen[2].1, "5");
        let receipt: StreamReceipt = messages::read_event(&seen[3].1).unwrap();
        assert_eq!(
            (receipt.accepted_cumulative, receipt.spent, receipt.units),
            (1_300, 1_300, Some(6)),
            "six events, each paid once"
        );
        assert_eq!(fixture.state().await.spent(), 1_300);
    }

    #[cfg(feature = "websocket")]
    #[tokio::test]
    async fn a_stop_while_credit_is_handed_over_keeps_that_credit_for_the_channel() {
        // 100 paid ahead: one event; then the wait for more.
        let (fixture, source) = fixture(1_000, 100).await;
        let mut body = MeteredBody::new(events(6), source, EVENT, Duration::from_secs(60));
        let mut text = String::new();
        assert_eq!(
            next_event(&mut body, &mut text).await.unwrap().kind(),
            "message"
        );
        let need = next_event(&mut body, &mut text).await.unwrap();
        assert_eq!(need.kind(), messages::NEED_VOUCHER);
        // A voucher three events ahead: the wait takes it and hands it over; the body is
        // stopped before it reads it (a close request right after the voucher).
        fixture.pay_ahead(1_300).await;
        for _ in 0..100 {
            if fixture.state().await.unspent == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        body.stop();
        let end = next_event(&mut body, &mut text).await.unwrap();
        assert_eq!(end.kind(), messages::RECEIPT);
        let receipt: StreamReceipt = messages::read_event(&end.data).unwrap();
        assert_eq!(
            (receipt.spent, receipt.units),
            (1_000, Some(1)),
            "one event sent: the voucher's credit is the channel's"
        );
        assert_eq!(fixture.state().await.unspent, 300);
    }

    #[test]
    fn an_events_units_are_its_count_its_bytes_or_one() {
        let counted = Unit::Counted("token");
        for (block, units) in [
            (&b"units: 3\ndata: a b c\n\n"[..], Some(3)),
            (b"data: x\nunits:7\r\n\r\n", Some(7)),
            (b"data: no count\n\n", Some(1)),
            (b"units: 0\ndata: free\n\n", Some(0)),
            (b"units: -1\ndata: x\n\n", None),
            (b"units: 3.5\ndata: x\n\n", None),
            (b"units: +4\ndata: x\n\n", None),
            (b"units: 99999999999999\ndata: x\n\n", None),
            (b"units:\ndata: x\n\n", None),
        ] {
            assert_eq!(
                units_of(counted, block),
                units,
                "{}",
                String::from_utf8_lossy(block)
            );
        }
        assert_eq!(units_of(Unit::Byte, b"data: abc\ndata: de\n\n"), Some(5));
        assert_eq!(
            units_of(Unit::Byte, b"data:\xff\xfe\r\ndatum: x\n\n"),
            Some(2)
        );
        // A second count, as data smuggled through a line end would bring, is refused.
        assert_eq!(
            units_of(counted, b"units: 500\ndata: a\nunits: 0\n\n"),
            None
        );
        assert_eq!(
            &counted_event("paid\runits: 0\r\ndata: x", 500)[..],
            b"units: 500\ndata: paid\ndata: units: 0\ndata: data: x\n\n",
            "a line end in the data is a data line of its own"
        );
        assert_eq!(units_of(Unit::Event, b"units: 9\ndata: x\n\n"), Some(1));
        assert_eq!(
            &counted_event("two\nlines", 2)[..],
            b"units: 2\ndata: two\ndata: lines\n\n"
        );
    }

    /// Events of `counts` tokens each (`None`: no count), one chunk each.
    fn counted(counts: &[Option<u64>]) -> Chunks {
        Chunks(
            counts
                .iter()
                .enumerate()
                .map(|(n, count)| match count {
                    Some(count) => counted_event(&n.to_string(), *count),
                    None => Bytes::from(format!("data: {n}\n\n")),
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn counted_units_are_drawn_per_event_and_free_events_pass() {
        // 600 paid ahead: six tokens' worth.
        let (fixture, source) = fixture(1_000, 600).await;
        let meter = Meter {
            unit: Unit::Counted("token"),
            price: PRICE,
        };
        let events = counted(&[Some(2), Some(0), None, Some(3), Some(4)]);
        let mut body = MeteredBody::new(events, source, meter, Duration::from_secs(60));
        let mut text = String::new();
        let mut seen = Vec::new();
        // 2 + 0 + 1 + 3 = 6 tokens go out; the 4-token event waits for 400 more.
        for _ in 0..5 {
            let event = next_event(&mut body, &mut text).await.unwrap();
            seen.push((event.kind().to_owned(), event.data));
        }
        assert_eq!(
            seen[..4]
                .iter()
                .map(|(_, data)| data.as_str())
                .collect::<Vec<_>>(),
            ["0", "1", "2", "3"]
        );
        assert_eq!(seen[4].0, messages::NEED_VOUCHER);
        let need: NeedVoucher = messages::read_event(&seen[4].1).unwrap();
        assert_eq!(
            (need.accepted_cumulative, need.required_cumulative),
            (1_000, 1_400),
            "the whole event's price"
        );
        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            while let Some(event) = next_event(&mut body, &mut text).await {
                rest.push((event.kind().to_owned(), event.data));
            }
            rest
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        fixture.pay_ahead(1_400).await;
        let rest = reader.await.unwrap();
        assert_eq!(rest[0], ("message".to_owned(), "4".to_owned()));
        let receipt: StreamReceipt = messages::read_event(&rest[1].1).unwrap();
        assert_eq!((receipt.spent, receipt.units), (1_400, Some(10)));
    }

    #[tokio::test]
    async fn an_event_whose_count_is_not_one_ends_the_stream_before_it() {
        let (fixture, source) = fixture(1_000, 600).await;
        let meter = Meter {
            unit: Unit::Counted("token"),
            price: PRICE,
        };
        let events = Chunks(VecDeque::from([
            counted_event("0", 1),
            Bytes::from_static(b"units: many\ndata: 1\n\n"),
            counted_event("2", 1),
        ]));
        let mut body = MeteredBody::new(events, source, meter, Duration::from_secs(60));
        let mut text = String::new();
        let mut seen = Vec::new();
        while let Some(event) = next_event(&mut body, &mut text).await {
            seen.push(event.kind().to_owned());
        }
        assert_eq!(seen, ["message", messages::RECEIPT]);
        assert_eq!(
            fixture.state().await.spent(),
            500,
            "one token, the rest given back"
        );
    }

    #[tokio::test]
    async fn the_request_for_a_voucher_names_the_deposit_as_last_read() {
        let (fixture, source) = fixture(1_000, 0).await;
        let need: NeedVoucher = messages::read_event(&source.need_voucher(100).await).unwrap();
        assert_eq!(need.deposit, 10_000);
        // A top-up, read from the ledger while the stream runs.
        fixture
            .deposit
            .store(25_000, std::sync::atomic::Ordering::Relaxed);
        let need: NeedVoucher = messages::read_event(&source.need_voucher(100).await).unwrap();
        assert_eq!(need.deposit, 25_000);
    }

    #[tokio::test]
    async fn without_a_voucher_the_stream_ends_cleanly_at_the_deadline() {
        let (fixture, source) = fixture(1_000, 100).await;
        let mut body = MeteredBody::new(events(3), source, EVENT, Duration::from_millis(200));
        let mut text = String::new();
        let mut seen = Vec::new();
        while let Some(event) = next_event(&mut body, &mut text).await {
            seen.push(event.kind().to_owned());
        }
        assert_eq!(seen, ["message", messages::NEED_VOUCHER, messages::RECEIPT]);
        assert_eq!(
            fixture.state().await.spent(),
            1_000,
            "charged for the one event sent"
        );
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_pays_only_for_what_it_was_sent() {
        // 500 paid ahead: five events' worth; the client reads two and goes.
        let (fixture, source) = fixture(1_000, 500).await;
        let mut body = MeteredBody::new(events(10), source, EVENT, Duration::from_secs(60));
        let mut text = String::new();
        for _ in 0..2 {
            next_event(&mut body, &mut text).await.unwrap();
        }
        drop(body);
        for _ in 0..100 {
            if fixture.state().await.unspent == 300 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let state = fixture.state().await;
        assert_eq!(
            (state.unspent, state.spent()),
            (300, 700),
            "two events spent"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_gives_its_credit_back_before_its_receipt() {
        let (fixture, source) = fixture(1_000, 1_000).await;
        let mut body = MeteredBody::new(events(4), source, EVENT, Duration::from_secs(60));
        let mut text = String::new();
        let mut last = None;
        while let Some(event) = next_event(&mut body, &mut text).await {
            last = Some(event);
        }
        let receipt: StreamReceipt = messages::read_event(&last.unwrap().data).unwrap();
        assert_eq!((receipt.spent, receipt.units), (400, Some(4)));
        assert_eq!(fixture.state().await.unspent, 600);
    }
}
