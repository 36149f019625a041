//! stoka on a hostile network, through its own listener (`stoka::listen`): connections that
//! trickle a request's head, sit idle, or trickle a body are let go within their deadlines,
//! while ordinary requests keep being answered; at most `max_connections` are served at once.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoka::config::HttpLimits;
use stoka::storage::RedbStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The stack's router served by stoka's listener with `limits`; its address.
async fn serve(limits: HttpLimits, name: &str) -> (support::Stack, std::net::SocketAddr) {
    let dir = support::temp_dir(name);
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let stack = support::start(storage, &dir, 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = stack.dev.server.router.clone();
    tokio::spawn(stoka::listen::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    (stack, address)
}

/// Writes `bytes` one every `pace` until the peer closes; when it closed (or `None` if it never
/// did within `give_up`).
async fn trickle(
    address: std::net::SocketAddr,
    bytes: Vec<u8>,
    pace: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut sent = 0;
    let mut buffer = [0_u8; 4096];
    while started.elapsed() < give_up {
        if sent < bytes.len() {
            if stream.write_all(&bytes[sent..=sent]).await.is_err() {
                return Some(started.elapsed());
            }
            sent += 1;
        }
        // Closed: a read ends (after any answer the server wrote).
        match tokio::time::timeout(pace, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {
                // An answer (a 400 for a late body); the connection closes after it.
                loop {
                    match tokio::time::timeout(give_up, stream.read(&mut buffer)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Some(started.elapsed()),
                        Ok(Ok(_)) => {}
                    }
                }
            }
            Err(_) => {}
        }
    }
    None
}

async fn manifest(address: std::net::SocketAddr) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    client
        .get(format!("http://{address}/.well-known/stoka.json"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_closed_while_others_are_served() {
    let limits = HttpLimits {
        header_timeout_seconds: 1,
        body_timeout_seconds: 2,
        max_connections: 256,
    };
    let (_stack, address) = serve(limits, "hostile-heads").await;
    let head = b"GET /.well-known/stoka.json HTTP/1.1\r\nHost: stoka\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n".to_vec();
    let mut slow = Vec::new();
    for n in 0..100 {
        // Half trickle a head, one byte every 100 ms; half send nothing at all.
        let bytes = if n % 2 == 0 { head.clone() } else { Vec::new() };
        slow.push(tokio::spawn(trickle(
            address,
            bytes,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )));
    }
    // Meanwhile, ordinary requests are answered.
    for _ in 0..5 {
        assert_eq!(manifest(address).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for connection in slow {
        let closed = connection
            .await
            .unwrap()
            .expect("the server closed the connection");
        assert!(
            closed < Duration::from_millis(2_500),
            "closed after {closed:?}, the deadline is 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_refused_within_its_deadline_as_json() {
    let limits = HttpLimits {
        header_timeout_seconds: 5,
        body_timeout_seconds: 1,
        max_connections: 256,
    };
    let (_stack, address) = serve(limits, "hostile-body").await;
    let started = Instant::now();
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut stream, mut writer) = stream.into_split();
    writer
        .write_all(b"POST /v1/auth/challenge HTTP/1.1\r\nHost: stoka\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{")
        .await
        .unwrap();
    // The body trickles: a byte every 100 ms, never enough in time.
    tokio::spawn(async move {
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let reading = async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("answered before 5 s");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(text.contains("\"service\":\"stoka\""), "{text}");
    assert!(elapsed < Duration::from_millis(2_500), "{elapsed:?}");
    // Meanwhile the server answers others.
    assert_eq!(manifest(address).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_connections_are_served_and_idle_ones_make_room() {
    let limits = HttpLimits {
        header_timeout_seconds: 1,
        body_timeout_seconds: 5,
        max_connections: 4,
    };
    let (_stack, address) = serve(limits, "hostile-bound").await;
    // Four connections that say nothing take every place…
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …so a fifth waits until the idle ones are let go (1 s), then is served.
    let started = Instant::now();
    assert_eq!(manifest(address).await, 200);
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(500) && waited < Duration::from_secs(3),
        "served after {waited:?}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_routes_are_rate_limited_per_address_and_challenges_overall() {
    let (_stack, address) = serve(HttpLimits::default(), "hostile-rate").await;
    let client = reqwest::Client::new();
    // 60 challenges at once: no more than the global 50 a second (and what refilled meanwhile).
    let asks = (0..60).map(|_| {
        client
            .post(format!("http://{address}/v1/auth/challenge"))
            .json(&serde_json::json!({"audience": "me-usage"}))
            .send()
    });
    let answers = futures_join(asks).await;
    let issued = answers.iter().filter(|status| **status == 200).count();
    let limited = answers.iter().filter(|status| **status == 429).count();
    assert_eq!(issued + limited, 60, "{answers:?}");
    assert!(
        issued >= 50 && limited > 0,
        "{issued} issued, {limited} limited"
    );
    // 120 free requests a minute from one address: what is left of them, then 429.
    let mut refused = None;
    for n in 0..100 {
        let response = client
            .get(format!("http://{address}/.well-known/stoka.json"))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            refused = Some((n, response));
            break;
        }
    }
    let (n, response) = refused.expect("the address was limited");
    assert!(n <= 60, "limited after {n} more");
    assert_eq!(response.headers()["retry-after"], "60");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["service"], "stoka");
}

/// Awaits every future, in order; their statuses.
async fn futures_join(
    asks: impl Iterator<
        Item = impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
    >,
) -> Vec<u16> {
    let tasks: Vec<_> = asks.map(tokio::spawn).collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap().status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn expired_challenges_are_swept_and_their_space_is_used_again() {
    use stoka::storage::{Challenge, Storage};
    let dir = support::temp_dir("hostile-sweep");
    let path = dir.join("stoka.redb");
    let storage = RedbStorage::open(&path).unwrap();
    let message = "stoka wallet challenge\n".repeat(8);
    let issue = |round: u64| {
        let (storage, message) = (&storage, &message);
        async move {
            for n in 0..2_000 {
                let challenge = Challenge {
                    audience: "me-usage".into(),
                    message: message.clone(),
                    expires_at: round * 1_000_000 + 300_000,
                };
                let id = format!("{round}-{n:032}");
                assert!(
                    storage
                        .issue_challenge(&id, &challenge, round * 1_000_000)
                        .await
                        .unwrap()
                );
            }
        }
    };
    issue(1).await;
    let grown = std::fs::metadata(&path).unwrap().len();
    // Expired, swept: every row goes, and the next as many fit in the same file.
    let mut swept = 0;
    loop {
        let batch = storage.sweep_expired(2_000_000, 500).await.unwrap();
        swept += batch;
        if batch == 0 {
            break;
        }
    }
    assert_eq!(swept, 2_000);
    assert!(
        storage
            .take_challenge("1-00000000000000000000000000000000", 2_000_000)
            .await
            .unwrap()
            .is_none()
    );
    for round in 2..5 {
        issue(round).await;
        loop {
            if storage
                .sweep_expired(round * 1_000_000 + 400_000, 500)
                .await
                .unwrap()
                == 0
            {
                break;
            }
        }
    }
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after <= grown + grown / 4,
        "the file grew from {grown} to {after} bytes over three more rounds"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
