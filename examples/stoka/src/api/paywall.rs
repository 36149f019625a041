//! The payment side of stoka: the layers in front of the paid routes, and their pricing hook.
//!
//! [`StokaPricing`] reads the route from the request head and answers, before any money moves:
//! 400 for a bad key, TTL, topic, recipient or wait; 411 without a `Content-Length`; 413 over
//! the limit; and, once the request names its payer, 409 for a `store` on a key the payer
//! already has and 404 for an `update` or `retrieve` of a key the payer does not have. Then it
//! prices the request by the formulas of [`Rates`](crate::pricing::Rates).
//!
//! A `pop` naming a channel stoka does not serve yet (`Payment-Channel: C…`) gets that channel
//! added: the channel scheme checks on the ledger that it pays stoka in its asset.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method, StatusCode, header};
use tower_paywall::layer::BuildError;
use tower_paywall::mpp::{ChannelError, StellarChannel};
use tower_paywall::price::{
    Amount, PaymentIdentifier, Price, PriceFuture, PriceRequest, Priced, Pricing,
};
use tower_paywall::scheme::PaymentScheme;
use tower_paywall::stellar::Address;
use tower_paywall::stellar::ChannelReadError;
use tower_paywall::store::PaymentStore;
use tower_paywall::{PaymentLayer, SettlementOrder, Unit};

use super::{Stoka, error_answer};

/// The schemes stoka sells with.
#[derive(Clone, Default)]
pub struct Schemes {
    /// x402 `exact`.
    pub exact: Option<Arc<dyn PaymentScheme>>,
    /// MPP `charge`.
    pub charge: Option<Arc<dyn PaymentScheme>>,
    /// MPP `channel`, offered on `pop` only.
    pub channel: Option<Arc<StellarChannel>>,
}

impl std::fmt::Debug for Schemes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemes")
            .field("exact", &self.exact.is_some())
            .field("charge", &self.charge.is_some())
            .field("channel", &self.channel.is_some())
            .finish()
    }
}

/// How long a payment's record (and the answer replayed to its retries) is kept: longer than
/// any payment stays valid (an x402 authorization lives `maxTimeoutSeconds`, an MPP challenge
/// five minutes), short enough that recorded answers do not pile up in memory.
pub const RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The two layers: one for every paid route but `pop`, one for `pop`; both record payments
/// in `store` and settle in the handler.
///
/// # Errors
///
/// [`BuildError::NoScheme`] without x402 `exact` and MPP `charge`.
pub fn layers(
    stoka: &Stoka,
    schemes: &Schemes,
    store: Arc<dyn PaymentStore>,
) -> Result<(PaymentLayer, PaymentLayer), BuildError> {
    let base = || {
        let mut builder = PaymentLayer::builder()
            .order(SettlementOrder::InHandler)
            .record_ttl(RECORD_TTL)
            .shared_store(store.clone());
        if let Some(public_url) = &stoka.inner.info.public_url {
            builder = builder.public_url(public_url.clone());
        }
        for scheme in [&schemes.exact, &schemes.charge].into_iter().flatten() {
            builder = builder.shared_scheme(scheme.clone());
        }
        builder
    };
    let paid = base()
        .pricing(StokaPricing::new(stoka.clone(), None))
        .build()?;
    // A stream holds a popped message while it waits for a voucher: no longer than half its
    // visibility timeout, so that no other delivery of it starts meanwhile.
    let visibility = std::time::Duration::from_secs(stoka.inner.limits.visibility_timeout_seconds);
    let mut pop = base().voucher_wait(visibility / 2);
    if let Some(channel) = &schemes.channel {
        pop = pop.shared_scheme(channel.clone());
    }
    let pop = pop
        .pricing(StokaPricing::new(stoka.clone(), schemes.channel.clone()))
        .build()?;
    Ok((paid, pop))
}

/// A paid route, read from the request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PaidRoute {
    Store,
    Retrieve(String),
    Update(String),
    Push {
        to: String,
        topic: String,
    },
    Pop {
        topic: String,
    },
    /// `GET /v1/queue/{topic}/stream` (and the bodyless `POST` of a voucher paying it ahead).
    Stream {
        topic: String,
    },
    Head,
    Undecodable,
}

impl PaidRoute {
    /// The paid route of `method` and `path`, if it is one.
    /// The paid route of `method` and `path`, if it is one. A path of a paid route whose
    /// segments are not UTF-8 once decoded is [`PaidRoute::Undecodable`]; `HEAD` of one is
    /// [`PaidRoute::Head`] (never served: nothing would be delivered for the money).
    pub(crate) fn of(method: &Method, path: &str) -> Option<PaidRoute> {
        let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
        let decoded = |segment: &str| percent_decode(segment);
        let route = match (method, segments.as_slice()) {
            (&Method::HEAD, ["retrieve", _]) => return Some(PaidRoute::Head),
            (&Method::POST, ["store"]) => Some(PaidRoute::Store),
            (&Method::GET, ["retrieve", key]) => decoded(key).map(PaidRoute::Retrieve),
            (&Method::PUT, ["object", key]) => decoded(key).map(PaidRoute::Update),
            (&Method::POST, ["queue", to, topic, "push"]) => decoded(to)
                .zip(decoded(topic))
                .map(|(to, topic)| PaidRoute::Push { to, topic }),
            (&Method::POST, ["queue", topic, "pop"]) => {
                decoded(topic).map(|topic| PaidRoute::Pop { topic })
            }
            (&Method::GET | &Method::POST, ["queue", topic, "stream"]) => {
                decoded(topic).map(|topic| PaidRoute::Stream { topic })
            }
            _ => return None,
        };
        Some(route.unwrap_or(PaidRoute::Undecodable))
    }
}

/// `%XX`-decodes a path segment as the router does; `None` if it is not UTF-8 then.
fn percent_decode(segment: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8();
    decoded.ok().map(std::borrow::Cow::into_owned)
}

/// Whether `key` is a blob key: 1–256 bytes of printable ASCII.
pub(crate) fn valid_key(key: &str) -> bool {
    (1..=256).contains(&key.len()) && key.bytes().all(|byte| (0x20..0x7f).contains(&byte))
}

/// Whether `topic` is a queue topic: 1–64 of `A–Z a–z 0–9 _ - .`.
pub(crate) fn valid_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

/// Whether `wallet` is an account address (`G…`).
pub(crate) fn valid_wallet(wallet: &str) -> bool {
    matches!(wallet.parse::<Address>(), Ok(Address::Account(_)))
}

/// A stamped JSON answer given before any money moves.
pub(crate) fn early(status: StatusCode, code: &str, message: &str) -> Priced {
    Priced::Respond(error_answer(status, code, message))
}

/// The declared body length; `None` when there is none or the body is chunked.
fn declared_length(request: &PriceRequest<'_>) -> Option<u64> {
    let chunked = request.header(header::TRANSFER_ENCODING).is_some();
    request.content_length().filter(|_| !chunked)
}

fn length_required() -> Priced {
    early(
        StatusCode::LENGTH_REQUIRED,
        "length_required",
        "a Content-Length is required (no chunked bodies)",
    )
}

/// The `wait_seconds` of a `pop`'s query, if any.
pub(crate) fn wait_from_query(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "wait_seconds")
        .map(|(_, value)| value)
}

/// The stoka pricing hook (see the [module docs](self)).
pub struct StokaPricing {
    stoka: Stoka,
    channel: Option<Arc<StellarChannel>>,
    /// Channels the ledger check refused, not tried again (bounded).
    refused: Arc<Mutex<HashSet<Address>>>,
}

/// The most refused channels remembered.
const MAX_REFUSED: usize = 10_000;

impl StokaPricing {
    /// Prices stoka's routes; `channel` is served on `pop`.
    pub fn new(stoka: Stoka, channel: Option<Arc<StellarChannel>>) -> StokaPricing {
        StokaPricing {
            stoka,
            channel,
            refused: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

fn charge(atomic: u64, description: String) -> Priced {
    match Amount::from_atomic(i128::from(atomic)) {
        // x402 clients may name each logical request, so a retry with a new payment is answered
        // from the first (the `payment-identifier` extension).
        Ok(amount) => Priced::Charge(
            Price::new(amount)
                .with_description(description)
                .with_payment_identifier(PaymentIdentifier::Optional),
        ),
        Err(_) => early(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the price is out of range",
        ),
    }
}

/// The price of a queue stream: `atomic` a message.
fn per_message(atomic: u64) -> Priced {
    match Amount::from_atomic(i128::from(atomic)) {
        Ok(amount) => Priced::Charge(
            Price::new(amount)
                .per(Unit::Event)
                .with_description("stream your mailbox, a message at the pop price".to_owned()),
        ),
        Err(_) => early(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_price",
            "the pop price is out of range",
        ),
    }
}

impl Pricing for StokaPricing {
    fn price(&self, request: &PriceRequest<'_>) -> PriceFuture {
        let Some(route) = PaidRoute::of(request.method(), request.uri().path()) else {
            return PriceFuture::ready(Priced::Free);
        };
        let stoka = &self.stoka;
        let (rates, limits) = (stoka.inner.rates, stoka.inner.limits);
        // Every header is read through the request, so that a payment is bound to its values.
        let header_text = |name: &str| request.header(name).and_then(|value| value.to_str().ok());
        let ready = PriceFuture::ready;
        match route {
            PaidRoute::Head => ready(early(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a paid route is not served for HEAD: use GET",
            )),
            PaidRoute::Undecodable => ready(early(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "a path segment is not UTF-8 once percent-decoded",
            )),
            PaidRoute::Store | PaidRoute::Update(_) => {
                let key = match &route {
                    PaidRoute::Update(key) => Some(key.clone()),
                    _ => header_text("x-stoka-key").map(str::to_owned),
                };
                let Some(key) = key.filter(|key| valid_key(key)) else {
                    return ready(early(
                        StatusCode::BAD_REQUEST,
                        "invalid_key",
                        "the key must be 1 to 256 bytes of printable ASCII (X-Stoka-Key on store)",
                    ));
                };
                let ttl = match limits.ttl_of(request.header("x-stoka-ttl-seconds")) {
                    Ok(ttl) => ttl,
                    Err(error) => {
                        return ready(early(
                            StatusCode::BAD_REQUEST,
                            "invalid_ttl",
                            &error.to_string(),
                        ));
                    }
                };
                let Some(length) = declared_length(request) else {
                    return ready(length_required());
                };
                if length > limits.max_object_bytes {
                    return ready(early(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        &format!("a blob is at most {} bytes", limits.max_object_bytes),
                    ));
                }
                let price = rates.store(length, ttl);
                let description = format!("store {length} bytes for {ttl} s");
                let Some(payer) = request.payer().map(str::to_owned) else {
                    return ready(charge(price, description));
                };
                let creating = route == PaidRoute::Store;
                let stoka = stoka.clone();
                PriceFuture::new(async move {
                    let now = stoka.now();
                    match stoka.storage().blob_size(&payer, &key, now).await {
                        Ok(Some(_)) if creating => early(
                            StatusCode::CONFLICT,
                            "key_exists",
                            "you already store a blob under this key: use PUT /v1/object/{key}",
                        ),
                        Ok(None) if !creating => {
                            early(StatusCode::NOT_FOUND, "not_found", "no such blob")
                        }
                        Ok(_) => charge(price, description),
                        Err(error) => storage_down(&error),
                    }
                })
            }
            PaidRoute::Retrieve(key) => {
                if !valid_key(&key) {
                    return ready(early(StatusCode::BAD_REQUEST, "invalid_key", "bad key"));
                }
                let owner = match (request.payer(), header_text("x-stoka-owner")) {
                    (Some(payer), _) => payer.to_owned(),
                    (None, Some(owner)) if valid_wallet(owner) => owner.to_owned(),
                    (None, Some(_)) => {
                        return ready(early(
                            StatusCode::BAD_REQUEST,
                            "invalid_owner",
                            "X-Stoka-Owner must be a G… account address",
                        ));
                    }
                    // Without an owner the size is unknown: quote the largest blob. The paid
                    // retry is priced exactly (its payer is the owner); send X-Stoka-Owner
                    // for an exact first quote.
                    (None, None) => {
                        return ready(charge(
                            rates.retrieve(limits.max_object_bytes),
                            "retrieve (largest size; send X-Stoka-Owner for an exact quote)".into(),
                        ));
                    }
                };
                let stoka = stoka.clone();
                PriceFuture::new(async move {
                    match stoka.storage().blob_size(&owner, &key, stoka.now()).await {
                        Ok(Some(size)) => {
                            charge(rates.retrieve(size), format!("retrieve {size} bytes"))
                        }
                        Ok(None) => early(StatusCode::NOT_FOUND, "not_found", "no such blob"),
                        Err(error) => storage_down(&error),
                    }
                })
            }
            PaidRoute::Push { to, topic } => {
                if !valid_wallet(&to) {
                    return ready(early(
                        StatusCode::BAD_REQUEST,
                        "invalid_recipient",
                        "the recipient must be a G… account address",
                    ));
                }
                if !valid_topic(&topic) {
                    return ready(invalid_topic());
                }
                let Some(length) = declared_length(request) else {
                    return ready(length_required());
                };
                if length > limits.max_message_bytes {
                    return ready(early(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        &format!("a message is at most {} bytes", limits.max_message_bytes),
                    ));
                }
                ready(charge(rates.push(length), format!("push {length} bytes")))
            }
            PaidRoute::Pop { ref topic } | PaidRoute::Stream { ref topic } => {
                if !valid_topic(topic) {
                    return ready(invalid_topic());
                }
                let streaming = matches!(route, PaidRoute::Stream { .. });
                if let Some(wait) = wait_from_query(request.uri().query())
                    && !streaming
                    && parse_wait(wait, limits.max_wait_seconds).is_none()
                {
                    return ready(invalid_wait(limits.max_wait_seconds));
                }
                let price = if streaming {
                    // A `POST` to a stream only pays it ahead: without a body.
                    let bodied = request.header("content-type").is_some()
                        || request.header("transfer-encoding").is_some()
                        || request
                            .header("content-length")
                            .is_some_and(|length| length.as_bytes() != b"0");
                    if request.method() == Method::POST && bodied {
                        return ready(early(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "method_not_allowed",
                            "a POST to a stream carries a voucher and no body: GET opens it",
                        ));
                    }
                    // Each message of the stream at the pop price, paid from a channel.
                    if self.channel.is_none() {
                        return ready(early(
                            StatusCode::NOT_IMPLEMENTED,
                            "no_channel",
                            "this server takes no payment channel: use POST /v1/queue/{topic}/pop",
                        ));
                    }
                    per_message(rates.pop)
                } else {
                    charge(rates.pop, "pop".into())
                };
                // Which channel to offer changes no price: read without binding the payment.
                match self.unserved_channel(request.headers()) {
                    Some((channel, address)) => {
                        let refused = self.refused.clone();
                        PriceFuture::new(async move {
                            if let Err(error) = channel.add_channel(address).await {
                                tracing::debug!(%error, %address, "a named channel is refused");
                                // Only a definite answer of the ledger is remembered: a failed
                                // read may succeed next time.
                                let definite =
                                    !matches!(error, ChannelError::Read(ChannelReadError::Rpc(_)));
                                let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
                                if definite && refused.len() < MAX_REFUSED {
                                    refused.insert(address);
                                }
                            }
                            price
                        })
                    }
                    None => ready(price),
                }
            }
        }
    }
}

impl StokaPricing {
    /// The channel a `pop` names that is neither served nor refused before.
    fn unserved_channel(&self, headers: &HeaderMap) -> Option<(Arc<StellarChannel>, Address)> {
        let channel = self.channel.as_ref()?;
        let named = headers
            .get(tower_paywall::mpp::PAYMENT_CHANNEL)?
            .to_str()
            .ok()?;
        let address: Address = named.trim().parse().ok()?;
        if !matches!(address, Address::Contract(_)) {
            return None;
        }
        let served = channel.channels().iter().any(|id| id.address() == address);
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&address);
        (!served && !refused).then(|| (channel.clone(), address))
    }
}

/// `wait_seconds` as a whole number within `0..=max`.
pub(crate) fn parse_wait(text: &str, max: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|wait| *wait <= max)
}

fn invalid_topic() -> Priced {
    early(
        StatusCode::BAD_REQUEST,
        "invalid_topic",
        "a topic is 1 to 64 of A-Z a-z 0-9 _ - .",
    )
}

pub(crate) fn invalid_wait(max: u64) -> Priced {
    early(
        StatusCode::BAD_REQUEST,
        "invalid_wait",
        &format!("wait_seconds must be a whole number from 0 to {max}"),
    )
}

fn storage_down(error: &crate::storage::StorageError) -> Priced {
    tracing::error!(%error, "storage failed while pricing");
    early(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "the store is unavailable; try again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paid_routes_are_read_from_the_path() {
        let post = Method::POST;
        assert_eq!(PaidRoute::of(&post, "/v1/store"), Some(PaidRoute::Store));
        assert_eq!(
            PaidRoute::of(&Method::GET, "/v1/retrieve/a%20b%2Fc"),
            Some(PaidRoute::Retrieve("a b/c".into()))
        );
        assert_eq!(
            PaidRoute::of(&Method::PUT, "/v1/object/k"),
            Some(PaidRoute::Update("k".into()))
        );
        assert_eq!(
            PaidRoute::of(&post, "/v1/queue/GX/inbox/push"),
            Some(PaidRoute::Push {
                to: "GX".into(),
                topic: "inbox".into()
            })
        );
        assert_eq!(
            PaidRoute::of(&post, "/v1/queue/inbox/pop"),
            Some(PaidRoute::Pop {
                topic: "inbox".into()
            })
        );
        for method in [Method::GET, Method::POST] {
            assert_eq!(
                PaidRoute::of(&method, "/v1/queue/in%20box/stream"),
                Some(PaidRoute::Stream {
                    topic: "in box".into()
                })
            );
        }
        assert_eq!(PaidRoute::of(&Method::PUT, "/v1/queue/inbox/stream"), None);
        assert_eq!(
            PaidRoute::of(&Method::GET, "/v1/retrieve/%FF"),
            Some(PaidRoute::Undecodable)
        );
        assert_eq!(
            PaidRoute::of(&Method::HEAD, "/v1/retrieve/k"),
            Some(PaidRoute::Head)
        );
        for (method, path) in [
            (Method::DELETE, "/v1/object/k"),
            (Method::GET, "/v1/store"),
            (post.clone(), "/v1/queue/inbox/ack/r"),
            (post.clone(), "/v1/auth/challenge"),
            (Method::GET, "/"),
        ] {
            assert_eq!(PaidRoute::of(&method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn keys_topics_and_waits_are_checked() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(256)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(257)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("é"));
        assert!(valid_topic("in-box_1.v2"));
        assert!(!valid_topic("in box"));
        assert!(!valid_topic(&"t".repeat(65)));
        assert_eq!(parse_wait("0", 20), Some(0));
        assert_eq!(parse_wait("20", 20), Some(20));
        for bad in ["21", "", "-1", "1.5", "x"] {
            assert_eq!(parse_wait(bad, 20), None, "{bad:?}");
        }
        assert_eq!(wait_from_query(Some("a=1&wait_seconds=5")), Some("5"));
        assert_eq!(wait_from_query(Some("wait=5")), None);
    }
}
