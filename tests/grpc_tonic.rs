//! `PaymentLayer` on a real tonic server, called by a real tonic client over HTTP/2 on
//! loopback (x402 `exact`, with a test-double facilitator at the HTTP-client boundary), the
//! service `demo.Shop` as tonic generates it (`examples/demo-proto`): an
//! unpaid call gets `RESOURCE_EXHAUSTED` with the offers and the status details readable from
//! the client's `Status`; a paid call (the payment in the request metadata) is served, its
//! receipt in the response metadata, and settled once; a free method is untouched.

mod support;

use std::sync::Arc;

use support::shop::{BrowseRequest, BuyReply, BuyRequest, ShopClient};
use support::*;
use tonic::transport::Channel;
use tower_paywall::PaymentLayer;
use tower_paywall::x402::PaymentRequired;

async fn shop(facilitator: &Arc<TestFacilitator>) -> Channel {
    let layer = PaymentLayer::builder()
        .scheme(exact(facilitator))
        .pricing(support::shop::pricing)
        .build()
        .unwrap();
    support::shop::shop(layer).await.0
}

async fn buy(
    channel: &Channel,
    payment: Option<http::HeaderValue>,
) -> Result<tonic::Response<BuyReply>, tonic::Status> {
    let mut request = tonic::Request::new(BuyRequest {
        item: "a book".into(),
    });
    if let Some(payment) = payment {
        request.metadata_mut().insert(
            "payment-signature",
            payment.to_str().unwrap().parse().unwrap(),
        );
    }
    ShopClient::new(channel.clone()).buy(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_sees_the_payment_status_pays_and_is_served_once() {
    let facilitator = Arc::new(TestFacilitator::default());
    let channel = shop(&facilitator).await;

    // Unpaid: the status a tonic client reads, with the offers in its metadata.
    let status = buy(&channel, None).await.unwrap_err();
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
    let reply = buy(&channel, Some(payment.clone())).await.unwrap();
    assert!(reply.metadata().get("payment-response").is_some());
    assert_eq!(reply.get_ref().note, "here is a book");
    assert_eq!(facilitator.settle_calls(), 1);

    // The same payment again (its answer was lost): the recorded answer, no second settlement.
    let mut again = None;
    for _ in 0..50 {
        match buy(&channel, Some(payment.clone())).await {
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
    let status = buy(&channel, Some(other)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "Payment Required: invalid_exact_stellar_payload_bad_signature"
    );

    // The free method: untouched.
    let reply = ShopClient::new(channel.clone())
        .browse(BrowseRequest {})
        .await
        .unwrap();
    assert_eq!(reply.get_ref().items, demo_proto::ITEMS);
    assert!(reply.metadata().get("payment-response").is_none());
}

fn payment_with_nonce(nonce: i64) -> http::HeaderValue {
    payment(&PaymentSpec {
        nonce,
        ..PaymentSpec::default()
    })
}
