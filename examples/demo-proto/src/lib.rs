//! `demo.Shop` (`proto/demo.proto`) as tonic generates it (the messages,
//! `shop_client::ShopClient`, `shop_server::{Shop, ShopServer}`), and [`DemoShop`], the shop
//! the tonic quickstart and tower-paywall's gRPC tests serve.

#![allow(clippy::pedantic, missing_docs)]

use std::pin::Pin;

use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

tonic::include_proto!("demo");

/// The most quotes one `Watch` sends.
pub const MAX_QUOTES: u32 = 100;

/// What the shop sells.
pub const ITEMS: [&str; 3] = ["a book", "a map", "a lamp"];

/// The shop: `Buy` answers `here is <item>`, `Browse` lists [`ITEMS`], `Watch` sends `count`
/// quotes (at most [`MAX_QUOTES`]), `Upload` counts what it was sent. It knows nothing of
/// payments: the layer in front of it does.
#[derive(Clone, Copy, Debug, Default)]
pub struct DemoShop;

#[tonic::async_trait]
impl shop_server::Shop for DemoShop {
    async fn buy(&self, request: Request<BuyRequest>) -> Result<Response<BuyReply>, Status> {
        let item = request.into_inner().item;
        Ok(Response::new(BuyReply {
            note: format!("here is {item}"),
        }))
    }

    async fn browse(&self, _: Request<BrowseRequest>) -> Result<Response<Catalog>, Status> {
        Ok(Response::new(Catalog {
            items: ITEMS.iter().map(|item| (*item).to_owned()).collect(),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<Quote, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let WatchRequest { item, count } = request.into_inner();
        if count > MAX_QUOTES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_QUOTES} quotes"
            )));
        }
        let quotes = (0..u64::from(count)).map(move |n| {
            Ok(Quote {
                item: item.clone(),
                price: 100 + n,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(quotes))))
    }

    async fn upload(&self, request: Request<Streaming<Chunk>>) -> Result<Response<Stored>, Status> {
        let mut chunks = request.into_inner();
        let mut stored = Stored::default();
        while let Some(chunk) = chunks.next().await {
            stored.bytes += chunk?.data.len() as u64;
            stored.chunks += 1;
        }
        Ok(Response::new(stored))
    }
}
