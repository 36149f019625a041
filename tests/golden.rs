//! Pure-Rust checks against a payment the official TypeScript client made
//! (`tests/data/golden/`): our codecs read it, our structural checks accept it, and the payer's
//! signature verifies over the payload we compute.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tower_paywall::stellar::xdr::TransactionEnvelope;
use tower_paywall::stellar::{
    Address, NULL_ACCOUNT, Network, address_credentials, decode_envelope, sac_transfer,
    verify_authorization,
};
use tower_paywall::x402::{PaymentPayload, header};

struct Golden {
    payer: Address,
    pay_to: Address,
    payload: PaymentPayload,
}

fn golden() -> Golden {
    let text = include_str!("data/golden/x402-fetch-payment.json");
    let golden: serde_json::Value = serde_json::from_str(text).unwrap();
    let value: http::HeaderValue = golden["paymentSignature"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Golden {
        payer: golden["payer"].as_str().unwrap().parse().unwrap(),
        pay_to: golden["payTo"].as_str().unwrap().parse().unwrap(),
        payload: header::decode_payment(&value).unwrap(),
    }
}

#[test]
fn the_official_client_payload_decodes_as_v2() {
    let golden = golden();
    let payload = &golden.payload;
    assert_eq!(payload.x402_version(), 2);
    let accepted = payload.accepted();
    assert_eq!(accepted.scheme, "exact");
    assert_eq!(accepted.network, "stellar:testnet");
    assert_eq!(accepted.amount, "100000");
    assert_eq!(accepted.pay_to, golden.pay_to.to_string());
    assert_eq!(accepted.extra["areFeesSponsored"], true);
    // The raw JSON is kept byte for byte: the client's key order survives.
    let raw = payload.raw().get();
    let decoded = String::from_utf8(
        STANDARD
            .decode(
                serde_json::from_str::<serde_json::Value>(include_str!(
                    "data/golden/x402-fetch-payment.json"
                ))
                .unwrap()["paymentSignature"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(raw, decoded.trim());
    assert!(raw.starts_with(r#"{"x402Version":2,"payload":"#));
}

#[test]
fn the_official_client_transaction_has_the_documented_shape() {
    let golden = golden();
    let envelope = decode_envelope(golden.payload.transaction().unwrap()).unwrap();
    let TransactionEnvelope::Tx(v1) = &envelope else {
        panic!("a v1 envelope")
    };
    assert!(v1.signatures.is_empty(), "no envelope signatures");
    assert_eq!(v1.tx.seq_num.0, 1, "NULL_ACCOUNT sequence 0 + 1");
    let transfer = sac_transfer(&envelope).unwrap();
    assert_eq!(transfer.tx_source, NULL_ACCOUNT);
    assert_eq!(transfer.contract, Network::testnet().usdc().unwrap());
    assert_eq!(
        (transfer.from, transfer.to, transfer.amount),
        (golden.payer, golden.pay_to, 100_000)
    );
    assert!(
        transfer.fee > 100,
        "the fee includes the simulated resource fee"
    );
}

#[test]
fn the_official_client_signature_verifies_with_our_payload() {
    let golden = golden();
    let envelope = decode_envelope(golden.payload.transaction().unwrap()).unwrap();
    let transfer = sac_transfer(&envelope).unwrap();
    let entry = transfer.payer_authorization().unwrap();
    let credentials = address_credentials(entry).unwrap();
    assert!(credentials.signature_expiration_ledger > 0);
    let signers = verify_authorization(&Network::testnet().id(), entry).unwrap();
    assert_eq!(signers, vec![golden.payer.ed25519_key().unwrap()]);
    // Another network's id does not verify.
    assert!(verify_authorization(&Network::pubnet().id(), entry).is_err());
}
