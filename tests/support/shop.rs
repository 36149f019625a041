//! `demo.Shop` (`examples/demo-proto`, as tonic generates it) behind a layer on a loopback
//! port, and its pricing: every method costs [`super::PRICE`] but `Browse`, which is free.

use tonic::transport::{Channel, Server};
use tower_paywall::price::{PriceFuture, PriceRequest, Priced};
use tower_paywall::{PaymentLayer, Price};

// Each test uses what it needs of the generated code.
#[allow(unused_imports)]
pub use demo_proto::{shop_client::ShopClient, shop_server::ShopServer, *};

/// `Browse` is free; every other method costs [`super::PRICE`].
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
            .add_service(ShopServer::new(DemoShop))
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
