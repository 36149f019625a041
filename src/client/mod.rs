//! The paying client (feature `client`): sends a request, and when the answer is a 402 reads
//! every offer in it (x402 `exact`, MPP `charge`, MPP `channel`), picks one by [`Policy`],
//! pays, and sends the request again with the payment, once.
//!
//! | intent | how it pays |
//! |---|---|
//! | x402 `exact` | a sponsored transfer, its authorization signed as `@x402/stellar` does |
//! | MPP `charge` | pull (sponsored or from the payer's account) or push ([`ChargeMode`]) |
//! | MPP `channel` | a voucher on one of the client's channels ([`PayingClientBuilder::channel`], opened with [`open_channel`](crate::stellar::channel::open_channel)); the cumulative amount is stored before it is signed ([`FileCumulativeStore`]); [`PayRequest::close_channel`] closes it |
//! | MPP `channel`, metered | [`PayRequest::send_stream`]: a [`PaidStream`] of events, paying vouchers ahead as the server asks in band |
//! | MPP `channel`, metered socket | [`PayRequest::send_socket`]: a [`PaidSocket`] of messages, paying vouchers on the socket |
//!
//! ```no_run
//! use std::sync::Arc;
//! use tower_paywall::client::{PayingClient, Policy};
//! use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let key: Keypair = std::env::var("STELLAR_SECRET")?.parse()?;
//! let rpc = JsonRpcClient::builder("https://soroban-rpc.example").build()?;
//! let client = PayingClient::builder(key, Arc::new(rpc), Network::testnet())
//!     .policy(Policy::default().max_per_payment(1_000_000).budget(100_000_000))
//!     .build()?;
//! let response = client.get("https://api.example/paid").send().await?;
//! println!("{} {:?}", response.status(), tower_paywall::client::payment(&response));
//! # Ok(()) }
//! ```
//!
//! # Why a wrapper and not a reqwest middleware
//!
//! Paying is not a transparent retry: it needs the 402's body (x402 servers without the
//! header put their offers there), a policy and a budget that outlive one request, and an
//! answer that says what was paid. A wrapper owns all of that in one value you can clone, and
//! needs no extra dependency; it hands back plain `reqwest::Response`s (with a [`Payment`] in
//! their extensions when one was made), so the rest of your code stays reqwest.
//!
//! # Never paying twice
//!
//! A request is paid at most once. When the paid retry is answered 503 (the server's "retry
//! with the same payment") or its connection is lost, the client sends the **same** payment
//! again (up to [`PayingClientBuilder::retries`] times, honouring `Retry-After`); it never
//! signs a new one on its own. A server that answers the paid request with another 402 gets
//! no second payment: that 402 is returned.
//!
//! # What is signed, and what counts as spent
//!
//! Limits are checked before anything is signed: an offer over
//! [`Policy::max_per_payment`] or one that does not fit the remaining budget is refused with
//! [`ClientError::OverLimit`] or [`ClientError::BudgetExceeded`]. What is signed is exactly
//! what was checked:
//!
//! - a transfer is signed only when the simulation asks the payer to authorize
//!   `asset.transfer(payer, recipient, amount)` itself and nothing beneath it (a token whose
//!   `transfer` reaches for the payer's other tokens is refused,
//!   [`PrepareError::UnexpectedAuthorization`]); authorizations last at most
//!   [`MAX_AUTHORIZATION_SECONDS`]; a transaction from the payer's own account carries at most
//!   [`MAX_FEE_STROOPS`] of fee (fees are not counted in the budget);
//! - a voucher raises the channel's stored amount by the price only: a server that claims to
//!   hold more than this client ever signed gets no voucher.
//!
//! A payment counts against the budget from the moment it is handed to the server, whatever
//! the answer: a server that answers 402 may still submit what it holds while it is valid. A
//! payment that fails after a transaction was submitted, or after a channel's amount was
//! raised, counts too ([`ClientError::Incomplete`]). [`PayingClient::spent`] is therefore an
//! upper bound of what left the account (fees aside).

mod channel;
mod charge;
mod exact;
pub mod grpc;
mod offer;
mod policy;
mod replay;
pub mod socket;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use reqwest::{Method, Request, Response};

pub use channel::{CumulativeError, CumulativeStore, FileCumulativeStore, MemoryCumulativeStore};
pub use charge::ChargeMode;
pub use grpc::{PayingGrpc, PayingGrpcLayer};
pub use offer::{ChannelRequest, ChargeRequest, PaymentOffer, read_offers};
pub use policy::Policy;
pub use socket::PaidSocket;
pub use stream::PaidStream;

use crate::mpp::Credential as MppCredential;
use crate::scheme::Intent;
use crate::stellar::rpc::{RpcError, SorobanRpc};
use crate::stellar::{Address, Network, PrepareError, Signer, TransferError};
use channel::{Action, Wallet, WalletChannel};
use policy::{Refusal, Spent};

/// How many units of a metered stream a voucher pays ahead, by default.
const DEFAULT_STREAM_AHEAD: u32 = 100;
/// How many times a paid request is sent again, with the same payment, by default.
const DEFAULT_RETRIES: u32 = 3;
/// The longest a payment authorization is signed for, whatever the server asks: an offer
/// with a longer `maxTimeoutSeconds` or expiry gets an authorization (and time bounds) this
/// long, so that a payment the server did not use soon cannot be used months later.
pub const MAX_AUTHORIZATION_SECONDS: u64 = 600;
/// The most fee (in stroops, base fee and resource fee) a transaction from the payer's own
/// account may carry: 1 XLM.
pub const MAX_FEE_STROOPS: u32 = 10_000_000;
/// How long the body of a 402 may take to arrive.
const OFFER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a payment could not be made ([`ClientError::Pay`]: nothing was paid;
/// [`ClientError::Incomplete`]: it was committed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// The RPC failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The transfer could not be prepared (it does not simulate, the payer is not funded …).
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The transaction could not be built or signed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The signer refused.
    #[error("the signer refused: {0}")]
    Signer(String),
    /// The offer is malformed.
    #[error("invalid offer: {0}")]
    InvalidOffer(&'static str),
    /// The offer asks for something this client does not do.
    #[error("unsupported offer: {0}")]
    Unsupported(&'static str),
    /// A pushed transaction was refused or failed.
    #[error("the transaction was not accepted: {0}")]
    Submission(String),
    /// The channel's cumulative amount could not be raised durably; nothing was signed.
    #[error("the channel's cumulative amount could not be stored: {0}")]
    Channel(String),
}

/// Why a request did not get its answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request could not be sent, or its answer read.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// The 402 offered nothing this client may pay (each offer's reason listed).
    #[error("no acceptable payment offer: {}", .0.join("; "))]
    NoAcceptableOffer(Vec<String>),
    /// The only payable offers cost more than the policy's cap per payment.
    #[error("the server asks {amount}, more than the cap of {cap} per payment")]
    OverLimit {
        /// The cheapest amount asked, in atomic units.
        amount: i128,
        /// The cap.
        cap: i128,
    },
    /// The payment does not fit the remaining budget.
    #[error("paying {amount} would exceed the budget of {budget} ({spent} spent)")]
    BudgetExceeded {
        /// The amount asked.
        amount: i128,
        /// The budget.
        budget: i128,
        /// What was spent (or is being paid) already.
        spent: i128,
    },
    /// The payment could not be made; nothing was paid.
    #[error(transparent)]
    Pay(PayError),
    /// The payment failed after the point of no return: a pushed transaction was submitted,
    /// or a channel's cumulative amount was raised. Its amount counts against the budget, and
    /// the money may have moved (or will be claimed with the next voucher).
    #[error("the payment failed after it was committed: {0}")]
    Incomplete(PayError),
    /// The request's body is a stream: it cannot be sent again with a payment.
    #[error("the request body cannot be sent twice")]
    BodyNotReplayable,
    /// A stream was asked for, and the server answered with this status instead.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// A metered socket's payment was refused in band (`payment-error`): the server's status
    /// and message. The socket is closed.
    #[error("the server refused the stream's payment ({status}): {message}")]
    Refused {
        /// The HTTP status the refusal stands for (402, 400, 409 …).
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A metered socket could not be opened, or broke.
    #[error("the socket failed: {0}")]
    Socket(String),
}

/// What was paid for a response; in the extensions of every paid response
/// (see [`payment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Payment {
    /// The intent paid with.
    pub intent: Intent,
    /// The amount, in atomic units.
    pub amount: i128,
    /// The network (a CAIP-2 id).
    pub network: String,
    /// The receipt header the server answered with (`Payment-Receipt` or `PAYMENT-RESPONSE`),
    /// as sent.
    pub receipt: Option<String>,
}

/// The payment made for `response`, if one was.
pub fn payment(response: &Response) -> Option<&Payment> {
    response.extensions().get::<Payment>()
}

/// Signs an x402 `exact` payment for `requirements` from `signer` the way [`PayingClient`]
/// does on a 402 (echoing `resource`, as the official client does), without sending
/// anything: the value of a `PAYMENT-SIGNATURE` header. For a payment sent by hand (to several
/// replicas, or from a test); no policy or budget applies.
///
/// # Errors
///
/// [`PayError::Unsupported`] when the facilitator does not sponsor the fees;
/// [`PayError::InvalidOffer`]; the RPC's and the signer's errors.
pub async fn x402_payment(
    rpc: &dyn SorobanRpc,
    network: &Network,
    signer: &dyn crate::stellar::Signer,
    requirements: &crate::x402::PaymentRequirements,
    resource: Option<&crate::x402::ResourceInfo>,
) -> Result<http::HeaderValue, PayError> {
    let (_, value) = exact::payment(rpc, network, signer, requirements, resource, true).await?;
    Ok(value)
}

/// The TLS configuration of this crate's clients: rustls with the ring provider, the webpki
/// roots and the certificates of `extra_roots` (PEM texts), ALPN `h2` and `http/1.1`. For a
/// client of your own beside them: a reqwest client given to
/// [`PayingClientBuilder::http`], or a proxy's connections to the service it fronts.
///
/// # Errors
///
/// [`TlsError`] for an extra root that is not a readable certificate.
pub fn tls_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, TlsError> {
    crate::http::tls_config(extra_roots).map_err(|error| match error {
        crate::http::ClientError::Certificate(why) => TlsError::Certificate(why),
        crate::http::ClientError::Tls | crate::http::ClientError::Client => TlsError::Config,
    })
}

/// Why [`tls_config`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// An extra root certificate could not be read or used.
    #[error("an extra root certificate: {0}")]
    Certificate(&'static str),
    /// rustls refused the configuration.
    #[error("the TLS configuration was refused")]
    Config,
}

/// A reqwest client that pays 402s (see the [module docs](self)). Cheap to clone: clones share
/// the budget.
#[derive(Clone)]
pub struct PayingClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// TLS for `wss://` sockets: the webpki roots and the extra ones, HTTP/1.1.
    socket_tls: Arc<rustls::ClientConfig>,
    settings: Settings,
    spent: Spent,
}

/// What a client is set up with.
struct Settings {
    signer: Arc<dyn Signer>,
    rpc: Arc<dyn SorobanRpc>,
    network: Network,
    policy: Policy,
    charge_mode: ChargeMode,
    retries: u32,
    wallet: Wallet,
    /// How many units of a metered stream each voucher pays ahead.
    stream_ahead: u32,
    /// Whether a per-event stream pays its next voucher once half the last one is drawn.
    stream_prepay: bool,
}

/// Builds a [`PayingClient`].
#[must_use]
pub struct PayingClientBuilder {
    http: Option<reqwest::Client>,
    extra_roots: Vec<Vec<u8>>,
    settings: Settings,
    /// A channel was given an origin that is not an absolute `http(s)` URL.
    bad_origin: bool,
}

impl PayingClientBuilder {
    /// The reqwest client to send with (default: a new one).
    pub fn http(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// What may be paid (default: [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// How an MPP `charge` the server does not sponsor is paid (default: pull).
    pub fn charge_mode(mut self, mode: ChargeMode) -> Self {
        self.settings.charge_mode = mode;
        self
    }

    /// How many times a paid request is sent again with the same payment after a 503 or a lost
    /// connection (default 3).
    pub fn retries(mut self, retries: u32) -> Self {
        self.settings.retries = retries;
        self
    }

    /// How many units of a metered stream (an SSE stream priced per event) each voucher pays
    /// ahead (default 100, at least 1): fewer vouchers, or less credit left unused when the
    /// stream stops (see [`PaidStream`]).
    pub fn stream_ahead(mut self, units: u32) -> Self {
        self.settings.stream_ahead = units.max(1);
        self
    }

    /// Whether a stream priced per event pays its next voucher once half of the last one is
    /// drawn, without waiting for the server to ask (default off: the server asks in band when
    /// the credit runs out, and the stream stops until the voucher lands). On, a fast stream
    /// stops once (the first time its credit runs out, when it learns where it stands: credit
    /// left on the channel by earlier streams is drawn first) and then need not stop; at most
    /// one and a half vouchers stay paid ahead when it ends (the channel keeps them as credit
    /// for its next stream).
    pub fn stream_prepay(mut self, on: bool) -> Self {
        self.settings.stream_prepay = on;
        self
    }

    /// Pays MPP `channel` challenges of `channel` from the server at `origin` (a URL; its
    /// scheme, host and port count), signing its commitments with `commitment_signer`; the
    /// channel is opened with [`open_channel`](crate::stellar::channel::open_channel). Requests
    /// to that origin name it in `Payment-Channel`; no other origin learns of it or may ask
    /// for a voucher on it.
    pub fn channel(
        mut self,
        origin: &str,
        channel: Address,
        commitment_signer: impl Signer + 'static,
    ) -> Self {
        match reqwest::Url::parse(origin) {
            Ok(url) if url.origin().is_tuple() => {
                let origin = url.origin().ascii_serialization();
                let channels = &mut self.settings.wallet.channels;
                channels.retain(|entry| entry.channel != channel || entry.origin != origin);
                channels.push(WalletChannel {
                    origin,
                    channel,
                    signer: Arc::new(commitment_signer),
                });
            }
            _ => self.bad_origin = true,
        }
        self
    }

    /// Where each channel's cumulative amount is kept (default: in memory). Use a
    /// [`FileCumulativeStore`] for channels that outlive the process.
    pub fn cumulative_store(mut self, store: Arc<dyn CumulativeStore>) -> Self {
        self.settings.wallet.store = store;
        self
    }

    /// Trusts these PEM roots too (a server with its own certificate authority, such as the
    /// sandbox's), beside the webpki roots. Ignored when [`http`](Self::http) is set.
    pub fn extra_roots(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(pem.into());
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`ClientBuildError`] when no reqwest client was given and one cannot be built (an
    /// unreadable extra root), or a channel's origin is not a URL.
    pub fn build(self) -> Result<PayingClient, ClientBuildError> {
        if self.bad_origin {
            return Err(ClientBuildError::Origin);
        }
        let http = match self.http {
            Some(http) => http,
            None => crate::http::client(CONNECT_TIMEOUT, &self.extra_roots)
                .map_err(|_| ClientBuildError::Http)?,
        };
        let mut socket_tls =
            crate::http::tls_config(&self.extra_roots).map_err(|_| ClientBuildError::Http)?;
        socket_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(PayingClient {
            inner: Arc::new(Inner {
                http,
                socket_tls: Arc::new(socket_tls),
                settings: self.settings,
                spent: Spent::default(),
            }),
        })
    }
}

/// Why a [`PayingClient`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientBuildError {
    /// The HTTP client could not be built (an extra root is not a PEM certificate).
    #[error("the HTTP client could not be built (check the extra roots)")]
    Http,
    /// A channel's origin is not an absolute URL with a host.
    #[error("a channel's origin is not an absolute URL")]
    Origin,
}

impl std::fmt::Debug for PayingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayingClient")
            .field("signer", &self.inner.settings.signer)
            .field("network", &self.inner.settings.network.caip2())
            .field("policy", &self.inner.settings.policy)
            .field("spent", &self.inner.spent.total())
            .finish_non_exhaustive()
    }
}

/// A request being built; [`send`](Self::send) pays if asked to.
#[must_use]
pub struct PayRequest {
    client: PayingClient,
    builder: reqwest::RequestBuilder,
    action: Action,
    stream_cap: Option<i128>,
}

impl PayRequest {
    /// Adds a header.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.builder = self.builder.header(name.as_ref(), value.as_ref());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.body(body);
        self
    }

    /// Sets a JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, json: &T) -> Self {
        self.builder = self.builder.json(json);
        self
    }

    /// Sets a timeout for each send.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.builder = self.builder.timeout(timeout);
        self
    }

    /// Pays this request with a `close` of one of the client's channels: the server closes
    /// the channel on the ledger with this voucher, and its receipt names the transaction.
    pub fn close_channel(mut self) -> Self {
        self.action = Action::Close;
        self
    }

    /// The most a stream opened by [`send_stream`](Self::send_stream) may pay in all, its
    /// opening voucher included (beside the policy and the budget).
    pub fn stream_cap(mut self, amount: i128) -> Self {
        self.stream_cap = Some(amount);
        self
    }

    /// Sends the request, paying a 402 once, and reads its answer as a server-sent event
    /// stream, paying a metered one as it flows (see [`PaidStream`]).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); [`ClientError::Status`] when the answer is not a success.
    pub async fn send_stream(self) -> Result<PaidStream, ClientError> {
        let request = self.builder.build()?;
        let client = self.client.clone();
        let response = (self.client)
            .execute_as(request, self.action, self.stream_cap)
            .await?;
        if !response.status().is_success() {
            return Err(ClientError::Status(response.status()));
        }
        let opened = response.extensions().get::<stream::Opened>().cloned();
        let paid = payment(&response).map_or(0, |paid| paid.amount);
        Ok(PaidStream::new(
            client,
            response,
            opened,
            paid,
            self.stream_cap,
        ))
    }

    /// Opens a metered WebSocket at the request's URL (see [`PaidSocket`]): the request (an
    /// `http://` or `https://` one, usually a `GET`) learns the route's offer, its metered
    /// channel offer is paid with an opening voucher, and the socket (`ws://`, `wss://`) is
    /// opened with it.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); [`ClientError::Status`] when the route does not answer 402;
    /// [`ClientError::NoAcceptableOffer`] when it offers no metered channel of this client's;
    /// [`ClientError::Refused`] when the server refuses the opening voucher;
    /// [`ClientError::Socket`] when the socket fails.
    pub async fn send_socket(self) -> Result<PaidSocket, ClientError> {
        let mut request = self.builder.build()?;
        let client = self.client;
        let origin = request.url().origin().ascii_serialization();
        let url = socket::socket_url(request.url())?;
        client.name_channels(&origin, request.headers_mut());
        let response = client.inner.http.execute(request).await?;
        if response.status() != StatusCode::PAYMENT_REQUIRED {
            return Err(ClientError::Status(response.status()));
        }
        let headers = response.headers().clone();
        let body = read_limited(response).await;
        let offers = socket::metered(read_offers(&headers, &body));
        let (built, payment) = client
            .pay_offers(&offers, &origin, self.action, self.stream_cap)
            .await?;
        let credential = built
            .value
            .to_str()
            .map_err(|_| ClientError::Pay(PayError::InvalidOffer("channel credential")))?
            .to_owned();
        let paying =
            stream::StreamPayment::new(client, built.metered, payment.amount, self.stream_cap);
        PaidSocket::open(&url, credential, paying).await
    }

    /// Sends the request, paying a 402 once.
    pub async fn send(self) -> Result<Response, ClientError> {
        let request = self.builder.build()?;
        self.client.execute_as(request, self.action, None).await
    }
}

impl PayingClient {
    /// A client paying from `signer`'s account on `network`, preparing transactions through
    /// `rpc`.
    pub fn builder(
        signer: impl Signer + 'static,
        rpc: Arc<dyn SorobanRpc>,
        network: Network,
    ) -> PayingClientBuilder {
        PayingClientBuilder {
            http: None,
            bad_origin: false,
            extra_roots: Vec::new(),
            settings: Settings {
                signer: Arc::new(signer),
                rpc,
                network,
                policy: Policy::default(),
                charge_mode: ChargeMode::default(),
                retries: DEFAULT_RETRIES,
                wallet: Wallet::default(),
                stream_ahead: DEFAULT_STREAM_AHEAD,
                stream_prepay: false,
            },
        }
    }

    /// A request of any method.
    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> PayRequest {
        PayRequest {
            client: self.clone(),
            builder: self.inner.http.request(method, url),
            action: Action::Voucher,
            stream_cap: None,
        }
    }

    /// A `GET`.
    pub fn get(&self, url: impl reqwest::IntoUrl) -> PayRequest {
        self.request(Method::GET, url)
    }

    /// A `POST`.
    pub fn post(&self, url: impl reqwest::IntoUrl) -> PayRequest {
        self.request(Method::POST, url)
    }

    /// A `PUT`.
    pub fn put(&self, url: impl reqwest::IntoUrl) -> PayRequest {
        self.request(Method::PUT, url)
    }

    /// A `DELETE`.
    pub fn delete(&self, url: impl reqwest::IntoUrl) -> PayRequest {
        self.request(Method::DELETE, url)
    }

    /// What the client has spent (or is paying right now), in atomic units.
    pub fn spent(&self) -> i128 {
        self.inner.spent.total()
    }

    /// Sends `request`; a 402 is paid once (see the [module docs](self)).
    pub async fn execute(&self, request: Request) -> Result<Response, ClientError> {
        self.execute_as(request, Action::Voucher, None).await
    }

    /// Sends `request`, paying a 402 once; a metered stream's opening voucher pays within
    /// `stream_cap`.
    async fn execute_as(
        &self,
        mut request: Request,
        action: Action,
        stream_cap: Option<i128>,
    ) -> Result<Response, ClientError> {
        let origin = request.url().origin().ascii_serialization();
        self.name_channels(&origin, request.headers_mut());
        let retry = request.try_clone();
        let response = self.inner.http.execute(request).await?;
        if response.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(response);
        }
        let Some(retry) = retry else {
            return Err(ClientError::BodyNotReplayable);
        };
        let headers = response.headers().clone();
        let body = read_limited(response).await;
        let offers = read_offers(&headers, &body);
        let (built, payment) = self
            .pay_offers(&offers, &origin, action, stream_cap)
            .await?;
        // From here the payment is the server's: it counts against the budget whatever the
        // answer (a server that answers 402 may still settle it while it is valid).
        let mut response = self.send_paid(retry, &built).await?;
        if response.status() != StatusCode::PAYMENT_REQUIRED {
            let receipt = receipt(response.headers());
            response
                .extensions_mut()
                .insert(Payment { receipt, ..payment });
            if let Some(opened) = built.metered {
                response.extensions_mut().insert(opened);
            }
        }
        Ok(response)
    }

    /// Pays the best of `offers` the policy allows (see the [module docs](self)): the
    /// credential to send, and what it pays. From here the payment counts against the budget.
    async fn pay_offers(
        &self,
        offers: &[PaymentOffer],
        origin: &str,
        action: Action,
        stream_cap: Option<i128>,
    ) -> Result<(Built, Payment), ClientError> {
        let offer = self.choose(offers, origin, action)?;
        let opening = match offer {
            // A metered stream's opening voucher pays units ahead, within the stream's cap.
            PaymentOffer::MppChannel { request, .. } if request.unit.is_some() => {
                Some(self.opening(request, stream_cap)?)
            }
            _ => None,
        };
        let amount = opening.unwrap_or_else(|| offer.amount().unwrap_or_default());
        if let Some(cap) = self.inner.settings.policy.max_per_payment
            && amount > cap
        {
            return Err(ClientError::OverLimit { amount, cap });
        }
        self.reserve(amount)?;
        let built = match self.pay(offer, origin, action, opening).await {
            Ok(built) => built,
            Err(failure) => return Err(self.failed(amount, failure)),
        };
        let payment = Payment {
            intent: offer.intent(),
            amount,
            network: offer.network().to_owned(),
            receipt: None,
        };
        Ok((built, payment))
    }

    /// Names this client's channels for `origin` in `Payment-Channel`, unless the request
    /// names some itself.
    fn name_channels(&self, origin: &str, headers: &mut HeaderMap) {
        let names: Vec<String> = (self.inner.settings.wallet.for_origin(origin))
            .map(ToString::to_string)
            .collect();
        if !names.is_empty()
            && !headers.contains_key(crate::mpp::PAYMENT_CHANNEL)
            && let Ok(value) = HeaderValue::try_from(names.join(", "))
        {
            headers.insert(crate::mpp::PAYMENT_CHANNEL, value);
        }
    }

    /// Reserves `amount` in the budget (what is being paid counts from now).
    fn reserve(&self, amount: i128) -> Result<(), ClientError> {
        let budget = self.inner.settings.policy.budget;
        if self.inner.spent.reserve(amount, budget) {
            return Ok(());
        }
        Err(ClientError::BudgetExceeded {
            amount,
            budget: budget.unwrap_or_default(),
            spent: self.inner.spent.total(),
        })
    }

    /// The error of a payment of `amount` that failed; its reservation is given back when
    /// nothing was committed.
    fn failed(&self, amount: i128, failure: Failure) -> ClientError {
        match failure {
            Failure {
                error,
                spent: false,
            } => {
                self.inner.spent.release(amount);
                ClientError::Pay(error)
            }
            Failure { error, spent: true } => ClientError::Incomplete(error),
        }
    }

    /// What a metered stream's opening voucher pays: `stream_ahead` units, or as many whole
    /// units as `cap` allows.
    fn opening(&self, request: &ChannelRequest, cap: Option<i128>) -> Result<i128, ClientError> {
        let ahead = self.ahead(request);
        let Some(cap) = cap else {
            return Ok(ahead);
        };
        let units = cap / request.amount.max(1);
        if units < 1 {
            return Err(ClientError::BudgetExceeded {
                amount: request.amount,
                budget: cap,
                spent: 0,
            });
        }
        Ok(ahead.min(units.saturating_mul(request.amount)))
    }

    /// What a voucher of a metered stream pays ahead: the price of `stream_ahead` units.
    fn ahead(&self, request: &ChannelRequest) -> i128 {
        request
            .amount
            .saturating_mul(i128::from(self.inner.settings.stream_ahead))
    }

    /// The best offer the policy allows, or why there is none.
    fn choose<'a>(
        &self,
        offers: &'a [PaymentOffer],
        origin: &str,
        action: Action,
    ) -> Result<&'a PaymentOffer, ClientError> {
        let policy = &self.inner.settings.policy;
        let mut reasons = Vec::new();
        let mut over_cap: Option<i128> = None;
        let mut payable: Vec<&PaymentOffer> = Vec::new();
        for offer in offers {
            let refusal = if offer.network() != self.inner.settings.network.caip2() {
                Some(Refusal::Network)
            } else if !self.can_pay(offer, origin, action) {
                Some(Refusal::Intent)
            } else {
                policy.refusal(offer)
            };
            match refusal {
                None => payable.push(offer),
                Some(Refusal::OverCap { amount }) => {
                    over_cap = Some(over_cap.map_or(amount, |least| least.min(amount)));
                }
                Some(refusal) => reasons.push(format!("{}: {}", offer.intent(), refusal.reason())),
            }
        }
        payable.sort_by_key(|offer| policy.rank(offer.intent()));
        if let Some(offer) = payable.first() {
            return Ok(offer);
        }
        if let (Some(amount), Some(cap)) = (over_cap, policy.max_per_payment) {
            return Err(ClientError::OverLimit { amount, cap });
        }
        if offers.is_empty() {
            reasons.push("the 402 carries no offer this client reads".into());
        }
        Err(ClientError::NoAcceptableOffer(reasons))
    }

    /// Whether this client holds what `offer` needs: a channel offer names one of its
    /// channels for this origin; a close takes a channel offer only.
    fn can_pay(&self, offer: &PaymentOffer, origin: &str, action: Action) -> bool {
        match offer {
            PaymentOffer::MppChannel { request, .. } => self
                .inner
                .settings
                .wallet
                .signer(origin, &request.channel)
                .is_some(),
            _ => action == Action::Voucher,
        }
    }

    /// Pays `offer`; a metered stream's opening voucher pays `opening`.
    async fn pay(
        &self,
        offer: &PaymentOffer,
        origin: &str,
        action: Action,
        opening: Option<i128>,
    ) -> Result<Built, Failure> {
        let inner = &self.inner.settings;
        match offer {
            PaymentOffer::X402 {
                requirements,
                resource,
                in_header,
            } => {
                let (name, value) = exact::payment(
                    &*inner.rpc,
                    &inner.network,
                    &*inner.signer,
                    requirements,
                    resource.as_ref(),
                    *in_header,
                )
                .await?;
                Ok(Built {
                    name,
                    value,
                    metered: None,
                })
            }
            PaymentOffer::MppCharge { challenge, request } => {
                let payload = charge::payload(
                    &*inner.rpc,
                    &inner.network,
                    &*inner.signer,
                    challenge,
                    request,
                    inner.charge_mode,
                )
                .await?;
                let mut credential = MppCredential::new(challenge.clone(), payload);
                credential.source = Some(crate::mpp::charge::source_did(
                    &inner.network,
                    &inner.signer.address(),
                ));
                let value = HeaderValue::try_from(credential.encode())
                    .map_err(|_| Failure::spent(PayError::InvalidOffer("charge credential")))?;
                Ok(Built {
                    name: http::header::AUTHORIZATION,
                    value,
                    metered: None,
                })
            }
            PaymentOffer::MppChannel { challenge, request } => {
                let ahead = opening.map(|amount| ChannelRequest {
                    amount,
                    ..request.clone()
                });
                let paying = ahead.as_ref().unwrap_or(request);
                let payload =
                    channel::payload(&inner.wallet, origin, &inner.network, paying, action).await?;
                let credential = MppCredential::new(challenge.clone(), payload);
                let value = HeaderValue::try_from(credential.encode())
                    .map_err(|_| Failure::spent(PayError::InvalidOffer("channel credential")))?;
                let metered = request.unit.is_some().then(|| stream::Opened {
                    challenge: challenge.clone(),
                    request: request.clone(),
                    origin: origin.to_owned(),
                });
                Ok(Built {
                    name: http::header::AUTHORIZATION,
                    value,
                    metered,
                })
            }
        }
    }

    /// Sends the paid request, and again with the same payment after a 503 or a lost
    /// connection.
    async fn send_paid(&self, request: Request, built: &Built) -> Result<Response, ClientError> {
        let mut attempt = 0;
        loop {
            let Some(mut next) = request.try_clone() else {
                return Err(ClientError::BodyNotReplayable);
            };
            next.headers_mut()
                .insert(built.name.clone(), built.value.clone());
            let delay = match self.inner.http.execute(next).await {
                Ok(response) if response.status() != StatusCode::SERVICE_UNAVAILABLE => {
                    return Ok(response);
                }
                Ok(response) if attempt >= self.inner.settings.retries => return Ok(response),
                Ok(response) => retry_after(response.headers()),
                Err(error) if attempt >= self.inner.settings.retries || error.is_builder() => {
                    return Err(error.into());
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, "paid request lost; sending the same payment again");
                    backoff(attempt)
                }
            };
            attempt += 1;
            tokio::time::sleep(delay).await;
        }
    }
}

/// A payment ready to send.
struct Built {
    name: HeaderName,
    value: HeaderValue,
    /// The stream it opens, when the offer was metered.
    metered: Option<stream::Opened>,
}

/// A payment that could not be made.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: PayError,
    /// Whether it counts as spent anyway: a transaction was submitted, or a channel's
    /// cumulative amount was raised (the next voucher includes it).
    pub(crate) spent: bool,
}

impl Failure {
    /// A failure after the point of no return.
    pub(crate) fn spent(error: impl Into<PayError>) -> Failure {
        Failure {
            error: error.into(),
            spent: true,
        }
    }
}

impl<E: Into<PayError>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            error: error.into(),
            spent: false,
        }
    }
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Intent => "intent not allowed, or not one of this client's channels",
            Refusal::Network => "network not allowed",
            Refusal::Asset => "asset not allowed",
            Refusal::Amount => "no valid amount",
            Refusal::OverCap { .. } => "over the cap per payment",
        }
    }
}

/// The receipt header of a paid answer.
fn receipt(headers: &HeaderMap) -> Option<String> {
    [
        crate::mpp::PAYMENT_RECEIPT,
        crate::x402::header::PAYMENT_RESPONSE,
        crate::x402::header::X_PAYMENT_RESPONSE,
    ]
    .iter()
    .find_map(|name| headers.get(name)?.to_str().ok().map(str::to_owned))
}

/// How long to wait before sending a paid request again after its connection was lost.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(4))
}

/// `Retry-After` in seconds, capped; one second when absent.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

/// The body of a 402, up to [`offer::MAX_BODY`] bytes and [`OFFER_READ_TIMEOUT`] (what is
/// late or beyond is not read; offers in the headers stand alone).
async fn read_limited(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            if body.len() + chunk.len() > offer::MAX_BODY {
                break;
            }
            body.extend_from_slice(&chunk);
        }
    };
    let _ = tokio::time::timeout(OFFER_READ_TIMEOUT, read).await;
    body
}
