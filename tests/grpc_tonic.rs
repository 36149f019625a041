//! `PaymentLayer` on a real tonic server, called by a real tonic client over HTTP/2 on
//! loopback (x402 `exact`, with a test-double facilitator at the HTTP-client boundary). The
//! service is written the way tonic's generated code is, over hand-written prost messages: an
//! unpaid call gets `RESOURCE_EXHAUSTED` with the offers and the status details readable from
//! the client's `Status`; a paid call (the payment in the request metadata) is served, its
//! receipt in the response metadata, and settled once; a free method is untouched.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use support::*;
use tonic::server::NamedService;
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_paywall::price::{PriceFuture, PriceRequest, Priced};
use tower_paywall::x402::PaymentRequired;
use tower_paywall::{PaymentLayer, Price};

#[derive(Clone, PartialEq, prost::Message)]
struct BuyRequest {
    #[prost(string, tag = "1")]
    item: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BuyReply {
    #[prost(string, tag = "1")]
    note: String,
}

/// The unary handler.
#[derive(Clone)]
struct Buy;

impl tonic::server::UnaryService<BuyRequest> for Buy {
    type Response = BuyReply;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<BuyReply>, tonic::Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<BuyRequest>) -> Self::Future {
        let item = request.into_inner().item;
        Box::pin(async move {
            Ok(tonic::Response::new(BuyReply {
                note: format!("here is {item}"),
            }))
        })
    }
}

/// `demo.Shop` with `Buy` (priced) and `Browse` (free), routed as generated code routes.
#[derive(Clone)]
struct Shop;

impl NamedService for Shop {
    const NAME: &'static str = "demo.Shop";
}

impl Service<http::Request<tonic::body::Body>> for Shop {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<BuyReply, BuyRequest>::default());
            Ok(grpc.unary(Buy, request).await)
        })
    }
}

/// `Buy` costs the price; `Browse` is free.
fn pricing(request: &PriceRequest<'_>) -> PriceFuture {
    let priced = match request.uri().path() {
        "/demo.Shop/Browse" => Priced::Free,
        _ => Priced::Charge(Price::parse(PRICE).unwrap()),
    };
    PriceFuture::ready(priced)
}

/// The shop behind the layer on a loopback port, and a channel to it.
async fn shop(facilitator: &Arc<TestFacilitator>) -> Channel {
    let layer = PaymentLayer::builder()
        .scheme(exact(facilitator))
        .pricing(pricing)
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(Shop)
            .serve(address),
    );
    let url = format!("http://{address}");
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(url.clone()).unwrap().connect().await {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the tonic server did not start");
}

async fn buy(
    channel: &Channel,
    method: &'static str,
    payment: Option<http::HeaderValue>,
) -> Result<tonic::Response<BuyReply>, tonic::Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(BuyRequest {
        item: "a book".into(),
    });
    if let Some(payment) = payment {
        request.metadata_mut().insert(
            "payment-signature",
            payment.to_str().unwrap().parse().unwrap(),
        );
    }
    client
        .unary(
            request,
            PathAndQuery::from_static(method),
            ProstCodec::<BuyRequest, BuyReply>::default(),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_sees_the_payment_status_pays_and_is_served_once() {
    let facilitator = Arc::new(TestFacilitator::default());
    let channel = shop(&facilitator).await;

    // Unpaid: the status a tonic client reads, with the offers in its metadata.
    let status = buy(&channel, "/demo.Shop/Buy", None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "Payment Required");
    let offers = status
        .metadata()
        .get("payment-required")
        .expect("the offers");
    let required: PaymentRequired =
        decode_header(&http::HeaderValue::from_str(offers.to_str().unwrap()).unwrap());
    assert_eq!(required.accepts, vec![requirements(PRICE_ATOMIC)]);
    assert!(!status.details().is_empty(), "google.rpc.Status details");

    // Paid: served, with the receipt in the response metadata, settled once.
    let payment = payment(&PaymentSpec::default());
    let reply = buy(&channel, "/demo.Shop/Buy", Some(payment.clone()))
        .await
        .unwrap();
    assert!(reply.metadata().get("payment-response").is_some());
    assert_eq!(reply.get_ref().note, "here is a book");
    assert_eq!(facilitator.settle_calls(), 1);

    // The same payment again (its answer was lost): the recorded answer, no second settlement.
    let mut again = None;
    for _ in 0..50 {
        match buy(&channel, "/demo.Shop/Buy", Some(payment.clone())).await {
            Ok(reply) => {
                again = Some(reply);
                break;
            }
            Err(status) if status.code() == tonic::Code::Aborted => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    assert_eq!(
        again.expect("the recorded answer").get_ref().note,
        "here is a book"
    );
    assert_eq!(facilitator.settle_calls(), 1);

    // A refused payment: its reason in the message.
    facilitator.set_verify(VerifyMode::Invalid(
        "invalid_exact_stellar_payload_bad_signature",
    ));
    let other = payment_with_nonce(43);
    let status = buy(&channel, "/demo.Shop/Buy", Some(other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "Payment Required: invalid_exact_stellar_payload_bad_signature"
    );

    // The free method: untouched.
    let reply = buy(&channel, "/demo.Shop/Browse", None).await.unwrap();
    assert_eq!(reply.get_ref().note, "here is a book");
    assert!(reply.metadata().get("payment-response").is_none());
}

fn payment_with_nonce(nonce: i64) -> http::HeaderValue {
    payment(&PaymentSpec {
        nonce,
        ..PaymentSpec::default()
    })
}
