//! Public routes: the manifest (`/.well-known/stoka.json`), `/llms.txt`, the landing page and
//! the usage dashboard. The manifest and `llms.txt` are written from the live configuration:
//! the rates, limits, network, asset and payee the server really uses.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{Stoka, json_response};

/// What the manifest says about how stoka is paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The network (CAIP-2, `stellar:testnet`).
    pub network: String,
    /// The asset's contract (`C…`).
    pub asset: String,
    /// Who is paid (`G…`).
    pub pay_to: String,
    /// The public base URL, if configured.
    pub public_url: Option<String>,
    /// x402 `exact`: the facilitator and the payment window, when offered.
    pub x402: Option<X402Info>,
    /// MPP: the realm and whether `pop` takes `channel`, when offered.
    pub mpp: Option<MppInfo>,
}

/// The x402 part of [`ServiceInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X402Info {
    /// The facilitator's base URL.
    pub facilitator_url: String,
    /// How long a signed payment may take to settle.
    pub max_timeout_seconds: u64,
}

/// The MPP part of [`ServiceInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MppInfo {
    /// The realm of the challenges.
    pub realm: String,
    /// Whether `pop` offers the `channel` intent.
    pub channel: bool,
}

impl ServiceInfo {
    /// How challenge messages name this server.
    pub fn server_name(&self) -> String {
        match (&self.public_url, &self.mpp) {
            (Some(url), _) => url.clone(),
            (None, Some(mpp)) => mpp.realm.clone(),
            (None, None) => "stoka".into(),
        }
    }
}

/// Every route: method, path, class, price name.
const ROUTES: [(&str, &str, &str, &str); 16] = [
    ("GET", "/.well-known/stoka.json", "public", "free"),
    ("GET", "/llms.txt", "public", "free"),
    ("GET", "/", "public", "free"),
    ("GET", "/dashboard.html", "public", "free"),
    ("POST", "/v1/auth/challenge", "public", "free"),
    ("POST", "/v1/store", "paid", "store"),
    ("GET", "/v1/retrieve/{key}", "paid", "retrieve"),
    ("PUT", "/v1/object/{key}", "paid", "store"),
    (
        "DELETE",
        "/v1/object/{key}",
        "wallet-signed:object-delete",
        "free",
    ),
    ("POST", "/v1/queue/{to_pubkey}/{topic}/push", "paid", "push"),
    ("POST", "/v1/queue/{topic}/pop", "paid", "pop"),
    ("GET", "/v1/queue/{topic}/stream", "metered", "pop"),
    (
        "POST",
        "/v1/queue/{topic}/ack/{receipt}",
        "wallet-signed:queue-ack",
        "free",
    ),
    ("POST", "/v1/profile", "wallet-signed:profile-bind", "free"),
    ("GET", "/v1/me/usage", "wallet-signed:me-usage", "free"),
    ("GET", "/.well-known/stoka", "public", "free"),
];

/// The manifest, as JSON.
pub(crate) fn manifest_json(stoka: &Stoka) -> Value {
    let (info, rates, limits) = (&stoka.inner.info, &stoka.inner.rates, &stoka.inner.limits);
    let mut intents = vec!["charge"];
    if info.mpp.as_ref().is_some_and(|mpp| mpp.channel) {
        intents.push("channel");
    }
    let routes: Vec<Value> = ROUTES
        .iter()
        .map(|(method, path, class, price)| {
            let mut route =
                json!({ "method": method, "path": path, "class": class, "price": price });
            let intents = match (*class, *price) {
                ("paid", "pop") => Some(paid_intents(info, true)),
                ("paid", _) => Some(paid_intents(info, false)),
                ("metered", _) => Some(metered_intents(info)),
                _ => None,
            };
            if let Some(intents) = intents {
                route["intents"] = json!(intents);
            }
            if *class == "metered" {
                // The challenge's `unitType`: an event of the stream, a message each.
                route["unit"] = json!("event");
                route["transports"] = json!(["sse", "websocket"]);
            }
            route
        })
        .collect();
    json!({
        "network": info.network,
        "x402": info.x402.as_ref().map(|x402| json!({
            "version": 2,
            "scheme": "exact",
            "network": info.network,
            "asset": info.asset,
            "pay_to": info.pay_to,
            "facilitator_url": x402.facilitator_url,
            "maxTimeoutSeconds": x402.max_timeout_seconds,
            "headers": ["PAYMENT-SIGNATURE", "X-PAYMENT"],
            "extensions": { "payment-identifier": { "required": false } },
        })),
        "mpp": info.mpp.as_ref().map(|mpp| json!({
            "methods": ["stellar"],
            "intents": intents,
            "realm": mpp.realm,
            "currency": info.asset,
            "recipient": info.pay_to,
            "channel_routes": if mpp.channel {
                json!(["/v1/queue/{topic}/pop", "/v1/queue/{topic}/stream"])
            } else {
                json!([])
            },
        })),
        "pricing": {
            "unit": "USDC atomic (1 USDC = 10^7)",
            "store": {
                "formula": format!(
                    "{} + ceil(bytes/1024) × ({} + ttl_days × {}), ttl_days = ceil(ttl_seconds/86400)",
                    rates.store_base, rates.store_per_kib, rates.store_per_kib_day
                ),
                "base": rates.store_base,
                "per_kib": rates.store_per_kib,
                "per_kib_day": rates.store_per_kib_day,
            },
            "update": "as store",
            "retrieve": {
                "formula": format!("{} + {} × ceil(bytes/1024)", rates.retrieve_base, rates.retrieve_per_kib),
                "base": rates.retrieve_base,
                "per_kib": rates.retrieve_per_kib,
            },
            "push": {
                "formula": format!("{} + {} × ceil(bytes/1024)", rates.push_base, rates.push_per_kib),
                "base": rates.push_base,
                "per_kib": rates.push_per_kib,
            },
            "pop": { "flat": rates.pop },
            "delete": 0,
            "ack": 0,
        },
        "limits": limits,
        "routes": routes,
    })
}

/// The intents of a metered route: MPP `channel` only (none without it).
fn metered_intents(info: &super::ServiceInfo) -> Vec<&'static str> {
    match &info.mpp {
        Some(mpp) if mpp.channel => vec!["mpp/channel"],
        _ => Vec::new(),
    }
}

fn paid_intents(info: &super::ServiceInfo, pop: bool) -> Vec<&'static str> {
    let mut intents = Vec::new();
    if info.x402.is_some() {
        intents.push("x402/exact");
    }
    if let Some(mpp) = &info.mpp {
        intents.push("mpp/charge");
        if pop && mpp.channel {
            intents.push("mpp/channel");
        }
    }
    intents
}

/// `GET /.well-known/stoka.json` (and `/.well-known/stoka`).
pub(super) async fn manifest(State(stoka): State<Stoka>) -> Response {
    json_response(StatusCode::OK, manifest_json(&stoka))
}

/// `GET /llms.txt`: the manifest in words.
pub(super) async fn llms(State(stoka): State<Stoka>) -> Response {
    let mut response = llms_text(&stoka).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn llms_text(stoka: &Stoka) -> String {
    let (info, rates, limits) = (&stoka.inner.info, &stoka.inner.rates, &stoka.inner.limits);
    let mut paid_with = Vec::new();
    if let Some(x402) = &info.x402 {
        paid_with.push(format!(
            "x402 v2 `exact` (PAYMENT-SIGNATURE or X-PAYMENT; facilitator {}, maxTimeoutSeconds {}; the payment-identifier extension names a request, so its retries with a new payment are answered once)",
            x402.facilitator_url, x402.max_timeout_seconds
        ));
    }
    if let Some(mpp) = &info.mpp {
        paid_with.push(format!(
            "MPP `charge`, method `stellar` (Authorization: Payment; realm {})",
            mpp.realm
        ));
        if mpp.channel {
            paid_with.push(
                "MPP `channel` on pop and stream only (Payment-Channel: C… names your channel)"
                    .into(),
            );
        }
    }
    let days = |seconds: u64| seconds / 86_400;
    format!(
        "# stoka\n\n\
> Pay-per-request storage for encrypted blobs and per-wallet mailbox queues. Every paid call is an HTTP 402 exchange; the paying Stellar wallet is the caller's identity. No accounts, no API keys.\n\n\
Network: {network}. Asset: {asset} (USDC; 1 USDC = 10^7 atomic units). Paid to: {pay_to}.\n\
Paid with: {paid_with}.\n\
Machine-readable manifest: /.well-known/stoka.json (read prices from there; never hard-code them).\n\n\
## Prices (USDC atomic units)\n\
- store / update: {sb} + ceil(bytes/1024) × ({sk} + ttl_days × {sd}), ttl_days = ceil(ttl_seconds/86400)\n\
- retrieve: {rb} + {rk} × ceil(bytes/1024)\n\
- push: {pb} + {pk} × ceil(bytes/1024) (the sender pays)\n\
- pop: {pop} flat (the mailbox owner pays, also for an empty pop)\n\
- stream: {pop} a message delivered (MPP `channel` only; nothing for the wait)\n\
- delete, ack, profile, usage: free, wallet-signed\n\n\
## Limits\n\
- blob ≤ {max_object} bytes; message ≤ {max_message} bytes (413 before any 402)\n\
- TTL {min_ttl}..={max_ttl} seconds, default {default_ttl} ({default_days} days); reads do not refresh it: PUT again to extend\n\
- pop: long-poll wait_seconds 0..={max_wait}; a popped message is invisible for {visibility} s, then delivered again unless acked; after {receives} deliveries without an ack it goes to the dead letters; messages are kept {retention_days} days\n\n\
## Routes\n\
- POST /v1/store — headers X-Stoka-Key (1–256 printable ASCII bytes), X-Stoka-TTL-Seconds (optional), Content-Length (required: 411 without). 200 {{id, key, owner_pubkey, size_bytes, expires_at, ttl_seconds, charged_atomic}}. Your key already exists → 409, nothing charged.\n\
- GET /v1/retrieve/{{key}} — send X-Stoka-Owner: G… for an exact first quote. The payer is the owner; a key you do not have → 404, nothing charged. 200 raw bytes, X-Stoka-Owner-Pubkey, X-Stoka-Expires-At.\n\
- PUT /v1/object/{{key}} — replace your blob with a new TTL (priced as store). Not yours → 404, nothing charged.\n\
- DELETE /v1/object/{{key}} — wallet-signed (object-delete). Always 204.\n\
- POST /v1/queue/{{to_pubkey}}/{{topic}}/push — raw body. 200 {{message_id, to_pubkey, topic, size_bytes, sent_at, charged_atomic}}.\n\
- POST /v1/queue/{{topic}}/pop — your own mailbox; ?wait_seconds=N or JSON {{\"wait_seconds\": N}}. 200 {{message_id, topic, body (base64), receipt, attributes {{from_pubkey, sent_at, receive_count}}}} or {{\"empty\": true}}.\n\
- GET /v1/queue/{{topic}}/stream — your own mailbox as it arrives, metered per message at the pop price, paid from your MPP `channel` (the 402 offers only it; its unitType is event): server-sent events (id: message_id, data: the pop answer's JSON), or WebSocket messages on upgrade. The opening voucher pays messages ahead; when they run out the stream sends event payment-need-voucher (a WebSocket frame {{\"mpp\":\"payment-need-voucher\"}}): POST your next voucher (Authorization: Payment, no body) to the same URL, or send it on the socket ({{\"mpp\":\"authorization\",\"authorization\":\"Payment …\"}}). Messages not paid for are not sent; one popped and not sent is delivered again after the visibility timeout. Ack as for pop. At most 4 streams of a payer at once (429), an hour each; a POST with a body is 405. `stoka tail <topic> --channel C…` does all of this.\n\
- POST /v1/queue/{{topic}}/ack/{{receipt}} — wallet-signed (queue-ack). 204; 409 for a receipt of an earlier delivery; 404 for an unknown one.\n\
- POST /v1/auth/challenge — {{\"audience\": \"object-delete\" | \"queue-ack\" | \"profile-bind\" | \"me-usage\"}} → {{challenge_id, message, expires_at}}. Single use, {challenge_ttl} s.\n\
- POST /v1/profile — wallet-signed in the body: {{wallet, challenge_id, signature_hex, email?}}.\n\
- GET /v1/me/usage?days=1..{max_days} — wallet-signed (me-usage): counters per UTC day.\n\n\
## Wallet signatures\n\
Authorization: Stellar <G…>:<challenge_id>:<signature_hex>, an ed25519 signature by the wallet over the challenge's message: either SEP-53 (SHA-256 of \"Stellar Signed Message:\\n\" + message, as wallets sign) or the message bytes. A challenge works once, for its audience only.\n\n\
Every JSON response carries \"service\":\"stoka\",\"audience\":\"agent\",\"api_family\":\"stoka-x402-v1\". Errors are JSON {{error, message}}; payment errors use the payment protocols' own bodies.\n",
        network = info.network,
        asset = info.asset,
        pay_to = info.pay_to,
        paid_with = paid_with.join("; "),
        sb = rates.store_base,
        sk = rates.store_per_kib,
        sd = rates.store_per_kib_day,
        rb = rates.retrieve_base,
        rk = rates.retrieve_per_kib,
        pb = rates.push_base,
        pk = rates.push_per_kib,
        pop = rates.pop,
        max_object = limits.max_object_bytes,
        max_message = limits.max_message_bytes,
        min_ttl = limits.min_ttl_seconds,
        max_ttl = limits.max_ttl_seconds,
        default_ttl = limits.default_ttl_seconds,
        default_days = days(limits.default_ttl_seconds),
        max_wait = limits.max_wait_seconds,
        visibility = limits.visibility_timeout_seconds,
        receives = limits.max_receives,
        retention_days = days(limits.retention_seconds),
        challenge_ttl = limits.challenge_ttl_seconds,
        max_days = limits.max_usage_days,
    )
}

/// `GET /`.
pub(super) async fn landing() -> Html<&'static str> {
    Html(include_str!("../../assets/index.html"))
}

/// `GET /dashboard.html`.
pub(super) async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../../assets/dashboard.html"))
}
