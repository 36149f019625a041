//! Selling a gRPC API per call, and buying from it, on the offline sandbox ledger.
//!
//! The service is `demo.Shop` (`examples/demo-proto/proto/demo.proto`, compiled by protox at
//! build time: no `protoc` needed). One `PaymentLayer` in front of it speaks x402 `exact` (our
//! facilitator) and MPP `charge`, and prices each method by its path: `Buy` and `Upload`
//! 0.01 USDC, `Watch` (server streaming) 0.05, `Browse` free. The buyer is tonic's generated
//! client over a `Channel` with `PayingGrpcLayer`: it pays what it is asked, within its policy.
//!
//! `cargo run --example tonic_quickstart --features sandbox,client`
//!
//! With `-- --serve` the shop keeps serving on `127.0.0.1:50051` afterwards (`GRPC_ADDRESS` to
//! move it), for any gRPC client: an unpaid call gets `RESOURCE_EXHAUSTED` with the offers in
//! its metadata.

use std::sync::Arc;

use demo_proto::shop_client::ShopClient;
use demo_proto::shop_server::ShopServer;
use demo_proto::{BrowseRequest, BuyRequest, Chunk, DemoShop, WatchRequest};
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tower_paywall::client::{PayingClient, Payment, Policy};
use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret, StellarCharge};
use tower_paywall::price::{PriceFuture, PriceRequest, Priced};
use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::scheme::Intent;
use tower_paywall::x402::{Exact, LocalFacilitator};
use tower_paywall::{PaymentLayer, Price};

/// The price of a call, by its method (`/package.Service/Method`).
fn price_per_method(request: &PriceRequest<'_>) -> PriceFuture {
    let price = match request.uri().path() {
        "/demo.Shop/Browse" => return PriceFuture::ready(Priced::Free),
        "/demo.Shop/Watch" => "0.05",
        _ => "0.01",
    };
    PriceFuture::ready(match Price::parse(price) {
        Ok(price) => Priced::Charge(price.with_description("demo.Shop")),
        Err(_) => Priced::Free,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|arg| arg == "--serve");
    let address = std::env::var("GRPC_ADDRESS").unwrap_or_else(|_| "127.0.0.1:50051".into());

    // The ledger, offline, with funded accounts.
    let sandbox = Sandbox::start(SandboxConfig::default())?;
    let network = sandbox.network().clone();
    let seller = sandbox.funded_keypair().await?.address();
    let fee_payer = sandbox.funded_keypair().await?;
    let buyer = sandbox.funded_keypair().await?;

    // The seller: one layer, two protocols, a price per method.
    let facilitator =
        LocalFacilitator::builder(sandbox.clone(), network.clone(), fee_payer).build()?;
    let secret = std::env::var("CHALLENGE_SECRET")
        .unwrap_or_else(|_| "a demo secret: set CHALLENGE_SECRET in production".into());
    let keys = ChallengeKeys::new(ChallengeSecret::new(secret.into_bytes())?);
    let layer = PaymentLayer::builder()
        .scheme(Exact::builder(network.clone(), seller, facilitator).build()?)
        .scheme(
            StellarCharge::builder(network.clone(), seller, Arc::new(sandbox.clone()), keys)
                .realm("demo.Shop")
                .build()?,
        )
        .pricing(price_per_method)
        .build()?;
    let incoming = TcpIncoming::bind(address.parse()?)?;
    let url = format!("http://{}", incoming.local_addr()?);
    let server = tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(ShopServer::new(DemoShop))
            .serve_with_incoming(incoming),
    );
    println!("demo.Shop     {url}  (Buy 0.01, Watch 0.05, Upload 0.01 USDC; Browse free)");

    // The buyer: tonic's generated client over a channel that pays, at most 0.10 USDC a call
    // and 1 USDC in all.
    let client = PayingClient::builder(buyer.clone(), Arc::new(sandbox.clone()), network.clone())
        .policy(
            Policy::default()
                .max_per_payment(1_000_000)
                .budget(10_000_000),
        )
        .build()?;
    let endpoint = Endpoint::from_shared(url)?;
    let channel = tower::ServiceBuilder::new()
        .layer(client.grpc_layer().origin(endpoint.uri()))
        .service(endpoint.connect().await?);
    let mut shop = ShopClient::new(channel);
    let (asset, holder) = (sandbox.usdc(), buyer.address());
    let usdc = || sandbox.balance(&asset, &holder);
    let start = usdc().await?;

    let catalog = shop.browse(BrowseRequest {}).await?;
    println!(
        "Browse        {:?}  {}",
        catalog.get_ref().items,
        paid(catalog.extensions().get())
    );

    let reply = shop
        .buy(BuyRequest {
            item: "a book".into(),
        })
        .await?;
    println!(
        "Buy           {:?}  {}",
        reply.get_ref().note,
        paid(reply.extensions().get())
    );

    // The same account paying with MPP `charge` instead (a client of its own: its own budget).
    let mpp = PayingClient::builder(
        buyer.clone(),
        Arc::new(sandbox.clone()),
        sandbox.network().clone(),
    )
    .policy(
        Policy::default()
            .prefer([Intent::MPP_CHARGE])
            .max_per_payment(1_000_000),
    )
    .build()?;
    let mut mpp_shop = ShopClient::new(
        tower::ServiceBuilder::new()
            .layer(mpp.grpc_layer())
            .service(endpoint.connect().await?),
    );
    let reply = mpp_shop
        .buy(BuyRequest {
            item: "a map".into(),
        })
        .await?;
    println!(
        "Buy (MPP)     {:?}  {}",
        reply.get_ref().note,
        paid(reply.extensions().get())
    );

    let watch = shop
        .watch(WatchRequest {
            item: "a lamp".into(),
            count: 3,
        })
        .await?;
    println!("Watch         {}", paid(watch.extensions().get()));
    let mut quotes = watch.into_inner();
    while let Some(quote) = quotes.next().await {
        let quote = quote?;
        println!("                {} at {} cents", quote.item, quote.price);
    }

    let chunks = tokio_stream::iter((0..3).map(|n| Chunk {
        data: vec![n; 1024],
    }));
    let stored = shop.upload(chunks).await?;
    println!(
        "Upload        {} bytes in {} chunks  {}",
        stored.get_ref().bytes,
        stored.get_ref().chunks,
        paid(stored.extensions().get())
    );

    // What left the buyer's account is what the two clients paid, each call once.
    let spent = start - usdc().await?;
    println!(
        "the buyer paid {} USDC in all ({} + {} atomic units, as its clients counted)",
        spent as f64 / 1e7,
        client.spent(),
        mpp.spent()
    );
    if spent != client.spent() + mpp.spent() {
        return Err("the ledger and the clients disagree".into());
    }
    if serve {
        println!("serving on {}; ctrl-c to stop", endpoint.uri());
        server.await??;
    }
    Ok(())
}

/// What was paid for an answer.
fn paid(payment: Option<&Payment>) -> String {
    match payment {
        Some(payment) => format!("paid {} with {}", payment.amount, payment.intent),
        None => "free".into(),
    }
}
