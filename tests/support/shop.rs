//! A tonic service written the way tonic's generated code is, over hand-written prost
//! messages (no proto build): `demo.Shop` with `Buy` (priced by [`pricing`]) and `Browse`
//! (free), both answering `BuyReply { note: "here is <item>" }`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_paywall::price::{PriceFuture, PriceRequest, Priced};
use tower_paywall::{PaymentLayer, Price};

#[derive(Clone, PartialEq, prost::Message)]
pub struct BuyRequest {
    #[prost(string, tag = "1")]
    pub item: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BuyReply {
    #[prost(string, tag = "1")]
    pub note: String,
}

/// The unary handler.
#[derive(Clone)]
pub struct Buy;

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
pub struct Shop;

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
pub fn pricing(request: &PriceRequest<'_>) -> PriceFuture {
    let priced = match request.uri().path() {
        "/demo.Shop/Browse" => Priced::Free,
        _ => Priced::Charge(Price::parse(super::PRICE).unwrap()),
    };
    PriceFuture::ready(priced)
}

/// The shop behind `layer` on a loopback port: a channel to it, and its address.
pub async fn shop(layer: PaymentLayer) -> (Channel, std::net::SocketAddr) {
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
            return (channel, address);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the tonic server did not start");
}
