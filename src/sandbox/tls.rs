//! The sandbox's loopback TLS identity: a certificate made at start, for `localhost`,
//! `127.0.0.1` and `::1`, written to a file callers trust (`NODE_EXTRA_CA_CERTS`, or
//! [`JsonRpcClientBuilder::root_certificate_pem`](crate::stellar::JsonRpcClientBuilder::root_certificate_pem)).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A freshly generated loopback certificate and its key (the key never leaves memory).
pub(crate) struct LoopbackIdentity {
    pub(crate) certificate_pem: String,
    certificate_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// Why the TLS identity could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate could not be generated.
    #[error("cannot generate the loopback certificate")]
    Generate,
    /// The TLS configuration was refused.
    #[error("cannot configure TLS")]
    Config,
    /// The certificate file could not be written.
    #[error("cannot write the certificate to {path}: {source}")]
    Write {
        /// Where it was to be written.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl LoopbackIdentity {
    /// A new self-signed leaf certificate (not a CA: webpki refuses a CA certificate used as a
    /// server's own) for the loopback names.
    pub(crate) fn generate() -> Result<Self, TlsError> {
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let certified =
            rcgen::generate_simple_self_signed(names).map_err(|_| TlsError::Generate)?;
        Ok(LoopbackIdentity {
            certificate_pem: certified.cert.pem(),
            certificate_der: certified.cert.der().clone(),
            key_der: certified.signing_key.serialize_der(),
        })
    }

    /// Writes the certificate (never the key) to `path`, creating its folder.
    pub(crate) fn write_certificate(&self, path: &Path) -> Result<(), TlsError> {
        let write = || -> std::io::Result<()> {
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::fs::write(path, &self.certificate_pem)
        };
        write().map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// A rustls server configuration (ring provider) presenting this certificate.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(vec![self.certificate_der.clone()], key)
            .map_err(|_| TlsError::Config)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
