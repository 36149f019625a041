//! Configuration: a TOML file (every key optional) and `STOKA_*` environment variables, which
//! win over the file.
//!
//! ```toml
//! listen = "127.0.0.1:8402"
//! # metrics_listen = "127.0.0.1:9464" # Prometheus text at /metrics (off unless set)
//! public_url = "https://stoka.example"
//! network = "testnet"                # or "pubnet", or a CAIP-2 id
//! pay_to = "G…"
//! # asset = "C…"                     # default: the network's USDC
//! rpc_url = "https://rpc.example"    # needed for MPP
//!
//! [x402]
//! # facilitator_url = "…"            # default: the hosted OpenZeppelin facilitator
//! # facilitator_api_key = "…"        # better: STOKA_FACILITATOR_API_KEY
//!
//! [mpp]
//! # secret = "…"                     # at least 32 bytes; better: STOKA_MPP_SECRET. Enables MPP charge.
//! # fee_payer_secret = "S…"          # pay the fees of MPP charge transfers
//! # channel_secret = "S…"            # pay_to's secret: enables MPP channel on pop
//!
//! [store]
//! backend = "redb"                   # or "redis"
//! path = "stoka.redb"
//! # redis_url = "redis://127.0.0.1/"  # or redis+unix:///…, redis+cluster://host:port,…
//!
//! [rates]                            # USDC atomic units; defaults are stoka's published rates
//! [limits]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pricing::{Limits, Rates};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen (default `127.0.0.1:8402`).
    pub listen: String,
    /// Where to serve `/metrics` (Prometheus text); off unless set.
    pub metrics_listen: Option<String>,
    /// The public base URL (for the 402's resource URL and the challenge messages).
    pub public_url: Option<String>,
    /// `testnet`, `pubnet`, or a CAIP-2 network id.
    pub network: String,
    /// Who is paid (`G…`).
    pub pay_to: Option<String>,
    /// The asset's contract (`C…`); default the network's USDC.
    pub asset: Option<String>,
    /// A Soroban RPC URL (needed for MPP).
    pub rpc_url: Option<String>,
    /// x402 settings.
    pub x402: X402Config,
    /// MPP settings.
    pub mpp: MppConfig,
    /// The store.
    pub store: StoreConfig,
    /// The rates.
    pub rates: Rates,
    /// The limits.
    pub limits: Limits,
    /// How long and how many connections are served (a slow or idle client is let go).
    pub http: HttpLimits,
}

/// Connection limits: what a client that trickles bytes or holds connections open may take.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Seconds to receive a request's head; also how long a kept-alive connection may sit idle
    /// between requests (default 10).
    pub header_timeout_seconds: u64,
    /// Seconds to receive a request's body, from its head (default 30).
    pub body_timeout_seconds: u64,
    /// Connections served at once; more wait to be accepted (default 1024).
    pub max_connections: usize,
}

impl HttpLimits {
    fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("http.header_timeout_seconds", self.header_timeout_seconds),
            ("http.body_timeout_seconds", self.body_timeout_seconds),
            ("http.max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be above zero".into(),
                });
            }
        }
        Ok(())
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            max_connections: 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8402".into(),
            metrics_listen: None,
            public_url: None,
            network: "testnet".into(),
            pay_to: None,
            asset: None,
            rpc_url: None,
            x402: X402Config::default(),
            mpp: MppConfig::default(),
            store: StoreConfig::default(),
            rates: Rates::default(),
            limits: Limits::default(),
            http: HttpLimits::default(),
        }
    }
}

/// x402 `exact` settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct X402Config {
    /// Offer x402 `exact` (default true).
    pub enabled: bool,
    /// The facilitator (default: the hosted OpenZeppelin facilitator of the network).
    pub facilitator_url: Option<String>,
    /// The facilitator's API key.
    pub facilitator_api_key: Option<String>,
    /// How long a signed payment may take to settle (default 60).
    pub max_timeout_seconds: u64,
}

impl Default for X402Config {
    fn default() -> Self {
        X402Config {
            enabled: true,
            facilitator_url: None,
            facilitator_api_key: None,
            max_timeout_seconds: 60,
        }
    }
}

/// MPP settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MppConfig {
    /// The secret that binds challenge ids (32 bytes or more). Enables MPP `charge`.
    pub secret: Option<String>,
    /// The realm of the challenges (default: the public URL's host, or `stoka`).
    pub realm: Option<String>,
    /// A funded account that pays the fees of `charge` transfers.
    pub fee_payer_secret: Option<String>,
    /// The payee's secret key: enables MPP `channel` on `pop` (it closes channels). The
    /// vouchers are kept in the store.
    pub channel_secret: Option<String>,
}

/// The store back end.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One embedded redb file.
    #[default]
    Redb,
    /// A Redis ≥ 7 (or Valkey) server, or a Redis Cluster.
    Redis,
}

/// Store settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The back end (default redb).
    pub backend: Backend,
    /// The redb file (default `stoka.redb`).
    pub path: PathBuf,
    /// The Redis URL: `redis://host:port`, `redis+unix:///path`, or
    /// `redis+cluster://host:port,host:port,…` for a Redis Cluster.
    pub redis_url: Option<String>,
    /// The prefix of every Redis key (default `stoka`).
    pub namespace: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Redb,
            path: "stoka.redb".into(),
            redis_url: None,
            namespace: "stoka".into(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("bad configuration in {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 when unknown).
        line: usize,
        /// Why.
        message: String,
    },
    /// An environment variable or setting has a bad value.
    #[error("bad setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// The environment variables read, and the settings they set.
pub const ENVIRONMENT: [(&str, &str); 20] = [
    ("STOKA_LISTEN", "listen"),
    ("STOKA_METRICS_LISTEN", "metrics_listen"),
    ("STOKA_PUBLIC_URL", "public_url"),
    ("STOKA_NETWORK", "network"),
    ("STOKA_PAY_TO", "pay_to"),
    ("STOKA_ASSET", "asset"),
    ("STOKA_RPC_URL", "rpc_url"),
    ("STOKA_FACILITATOR_URL", "x402.facilitator_url"),
    ("STOKA_FACILITATOR_API_KEY", "x402.facilitator_api_key"),
    ("STOKA_MPP_SECRET", "mpp.secret"),
    ("STOKA_MPP_REALM", "mpp.realm"),
    ("STOKA_FEE_PAYER_SECRET", "mpp.fee_payer_secret"),
    ("STOKA_CHANNEL_SECRET", "mpp.channel_secret"),
    ("STOKA_STORE", "store.backend"),
    ("STOKA_STORE_PATH", "store.path"),
    ("STOKA_REDIS_URL", "store.redis_url"),
    ("STOKA_REDIS_NAMESPACE", "store.namespace"),
    (
        "STOKA_HEADER_TIMEOUT_SECONDS",
        "http.header_timeout_seconds",
    ),
    ("STOKA_BODY_TIMEOUT_SECONDS", "http.body_timeout_seconds"),
    ("STOKA_MAX_CONNECTIONS", "http.max_connections"),
];

impl Config {
    /// The file at `path` (if any), then the environment `env` (name → value) over it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an unreadable or invalid file or a bad variable.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                toml::from_str(&text).map_err(|error: toml::de::Error| {
                    // The message and line only: the parser's excerpt of the file could
                    // show a secret.
                    let line = error
                        .span()
                        .and_then(|span| text.get(..span.start))
                        .map_or(0, |before| before.matches('\n').count() + 1);
                    ConfigError::Parse {
                        path: path.to_owned(),
                        line,
                        message: error.message().to_owned(),
                    }
                })?
            }
        };
        for (name, _) in ENVIRONMENT {
            if let Some(value) = env(name).filter(|value| !value.is_empty()) {
                config.set(name, value)?;
            }
        }
        config.http.check()?;
        Ok(config)
    }

    fn set(&mut self, name: &'static str, value: String) -> Result<(), ConfigError> {
        match name {
            "STOKA_LISTEN" => self.listen = value,
            "STOKA_METRICS_LISTEN" => self.metrics_listen = Some(value),
            "STOKA_PUBLIC_URL" => self.public_url = Some(value),
            "STOKA_NETWORK" => self.network = value,
            "STOKA_PAY_TO" => self.pay_to = Some(value),
            "STOKA_ASSET" => self.asset = Some(value),
            "STOKA_RPC_URL" => self.rpc_url = Some(value),
            "STOKA_FACILITATOR_URL" => self.x402.facilitator_url = Some(value),
            "STOKA_FACILITATOR_API_KEY" => self.x402.facilitator_api_key = Some(value),
            "STOKA_MPP_SECRET" => self.mpp.secret = Some(value),
            "STOKA_MPP_REALM" => self.mpp.realm = Some(value),
            "STOKA_FEE_PAYER_SECRET" => self.mpp.fee_payer_secret = Some(value),
            "STOKA_CHANNEL_SECRET" => self.mpp.channel_secret = Some(value),
            "STOKA_STORE" => {
                self.store.backend = match value.as_str() {
                    "redb" => Backend::Redb,
                    "redis" => Backend::Redis,
                    _ => {
                        return Err(ConfigError::Invalid {
                            name,
                            reason: "expected redb or redis".into(),
                        });
                    }
                }
            }
            "STOKA_STORE_PATH" => self.store.path = value.into(),
            "STOKA_REDIS_URL" => self.store.redis_url = Some(value),
            "STOKA_REDIS_NAMESPACE" => self.store.namespace = value,
            "STOKA_HEADER_TIMEOUT_SECONDS" => {
                self.http.header_timeout_seconds = positive(name, &value)?;
            }
            "STOKA_BODY_TIMEOUT_SECONDS" => {
                self.http.body_timeout_seconds = positive(name, &value)?
            }
            "STOKA_MAX_CONNECTIONS" => {
                self.http.max_connections =
                    usize::try_from(positive(name, &value)?).map_err(|_| ConfigError::Invalid {
                        name,
                        reason: "too large".into(),
                    })?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A whole number above zero.
fn positive(name: &'static str, value: &str) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err(ConfigError::Invalid {
            name,
            reason: format!("{value:?} is not a whole number above zero"),
        }),
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Redb => "redb",
            Backend::Redis => "redis",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("stoka-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stoka.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nnetwork = \"pubnet\"\n[store]\nbackend = \"redis\"\n[rates]\npop = 7\n[limits]\nmax_receives = 3\n",
        )
        .unwrap();
        let env = |name: &str| (name == "STOKA_NETWORK").then(|| "testnet".to_owned());
        let config = Config::load(Some(&path), env).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.network, "testnet");
        assert_eq!(config.store.backend, Backend::Redis);
        assert_eq!(config.rates.pop, 7);
        assert_eq!(
            config.rates.store_base, 1000,
            "unset rates keep their defaults"
        );
        assert_eq!(config.limits.max_receives, 3);
        let none = |_: &str| None;
        assert_eq!(Config::load(None, none).unwrap(), Config::default());
        assert_eq!(Config::default().listen, "127.0.0.1:8402");

        std::fs::write(&path, "listen = 5\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), none),
            Err(ConfigError::Parse { .. })
        ));
        // The error names the line, never its text (it could hold a secret).
        std::fs::write(&path, "[mpp]\nfee_payer_secret = SBSECRETSEED\n").unwrap();
        let error = Config::load(Some(&path), none).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("SBSECRETSEED"), "{error}");
        std::fs::write(&path, "typo = 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), none),
            Err(ConfigError::Parse { .. })
        ));
        let bad = |name: &str| (name == "STOKA_STORE").then(|| "sqlite".to_owned());
        assert!(matches!(
            Config::load(None, bad),
            Err(ConfigError::Invalid {
                name: "STOKA_STORE",
                ..
            })
        ));
        assert!(matches!(
            Config::load(Some(&dir.join("missing.toml")), none),
            Err(ConfigError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connection_limits_come_from_the_file_or_the_environment_and_are_never_zero() {
        let env = |name: &str| match name {
            "STOKA_HEADER_TIMEOUT_SECONDS" => Some("5".to_owned()),
            "STOKA_MAX_CONNECTIONS" => Some("64".to_owned()),
            _ => None,
        };
        let config = Config::load(None, env).unwrap();
        assert_eq!(
            config.http,
            HttpLimits {
                header_timeout_seconds: 5,
                body_timeout_seconds: 30,
                max_connections: 64,
            }
        );
        for (name, value) in [
            ("STOKA_BODY_TIMEOUT_SECONDS", "0"),
            ("STOKA_MAX_CONNECTIONS", "many"),
            ("STOKA_HEADER_TIMEOUT_SECONDS", "-1"),
        ] {
            let bad = |asked: &str| (asked == name).then(|| value.to_owned());
            assert!(
                matches!(Config::load(None, bad), Err(ConfigError::Invalid { .. })),
                "{name}={value}"
            );
        }
        let dir = std::env::temp_dir().join(format!("stoka-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stoka.toml");
        std::fs::write(&path, "[http]\nmax_connections = 0\n").unwrap();
        let none = |_: &str| None;
        assert!(matches!(
            Config::load(Some(&path), none),
            Err(ConfigError::Invalid {
                name: "http.max_connections",
                ..
            })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
