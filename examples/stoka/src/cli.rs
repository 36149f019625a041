//! The client commands of the `stoka` binary: they pay through `tower-paywall`'s
//! [`PayingClient`] from a Stellar secret key, against any stoka server. The network and
//! asset are read from the server's manifest; the most one payment may cost is capped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tower_paywall::Intent;
use tower_paywall::client::{ClientError, FileCumulativeStore, PayingClient, Policy, payment};
use tower_paywall::stellar::{Address, JsonRpcClient, Keypair, Network, SorobanRpc};

use crate::auth::{Audience, sep53_digest};

/// Where and how the client pays.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server's base URL.
    pub url: String,
    /// The payer's secret key (`S…`).
    pub secret: String,
    /// A Soroban RPC URL of the server's network.
    pub rpc_url: Option<String>,
    /// The most one payment may cost, in atomic units.
    pub max_per_payment: i128,
    /// Intents to pay with, best first (default: channel, x402, charge).
    pub prefer: Vec<Intent>,
    /// A payment channel to pay `pop` with (commitments signed by the payer's key).
    pub channel: Option<String>,
    /// Where the channel's cumulative amounts are kept.
    pub channel_store: PathBuf,
}

/// A client command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A setting or argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// Paying or sending failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server answered with an error.
    #[error("{status}: {body}")]
    Server {
        /// The status.
        status: StatusCode,
        /// The body.
        body: String,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn usage(text: impl Into<String>) -> CliError {
    CliError::Usage(text.into())
}

/// A connected client: the paying client, the payer, the base URL.
pub struct Client {
    paying: PayingClient,
    keypair: Keypair,
    url: String,
    /// The pop price the manifest gives (a stream's price per message).
    pop_price: Option<i128>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("payer", &self.keypair.address())
            .field("url", &self.url)
            .finish()
    }
}

/// What is `%XX`-encoded in a path segment: everything but unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment, `%XX`-encoded.
pub fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

impl Client {
    /// Reads the manifest and builds the paying client.
    ///
    /// # Errors
    ///
    /// [`CliError`] for a bad key, an unreachable server or RPC.
    pub async fn connect(options: &ClientOptions) -> Result<Client, CliError> {
        let keypair: Keypair = options
            .secret
            .parse()
            .map_err(|_| usage("STOKA_SECRET must be a Stellar secret key (S…)"))?;
        let url = options.url.trim_end_matches('/').to_owned();
        let rpc_url = options
            .rpc_url
            .clone()
            .ok_or_else(|| usage("set STOKA_RPC_URL (a Soroban RPC of the server's network)"))?;
        let rpc = JsonRpcClient::builder(rpc_url)
            .build()
            .map_err(|error| usage(error.to_string()))?;
        let rpc: Arc<dyn SorobanRpc> = Arc::new(rpc);
        // The manifest is free: a client for any network reads it without paying.
        let reader = PayingClient::builder(keypair.clone(), rpc.clone(), Network::testnet())
            .build()
            .map_err(|error| usage(error.to_string()))?;
        let manifest: Value = reader
            .get(format!("{url}/.well-known/stoka.json"))
            .send()
            .await
            .map_err(|error| usage(format!("cannot reach {url}: {error}")))?
            .json()
            .await
            .map_err(|error| usage(format!("{url} does not look like stoka: {error}")))?;
        let caip2 = manifest["network"]
            .as_str()
            .ok_or_else(|| usage("the manifest names no network"))?;
        let network = match caip2 {
            "stellar:testnet" => Network::testnet(),
            "stellar:pubnet" => Network::pubnet(),
            other => Network::from_caip2(other).map_err(|error| usage(error.to_string()))?,
        };
        let mut policy = Policy::default()
            .networks([caip2])
            .max_per_payment(options.max_per_payment);
        if let Some(asset) = manifest["x402"]["asset"]
            .as_str()
            .or(manifest["mpp"]["currency"].as_str())
        {
            policy = policy.assets([asset]);
        }
        if !options.prefer.is_empty() {
            policy = policy.prefer(options.prefer.clone());
        }
        let mut builder = PayingClient::builder(keypair.clone(), rpc, network).policy(policy);
        if let Some(channel) = &options.channel {
            let address: Address = channel
                .parse()
                .map_err(|_| usage("--channel must be a contract address (C…)"))?;
            let path = options.channel_store.join(format!("{channel}.json"));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let store = FileCumulativeStore::open(&path)
                .map_err(|error| usage(format!("{}: {error}", path.display())))?;
            builder = builder
                .channel(&url, address, keypair.clone())
                .cumulative_store(Arc::new(store));
        }
        let paying = builder.build().map_err(|error| usage(error.to_string()))?;
        Ok(Client {
            paying,
            keypair,
            url,
            pop_price: manifest["pricing"]["pop"]["flat"].as_u64().map(i128::from),
        })
    }

    /// The payer's address.
    pub fn address(&self) -> Address {
        self.keypair.address()
    }

    /// `stoka put` (`replace = false`) and `stoka update` (`replace = true`).
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        ttl: Option<u64>,
        replace: bool,
    ) -> Result<Value, CliError> {
        let mut request = if replace {
            self.paying
                .put(format!("{}/v1/object/{}", self.url, encode_segment(key)))
        } else {
            self.paying
                .post(format!("{}/v1/store", self.url))
                .header("x-stoka-key", key)
        };
        if let Some(ttl) = ttl {
            request = request.header("x-stoka-ttl-seconds", ttl.to_string());
        }
        // stoka requires a length, and an empty body is sent without one unless it is set.
        let response = request
            .header("content-type", "application/octet-stream")
            .header("content-length", body.len().to_string())
            .body(body)
            .send()
            .await?;
        json(response).await
    }

    /// `stoka get`: the blob's bytes.
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, CliError> {
        let response = self
            .paying
            .get(format!("{}/v1/retrieve/{}", self.url, encode_segment(key)))
            .header("x-stoka-owner", self.address().to_string())
            .send()
            .await?;
        let paid = describe_payment(&response);
        let status = response.status();
        let bytes = response.bytes().await.map_err(ClientError::from)?;
        if !status.is_success() {
            return Err(CliError::Server {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        if let Some(paid) = paid {
            eprintln!("{paid}");
        }
        Ok(bytes.to_vec())
    }

    /// `stoka push`.
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn push(&self, to: &str, topic: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let response = self
            .paying
            .post(format!(
                "{}/v1/queue/{}/{}/push",
                self.url,
                encode_segment(to),
                encode_segment(topic)
            ))
            .header("content-type", "application/octet-stream")
            .header("content-length", body.len().to_string())
            .body(body)
            .send()
            .await?;
        json(response).await
    }

    /// `stoka pop`.
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn pop(&self, topic: &str, wait: u64) -> Result<Value, CliError> {
        let response = self
            .paying
            .post(format!(
                "{}/v1/queue/{}/pop?wait_seconds={wait}",
                self.url,
                encode_segment(topic)
            ))
            .timeout(Duration::from_secs(wait + 60))
            .send()
            .await?;
        json(response).await
    }

    /// `stoka tail`: the payer's mailbox `topic` as a metered stream (a channel is needed:
    /// `--channel`), each message handed to `each` as it arrives (the `pop` answer's JSON),
    /// paid at the pop price a message; after `count` messages when set. What was paid.
    ///
    /// # Errors
    ///
    /// [`CliError`]: the stream could not be opened or paid (the messages before it were
    /// handed out).
    pub async fn tail(
        &self,
        topic: &str,
        count: Option<u64>,
        mut each: impl FnMut(Value),
    ) -> Result<i128, CliError> {
        let url = format!("{}/v1/queue/{}/stream", self.url, encode_segment(topic));
        let mut request = self.paying.get(url);
        // `count` messages are all it pays for (none is sent unpaid, none left unread).
        if let (Some(count), Some(price)) = (count, self.pop_price) {
            request = request.stream_cap(i128::from(count).saturating_mul(price).max(price));
        }
        let mut stream = request.send_stream().await?;
        let mut seen = 0_u64;
        while count.is_none_or(|count| seen < count) {
            let Some(event) = stream.next().await else {
                break;
            };
            let event = event?;
            let message = serde_json::from_str(&event.data)
                .map_err(|_| usage("the server sent a message that is not JSON"))?;
            each(message);
            seen += 1;
        }
        Ok(stream.paid())
    }

    /// `stoka challenge`: a challenge for `audience`, and the `Authorization` value signing it.
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn challenge(&self, audience: Audience) -> Result<(Value, String), CliError> {
        let response = self
            .paying
            .post(format!("{}/v1/auth/challenge", self.url))
            .json(&serde_json::json!({ "audience": audience.as_str() }))
            .send()
            .await?;
        let challenge = json(response).await?;
        let (Some(id), Some(message)) = (
            challenge["challenge_id"].as_str(),
            challenge["message"].as_str(),
        ) else {
            return Err(usage(
                "the server's challenge has no challenge_id or message",
            ));
        };
        // Sign only a challenge for what was asked: a server (or a relay) must not get a
        // signature for another audience out of this command.
        let expected = format!("\naudience: {}\n", audience.as_str());
        if !message.contains(&expected) {
            return Err(usage(format!(
                "the server's challenge is not for {}: not signed",
                audience.as_str()
            )));
        }
        let signature = self.keypair.sign(&sep53_digest(message));
        let authorization = format!("Stellar {}:{id}:{}", self.address(), hex::encode(signature));
        Ok((challenge, authorization))
    }

    /// `stoka rm`: 204 whether or not the blob existed.
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn remove(&self, key: &str) -> Result<(), CliError> {
        let (_, authorization) = self.challenge(Audience::ObjectDelete).await?;
        let response = self
            .paying
            .delete(format!("{}/v1/object/{}", self.url, encode_segment(key)))
            .header("authorization", authorization)
            .send()
            .await?;
        empty(response).await
    }

    /// `stoka ack`.
    ///
    /// # Errors
    ///
    /// [`CliError`]: 409 for a stale receipt, 404 for an unknown one.
    pub async fn ack(&self, topic: &str, receipt: &str) -> Result<(), CliError> {
        let (_, authorization) = self.challenge(Audience::QueueAck).await?;
        let response = self
            .paying
            .post(format!(
                "{}/v1/queue/{}/ack/{}",
                self.url,
                encode_segment(topic),
                encode_segment(receipt)
            ))
            .header("authorization", authorization)
            .send()
            .await?;
        empty(response).await
    }

    /// `stoka usage`.
    ///
    /// # Errors
    ///
    /// [`CliError`].
    pub async fn usage(&self, days: u32) -> Result<Value, CliError> {
        let (_, authorization) = self.challenge(Audience::MeUsage).await?;
        let response = self
            .paying
            .get(format!("{}/v1/me/usage?days={days}", self.url))
            .header("authorization", authorization)
            .send()
            .await?;
        json(response).await
    }
}

/// "paid N atomic units with …", for the payment of `response`.
fn describe_payment(response: &reqwest::Response) -> Option<String> {
    payment(response).map(|paid| {
        format!(
            "paid {} atomic units with {} on {}",
            paid.amount, paid.intent, paid.network
        )
    })
}

async fn json(response: reqwest::Response) -> Result<Value, CliError> {
    let paid = describe_payment(&response);
    let status = response.status();
    let text = response.text().await.map_err(ClientError::from)?;
    if !status.is_success() {
        return Err(CliError::Server { status, body: text });
    }
    if let Some(paid) = paid {
        eprintln!("{paid}");
    }
    serde_json::from_str(&text).map_err(|_| CliError::Server { status, body: text })
}

async fn empty(response: reqwest::Response) -> Result<(), CliError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.map_err(ClientError::from)?;
    Err(CliError::Server { status, body })
}

/// The bytes of `path`, or of standard input for `-`.
///
/// # Errors
///
/// The read's.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        return Ok(bytes);
    }
    Ok(std::fs::read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("note.txt"), "note.txt");
        assert_eq!(encode_segment("a b/c?d%"), "a%20b%2Fc%3Fd%25");
    }

    /// A server that answers every challenge request with a challenge for `object-delete`.
    async fn relay() -> String {
        use axum::routing::{get, post};
        let challenge = serde_json::json!({
            "challenge_id": "abc",
            "message": "stoka wallet challenge\naudience: object-delete\nserver: stoka\nchallenge: abc\nexpires: 2030-01-01T00:00:00Z",
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/stoka.json",
                get(|| async { axum::Json(serde_json::json!({ "network": "stellar:testnet" })) }),
            )
            .route(
                "/v1/auth/challenge",
                post(move || async move { axum::Json(challenge) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn a_challenge_for_another_audience_is_not_signed() {
        let url = relay().await;
        let options = ClientOptions {
            rpc_url: Some(url.clone()),
            url,
            secret: Keypair::from_seed([5; 32]).secret_seed(),
            max_per_payment: 1,
            prefer: Vec::new(),
            channel: None,
            channel_store: PathBuf::from(".stoka"),
        };
        let client = Client::connect(&options).await.unwrap();
        let refused = client.challenge(Audience::MeUsage).await;
        assert!(
            matches!(&refused, Err(CliError::Usage(text)) if text.contains("not for me-usage")),
            "{refused:?}"
        );
        // The same challenge is signed when it is what was asked for.
        let (_, authorization) = client.challenge(Audience::ObjectDelete).await.unwrap();
        assert!(authorization.starts_with("Stellar G"), "{authorization}");
    }
}
