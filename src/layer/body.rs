//! [`PaymentBody`]: the body of every response of [`PaymentService`](crate::PaymentService).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::meter::MeteredBody;

pin_project! {
    /// The body of a response of [`PaymentService`](crate::PaymentService): the inner
    /// service's own body, passed through untouched (free requests, and paid answers not
    /// recorded), or one the layer made (its own answers, recorded answers replayed, with their
    /// trailers when they had some, as a gRPC call's status).
    pub struct PaymentBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Made { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Recorded { #[pin] body: B, recording: Option<Box<dyn Recording>> },
        Metered { body: Box<MeteredBody<Pin<Box<B>>>> },
    }
}

/// Sees the frames of an inner body as they pass, to record it once it ended whole.
pub(crate) trait Recording: Send + 'static {
    /// A data frame passed.
    fn data(&mut self, data: &Bytes);
    /// The trailers passed.
    fn trailers(&mut self, trailers: &HeaderMap);
    /// The body ended whole. (A body dropped before its end, or failing, never ends.)
    fn end(self: Box<Self>);
}

impl<B> PaymentBody<B> {
    /// The inner service's body, untouched.
    pub(crate) fn inner(body: B) -> Self {
        PaymentBody {
            kind: Kind::Inner { body },
        }
    }

    /// The inner service's body, passed on untouched while `recording` sees it.
    pub(crate) fn recorded(body: B, recording: Box<dyn Recording>) -> Self {
        PaymentBody {
            kind: Kind::Recorded {
                body,
                recording: Some(recording),
            },
        }
    }

    /// A metered answer: the inner body drawing on credit as its units go out.
    pub(crate) fn metered(body: MeteredBody<Pin<Box<B>>>) -> Self {
        PaymentBody {
            kind: Kind::Metered {
                body: Box::new(body),
            },
        }
    }

    /// Stops a metered answer where it is: its end (the final receipt) follows. Other bodies
    /// are left as they are.
    #[cfg(feature = "websocket")]
    pub(crate) fn stop(self: Pin<&mut Self>) {
        if let KindProj::Metered { body } = self.project().kind.project() {
            body.stop();
        }
    }

    /// The units a metered answer has sent (0 for other bodies).
    #[cfg(feature = "websocket")]
    pub(crate) fn units(&self) -> u64 {
        match &self.kind {
            Kind::Metered { body } => body.units(),
            _ => 0,
        }
    }

    /// The credit a metered answer took and has not drawn yet (0 for other bodies).
    #[cfg(feature = "websocket")]
    pub(crate) fn held(&self) -> i128 {
        match &self.kind {
            Kind::Metered { body } => body.held(),
            _ => 0,
        }
    }

    /// `data`, then `trailers` when there are some.
    pub(crate) fn made(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        PaymentBody {
            kind: Kind::Made {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }
}

impl<B> From<Bytes> for PaymentBody<B> {
    fn from(data: Bytes) -> Self {
        PaymentBody::made(data, None)
    }
}

impl<B> Default for PaymentBody<B> {
    fn default() -> Self {
        PaymentBody::made(Bytes::new(), None)
    }
}

impl<B: Body<Data = Bytes>> Body for PaymentBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Made { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers
                    .take()
                    .map(|trailers| Ok(Frame::trailers(trailers))),
            }),
            KindProj::Recorded { body, recording } => {
                let polled = body.poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(recording) = recording.as_mut() {
                            if let Some(data) = frame.data_ref() {
                                recording.data(data);
                            } else if let Some(trailers) = frame.trailers_ref() {
                                recording.trailers(trailers);
                            }
                        }
                    }
                    // The end, or a failure: a failed body is not recorded.
                    Poll::Ready(None) => {
                        if let Some(recording) = recording.take() {
                            recording.end();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => drop(recording.take()),
                    Poll::Pending => {}
                }
                polled
            }
            KindProj::Metered { body } => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Made { data, trailers } => data.is_none() && trailers.is_none(),
            // Polled to its `None`, so that the recording sees the end.
            Kind::Recorded { recording, body } => recording.is_none() && body.is_end_stream(),
            // Ends with its receipt, whatever the inner body says.
            Kind::Metered { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } | Kind::Recorded { body, .. } => body.size_hint(),
            Kind::Made { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Metered { .. } => SizeHint::default(),
        }
    }
}

impl<B> std::fmt::Debug for PaymentBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("PaymentBody::Inner"),
            Kind::Recorded { .. } => f.write_str("PaymentBody::Recorded"),
            Kind::Metered { .. } => f.write_str("PaymentBody::Metered"),
            Kind::Made { data, trailers } => f
                .debug_struct("PaymentBody::Made")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .field("trailers", &trailers.is_some())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn made_bodies_send_their_data_then_their_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body: PaymentBody<http_body_util::Empty<Bytes>> =
            PaymentBody::made(Bytes::from_static(b"hello"), Some(trailers.clone()));
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "hello");
        let empty: PaymentBody<http_body_util::Empty<Bytes>> = PaymentBody::default();
        assert!(empty.is_end_stream());
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
    }
}
