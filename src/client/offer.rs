//! Reading every offer of a 402: x402 (the `PAYMENT-REQUIRED` header, or a JSON body with
//! `accepts` for servers that only send that), and MPP (`WWW-Authenticate: Payment`
//! challenges of method `stellar`). Offers this client cannot pay (other methods, networks or
//! schemes, malformed entries) are skipped, never an error: the 402 may well hold another.

use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::mpp::Challenge;
use crate::scheme::Intent;
use crate::stellar::Address;
use crate::x402::{PaymentRequired, PaymentRequirements, ResourceInfo};

/// The most of a 402 body read for offers.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// One way to pay that a 402 offered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PaymentOffer {
    /// x402 `exact` on Stellar.
    X402 {
        /// The requirements, echoed as `accepted` in the payment.
        requirements: PaymentRequirements,
        /// The resource the 402 named.
        resource: Option<ResourceInfo>,
        /// Whether the offer came in the `PAYMENT-REQUIRED` header (answer with
        /// `PAYMENT-SIGNATURE`) or only in the body (answer with `X-PAYMENT`).
        in_header: bool,
    },
    /// MPP `charge` of method `stellar`.
    MppCharge {
        /// The challenge, echoed in the credential.
        challenge: Challenge,
        /// Its request.
        request: ChargeRequest,
    },
    /// MPP `channel` of method `stellar`.
    MppChannel {
        /// The challenge, echoed in the credential.
        challenge: Challenge,
        /// Its request.
        request: ChannelRequest,
    },
}

/// What an MPP `charge` challenge asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The amount, in the currency's atomic units.
    pub amount: i128,
    /// The token contract.
    pub currency: Address,
    /// Who is paid.
    pub recipient: Address,
    /// The network (a CAIP-2 id).
    pub network: String,
    /// Whether the server pays the fees (the client signs its authorization only).
    pub fee_payer: bool,
    /// The credential types the server takes; empty when it did not say.
    pub credential_types: Vec<String>,
}

/// What an MPP `channel` challenge asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRequest {
    /// The price of this request, in atomic units.
    pub amount: i128,
    /// The channel contract.
    pub channel: Address,
    /// The network (a CAIP-2 id).
    pub network: String,
    /// The highest cumulative amount the server holds for the channel.
    pub cumulative: i128,
    /// `unitType`: the response is metered, and `amount` is the price of one of these units
    /// (an SSE `event` …); `None` for a price per request.
    pub unit: Option<String>,
}

impl PaymentOffer {
    /// The offer's intent.
    pub fn intent(&self) -> Intent {
        match self {
            PaymentOffer::X402 { .. } => Intent::X402_EXACT,
            PaymentOffer::MppCharge { .. } => Intent::MPP_CHARGE,
            PaymentOffer::MppChannel { .. } => Intent::MPP_CHANNEL,
        }
    }

    /// The network the offer pays on (a CAIP-2 id).
    pub fn network(&self) -> &str {
        match self {
            PaymentOffer::X402 { requirements, .. } => &requirements.network,
            PaymentOffer::MppCharge { request, .. } => &request.network,
            PaymentOffer::MppChannel { request, .. } => &request.network,
        }
    }

    /// The amount asked, in atomic units; `None` when the offer's amount is not a number.
    pub fn amount(&self) -> Option<i128> {
        match self {
            PaymentOffer::X402 { requirements, .. } => requirements.amount.parse().ok(),
            PaymentOffer::MppCharge { request, .. } => Some(request.amount),
            PaymentOffer::MppChannel { request, .. } => Some(request.amount),
        }
    }

    /// The asset paid; for a channel, `None` (the channel's token, fixed when it was opened).
    pub fn asset(&self) -> Option<String> {
        match self {
            PaymentOffer::X402 { requirements, .. } => Some(requirements.asset.clone()),
            PaymentOffer::MppCharge { request, .. } => Some(request.currency.to_string()),
            PaymentOffer::MppChannel { .. } => None,
        }
    }
}

/// Every offer of a 402 this client understands, in the server's order (x402 first, as the
/// header lists them, then the MPP challenges).
pub fn read_offers(headers: &HeaderMap, body: &[u8]) -> Vec<PaymentOffer> {
    let mut offers = x402_offers(headers, body);
    if let Ok(challenges) = Challenge::from_headers(headers) {
        offers.extend(challenges.into_iter().filter_map(mpp_offer));
    }
    offers
}

fn x402_offers(headers: &HeaderMap, body: &[u8]) -> Vec<PaymentOffer> {
    let from_header = headers
        .get(crate::x402::header::PAYMENT_REQUIRED)
        .and_then(|value| crate::x402::header::decode::<PaymentRequired>(value.as_bytes()).ok());
    if let Some(required) = from_header {
        return required
            .accepts
            .into_iter()
            .filter(is_stellar_exact)
            .map(|requirements| PaymentOffer::X402 {
                requirements,
                resource: Some(required.resource.clone()),
                in_header: true,
            })
            .collect();
    }
    body_offers(body)
}

/// Offers of a JSON body `{"accepts": [...]}` (a v1-style 402): each entry read leniently
/// (`maxAmountRequired` for `amount`, a `resource` URL inside the entry).
fn body_offers(body: &[u8]) -> Vec<PaymentOffer> {
    if body.len() > MAX_BODY {
        return Vec::new();
    }
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let top_resource = root
        .get("resource")
        .and_then(|resource| serde_json::from_value::<ResourceInfo>(resource.clone()).ok());
    let Some(Value::Array(accepts)) = root.get("accepts") else {
        return Vec::new();
    };
    accepts
        .iter()
        .filter_map(|entry| {
            let Value::Object(fields) = entry else {
                return None;
            };
            let requirements = lenient_requirements(fields)?;
            let resource = top_resource.clone().or_else(|| {
                let url = fields.get("resource")?.as_str()?.to_owned();
                Some(ResourceInfo {
                    url,
                    description: None,
                    mime_type: None,
                })
            });
            Some(PaymentOffer::X402 {
                requirements,
                resource,
                in_header: false,
            })
        })
        .filter(|offer| match offer {
            PaymentOffer::X402 { requirements, .. } => is_stellar_exact(requirements),
            _ => false,
        })
        .collect()
}

fn lenient_requirements(fields: &Map<String, Value>) -> Option<PaymentRequirements> {
    let text = |key: &str| fields.get(key)?.as_str().map(str::to_owned);
    let amount = text("amount").or_else(|| text("maxAmountRequired"))?;
    Some(PaymentRequirements {
        scheme: text("scheme")?,
        network: text("network")?,
        amount,
        asset: text("asset")?,
        pay_to: text("payTo")?,
        max_timeout_seconds: fields.get("maxTimeoutSeconds")?.as_u64()?,
        extra: match fields.get("extra") {
            Some(Value::Object(extra)) => extra.clone(),
            _ => Map::new(),
        },
    })
}

fn is_stellar_exact(requirements: &PaymentRequirements) -> bool {
    requirements.scheme == "exact" && is_stellar(&requirements.network)
}

fn mpp_offer(challenge: Challenge) -> Option<PaymentOffer> {
    if challenge.method != "stellar" {
        return None;
    }
    let request = challenge.request_json().ok()?;
    match challenge.intent.as_str() {
        "charge" => {
            let request = charge_request(request)?;
            Some(PaymentOffer::MppCharge { challenge, request })
        }
        "channel" => {
            let request = channel_request(request)?;
            Some(PaymentOffer::MppChannel { challenge, request })
        }
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCharge {
    amount: String,
    currency: String,
    recipient: String,
    #[serde(default)]
    method_details: ChargeDetails,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChargeDetails {
    network: Option<String>,
    #[serde(default)]
    fee_payer: bool,
    #[serde(default)]
    credential_types: Vec<String>,
}

fn charge_request(request: Map<String, Value>) -> Option<ChargeRequest> {
    let wire: WireCharge = serde_json::from_value(Value::Object(request)).ok()?;
    // The official clients take an absent network as testnet, and nothing but CAIP-2 ids.
    let network = wire
        .method_details
        .network
        .unwrap_or_else(|| "stellar:testnet".to_owned());
    Some(ChargeRequest {
        network: Some(network).filter(|network| is_stellar(network))?,
        amount: atomic(&wire.amount)?,
        currency: wire.currency.parse().ok()?,
        recipient: wire.recipient.parse().ok()?,
        fee_payer: wire.method_details.fee_payer,
        credential_types: wire.method_details.credential_types,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireChannel {
    amount: String,
    channel: String,
    method_details: ChannelDetails,
    #[serde(default)]
    unit_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelDetails {
    network: String,
    #[serde(default)]
    cumulative_amount: Option<String>,
}

fn channel_request(request: Map<String, Value>) -> Option<ChannelRequest> {
    let wire: WireChannel = serde_json::from_value(Value::Object(request)).ok()?;
    let cumulative = match wire.method_details.cumulative_amount.as_deref() {
        None => 0,
        Some(text) => atomic(text)?,
    };
    Some(ChannelRequest {
        amount: atomic(&wire.amount)?,
        channel: wire.channel.parse().ok().filter(Address::is_contract)?,
        network: Some(wire.method_details.network).filter(|network| is_stellar(network))?,
        cumulative,
        unit: wire.unit_type,
    })
}

/// A CAIP-2 id of the Stellar namespace.
fn is_stellar(network: &str) -> bool {
    network
        .strip_prefix("stellar:")
        .is_some_and(|reference| !reference.is_empty())
}

/// A non-negative base-unit integer, digits only.
fn atomic(text: &str) -> Option<i128> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::{ChallengeKeys, ChallengeSecret};
    use http::HeaderValue;
    use serde_json::json;

    const USDC: &str = "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA";
    const PAY_TO: &str = "GCATS5YOVB6ROX2WUNKGNQ2MP3GMXDMKSG2O4N5CLX3A6W4PZGZZI55U";

    fn entry(scheme: &str, network: &str) -> Value {
        json!({"scheme": scheme, "network": network, "amount": "1000", "asset": USDC,
               "payTo": PAY_TO, "maxTimeoutSeconds": 60, "extra": {"areFeesSponsored": true}})
    }

    #[test]
    fn reads_x402_offers_from_the_header_and_skips_what_it_cannot_pay() {
        let required = json!({"x402Version": 2, "resource": {"url": "http://a/b"},
            "accepts": [entry("exact", "eip155:8453"), entry("upto", "stellar:testnet"),
                        entry("exact", "stellar:testnet")]});
        let mut headers = HeaderMap::new();
        headers.insert(
            crate::x402::header::PAYMENT_REQUIRED,
            crate::x402::header::encode(&required).unwrap(),
        );
        let offers = read_offers(&headers, b"not json");
        assert_eq!(offers.len(), 1);
        let PaymentOffer::X402 {
            requirements,
            resource,
            in_header,
        } = &offers[0]
        else {
            panic!("an x402 offer");
        };
        assert_eq!(requirements.network, "stellar:testnet");
        assert_eq!(resource.as_ref().unwrap().url, "http://a/b");
        assert!(in_header);
        assert_eq!(offers[0].amount(), Some(1000));
    }

    #[test]
    fn reads_a_body_only_402_leniently() {
        let mut v1 = entry("exact", "stellar:testnet");
        let fields = v1.as_object_mut().unwrap();
        fields.remove("amount");
        fields.insert("maxAmountRequired".into(), json!("2500"));
        fields.insert("resource".into(), json!("http://a/c"));
        let body = json!({"x402Version": 1, "accepts": [v1, {"scheme": "exact"}, 7]});
        let offers = read_offers(&HeaderMap::new(), body.to_string().as_bytes());
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].amount(), Some(2500));
        assert!(matches!(
            &offers[0],
            PaymentOffer::X402 { in_header: false, resource: Some(resource), .. }
                if resource.url == "http://a/c"
        ));
        for junk in [&b""[..], b"[]", b"{\"accepts\": {}}", &[0xff; 10]] {
            assert!(read_offers(&HeaderMap::new(), junk).is_empty());
        }
        assert!(read_offers(&HeaderMap::new(), &vec![b' '; MAX_BODY + 1]).is_empty());
    }

    fn challenge(intent: &str, request: Value) -> HeaderValue {
        let keys = ChallengeKeys::new(
            ChallengeSecret::new(*b"a test secret of at least 32 bytes!").unwrap(),
        );
        let Value::Object(request) = request else {
            panic!("an object");
        };
        Challenge::builder("example", "stellar", intent, &request)
            .issue(&keys)
            .to_header_value()
            .unwrap()
    }

    #[test]
    fn reads_mpp_charge_and_channel_challenges_and_skips_bad_ones() {
        let channel = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC";
        let mut headers = HeaderMap::new();
        let charge = json!({"amount": "100", "currency": USDC, "recipient": PAY_TO,
            "methodDetails": {"feePayer": true, "credentialTypes": ["transaction"]}});
        headers.append(http::header::WWW_AUTHENTICATE, challenge("charge", charge));
        let voucher = json!({"amount": "10", "channel": channel,
            "methodDetails": {"reference": "r", "network": "stellar:testnet", "cumulativeAmount": "30"}});
        headers.append(
            http::header::WWW_AUTHENTICATE,
            challenge("channel", voucher),
        );
        for bad in [
            json!({"amount": "-1", "currency": USDC, "recipient": PAY_TO}),
            json!({"amount": "1", "currency": PAY_TO, "recipient": PAY_TO,
                   "methodDetails": {"network": "eip155:1"}}),
        ] {
            headers.append(http::header::WWW_AUTHENTICATE, challenge("charge", bad));
        }
        let offers = read_offers(&headers, b"");
        assert_eq!(offers.len(), 2);
        let PaymentOffer::MppCharge { request, .. } = &offers[0] else {
            panic!("a charge");
        };
        assert_eq!(request.network, "stellar:testnet", "absent means testnet");
        assert!(request.fee_payer);
        assert_eq!(request.amount, 100);
        let PaymentOffer::MppChannel { request, .. } = &offers[1] else {
            panic!("a channel");
        };
        assert_eq!((request.amount, request.cumulative), (10, 30));
    }
}
