//! The layer's `tracing` spans: `payment` around a paid request, `settle` around its settlement,
//! with the stable fields the layer docs list, filled in as the flow learns them, and nothing
//! of the credential in them. A capturing subscriber layer reads them; the facilitator is the
//! test double of `support`.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use support::*;
use tower_paywall::{PaymentLayer, Price};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

type Fields = BTreeMap<String, String>;

/// Every span opened, by id: its name and the fields recorded on it.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(u64, String, Fields)>>>);

impl Spans {
    fn named(&self, name: &str) -> Vec<Fields> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span, _)| span == name)
            .map(|(_, _, fields)| fields.clone())
            .collect()
    }
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attributes.record(&mut Visitor(&mut fields));
        let name = attributes.metadata().name().to_owned();
        self.0.lock().unwrap().push((id.into_u64(), name, fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, _, fields)) = spans
            .iter_mut()
            .rev()
            .find(|(span, ..)| *span == id.into_u64())
        {
            values.record(&mut Visitor(fields));
        }
    }
}

fn fields(pairs: &[(&str, String)]) -> Fields {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

#[tokio::test]
async fn a_paid_request_is_traced_with_its_payment_and_settlement() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let facilitator = Arc::new(TestFacilitator::default());
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(layer);
    let spec = PaymentSpec::default();
    let header = payment(&spec);
    let answer = send(&app, req("/paid", Some(header.clone()))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let settled: tower_paywall::x402::SettleResponse =
        decode_header(&answer.headers["payment-response"]);
    let payer = payer(spec.seed).address().to_string();
    let paid = |outcome: &str, tx: Option<&str>| {
        let mut expected = fields(&[
            ("intent", "x402/exact".into()),
            ("payer", payer.clone()),
            ("amount", PRICE_ATOMIC.to_string()),
            ("asset", usdc().to_string()),
            ("outcome", outcome.into()),
        ]);
        if let Some(tx) = tx {
            expected.insert("tx".into(), tx.into());
        }
        expected
    };
    assert_eq!(
        spans.named("payment"),
        vec![paid("settled", Some(&settled.transaction))]
    );
    assert_eq!(
        spans.named("settle"),
        vec![fields(&[
            ("outcome", "settled".into()),
            ("tx", settled.transaction.clone())
        ])]
    );

    // The retry is replayed; a refused payment says so; a free request has no span.
    send(&app, req("/paid", Some(header.clone()))).await;
    facilitator.set_verify(VerifyMode::Invalid(
        "invalid_exact_stellar_payload_malformed",
    ));
    let refused = PaymentSpec {
        nonce: 43,
        ..Default::default()
    };
    send(&app, req("/paid", Some(payment(&refused)))).await;
    let payments = spans.named("payment");
    assert_eq!(payments.len(), 3);
    let mut replayed = paid("replayed", None);
    replayed.remove("asset");
    assert_eq!(payments[1], replayed, "a replay is never verified again");
    let mut refused = paid("refused", None);
    refused.remove("asset");
    assert_eq!(payments[2], refused);
    // Nothing of the credential is ever a field.
    let credential = header.to_str().unwrap();
    for (_, _, fields) in spans.0.lock().unwrap().iter() {
        for value in fields.values() {
            assert!(!credential.contains(value.as_str()) || value.len() < 16);
        }
    }
}
