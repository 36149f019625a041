//! Paying as a socket's messages flow: [`PayRequest::send_socket`](super::PayRequest::send_socket)
//! opens a metered WebSocket (a route priced per unit, served by a layer with the `websocket`
//! feature), and [`PaidSocket`] hands out its messages, answering each in-band request for a
//! voucher with one paying [`stream_ahead`](super::PayingClientBuilder::stream_ahead) units
//! ahead, sent on the socket, within the policy, the budget and the stream's own cap
//! ([`PayRequest::stream_cap`](super::PayRequest::stream_cap)).
//!
//! The request is the route's HTTP one (`http://` or `https://`): it learns the offer (the
//! route's `402`); the socket is then opened at the same URL (`ws://` or `wss://`) and its
//! first frame carries the opening voucher. A socket that is dropped stops paying at once.
//!
//! ```no_run
//! # async fn run(client: tower_paywall::client::PayingClient) -> Result<(), Box<dyn std::error::Error>> {
//! let mut socket = client.get("https://api.example/ticks").send_socket().await?;
//! while let Some(message) = socket.next().await {
//!     println!("{}", message?);
//! }
//! println!("paid {} in all; {:?}", socket.paid(), socket.receipt());
//! # Ok(()) }
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::stream::StreamPayment;
use super::{ClientError, PayError, PaymentOffer};
use crate::mpp::stream::messages::MAX_FRAME;
use crate::mpp::stream::{Frame, StreamReceipt};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The largest message read from the server: an event of up to 1 MiB as a `message` frame,
/// its data escaped as JSON.
const MAX_MESSAGE: usize = 128 * MAX_FRAME;

/// How long the socket may take to open, and the server to acknowledge its opening voucher.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A metered socket being read (see the [module docs](self)).
pub struct PaidSocket {
    socket: Socket,
    payment: StreamPayment,
    receipt: Option<StreamReceipt>,
    ended: bool,
}

impl std::fmt::Debug for PaidSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaidSocket")
            .field("paid", &self.payment.paid)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Only a metered channel offer opens a socket.
pub(crate) fn metered(offers: Vec<PaymentOffer>) -> Vec<PaymentOffer> {
    offers
        .into_iter()
        .filter(|offer| {
            matches!(offer, PaymentOffer::MppChannel { request, .. } if request.unit.is_some())
        })
        .collect()
}

/// `url` (`http(s)://`) as the socket's (`ws(s)://`).
pub(crate) fn socket_url(url: &reqwest::Url) -> Result<String, ClientError> {
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        _ => {
            return Err(ClientError::Socket(
                "a socket is opened from an http:// or https:// URL".into(),
            ));
        }
    };
    let mut url = url.clone();
    url.set_fragment(None);
    let rest = &url.as_str()[url.scheme().len()..];
    Ok(format!("{scheme}{rest}"))
}

impl PaidSocket {
    /// Opens the socket at `url` and sends the opening `credential` (whose voucher paid
    /// `paid`); the server's first payment frame says whether the stream is open.
    pub(crate) async fn open(
        url: &str,
        credential: String,
        payment: StreamPayment,
    ) -> Result<PaidSocket, ClientError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let tls = Connector::Rustls(payment.client.inner.socket_tls.clone());
        let connected = tokio::time::timeout(
            OPEN_WAIT,
            tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, Some(tls)),
        )
        .await;
        let socket = match connected {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(error)) => {
                return Err(ClientError::Incomplete(PayError::Submission(format!(
                    "the socket could not be opened: {error}"
                ))));
            }
            Err(_) => {
                return Err(ClientError::Incomplete(PayError::Submission(
                    "the socket did not open in time".into(),
                )));
            }
        };
        let mut socket = PaidSocket {
            socket,
            payment,
            receipt: None,
            ended: false,
        };
        socket
            .send(&Frame::Authorization {
                authorization: credential,
            })
            .await?;
        // The stream is open once its opening voucher is acknowledged.
        let opened = tokio::time::timeout(OPEN_WAIT, async {
            loop {
                match socket.read().await {
                    Some(Ok(Read::Receipt)) => return Ok(()),
                    Some(Ok(Read::Message(_))) => {
                        return Err(ClientError::Socket(
                            "a message came before the stream was paid".into(),
                        ));
                    }
                    Some(Ok(Read::Paying)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Err(ClientError::Socket("the socket closed".into())),
                }
            }
        })
        .await;
        match opened {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ClientError::Socket(
                "the opening voucher was not acknowledged in time".into(),
            )),
        }
    }

    /// The next message of the application (payment frames are answered, not handed out);
    /// `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<String, ClientError>> {
        loop {
            match self.read().await? {
                Ok(Read::Message(message)) => {
                    // The next voucher, early, when it is due (`stream_prepay`). A voucher that
                    // cannot be paid or sent now is not fatal: the server asks in band when it
                    // needs one, and the socket's own end or error comes with the next read.
                    if let Some(paid) = self.payment.read_one().await {
                        let sent = match paid {
                            Ok(authorization) => {
                                self.send(&Frame::Authorization { authorization }).await
                            }
                            Err(error) => Err(error),
                        };
                        if let Err(error) = sent {
                            tracing::debug!(%error, "no voucher paid ahead");
                        }
                    }
                    return Some(Ok(message));
                }
                Ok(Read::Receipt | Read::Paying) => {}
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// Asks the server to stop the stream (`payment-close-request`): the messages already on
    /// their way still come, then its end (read on with [`next`](Self::next) to get them and
    /// the final receipt).
    ///
    /// # Errors
    ///
    /// [`ClientError::Socket`] when the socket is broken.
    pub async fn stop(&mut self) -> Result<(), ClientError> {
        self.send(&Frame::CloseRequest).await
    }

    /// The messages as a [`Stream`](futures_util::Stream) (what [`next`](Self::next) hands
    /// out), for stream combinators; the socket's figures are no longer readable then.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<String, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut socket| async move {
            let item = socket.next().await?;
            Some((item, socket))
        })
    }

    /// What this stream has paid (its opening voucher and every one since), in atomic units.
    pub fn paid(&self) -> i128 {
        self.payment.paid
    }

    /// The server's latest receipt: after the opening voucher and each one since, then the
    /// final one (`payment-close-ready`).
    pub fn receipt(&self) -> Option<&StreamReceipt> {
        self.receipt.as_ref()
    }

    /// Reads one frame and answers it.
    async fn read(&mut self) -> Option<Result<Read, ClientError>> {
        if self.ended {
            return None;
        }
        let text = match self.socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                self.ended = true;
                return None;
            }
            Some(Ok(_)) => return Some(Ok(Read::Paying)),
            Some(Err(error)) => {
                self.ended = true;
                return Some(Err(ClientError::Socket(error.to_string())));
            }
        };
        let frame = match Frame::read(&text) {
            Ok(Some(frame)) => frame,
            // Not a payment frame: the application's own.
            Ok(None) => return Some(Ok(Read::Message(text.as_str().to_owned()))),
            Err(_) => return Some(Err(self.fail("an unreadable payment frame").await)),
        };
        let opened = self.payment.opened.as_ref()?;
        let channel = opened.request.channel.to_string();
        Some(match frame {
            Frame::Message { data } => Ok(Read::Message(data)),
            // Paid ahead already: the voucher is on its way.
            Frame::NeedVoucher { data } if self.payment.covers(&data) => Ok(Read::Paying),
            Frame::NeedVoucher { data } => match self.payment.voucher(&data).await {
                Ok(authorization) => self
                    .send(&Frame::Authorization { authorization })
                    .await
                    .map(|()| Read::Paying),
                Err(error) => {
                    // No voucher: the socket is closed, so that the server stops at once.
                    self.ended = true;
                    let _ = self.socket.close(None).await;
                    Err(error)
                }
            },
            Frame::Receipt { data } | Frame::CloseReady { data } if data.channel_id == channel => {
                // Each voucher sent is acknowledged: one paid early has landed.
                self.payment.pending = None;
                self.receipt = Some(data);
                Ok(Read::Receipt)
            }
            Frame::Receipt { .. } | Frame::CloseReady { .. } => {
                Err(self.fail("a receipt for another channel").await)
            }
            Frame::Error { status, message } => {
                self.ended = true;
                Err(ClientError::Refused { status, message })
            }
            Frame::Authorization { .. } | Frame::CloseRequest => {
                Err(self.fail("a client's frame from the server").await)
            }
        })
    }

    /// Ends the socket on the server's protocol error: it is closed, so that nothing more is
    /// sent (and drawn) for it.
    async fn fail(&mut self, why: &'static str) -> ClientError {
        self.ended = true;
        let _ = self.socket.close(None).await;
        ClientError::Pay(PayError::InvalidOffer(why))
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(frame.to_text()))
            .await
            .map_err(|error| ClientError::Socket(error.to_string()))
    }
}

/// What one frame was.
enum Read {
    /// An application message.
    Message(String),
    /// A receipt (kept).
    Receipt,
    /// A payment frame answered, or one to skip.
    Paying,
}
