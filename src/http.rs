//! HTTP plumbing shared by the crate's outgoing clients (the x402 facilitator client and the
//! Soroban JSON-RPC client): URL checks, TLS (rustls with the ring provider, the webpki roots
//! plus extra PEM roots), the reqwest client, capped body reads and transport-error
//! classification.
//!
//! Errors here are neutral: each client maps them to its own public error type and wording.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Redirects followed per call.
const MAX_REDIRECTS: usize = 5;

/// Why a URL is not usable as an HTTP(S) endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlError {
    /// Not an absolute URL.
    NotAbsolute,
    /// The scheme is not `http` or `https`.
    Scheme,
    /// No host, or an empty one.
    NoHost,
    /// A user name or password.
    Credentials,
    /// A fragment (`#…`), which is never sent.
    Fragment,
}

impl UrlError {
    /// A short, fixed description (never the URL itself, which may hold a secret).
    pub(crate) const fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "not an absolute URL",
            Self::Scheme => "the scheme must be http or https",
            Self::NoHost => "the URL has no host",
            Self::Credentials => "credentials in the URL are not supported",
            Self::Fragment => "the URL must not have a fragment",
        }
    }
}

/// Parses an absolute `http`/`https` URL with a host, without credentials or a fragment.
/// A query is left to the caller.
pub(crate) fn http_url(input: &str) -> Result<Url, UrlError> {
    let url = Url::parse(input).map_err(|_| UrlError::NotAbsolute)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if url.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    Ok(url)
}

/// Why the HTTP client could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// An extra root certificate could not be read or used.
    Certificate(&'static str),
    /// The TLS configuration could not be built.
    Tls,
    /// reqwest refused the configuration.
    Client,
}

/// A reqwest client: rustls with the ring provider and the webpki roots plus `extra_roots`
/// (PEM texts), ALPN h2 and http/1.1, `connect_timeout`, at most 5 redirects, and the crate's
/// user agent. Per-request timeouts are the caller's.
pub(crate) fn client(
    connect_timeout: Duration,
    extra_roots: &[Vec<u8>],
) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(extra_roots)?)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("tower-paywall/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|_| ClientError::Client)
}

/// rustls with the ring provider; webpki roots plus the extra PEM roots; ALPN h2 and http/1.1.
pub(crate) fn tls_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra_roots {
        add_pem_roots(&mut roots, pem)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Adds every `CERTIFICATE` block of `pem` to `roots`; at least one is required.
fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), ClientError> {
    use ClientError::Certificate;
    let mut added = 0_usize;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|_| Certificate("unreadable PEM"))?;
        roots
            .add(certificate)
            .map_err(|_| Certificate("not a usable X.509 certificate"))?;
        added += 1;
    }
    if added == 0 {
        return Err(Certificate("no CERTIFICATE block in the PEM text"));
    }
    Ok(())
}

/// What a body read with [`read_capped`] gave.
#[derive(Debug)]
pub(crate) enum Body {
    /// The whole body, within the limit.
    Complete(Vec<u8>),
    /// The body (or its announced length) exceeds the limit; the rest was not read.
    TooLarge,
}

/// Reads a response body, giving up once it exceeds `limit` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Body, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Ok(Body::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(body))
}

/// Why a call gave no answer, as far as the transport can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Could not connect (including a failed TLS handshake): the request was never delivered.
    Connect,
    /// No answer in time.
    Timeout,
    /// The request could not be built: nothing was sent.
    Request,
    /// Too many redirects.
    Redirect,
    /// The connection failed after the request was sent.
    Sent,
    /// The connection failed while the answer's body was read.
    Reading,
}

/// Classifies a failed `send`: before the request was delivered, or after.
pub(crate) fn send_failure(error: &reqwest::Error) -> Failure {
    if error.is_connect() {
        Failure::Connect
    } else if error.is_timeout() {
        Failure::Timeout
    } else if error.is_builder() {
        Failure::Request
    } else if error.is_redirect() {
        Failure::Redirect
    } else {
        Failure::Sent
    }
}

/// Classifies a failure while reading the answer's body.
pub(crate) fn body_failure(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Reading
    }
}

/// Test helpers shared by the clients' tests: a self-signed loopback leaf certificate and a
/// minimal HTTPS server.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// Test-only self-signed leaf certificate for 127.0.0.1 / localhost (CA:FALSE), and its key.
    pub(crate) const TEST_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASWgAwIBAgIUIUHCi/pDV6hH+L+R7m/JDYCCLNgwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSdG93ZXItcGF5d2FsbCB0ZXN0MCAXDTAwMDEwMTAwMDAwMFoY
DzIwOTkxMjMxMDAwMDAwWjAdMRswGQYDVQQDDBJ0b3dlci1wYXl3YWxsIHRlc3Qw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQeRMNNwUHrk5+/o/ubr3v9F3EvCnim
LcgiAEqzEM3VN5H5nA/KBSvELVURjBwJoGUNZRYfWeY/7uqq03RqEeABo0EwPzAa
BgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwDAYDVR0TAQH/BAIwADATBgNVHSUE
DDAKBggrBgEFBQcDATAKBggqhkjOPQQDAgNHADBEAiBg4RvhhsKpvxEUjgnm0D+p
yw8bF0hgR8JJMZioxPs43AIgQRMAteTMPH+VSLGfTIIuawfWXQAEy+hZCHM0SKnI
zps=
-----END CERTIFICATE-----
";
    /// The key of [`TEST_CERT_PEM`].
    pub(crate) const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9Poxe7G83E49Aigs
ce0/Hlo8NZ6sQ+BwHRf9wQ/Ky9mhRANCAAQeRMNNwUHrk5+/o/ubr3v9F3EvCnim
LcgiAEqzEM3VN5H5nA/KBSvELVURjBwJoGUNZRYfWeY/7uqq03RqEeAB
-----END PRIVATE KEY-----
";

    /// A minimal blocking HTTPS/1.1 server (rustls, ring) with [`TEST_CERT_PEM`], answering
    /// every request with `body` as JSON.
    pub(crate) fn serve_tls(body: &'static str) -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let certs = vec![CertificateDer::from_pem_slice(TEST_CERT_PEM.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_checks() {
        assert!(http_url("https://rpc.example/soroban?key=1").is_ok());
        assert!(http_url("http://127.0.0.1:8000").is_ok());
        let cases = [
            ("", UrlError::NotAbsolute),
            ("/rpc", UrlError::NotAbsolute),
            ("ftp://example.com", UrlError::Scheme),
            ("file:///etc/passwd", UrlError::Scheme),
            ("https://user:pass@example.com", UrlError::Credentials),
            ("https://example.com/#frag", UrlError::Fragment),
        ];
        for (input, expected) in cases {
            assert_eq!(http_url(input).unwrap_err(), expected, "{input}");
        }
    }

    #[test]
    fn extra_roots() {
        let d = Duration::from_secs(1);
        assert!(client(d, &[]).is_ok());
        assert!(client(d, &[testing::TEST_CERT_PEM.as_bytes().to_vec()]).is_ok());
        assert!(matches!(
            client(d, &[b"not pem".to_vec()]),
            Err(ClientError::Certificate(_))
        ));
    }
}
