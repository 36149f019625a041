//! A request body that can be sent again: what was sent of it is kept (up to a limit) until
//! the answer says whether it must be, so that a call answered "payment required" (before its
//! server read a message) goes out again, paid, with every message, and a client stream is
//! not lost to the payment.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

/// The body of one call: sends of it ([`Replay::send`]) read the same frames.
pub(crate) struct Replay<B> {
    shared: Arc<Mutex<Source<B>>>,
}

struct Source<B> {
    body: B,
    /// The frames read from `body` and not dropped: frame `dropped + i` is `kept[i]`.
    kept: VecDeque<Kept>,
    dropped: usize,
    kept_bytes: usize,
    limit: usize,
    /// Whether what was read is still all kept (the body can be sent again).
    whole: bool,
    /// The send reading now (earlier ones read an error), and the frame it reads next.
    current: u64,
    position: usize,
    /// The task of the current send, when it waits for the body: woken when a newer send
    /// replaces it.
    waiting: Option<Waker>,
    ended: bool,
}

/// What a send reads once a newer send of its call has replaced it: an error, so that its
/// stream is reset, never ended as if it were whole.
#[derive(Debug, thiserror::Error)]
#[error("the call was sent again")]
pub(crate) struct Replaced;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Kept {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Kept::Data(data) => Frame::data(data.clone()),
            Kept::Trailers(trailers) => Frame::trailers(trailers.clone()),
        }
    }
}

impl<B> Source<B> {
    /// Keeps nothing more, and drops what the current send has read.
    fn stop_keeping(&mut self) {
        self.whole = false;
        let read = self.position - self.dropped;
        self.kept.drain(..read);
        self.dropped = self.position;
    }
}

impl<B> Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// `body`, keeping up to `limit` bytes of it for sending again, and its first send.
    pub(crate) fn start(body: B, limit: usize) -> (Replay<B>, Sending<B>) {
        let replay = Replay {
            shared: Arc::new(Mutex::new(Source {
                body,
                kept: VecDeque::new(),
                dropped: 0,
                kept_bytes: 0,
                limit,
                whole: true,
                current: 1,
                position: 0,
                waiting: None,
                ended: false,
            })),
        };
        let first = Sending {
            shared: replay.shared.clone(),
            send: 1,
        };
        (replay, first)
    }

    /// Stops the current send: it reads an error from now on (its task is woken), and reads
    /// nothing more of the body.
    pub(crate) fn stop(&self) {
        let mut source = self.lock();
        source.current += 1;
        source.position = 0;
        if let Some(waiting) = source.waiting.take() {
            waiting.wake();
        }
    }

    /// A send of the body from its start; the send before it (if any) is stopped. `None`
    /// when what was read is no longer all kept.
    pub(crate) fn send(&self) -> Option<Sending<B>> {
        self.stop();
        let source = self.lock();
        if !source.whole {
            return None;
        }
        Some(Sending {
            shared: self.shared.clone(),
            send: source.current,
        })
    }

    /// Whether the body can still be sent again.
    pub(crate) fn whole(&self) -> bool {
        self.lock().whole
    }

    /// Keeps nothing more: the body will not be sent again (the current send still reads
    /// all of it).
    pub(crate) fn forget(&self) {
        self.lock().stop_keeping();
    }

    fn lock(&self) -> MutexGuard<'_, Source<B>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One send of a [`Replay`]'s body.
pub(crate) struct Sending<B> {
    shared: Arc<Mutex<Source<B>>>,
    send: u64,
}

impl<B> Body for Sending<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut source = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let source = &mut *source;
        if source.current != self.send {
            return Poll::Ready(Some(Err(Box::new(Replaced))));
        }
        let index = source.position - source.dropped;
        if let Some(kept) = source.kept.get(index) {
            let frame = kept.frame();
            source.position += 1;
            if !source.whole {
                source.kept.pop_front();
                source.dropped += 1;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if source.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut source.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, Bytes::len);
                if source.whole && source.kept_bytes + size > source.limit {
                    source.stop_keeping();
                }
                source.position += 1;
                if source.whole {
                    source.kept_bytes += size;
                    source.kept.push_back(match frame.trailers_ref() {
                        Some(trailers) => Kept::Trailers(trailers.clone()),
                        None => Kept::Data(frame.data_ref().cloned().unwrap_or_default()),
                    });
                } else {
                    source.dropped += 1;
                }
            }
            Poll::Ready(Some(Err(_))) => source.stop_keeping(),
            Poll::Ready(None) => source.ended = true,
            Poll::Pending => source.waiting = Some(cx.waker().clone()),
        }
        polled.map(|frame| frame.map(|frame| frame.map_err(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    /// A body of `chunks`, one frame each.
    struct Chunks(VecDeque<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|chunk| Ok(Frame::data(Bytes::from(chunk)))),
            )
        }
    }

    fn chunks(chunks: &[&'static str]) -> Chunks {
        Chunks(chunks.iter().copied().collect())
    }

    async fn read<B: Body<Data = Bytes> + Unpin>(body: B) -> Vec<u8>
    where
        B::Error: std::fmt::Debug,
    {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_second_send_reads_the_whole_body_again() {
        let (replay, first) = Replay::start(Full::new(Bytes::from_static(b"one message")), 1024);
        assert_eq!(read(first).await, b"one message");
        assert_eq!(read(replay.send().unwrap()).await, b"one message");
        assert!(replay.whole());
    }

    #[tokio::test]
    async fn a_send_cut_short_is_replayed_then_continued() {
        let (replay, mut first) = Replay::start(chunks(&["a", "b", "c"]), 1024);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        let second = replay.send().unwrap();
        // The first send is over: it reads an error from now on.
        let replaced = first.frame().await.unwrap().unwrap_err();
        assert!(replaced.is::<Replaced>());
        assert_eq!(read(second).await, b"abc");
    }

    #[tokio::test]
    async fn past_the_limit_nothing_is_sent_again() {
        let (replay, first) = Replay::start(chunks(&["abc", "def", "g"]), 4);
        assert_eq!(read(first).await, b"abcdefg", "the first send is whole");
        assert!(!replay.whole());
        assert!(replay.send().is_none());
    }

    /// A body whose first frame never comes.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_send_waiting_for_the_body_is_woken_when_replaced() {
        let (replay, mut first) = Replay::start(Silent, 1024);
        let waiting = tokio::spawn(async move { first.frame().await.map(|frame| frame.is_err()) });
        tokio::task::yield_now().await;
        let _second = replay.send().unwrap();
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert_eq!(
            woken.expect("woken").unwrap(),
            Some(true),
            "an error, not an end"
        );
    }

    #[tokio::test]
    async fn a_forgotten_body_is_still_read_whole_by_its_send() {
        let (replay, mut first) = Replay::start(chunks(&["a", "b", "c"]), 1024);
        first.frame().await.unwrap().unwrap();
        first.frame().await.unwrap().unwrap();
        // Sent again: the second send has read one kept frame when the answer comes.
        let mut second = replay.send().unwrap();
        let frame = second.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        replay.forget();
        assert_eq!(
            read(second).await,
            b"bc",
            "the kept frame it had not read, then the rest"
        );
        assert!(replay.send().is_none());
        assert!(
            replay.shared.lock().unwrap().kept.is_empty(),
            "nothing kept"
        );
    }
}
