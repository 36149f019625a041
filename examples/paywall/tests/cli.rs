//! The `paywall` binary as an operator runs it: `check`, and `dev` in front of the Python
//! demo upstream, its routes file reloaded on SIGHUP while a request is under way.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use serde_json::Value;
use tower_paywall::client::{PayingClient, payment};
use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};

fn paywall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_paywall"))
}

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo")
}

#[test]
fn check_prints_what_a_file_sells_or_what_is_wrong() {
    let output = paywall()
        .args(["check"])
        .arg(demo().join("routes.toml"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("/weather/{city}"), "{text}");
    assert!(
        text.contains("0.001 USDC + 0.0001 a KiB (at most 1048576 bytes)"),
        "{text}"
    );

    let dir = std::env::temp_dir().join(format!("paywall-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "upstream = \"http://u\"\n[[route]]\npath = \"/x\"\nprice = \"0\"\n",
    )
    .unwrap();
    let output = paywall().arg("check").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("route 1 (/x): a price of 0"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Kills the child when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's five-line routes file.
fn readme_routes() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split("`paywall`\n")
        .nth(1)
        .expect("the README's paywall section");
    let block = section.split("```toml\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

#[path = "../../../tests/support/peers.rs"]
#[allow(dead_code)]
mod peers;

use peers::free_port;

/// The Python demo upstream on a free port, checking payer headers with `secret` if given,
/// once it listens; and its port.
fn python_upstream(secret: Option<&str>) -> (Child, u16) {
    let port = free_port();
    let mut command = Command::new("python3");
    command
        .arg(demo().join("upstream.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped());
    if let Some(secret) = secret {
        command.env("PAYWALL_UPSTREAM_SECRET", secret);
    }
    let mut upstream = Child(command.spawn().expect("python3 runs"));
    let mut line = String::new();
    BufReader::new(upstream.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (upstream, port)
}

fn hangup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_reloads_its_routes_on_hangup_and_keeps_them_when_the_new_file_is_wrong() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (upstream, upstream_port) = python_upstream(None);
    let dir = std::env::temp_dir().join(format!("paywall-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.toml");
    let port = |text: String| text.replace("127.0.0.1:8000", &format!("127.0.0.1:{upstream_port}"));
    let readme = readme_routes();
    assert_eq!(readme.lines().count(), 5, "{readme}");
    std::fs::write(&file, port(readme)).unwrap();
    let routes = port(std::fs::read_to_string(demo().join("routes.toml")).unwrap());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut dev = Child(
        paywall()
            .arg("dev")
            .arg(&file)
            .args(["--listen", &listen, "--rpc-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--facilitator-listen", "127.0.0.1:0"])
            .env("PAYWALL_LOG", "paywall=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut banner = BufReader::new(dev.0.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("try, in another shell") {
        let mut line = String::new();
        assert!(
            banner.read_line(&mut line).unwrap() > 0,
            "dev printed {text}"
        );
        text.push_str(&line);
    }
    let url = format!("http://{listen}");
    assert!(text.contains(&format!("gateway       {url}")), "{text}");
    let stderr = dev.0.stderr.take().unwrap();
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });

    let http = reqwest::Client::new();
    let amount = || {
        let http = http.clone();
        let url = format!("{url}/openapi.json");
        async move {
            let openapi: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            openapi["paths"]["/weather/{city}"]["get"]["x-payment-info"]["offers"][0]["amount"]
                .clone()
        }
    };
    assert_eq!(amount().await, "10000");

    // The README's file, as written: a demo wallet pays the Python API's weather.
    let wallet = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("1  "))
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap();
    let rpc_url = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("ledger (RPC)"))
        .unwrap()
        .trim();
    let payer = PayingClient::builder(
        wallet.parse::<Keypair>().unwrap(),
        Arc::new(JsonRpcClient::builder(rpc_url).build().unwrap()),
        Network::testnet(),
    )
    .build()
    .unwrap();
    let paid = payer
        .get(format!("{url}/weather/lima"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    assert_eq!(payment(&paid).unwrap().amount, 10_000);
    let answer: Value = paid.json().await.unwrap();
    assert_eq!(answer["city"], "lima");
    assert!(
        answer["payer"].as_str().unwrap().starts_with('G'),
        "{answer}"
    );

    // The demo file: what no route sold is served now.
    std::fs::write(&file, &routes).unwrap();
    hangup(&dev);
    let mut served = false;
    for _ in 0..50 {
        let free = http
            .get(format!("{url}/hello"))
            .send()
            .await
            .unwrap()
            .status();
        if free == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the demo file is served after SIGHUP");

    // A request under way when the file changes finishes on the connection it started on.
    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{url}/slow?s=1.5");
        async move { http.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        &file,
        routes.replace(
            "price = \"0.001\"\ndescription = \"Today's",
            "price = \"0.002\"\ndescription = \"Today's",
        ),
    )
    .unwrap();
    hangup(&dev);
    let mut reloaded = false;
    for _ in 0..50 {
        if amount().await == "20000" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the new price is served after SIGHUP");
    assert_eq!(slow.await.unwrap().unwrap(), 200);

    // A wrong file: refused with what is wrong, the routes served stay.
    std::fs::write(&file, "upstream = \"ftp://nowhere\"\n").unwrap();
    hangup(&dev);
    let refused = loop {
        let line = log_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("dev says why it did not reload");
        if line.contains("routes not reloaded") {
            break line;
        }
    };
    assert!(
        refused.contains("upstream must be an http:// or https:// URL"),
        "{refused}"
    );
    assert_eq!(amount().await, "20000");
    drop(dev);
    drop(upstream);
    let _ = std::fs::remove_dir_all(dir);
}

/// `paywall serve` as on a real network: the ledger is a sandbox reached only by URL (its
/// RPC over HTTP, our facilitator over HTTP), the settings from flags and the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sells_on_the_network_its_rpc_and_facilitator_reach() {
    use tower_paywall::Intent;
    use tower_paywall::sandbox::{DevConfig, DevStack, SandboxConfig, ServeConfig};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let ledger = DevStack::start(
        DevConfig::default()
            .sandbox(SandboxConfig::default().ledger_period(Duration::from_millis(200)))
            .rpc(ServeConfig::default().http(Some(loopback))),
    )
    .await
    .unwrap();
    let sandbox = &ledger.sandbox;
    let (pay_to, fee_payer, wallet) = (
        sandbox.funded_keypair().await.unwrap(),
        sandbox.funded_keypair().await.unwrap(),
        sandbox.funded_keypair().await.unwrap(),
    );
    let (_upstream, upstream_port) =
        python_upstream(Some("a secret for the upstream, 32 bytes or more"));
    let dir = std::env::temp_dir().join(format!("paywall-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.toml");
    let routes = readme_routes().replace("127.0.0.1:8000", &format!("127.0.0.1:{upstream_port}"));
    std::fs::write(&file, routes).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = Child(
        paywall()
            .arg("serve")
            .arg(&file)
            .args(["--listen", &listen, "--network", "testnet"])
            .args(["--pay-to", &pay_to.address().to_string()])
            .args(["--asset", &sandbox.usdc().to_string()])
            .args(["--rpc-url", &ledger.rpc.http_url().unwrap()])
            .args(["--facilitator-url", &ledger.facilitator_url])
            .args(["--state-dir", &dir.join("state").display().to_string()])
            .env(
                "PAYWALL_MPP_SECRET",
                "an MPP challenge secret, 32 bytes or more",
            )
            .env("PAYWALL_FEE_PAYER_SECRET", fee_payer.secret_seed())
            .env(
                "PAYWALL_UPSTREAM_SECRET",
                "a secret for the upstream, 32 bytes or more",
            )
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{url}/openapi.json")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "paywall serve answers");
    let balance = || async {
        sandbox
            .balance(&sandbox.usdc(), &pay_to.address())
            .await
            .unwrap()
    };
    let before = balance().await;
    for intent in [Intent::X402_EXACT, Intent::MPP_CHARGE] {
        let payer = peers::payer(&wallet, sandbox, intent);
        let paid = payer
            .get(format!("{url}/weather/quito"))
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), 200, "{intent}");
        let answer: Value = paid.json().await.unwrap();
        assert_eq!(
            answer["payer"],
            wallet.address().to_string(),
            "{intent}: verified"
        );
        assert_eq!(answer["intent"], intent.to_string());
    }
    assert_eq!(balance().await, before + 20_000);
    let _ = std::fs::remove_dir_all(dir);
}
