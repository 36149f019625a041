//! The discovery documents, made from the routes file each time it is loaded.
//!
//! - `GET /openapi.json`: OpenAPI 3.1 with the MPP discovery draft's `x-payment-info` on
//!   every paid operation (`offers`, amounts in atomic units, `null` for a price by length;
//!   MPP `channel` is offered under the draft's intent name `session`) and its `402` response.
//! - `GET /.well-known/x402.json`: the x402 offers per route, in the shape of x402's
//!   well-known discovery draft (`x402Version`, `items[]` of `resource`, `type`, `accepts` of
//!   real `PaymentRequirements`, `input.routeTemplate`).
//! - `GET /.well-known/x402`: the list of paid resource URLs (`{"version":1,"resources":[…]}`),
//!   the form x402 indexers crawl.
//!
//! The 402 stays what a client pays from: these documents only say what is sold.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tower_paywall::price::Amount;

use crate::gateway::Payments;
use crate::routes::{Intent, PriceRule, Route, Routes};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where the x402 index is served.
pub const X402_INDEX_PATH: &str = "/.well-known/x402.json";
/// Where the list of x402 resources is served.
pub const X402_LIST_PATH: &str = "/.well-known/x402";

/// The methods an operation is listed under when its route takes any method.
const ANY_METHOD: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The route's price for a request without a body: what discovery shows.
fn listed_amount(route: &Route) -> Option<i128> {
    match route.price {
        PriceRule::Free => None,
        PriceRule::Fixed(amount) => Some(amount),
        PriceRule::PerKib { base, .. } => Some(base),
    }
}

/// The route's path with `{param}` (OpenAPI) or `:param` (x402) parameters; a last `*` is
/// a parameter named `rest`.
fn template(route: &Route, x402: bool) -> (String, Vec<String>) {
    let mut names = Vec::new();
    let parts: Vec<String> = route
        .path
        .as_str()
        .split('/')
        .map(|part| {
            let name = match part {
                "*" => Some("rest"),
                _ => part.strip_prefix('{').and_then(|p| p.strip_suffix('}')),
            };
            match name {
                Some(name) => {
                    names.push(name.to_owned());
                    if x402 {
                        format!(":{name}")
                    } else {
                        format!("{{{name}}}")
                    }
                }
                None => part.to_owned(),
            }
        })
        .collect();
    (parts.join("/"), names)
}

/// The MPP offers of a route (`x-payment-info`).
fn mpp_offers(route: &Route, payments: &Payments) -> Vec<Value> {
    let amount = match route.price {
        PriceRule::Fixed(amount) => Value::String(amount.to_string()),
        _ => Value::Null,
    };
    route
        .intents
        .iter()
        .filter_map(|intent| match intent {
            Intent::Charge => Some("charge"),
            Intent::Channel => Some("session"),
            Intent::X402 => None,
        })
        .map(|intent| {
            let mut offer = json!({
                "intent": intent,
                "method": "stellar",
                "amount": amount,
                "currency": payments.seller.asset.to_string(),
            });
            if let Some(description) = &route.description {
                offer["description"] = json!(description);
            }
            offer
        })
        .collect()
}

/// `/openapi.json`.
pub fn openapi(routes: &Routes, payments: &Payments) -> Bytes {
    let mut paths = Map::new();
    // One path item per shape: `/a/{x}` and a later `/a/{y}` are one path to OpenAPI.
    let mut shapes: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for route in &routes.routes {
        let (path, _) = template(route, false);
        let shape = path
            .split('/')
            .map(|part| if part.starts_with('{') { "{}" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let path = shapes.entry(shape).or_insert(path).clone();
        let params: Vec<String> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let item = paths
            .entry(path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects");
        let methods: Vec<String> = match &route.method {
            Some(method) => vec![method.as_str().to_ascii_lowercase()],
            None => ANY_METHOD.iter().map(|m| (*m).to_owned()).collect(),
        };
        for method in methods {
            // The first route for a method and path prices it.
            if item.contains_key(&method) {
                continue;
            }
            let mut operation = Map::new();
            if let Some(description) = &route.description {
                operation.insert("summary".into(), json!(description));
            }
            if !params.is_empty() {
                let parameters: Vec<Value> = params
                    .iter()
                    .map(|name| {
                        json!({"name": name, "in": "path", "required": true,
                               "schema": {"type": "string"}})
                    })
                    .collect();
                operation.insert("parameters".into(), Value::Array(parameters));
            }
            let mut responses = json!({"200": {"description": "Successful response"}});
            if route.price != PriceRule::Free {
                let offers = mpp_offers(route, payments);
                if !offers.is_empty() {
                    operation.insert("x-payment-info".into(), json!({ "offers": offers }));
                }
                responses["402"] = json!({"description": "Payment Required"});
            }
            if let PriceRule::PerKib {
                base,
                per_kib,
                max_bytes,
            } = route.price
            {
                responses["411"] =
                    json!({"description": "Length Required: the price is by Content-Length"});
                if max_bytes.is_some() {
                    responses["413"] = json!({"description": "Content Too Large"});
                }
                operation.insert(
                    "x-price-by-length".into(),
                    json!({"base": base.to_string(), "perKib": per_kib.to_string(), "maxBytes": max_bytes}),
                );
            }
            operation.insert("responses".into(), responses);
            item.insert(method, Value::Object(operation));
        }
    }
    let mut info = json!({"title": routes.title, "version": "1.0.0"});
    if let Some(description) = &routes.description {
        info["description"] = json!(description);
    }
    let document = json!({
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": payments.public_url}],
        "paths": paths,
    });
    Bytes::from(serde_json::to_vec_pretty(&document).expect("JSON values serialize"))
}

/// The routes x402 sells: each with its template, a resource URL and its offer.
fn x402_routes<'a>(
    routes: &'a Routes,
    payments: &'a Payments,
) -> impl Iterator<Item = (&'a Route, String, Value)> + 'a {
    routes.routes.iter().filter_map(move |route| {
        let exact = payments.seller.exact.as_ref()?;
        if !route.intents.contains(&Intent::X402) {
            return None;
        }
        let amount = Amount::from_atomic(listed_amount(route)?).ok()?;
        let (template, _) = template(route, true);
        let requirements = serde_json::to_value(exact.requirements(amount)).ok()?;
        Some((route, template, requirements))
    })
}

/// `/.well-known/x402.json`.
pub fn x402_index(routes: &Routes, payments: &Payments) -> Bytes {
    let service: String = routes.title.chars().take(32).collect();
    let items: Vec<Value> = x402_routes(routes, payments)
        .map(|(route, template, requirements)| {
            let mut resource = json!({
                "url": format!("{}{template}", payments.public_url),
                "serviceName": service,
            });
            if let Some(description) = &route.description {
                resource["description"] = json!(description);
            }
            let mut input = json!({"type": "http", "routeTemplate": template});
            if let Some(method) = &route.method {
                input["method"] = json!(method.as_str());
            }
            let mut item = json!({
                "resource": resource,
                "type": "http",
                "x402Version": 2,
                "accepts": [requirements],
                "input": input,
            });
            if let PriceRule::PerKib {
                base,
                per_kib,
                max_bytes,
            } = route.price
            {
                item["priceByLength"] = json!({"base": base.to_string(),
                    "perKib": per_kib.to_string(), "maxBytes": max_bytes});
            }
            item
        })
        .collect();
    let updated = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let document = json!({"x402Version": 2, "lastUpdated": updated, "items": items});
    Bytes::from(serde_json::to_vec_pretty(&document).expect("JSON values serialize"))
}

/// `/.well-known/x402`.
pub fn x402_list(routes: &Routes, payments: &Payments) -> Bytes {
    let resources: Vec<String> = x402_routes(routes, payments)
        .map(|(_, template, _)| format!("{}{template}", payments.public_url))
        .collect();
    let document = json!({"version": 1, "resources": resources});
    Bytes::from(serde_json::to_vec_pretty(&document).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower_paywall::MemoryStore;
    use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret};
    use tower_paywall::seller::Seller;
    use tower_paywall::stellar::{Address, JsonRpcClient, Keypair, Network};

    use super::*;

    /// A gateway offering MPP `charge` only (the RPC is never asked).
    async fn payments() -> Payments {
        let rpc = JsonRpcClient::builder("http://127.0.0.1:9")
            .build()
            .unwrap();
        let secret = ChallengeSecret::new(b"a challenge secret of 32 bytes or more".to_vec());
        let seller = Seller::builder(Network::testnet(), Keypair::from_seed([2; 32]).address())
            .asset(Address::Contract([1; 32]))
            .rpc(Arc::new(rpc))
            .challenge_keys(ChallengeKeys::new(secret.unwrap()))
            .build()
            .await
            .unwrap();
        Payments {
            seller,
            store: Arc::new(MemoryStore::new()),
            public_url: "http://gateway".into(),
        }
    }

    #[tokio::test]
    async fn routes_of_one_shape_are_one_openapi_path_named_as_the_first() {
        let payments = payments().await;
        let routes = Routes::parse(
            r#"
upstream = "http://u"
[[route]]
method = "GET"
path = "/a/{x}"
price = "0.001"
intents = ["charge"]
[[route]]
method = "POST"
path = "/a/{y}"
price = "0.002"
intents = ["charge"]
[[route]]
path = "/files/*"
price = "free"
"#,
        )
        .unwrap();
        let document: Value = serde_json::from_slice(&openapi(&routes, &payments)).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 2, "{paths:#?}");
        let post = &paths["/a/{x}"]["post"];
        assert_eq!(post["parameters"][0]["name"], "x");
        assert_eq!(post["x-payment-info"]["offers"][0]["amount"], "20000");
        assert_eq!(
            paths["/a/{x}"]["get"]["x-payment-info"]["offers"][0]["amount"],
            "10000"
        );
        assert_eq!(
            paths["/files/{rest}"]["get"]["parameters"][0]["name"],
            "rest"
        );
        // Without x402, nothing is listed for x402 indexers.
        let index: Value = serde_json::from_slice(&x402_index(&routes, &payments)).unwrap();
        assert_eq!(index["items"], json!([]));
    }
}
