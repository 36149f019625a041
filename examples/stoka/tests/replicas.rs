//! Three `stoka serve` processes behind one public URL, as behind a load balancer, against one
//! sandbox ledger and one facilitator.
//!
//! - Over one Redis Cluster: a paid load goes round robin to the three nodes, and every payment
//!   is retried on another node than the one that took it (a lost answer). Every payment is
//!   charged once on the ledger, every retry gets the recorded answer, every channel voucher is
//!   credited once whichever nodes see it. One node is killed with SIGKILL in the middle of the
//!   load: the other two go on (a payment sent to the dead node is retried, with the same
//!   payment, on the next one), and every store answered 200 is in the store.
//! - Over a store per node (redb files), the same retry on another node is not answered from
//!   the record (the payment is spent on the ledger: 402), and one voucher is credited by every
//!   node that sees it: why replicas need a shared store.

mod support;

use support::peers::free_port;

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stoka::storage::{RedisStorage, Storage};
use tower_paywall::mpp::{Challenge, Credential as MppCredential};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig, ServeConfig};
use tower_paywall::stellar::{Address, Keypair, Network, commitment_bytes};
use tower_paywall::store::ChannelId;
use tower_paywall::store::redis::{test_deployments, test_namespace};
use tower_paywall::x402::{LocalFacilitator, PaymentRequired, facilitator_router, header};

const NODES: usize = 3;
/// Paid stores in the load.
const STORES: usize = 36;
/// Stores in flight at once.
const CONCURRENCY: usize = 6;
/// Vouchers paid on the channel.
const VOUCHERS: usize = 12;
const MPP_SECRET: &str = "replicas-test-secret-of-at-least-32-bytes";

/// The ledger, the facilitator and the wallets the nodes share.
struct World {
    sandbox: Sandbox,
    _rpc_server: tower_paywall::sandbox::RpcServer,
    rpc_url: String,
    facilitator_url: String,
    pay_to: Keypair,
    payer: Keypair,
    /// The channel paying pay_to, and the key that signs its vouchers.
    channel: Address,
    commitment_key: Keypair,
    http: reqwest::Client,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(250))).unwrap();
    let rpc_server = sandbox.serve(ServeConfig::default()).await.unwrap();
    let rpc_url = rpc_server.http_url().unwrap();
    let mut facilitator = LocalFacilitator::builder(
        sandbox.clone(),
        Network::testnet(),
        sandbox.funded_keypair().await.unwrap(),
    );
    for _ in 0..7 {
        facilitator = facilitator.channel(sandbox.funded_keypair().await.unwrap());
    }
    let router = facilitator_router(Arc::new(facilitator.build().unwrap()), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let facilitator_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let pay_to = sandbox.funded_keypair().await.unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let funder = sandbox.funded_keypair().await.unwrap();
    let commitment_key = Keypair::from_seed([77; 32]);
    let channel = sandbox
        .deploy_channel(ChannelParams {
            token: sandbox.usdc(),
            from: &funder,
            commitment_key: commitment_key.public_key(),
            to: pay_to.address(),
            amount: 100_000_000,
            refund_waiting_period: 1_000,
        })
        .await
        .unwrap();
    World {
        sandbox,
        _rpc_server: rpc_server,
        rpc_url,
        facilitator_url,
        pay_to,
        payer,
        channel,
        commitment_key,
        http: reqwest::Client::new(),
    }
}

/// The nodes: `stoka serve` processes with `store` (each node's own environment), all under
/// one public URL.
struct Nodes {
    children: Vec<Option<Child>>,
    urls: Vec<String>,
}

impl Nodes {
    async fn start(world: &World, store: impl Fn(usize) -> Vec<(&'static str, String)>) -> Nodes {
        let public = format!("http://127.0.0.1:{}", free_port());
        let mut nodes = Nodes {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for n in 0..NODES {
            let port = free_port();
            let mut env = vec![
                ("STOKA_LISTEN", format!("127.0.0.1:{port}")),
                ("STOKA_PUBLIC_URL", public.clone()),
                ("STOKA_NETWORK", "testnet".to_owned()),
                ("STOKA_PAY_TO", world.pay_to.address().to_string()),
                ("STOKA_ASSET", world.sandbox.usdc().to_string()),
                ("STOKA_RPC_URL", world.rpc_url.clone()),
                ("STOKA_FACILITATOR_URL", world.facilitator_url.clone()),
                ("STOKA_MPP_SECRET", MPP_SECRET.to_owned()),
                ("STOKA_MPP_REALM", "stoka.test".to_owned()),
                ("STOKA_CHANNEL_SECRET", world.pay_to.secret_seed()),
            ];
            env.extend(store(n));
            let url = format!("http://127.0.0.1:{port}");
            let child = support::serve_stoka(&env, &url).await;
            nodes.children.push(Some(child));
            nodes.urls.push(url);
        }
        nodes
    }

    /// Kills node `n` with SIGKILL.
    fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.children[n].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in 0..NODES {
            self.kill(n);
        }
    }
}

/// An x402 payment for the 402 `answer` carries, from `payer`.
async fn x402_payment(world: &World, answer: reqwest::Response) -> String {
    assert_eq!(answer.status(), 402);
    let required: PaymentRequired =
        header::decode(answer.headers()["payment-required"].as_bytes()).unwrap();
    let offer = required
        .accepts
        .iter()
        .find(|offer| offer.scheme == "exact")
        .unwrap();
    tower_paywall::client::x402_payment(
        &world.sandbox,
        &Network::testnet(),
        &world.payer,
        offer,
        Some(&required.resource),
    )
    .await
    .unwrap()
    .to_str()
    .unwrap()
    .to_owned()
}

/// A store of `key` on `url`, paid with `payment` if any: status and body.
async fn store(
    world: &World,
    url: &str,
    key: &str,
    payment: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = world
        .http
        .post(format!("{url}/v1/store"))
        .header("x-stoka-key", key)
        .header("x-stoka-ttl-seconds", "3600")
        .header("content-type", "application/octet-stream")
        .body(format!("blob {key}"));
    if let Some(payment) = payment {
        request = request.header("payment-signature", payment);
    }
    request.send().await
}

/// Pays one store on node `first`, then sends the same payment to the next node (a retry after
/// a lost answer); a node that does not answer (killed) passes the payment on to the next.
/// Returns the two answers (status, body) and the nodes that gave them.
async fn paid_store(
    world: &World,
    urls: &[String],
    key: &str,
    first: usize,
) -> [(u16, String, usize); 2] {
    let mut node = first;
    let payment = loop {
        match store(world, &urls[node % NODES], key, None).await {
            Ok(answer) => break x402_payment(world, answer).await,
            Err(_) => node += 1,
        }
    };
    let mut answers = Vec::new();
    while answers.len() < 2 {
        // A node that is gone passes the same payment on to the next one.
        if let Ok(answer) = store(world, &urls[node % NODES], key, Some(&payment)).await {
            let status = answer.status().as_u16();
            answers.push((status, answer.text().await.unwrap(), node % NODES));
        }
        node += 1;
    }
    [answers.remove(0), answers.remove(0)]
}

/// The channel challenge a 402 of `url`'s pop offers for the world's channel.
async fn channel_challenge(world: &World, url: &str) -> Challenge {
    let answer = world
        .http
        .post(format!("{url}/v1/queue/replicas/pop"))
        .header("payment-channel", world.channel.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 402, "{:?}", answer.text().await);
    Challenge::from_headers(answer.headers())
        .unwrap()
        .into_iter()
        .find(|c| c.intent == "channel")
        .expect("a channel challenge")
}

/// A voucher for `challenge`'s next cumulative amount, as a credential.
fn voucher(world: &World, challenge: Challenge) -> String {
    let request = challenge.request_json().unwrap();
    let cumulative: i128 = request["methodDetails"]["cumulativeAmount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let price: i128 = request["amount"].as_str().unwrap().parse().unwrap();
    let amount = cumulative + price;
    let bytes = commitment_bytes(&Network::testnet().id(), &world.channel, amount).unwrap();
    let signature = hex::encode(world.commitment_key.sign(&bytes));
    let payload =
        json!({"action": "voucher", "amount": amount.to_string(), "signature": signature});
    MppCredential::new(challenge, payload).encode()
}

/// Pops with `credential` on `url`: status and body.
async fn pop(world: &World, url: &str, credential: &str) -> (u16, String) {
    let answer = world
        .http
        .post(format!("{url}/v1/queue/replicas/pop"))
        .header("payment-channel", world.channel.to_string())
        .header("authorization", credential)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

async fn usdc(world: &World, holder: Address) -> i128 {
    world
        .sandbox
        .balance(&world.sandbox.usdc(), &holder)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_cluster_charge_once_replay_anywhere_and_survive_a_kill() {
    let Some((_, cluster)) = test_deployments()
        .into_iter()
        .find(|(label, _)| *label == "cluster")
    else {
        return;
    };
    let world = world().await;
    let namespace = test_namespace("stoka-replicas");
    let mut nodes = Nodes::start(&world, |_| {
        vec![
            ("STOKA_STORE", "redis".to_owned()),
            ("STOKA_REDIS_URL", cluster.clone()),
            ("STOKA_REDIS_NAMESPACE", namespace.clone()),
        ]
    })
    .await;
    let payer_before = usdc(&world, world.payer.address()).await;

    // Vouchers, round robin, each replayed on the next node.
    let price_of_pop = {
        let challenge = channel_challenge(&world, &nodes.urls[0]).await;
        let request = challenge.request_json().unwrap();
        request["amount"].as_str().unwrap().parse::<i128>().unwrap()
    };
    for n in 0..VOUCHERS {
        let challenge = channel_challenge(&world, &nodes.urls[n % NODES]).await;
        let credential = voucher(&world, challenge);
        let paid = pop(&world, &nodes.urls[n % NODES], &credential).await;
        assert_eq!(paid.0, 200, "voucher {n}: {}", paid.1);
        let replayed = pop(&world, &nodes.urls[(n + 1) % NODES], &credential).await;
        assert_eq!(replayed, paid, "voucher {n} replayed on the next node");
    }
    let storage = RedisStorage::connect(&cluster, &namespace).await.unwrap();
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let state = storage
        .channel_store()
        .load(channel_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.cumulative,
        price_of_pop * VOUCHERS as i128,
        "every voucher credited once"
    );

    // Paid stores, round robin, CONCURRENCY at a time; node 2 is killed half way through.
    let world = Arc::new(world);
    let urls = Arc::new(nodes.urls.clone());
    let mut answered = Vec::new();
    for batch in 0..STORES / CONCURRENCY {
        if batch == STORES / CONCURRENCY / 2 {
            nodes.kill(2);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for slot in 0..CONCURRENCY {
            let n = batch * CONCURRENCY + slot;
            let (world, urls) = (world.clone(), urls.clone());
            tasks.spawn(async move {
                let key = format!("load-{n}");
                let answers = paid_store(&world, &urls, &key, n).await;
                (key, answers)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (key, [paid, retried]) = done.unwrap();
            assert_eq!(paid.0, 200, "{key} on node {}: {}", paid.2, paid.1);
            assert_ne!(paid.2, retried.2, "{key}: the retry went to another node");
            assert_eq!(
                (retried.0, &retried.1),
                (paid.0, &paid.1),
                "{key}: the recorded answer"
            );
            answered.push((key, paid.1));
        }
    }
    assert_eq!(answered.len(), STORES);
    // Charged once each: the payer paid exactly what the answers say it was charged.
    let charged: i128 = answered
        .iter()
        .map(|(_, body)| {
            let body: Value = serde_json::from_str(body).unwrap();
            body["charged_atomic"].as_i64().unwrap() as i128
        })
        .sum();
    assert_eq!(
        payer_before - usdc(&world, world.payer.address()).await,
        charged,
        "every store charged once"
    );
    // Nothing answered 200 is lost.
    let owner = world.payer.address().to_string();
    let now = stoka::clock::Clock::now(&stoka::clock::SystemClock);
    for (key, _) in &answered {
        let blob = storage.get_blob(&owner, key, now).await.unwrap();
        assert_eq!(
            blob.map(|blob| blob.body),
            Some(format!("blob {key}").into_bytes()),
            "{key}"
        );
    }
    // The two nodes left still serve.
    let [paid, retried] = paid_store(&world, &urls, "after", 0).await;
    assert_eq!((paid.0, retried.0), (200, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_each_on_its_own_store_cannot_replay_and_credit_one_voucher_thrice() {
    let world = world().await;
    let dir = support::temp_dir("replicas-own-stores");
    let nodes = Nodes::start(&world, |n| {
        vec![(
            "STOKA_STORE_PATH",
            dir.join(format!("node-{n}.redb")).display().to_string(),
        )]
    })
    .await;
    // A payment retried on another node: that node has no record of it, and the ledger has
    // spent it, so the retry is refused instead of answered.
    let [paid, retried] = paid_store(&world, &nodes.urls, "alone", 0).await;
    assert_eq!(paid.0, 200, "{}", paid.1);
    assert_eq!(retried.0, 402, "{}", retried.1);
    // One voucher, three nodes: each credits it.
    let challenge = channel_challenge(&world, &nodes.urls[0]).await;
    let credential = voucher(&world, challenge);
    assert_eq!(pop(&world, &nodes.urls[0], &credential).await.0, 200);
    for url in &nodes.urls[1..] {
        let challenge = channel_challenge(&world, url).await;
        let request = challenge.request_json().unwrap();
        assert_eq!(
            request["methodDetails"]["cumulativeAmount"], "0",
            "each node starts the channel from nothing"
        );
        // The same signed cumulative amount, presented to a node that never saw it.
        let again = voucher(&world, challenge);
        assert_eq!(
            pop(&world, url, &again).await.0,
            200,
            "credited again on {url}"
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
