//! Metered WebSockets (feature `websocket`): a route priced per unit also answers a WebSocket
//! upgrade. The layer does the upgrade itself, and the socket carries the stream's payment in
//! band, in mppx's session frames ([`Frame`]):
//!
//! 1. The client learns the offer over HTTP (the route's `402`), then opens the socket; the
//!    upgrade carries no credential (browsers cannot set one).
//! 2. Its first payment frame is `{"mpp":"authorization","authorization":"Payment …"}`: the
//!    stream's opening voucher. The handler is called with the upgrade's request as a plain
//!    `GET` carrying that credential, through the same flow as an SSE stream; the socket
//!    answers `payment-receipt`, or `payment-error` and closes (`1008`).
//! 3. Each event of the handler's answer (an SSE body) goes out as
//!    `{"mpp":"message","data":…}`, drawing a unit. When the credit runs out the socket sends
//!    `payment-need-voucher`; each `authorization` frame holding a higher voucher pays ahead and
//!    is acknowledged with `payment-receipt`; a refused one gets `payment-error` and the socket
//!    closes (`1008`).
//! 4. The stream ends when the handler's body ends, when the client sends
//!    `payment-close-request`, or when no voucher came within the
//!    [voucher wait](crate::PaymentLayerBuilder::voucher_wait): the socket sends
//!    `payment-close-ready` with the final receipt and closes (`1000`). A client that goes away
//!    pays for what was sent; the credit not drawn goes back to its channel.
//!
//! Frames the client sends other than `authorization` and `payment-close-request` are ignored
//! (the socket carries the handler's stream, one way); a payment frame that does not parse
//! gets `payment-error` 400. The opening frame must come within 10 s (or the voucher wait, if
//! shorter); a frame that cannot be sent within 30 s means the client is gone; the handler's
//! keep-alive comments go out as pings. The socket does not settle a `close` credential: a
//! channel is closed over HTTP (the client's `close`) or by the operator, as for SSE.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

use super::PaymentBody;
use super::builder::Shared;
use super::meter::StreamCredit;
use crate::BoxFuture;
use crate::mpp::stream::messages::{self, MAX_FRAME, NEED_VOUCHER, RECEIPT};
use crate::mpp::stream::{Event, Frame, Splitter, StreamReceipt};
use crate::price::Price;

/// The largest message read from the client (payment frames are read within [`MAX_FRAME`]).
const MAX_MESSAGE: usize = 2 * MAX_FRAME;

/// How long a socket may take to send its opening voucher (at most the voucher wait).
const OPENING_WAIT: Duration = Duration::from_secs(10);

/// How long one frame may take to leave: a client that stops reading is let go.
const SEND_WAIT: Duration = Duration::from_secs(30);

/// A WebSocket upgrade asked of a metered route.
pub(super) struct Upgrade {
    on: OnUpgrade,
    accept: HeaderValue,
}

impl Upgrade {
    /// The upgrade `request` asks for: a `GET` with `Upgrade: websocket`, `Connection:
    /// upgrade`, `Sec-WebSocket-Version: 13` and a key, served by hyper with upgrades on (its
    /// `OnUpgrade` is taken from the request).
    pub(super) fn take(request: &mut Parts) -> Option<Upgrade> {
        let headers = &request.headers;
        let has = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|value| {
                value.to_str().is_ok_and(|value| {
                    value
                        .split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
            })
        };
        let asked = request.method == http::Method::GET
            && has(header::UPGRADE, "websocket")
            && has(header::CONNECTION, "upgrade")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|version| version == "13");
        let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
        if !asked {
            return None;
        }
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes())).ok()?;
        let on = request.extensions.remove::<OnUpgrade>()?;
        Some(Upgrade { on, accept })
    }

    /// The answer when too many sockets wait for their opening voucher: `503`, try again.
    pub(super) fn busy<B>() -> Response<PaymentBody<B>> {
        let mut response = Response::new(PaymentBody::default());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    /// The `101 Switching Protocols` answer.
    pub(super) fn response<B>(&self) -> Response<PaymentBody<B>> {
        let mut response = Response::new(PaymentBody::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        response
    }

    /// Serves the socket once the upgrade is done (see the [module docs](self)): `head` is the
    /// upgrade's request head; `open` runs the flow for the opening credential.
    pub(super) async fn serve<B, E>(
        self,
        opening: tokio::sync::OwnedSemaphorePermit,
        shared: Arc<Shared>,
        price: Price,
        head: Parts,
        open: impl FnOnce(HeaderValue) -> BoxFuture<'static, Result<Response<PaymentBody<B>>, E>>,
    ) where
        B: Body<Data = Bytes> + Send + 'static,
    {
        let Ok(upgraded) = self.on.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let mut session = Session {
            socket,
            shared,
            price,
            head,
            opening: Some(opening),
        };
        session.run(open).await;
    }
}

/// The headers of a WebSocket upgrade, taken off the request the handler sees.
pub(super) fn strip_upgrade(headers: &mut HeaderMap) {
    for name in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        headers.remove(name);
    }
}

/// One metered socket.
struct Session<S> {
    socket: WebSocketStream<S>,
    shared: Arc<Shared>,
    price: Price,
    head: Parts,
    /// The socket's place among those waiting for their opening voucher, until it comes.
    opening: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How a session ends.
enum End {
    /// The stream is over (`1000`).
    Done,
    /// A payment error was sent (`1008`, or `1011` for the server's own failure).
    Error(u16, String),
    /// The client went away.
    Gone,
}

impl<S> Session<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn run<B, E>(
        &mut self,
        open: impl FnOnce(HeaderValue) -> BoxFuture<'static, Result<Response<PaymentBody<B>>, E>>,
    ) where
        B: Body<Data = Bytes> + Send + 'static,
    {
        let end = self.stream(open).await;
        let close = match end {
            End::Gone => return,
            End::Done => (CloseCode::Normal, "payment session closed".to_owned()),
            End::Error(status, message) => {
                let frame = Frame::Error { status, message };
                if self.send(&frame).await.is_err() {
                    return;
                }
                let code = if status >= 500 {
                    CloseCode::Error
                } else {
                    CloseCode::Policy
                };
                (code, "payment error".to_owned())
            }
        };
        let (code, reason) = close;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(SEND_WAIT, self.socket.close(Some(frame))).await;
    }

    /// Opens the stream with the first payment frame, then pumps it.
    async fn stream<B, E>(
        &mut self,
        open: impl FnOnce(HeaderValue) -> BoxFuture<'static, Result<Response<PaymentBody<B>>, E>>,
    ) -> End
    where
        B: Body<Data = Bytes> + Send + 'static,
    {
        let wait = self.shared.voucher_wait.min(OPENING_WAIT);
        let authorization = match tokio::time::timeout(wait, self.opening()).await {
            Ok(Ok(authorization)) => authorization,
            Ok(Err(end)) => return end,
            Err(_) => return End::Error(402, "no opening voucher in time".into()),
        };
        self.opening = None;
        let Ok(response) = open(authorization).await else {
            return End::Error(500, "websocket session failed".into());
        };
        let (mut parts, body) = response.into_parts();
        let Some(StreamCredit(source)) = parts.extensions.remove::<StreamCredit>() else {
            return failure(parts.status, body).await;
        };
        let mut body = Box::pin(body);
        if self.receipt(&*source, 0, 0).await.is_err() {
            return End::Gone;
        }
        let mut splitter = Splitter::default();
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        splitter.push(&data);
                        while let Ok(Some(block)) = splitter.next_block() {
                            let sent = if block.dispatches {
                                let Some(frame) = Event::read(&block.raw).and_then(to_frame)
                                else {
                                    continue;
                                };
                                self.send(&frame).await
                            } else {
                                // A keep-alive: a ping, which also finds a peer that is gone.
                                self.send_message(Message::Ping(Bytes::new())).await
                            };
                            if sent.is_err() {
                                return End::Gone;
                            }
                        }
                    }
                    Some(Err(_)) => return End::Error(500, "websocket session failed".into()),
                    None => return End::Done,
                },
                message = self.socket.next() => match message {
                    Some(Ok(Message::Text(text))) => match Frame::read(&text) {
                        Ok(Some(Frame::Authorization { authorization })) => {
                            match self.pay_ahead(&authorization).await {
                                Ok(()) => {
                                    let (units, held) = (body.units(), body.held());
                                    if self.receipt(&*source, units, held).await.is_err() {
                                        return End::Gone;
                                    }
                                }
                                Err(end) => return end,
                            }
                        }
                        // The stream stops; its end (the final receipt) follows.
                        Ok(Some(Frame::CloseRequest)) => body.as_mut().stop(),
                        // Not a frame a client sends (as mppx, ignored), or the application's.
                        Ok(Some(_) | None) => {}
                        Err(_) => return End::Error(400, "invalid payment message".into()),
                    },
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return End::Gone,
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Reads up to the first payment frame: the opening credential.
    async fn opening(&mut self) -> Result<HeaderValue, End> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => match Frame::read(&text) {
                    Ok(Some(Frame::Authorization { authorization })) => {
                        return HeaderValue::try_from(authorization)
                            .map_err(|_| End::Error(400, "invalid payment message".into()));
                    }
                    Ok(Some(Frame::CloseRequest)) => return Err(End::Done),
                    Ok(Some(_) | None) => {}
                    Err(_) => return Err(End::Error(400, "invalid payment message".into())),
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(End::Gone),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Pays ahead with a voucher sent on the socket, as a bodyless `POST` of it would.
    async fn pay_ahead(&mut self, authorization: &str) -> Result<(), End> {
        let Ok(value) = HeaderValue::try_from(authorization) else {
            return Err(End::Error(400, "invalid payment message".into()));
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        let refused = match self.shared.read(&headers) {
            Some((index, Ok(credential))) => match self.shared.schemes[index].metering() {
                Some(metering) => {
                    match metering
                        .pay_ahead(&credential, &self.head, &self.price)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(rejection) => rejection,
                    }
                }
                None => crate::scheme::Rejection::new(
                    crate::scheme::RejectionKind::PaymentRequired,
                    self.shared.schemes[index].intent().protocol,
                    super::respond::code::METERED,
                ),
            },
            Some((_, Err(rejection))) => rejection,
            None => return Err(End::Error(400, "invalid payment message".into())),
        };
        let answer: Response<PaymentBody<http_body_util::Empty<Bytes>>> = self
            .shared
            .rejected(&self.head, &self.price, &refused)
            .await;
        let (parts, body) = answer.into_parts();
        Err(failure(parts.status, body).await)
    }

    /// Sends `payment-receipt`: where the stream stands after `units`, the credit it holds
    /// (`held`) not counted as spent.
    async fn receipt(
        &mut self,
        source: &dyn crate::scheme::CreditSource,
        units: u64,
        held: i128,
    ) -> Result<(), ()> {
        let Ok(mut data) = messages::read_event::<StreamReceipt>(&source.receipt(units).await)
        else {
            return Ok(());
        };
        data.spent -= held;
        self.send(&Frame::Receipt { data }).await
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), ()> {
        self.send_message(Message::text(frame.to_text())).await
    }

    /// Sends `message`, within [`SEND_WAIT`].
    async fn send_message(&mut self, message: Message) -> Result<(), ()> {
        match tokio::time::timeout(SEND_WAIT, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

/// An SSE event of the metered body as a socket frame (`None`: nothing to send).
fn to_frame(event: Event) -> Option<Frame> {
    match event.kind() {
        NEED_VOUCHER => messages::read_event(&event.data)
            .ok()
            .map(|data| Frame::NeedVoucher { data }),
        RECEIPT => messages::read_event(&event.data)
            .ok()
            .map(|data| Frame::CloseReady { data }),
        _ => Some(Frame::Message { data: event.data }),
    }
}

/// The error frame for an answer that opened no stream: its status, and its problem's detail
/// (or title), else the status's reason.
async fn failure<B>(status: StatusCode, body: PaymentBody<B>) -> End
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > MAX_FRAME {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    #[derive(serde::Deserialize)]
    struct Problem {
        detail: Option<String>,
        title: Option<String>,
        error: Option<String>,
    }
    let problem = serde_json::from_slice::<Problem>(&bytes).ok();
    let message = problem
        .and_then(|problem| problem.detail.or(problem.title).or(problem.error))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let status = if status.is_success() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    End::Error(status.as_u16(), message)
}
