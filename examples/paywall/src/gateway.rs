//! The gateway: routes a request by the [routes file](crate::routes), prices it, and sends
//! it through the [`PaymentLayer`] of the route's intents to the [upstream](crate::upstream).
//!
//! One layer is built for each set of intents the routes use, over one payment store, at
//! start; a route's price, description and settlement order come from the routes file the
//! request was routed with, so [`Gateway::reload`] swaps the file in one step: a request
//! under way keeps the file it started with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tower_layer::Layer;
use tower_paywall::BoxFuture;
use tower_paywall::layer::{PaymentBody, PaymentEvent, PaymentHooks};
use tower_paywall::price::{Amount, PriceFuture, PriceRequest, Priced};
use tower_paywall::seller::Seller;
use tower_paywall::{
    PaymentLayer, PaymentScheme, PaymentService, PaymentStore, Price, SettlementOrder,
};

use crate::discovery;
use crate::routes::{Intent, PriceRule, Route, Routes, Settle, Unpriced, routed_path};
use crate::upstream::{Base, Target, Upstream, UpstreamBody, problem, problem_bytes};

/// What the gateway answers with: a paid route's answer through its layer, or a free one's
/// (and the gateway's own answers) as they are.
pub type GatewayBody = Either<PaymentBody<UpstreamBody>, UpstreamBody>;

/// The payment side of a gateway: the schemes it may offer (with their network, payee and
/// asset), where payments are recorded, and the URL it is reached at.
pub struct Payments {
    /// The schemes.
    pub seller: Seller,
    /// Where payments are recorded (shared by every route).
    pub store: Arc<dyn PaymentStore>,
    /// The gateway's public URL (x402's `resource`, the discovery documents).
    pub public_url: String,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("seller", &self.seller)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Why a gateway could not start, or a routes file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A route offers an intent this gateway is not set up for.
    #[error("route {number} ({path}) offers {intent}, which this gateway is not set up for{hint}")]
    Intent {
        /// The route's number, from 1.
        number: usize,
        /// Its path.
        path: String,
        /// The intent.
        intent: &'static str,
        /// What to set.
        hint: &'static str,
    },
    /// The upstream is not a URL the gateway can send to.
    #[error("{0}")]
    Upstream(String),
    /// A layer refused its settings.
    #[error("payment layer: {0}")]
    Layer(String),
}

/// A routes file, ready to serve: the routes, and the discovery documents made from them.
pub(crate) struct Table {
    pub(crate) routes: Routes,
    pub(crate) base: Base,
    pub(crate) openapi: Bytes,
    pub(crate) x402_index: Bytes,
    pub(crate) x402_list: Bytes,
}

impl Table {
    /// `routes`, checked against what `payments` can offer, with their discovery documents.
    fn new(routes: Routes, payments: &Payments) -> Result<Table, GatewayError> {
        let seller = &payments.seller;
        for (n, route) in routes.routes.iter().enumerate() {
            if route.price == PriceRule::Free {
                continue;
            }
            for intent in &route.intents {
                let (name, offered, hint) = match intent {
                    Intent::X402 => ("x402", seller.exact.is_some(), ""),
                    Intent::Charge => ("charge", seller.charge.is_some(), ""),
                    Intent::Channel => (
                        "channel",
                        seller.channel.is_some(),
                        " (it needs the recipient's secret key: --channel-secret)",
                    ),
                };
                if !offered {
                    return Err(GatewayError::Intent {
                        number: n + 1,
                        path: route.path.to_string(),
                        intent: name,
                        hint,
                    });
                }
            }
        }
        Ok(Table {
            base: Base::parse(&routes.upstream).map_err(GatewayError::Upstream)?,
            openapi: discovery::openapi(&routes, payments),
            x402_index: discovery::x402_index(&routes, payments),
            x402_list: discovery::x402_list(&routes, payments),
            routes,
        })
    }
}

/// A request's route, in its extensions from the gateway to the pricing.
#[derive(Clone)]
struct Routed {
    table: Arc<Table>,
    index: usize,
}

impl Routed {
    fn route(&self) -> &Route {
        &self.table.routes.routes[self.index]
    }
}

/// The gateway (cheap to clone).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    table: ArcSwap<Table>,
    /// The paid service of each set of intents, by [`mask`].
    services: Vec<Option<PaymentService<Upstream>>>,
    /// The layer with every scheme, to reconcile the payments of all of them (they share one
    /// store).
    reconciling: PaymentLayer,
    upstream: Upstream,
    payments: Payments,
}

const X402: usize = 1;
const CHARGE: usize = 2;
const CHANNEL: usize = 4;

fn mask(intents: &[Intent]) -> usize {
    intents.iter().fold(0, |mask, intent| {
        mask | match intent {
            Intent::X402 => X402,
            Intent::Charge => CHARGE,
            Intent::Channel => CHANNEL,
        }
    })
}

impl Gateway {
    /// A gateway serving `routes` to `upstream` and selling through `payments`.
    ///
    /// # Errors
    ///
    /// [`GatewayError`] when a route offers an intent `payments` has no scheme for.
    pub fn new(
        routes: Routes,
        payments: Payments,
        upstream: Upstream,
    ) -> Result<Gateway, GatewayError> {
        let seller = &payments.seller;
        let schemes = [
            (
                X402,
                seller.exact.clone().map(|s| s as Arc<dyn PaymentScheme>),
            ),
            (
                CHARGE,
                seller.charge.clone().map(|s| s as Arc<dyn PaymentScheme>),
            ),
            (
                CHANNEL,
                seller.channel.clone().map(|s| s as Arc<dyn PaymentScheme>),
            ),
        ];
        let mut services = vec![None; 8];
        let mut reconciling = None;
        for (mask, service) in services.iter_mut().enumerate().skip(1) {
            let wanted: Vec<_> = schemes.iter().filter(|(bit, _)| mask & bit != 0).collect();
            let Some(wanted) = wanted
                .iter()
                .map(|(_, scheme)| scheme.clone())
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let mut builder = PaymentLayer::builder()
                .hooks(PaymentLog)
                .shared_store(payments.store.clone())
                .public_url(payments.public_url.clone())
                .pricing(price);
            for scheme in wanted {
                builder = builder.shared_scheme(scheme);
            }
            let layer = builder
                .build()
                .map_err(|error| GatewayError::Layer(error.to_string()))?;
            *service = Some(layer.layer(upstream.clone()));
            // Masks grow, so the last built is the one with every scheme.
            reconciling = Some(layer);
        }
        let reconciling = reconciling.ok_or_else(|| GatewayError::Layer("no scheme".into()))?;
        let table = Table::new(routes, &payments)?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(table),
                services,
                reconciling,
                upstream,
                payments,
            }),
        })
    }

    /// Serves `routes` from now on: requests under way finish with the file they started with.
    ///
    /// # Errors
    ///
    /// [`GatewayError::Intent`] when a route offers an intent this gateway has no scheme
    /// for; the file served so far stays.
    pub fn reload(&self, routes: Routes) -> Result<(), GatewayError> {
        let table = Table::new(routes, &self.inner.payments)?;
        self.inner.table.store(Arc::new(table));
        Ok(())
    }

    /// The layer with every scheme the gateway offers: its
    /// [`reconciler`](PaymentLayer::reconciler) ends the payments of every route whose
    /// settlement outcome is unknown.
    pub fn reconciling_layer(&self) -> &PaymentLayer {
        &self.inner.reconciling
    }

    /// Answers one request from `remote`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<GatewayBody> {
        let table = self.inner.table.load_full();
        if let Some(document) = discovery_document(&table, request.method(), request.uri().path()) {
            return document.map(Either::Right);
        }
        let Some(path) = routed_path(request.uri().path()) else {
            return plain(problem(
                StatusCode::BAD_REQUEST,
                "the path could be read as another: no empty, . or .. segments, no encoded / or \\",
            ));
        };
        let method = request.method();
        if method
            .as_str()
            .bytes()
            .any(|byte| byte.is_ascii_lowercase())
        {
            // `get` is not `GET`, but some servers read it so.
            return plain(problem(StatusCode::BAD_REQUEST, "methods are upper case"));
        }
        let Some(index) = table.routes.position(method, &path) else {
            return plain(problem(StatusCode::NOT_FOUND, "no route sells this"));
        };
        let route = &table.routes.routes[index];
        // A path sold for some methods reaches the upstream by others only through a route
        // naming them: a catch-all for any method does not give it away (a `POST` an upstream
        // answers as its `GET`).
        if route.method.is_none() && route.price == PriceRule::Free {
            let sold_for = table.routes.sold_for(&path);
            if !sold_for.is_empty() {
                let mut refused = problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "this path is sold for other methods",
                );
                if let Ok(allow) = http::HeaderValue::try_from(sold_for.join(", ")) {
                    refused.headers_mut().insert(http::header::ALLOW, allow);
                }
                return plain(refused);
            }
        }
        // A CORS preflight of a route sold for any method is the upstream's to answer, unpaid.
        let preflight = method == Method::OPTIONS && route.method.is_none();
        let target = Target {
            base: table.base.clone(),
            remote,
        };
        if route.price == PriceRule::Free || preflight {
            return plain(self.inner.upstream.forward_to(request, &target).await);
        }
        let Some(mut service) = self.inner.services[mask(&route.intents)].clone() else {
            return plain(problem(StatusCode::INTERNAL_SERVER_ERROR, "no layer"));
        };
        let mut request = request;
        request.extensions_mut().insert(target);
        request.extensions_mut().insert(Routed {
            table: table.clone(),
            index,
        });
        match tower_service::Service::call(&mut service, request).await {
            Ok(response) => response.map(Either::Left),
            Err(never) => match never {},
        }
    }
}

fn plain(response: Response<UpstreamBody>) -> Response<GatewayBody> {
    response.map(Either::Right)
}

/// The discovery document a `GET` of `path` asks for, if it is one.
fn discovery_document(
    table: &Table,
    method: &Method,
    path: &str,
) -> Option<Response<UpstreamBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let body = match path {
        discovery::OPENAPI_PATH => &table.openapi,
        discovery::X402_INDEX_PATH => &table.x402_index,
        discovery::X402_LIST_PATH => &table.x402_list,
        _ => return None,
    };
    let mut response = Response::new(Either::Right(Full::new(body.clone())));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    Some(response)
}

/// The layers' pricing: the route the gateway found, priced by its rule.
fn price(request: &PriceRequest<'_>) -> PriceFuture {
    let Some(routed) = request.extensions().get::<Routed>() else {
        // Never: the gateway routes every request it sends through a layer.
        return PriceFuture::ready(respond(StatusCode::INTERNAL_SERVER_ERROR, "not routed"));
    };
    let route = routed.route();
    let length = match route.price {
        PriceRule::PerKib { .. } => request.content_length(),
        _ => None,
    };
    PriceFuture::ready(match route.price.price(length) {
        Ok(None) => Priced::Free,
        Ok(Some(atomic)) => match Amount::from_atomic(atomic) {
            Ok(amount) => {
                let mut price = Price::new(amount);
                if let Some(description) = &route.description {
                    price = price.with_description(description.as_str());
                }
                if route.settle == Settle::Before {
                    price = price.with_order(SettlementOrder::BeforeHandler);
                }
                Priced::Charge(price)
            }
            Err(_) => respond(StatusCode::PAYLOAD_TOO_LARGE, "the price is out of range"),
        },
        Err(Unpriced::LengthRequired) => respond(
            StatusCode::LENGTH_REQUIRED,
            "this route is priced by the body's length: send Content-Length",
        ),
        Err(Unpriced::TooLarge { max_bytes }) => respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("this route takes bodies of at most {max_bytes} bytes"),
        ),
    })
}

fn respond(status: StatusCode, detail: &str) -> Priced {
    Priced::Respond(problem_bytes(status, detail))
}

/// The layers' hooks: every payment's end, logged (target `paywall::gateway`).
struct PaymentLog;

impl PaymentHooks for PaymentLog {
    fn on_after_settle(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        let paid = &event.paid;
        tracing::info!(
            resource = event.resource.as_deref().unwrap_or_default(),
            payer = %paid.payer,
            amount = %paid.amount.atomic(),
            intent = %paid.intent,
            tx = paid.reference.as_deref().unwrap_or_default(),
            "paid"
        );
        Box::pin(async {})
    }

    fn on_settle_failure(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        tracing::warn!(
            resource = event.resource.as_deref().unwrap_or_default(),
            payer = %event.paid.payer,
            code = event.code.as_deref().unwrap_or_default(),
            "settlement refused: nothing moved"
        );
        Box::pin(async {})
    }

    fn on_settle_unknown(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        tracing::warn!(
            resource = event.resource.as_deref().unwrap_or_default(),
            payer = %event.paid.payer,
            "settlement outcome unknown: it is reconciled from the ledger"
        );
        Box::pin(async {})
    }

    fn on_reconciled(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        tracing::info!(
            payer = %event.paid.payer,
            amount = %event.paid.amount.atomic(),
            settled = event.code.is_none(),
            "payment ended from the ledger"
        );
        Box::pin(async {})
    }
}

/// The service hyper runs for each connection from `remote`.
pub fn service(
    gateway: Gateway,
    remote: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<GatewayBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<GatewayBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request| {
        let gateway = gateway.clone();
        async move { Ok(gateway.handle(request, remote).await) }
    })
}
