//! The routes file: which requests to an upstream are sold, and at what price.
//!
//! ```toml
//! upstream = "http://127.0.0.1:8000"
//!
//! [[route]]
//! path = "/weather/{city}"
//! price = "0.001"
//! ```
//!
//! | key | meaning |
//! |---|---|
//! | `upstream` | the service sold: an `http://` or `https://` URL (required) |
//! | `title`, `description` | the service's name and what it is, in the discovery documents |
//! | `route.method` | `GET`, `POST` … (default: any method) |
//! | `route.path` | `/literal/{param}/…`, a `{param}` matching one segment; a last `*` matching the rest |
//! | `route.price` | `"0.001"` (USDC), `"free"`, or `{ base = "0.001", per_kib = "0.0001", max_bytes = 1048576 }`, a price by the request's `Content-Length` |
//! | `route.intents` | what is offered: `"x402"`, `"charge"`, `"channel"` (default: `x402` and `charge`) |
//! | `route.settle` | `"after-success"` (default: settled once the upstream answered below 400, a redirect included; an error is not charged) or `"before"` |
//! | `route.description` | shown in the offers |
//!
//! The first route that matches a request prices it; a request no route matches is answered
//! 404 (sell the rest for nothing with a last `path = "/*"`, `price = "free"`). So is a path
//! that could be read as another (see [`routed_path`]) is answered 400. Unknown keys, unreadable prices and patterns, and two routes for the same
//! method and path are refused with the route's number and what is wrong.

use std::borrow::Cow;
use std::fmt;

use http::Method;
use serde::Deserialize;
use tower_paywall::Price;

/// A routes file, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    /// The upstream's base URL (no trailing `/`).
    pub upstream: String,
    /// The service's name (default `paywall`).
    pub title: String,
    /// What the service is.
    pub description: Option<String>,
    /// The routes, in the file's order.
    pub routes: Vec<Route>,
}

/// One sold route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `None`: any method.
    pub method: Option<Method>,
    /// The path pattern.
    pub path: PathPattern,
    /// Its price.
    pub price: PriceRule,
    /// What is offered.
    pub intents: Vec<Intent>,
    /// When the payment settles.
    pub settle: Settle,
    /// Shown in the offers.
    pub description: Option<String>,
}

/// A payment intent the gateway offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Intent {
    /// x402 v2 `exact`.
    X402,
    /// MPP `charge`.
    Charge,
    /// MPP `channel`.
    Channel,
}

/// When a route's payment settles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Settle {
    /// Once the upstream answered below 400 (a redirect is an answer); an error is not charged.
    #[default]
    AfterSuccess,
    /// Before the request goes upstream.
    Before,
}

/// A route's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceRule {
    /// Not charged.
    Free,
    /// This many atomic units.
    Fixed(i128),
    /// `base + ceil(bytes / 1024) × per_kib` atomic units, by the request's `Content-Length`,
    /// for at most `max_bytes`.
    PerKib {
        /// The price of an empty body.
        base: i128,
        /// The price of each KiB begun.
        per_kib: i128,
        /// The largest body sold (`None`: any).
        max_bytes: Option<u64>,
    },
}

impl fmt::Display for PriceRule {
    /// `free`, `0.001 USDC`, `0.001 USDC + 0.0001 a KiB (at most 1048576 bytes)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usdc = |atomic: i128| {
            tower_paywall::price::Amount::from_atomic(atomic)
                .map_or_else(|_| atomic.to_string(), |amount| amount.to_string())
        };
        match *self {
            PriceRule::Free => f.write_str("free"),
            PriceRule::Fixed(atomic) => write!(f, "{} USDC", usdc(atomic)),
            PriceRule::PerKib {
                base,
                per_kib,
                max_bytes,
            } => {
                write!(f, "{} USDC + {} a KiB", usdc(base), usdc(per_kib))?;
                match max_bytes {
                    Some(max) => write!(f, " (at most {max} bytes)"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why a request cannot be priced before it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpriced {
    /// The price is by length and the request declares none (411).
    LengthRequired,
    /// The body is larger than the route sells (413).
    TooLarge {
        /// The largest body sold.
        max_bytes: u64,
    },
}

impl PriceRule {
    /// The price of a request declaring `content_length` (`Ok(None)`: free).
    ///
    /// # Errors
    ///
    /// [`Unpriced`] when the price is by length and the length is missing or too large.
    pub fn price(&self, content_length: Option<u64>) -> Result<Option<i128>, Unpriced> {
        match *self {
            PriceRule::Free => Ok(None),
            PriceRule::Fixed(amount) => Ok(Some(amount)),
            PriceRule::PerKib {
                base,
                per_kib,
                max_bytes,
            } => {
                let length = content_length.ok_or(Unpriced::LengthRequired)?;
                if let Some(max_bytes) = max_bytes
                    && length > max_bytes
                {
                    return Err(Unpriced::TooLarge { max_bytes });
                }
                let kib = i128::from(length.div_ceil(1024));
                Ok(Some(base.saturating_add(kib.saturating_mul(per_kib))))
            }
        }
    }
}

/// The path a request is routed on: its path with percent-encoding decoded and one trailing
/// `/` dropped (`/p%61id/x/` is routed as `/paid/x`), so that no spelling an upstream reads as
/// a sold path escapes its price. `None` (400) for a path that could still be read as another:
/// an empty, `.` or `..` segment, a backslash, a `;` (path parameters, which some servers
/// drop: `/paid;x`), an encoded `/`, `\\` or `%` (a double encoding), or bytes that are not
/// UTF-8 once decoded.
pub fn routed_path(path: &str) -> Option<Cow<'_, str>> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Cow::Borrowed("/"));
    }
    let decoded: Cow<'_, str> = if rest.contains('%') {
        let lower = rest.to_ascii_lowercase();
        if ["%2f", "%5c", "%25"]
            .iter()
            .any(|encoded| lower.contains(encoded))
        {
            return None;
        }
        percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .ok()?
    } else {
        Cow::Borrowed(rest)
    };
    let clean = !decoded.contains(['\\', ';'])
        && decoded
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if !clean {
        return None;
    }
    Some(match decoded {
        Cow::Borrowed(_) => Cow::Borrowed(&path[..=rest.len()]),
        Cow::Owned(decoded) => Cow::Owned(format!("/{decoded}")),
    })
}

/// A path pattern: literal segments, `{name}` for one segment, a last `*` for the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

impl PathPattern {
    /// Reads `/a/{b}/*`.
    ///
    /// # Errors
    ///
    /// Why the pattern is not one.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let Some(rest_of) = text.strip_prefix('/') else {
            return Err("a path starts with /".into());
        };
        let parts: Vec<&str> = if rest_of.is_empty() {
            Vec::new()
        } else {
            rest_of.split('/').collect()
        };
        let mut segments = Vec::new();
        let mut rest = false;
        for (n, part) in parts.iter().enumerate() {
            match *part {
                "*" if n + 1 == parts.len() => rest = true,
                "*" => return Err("* comes last".into()),
                "" => return Err("an empty segment (//, or a trailing /)".into()),
                param if param.starts_with('{') => {
                    let name = param
                        .strip_prefix('{')
                        .and_then(|p| p.strip_suffix('}'))
                        .filter(|name| {
                            !name.is_empty()
                                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        });
                    if name.is_none() {
                        return Err(format!("{param} is not a {{name}} parameter"));
                    }
                    segments.push(Segment::Param);
                }
                literal if literal.contains(['{', '}', '*', '?', '#']) => {
                    return Err(format!("{literal} mixes a literal with {{, }}, *, ? or #"));
                }
                literal => segments.push(Segment::Literal(literal.to_owned())),
            }
        }
        Ok(PathPattern {
            text: text.to_owned(),
            segments,
            rest,
        })
    }

    /// Whether `path` (a request's path, no query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = (!path.is_empty())
            .then(|| path.split('/'))
            .into_iter()
            .flatten();
        for segment in &self.segments {
            let matched = match (segment, parts.next()) {
                (_, None) => false,
                // Whatever the case: an upstream that routes without it is still charged.
                (Segment::Literal(literal), Some(part)) => literal.eq_ignore_ascii_case(part),
                (Segment::Param, Some(part)) => !part.is_empty(),
            };
            if !matched {
                return false;
            }
        }
        self.rest || parts.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a routes file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutesError {
    /// Not TOML, or not the shape of a routes file.
    #[error("the routes file does not read: {0}")]
    Syntax(String),
    /// The upstream is not an `http(s)://` URL.
    #[error("upstream must be an http:// or https:// URL, not {0:?}")]
    Upstream(String),
    /// A route is wrong.
    #[error("route {number} ({path}): {why}")]
    Route {
        /// Its number in the file, from 1.
        number: usize,
        /// Its path as written.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// No route.
    #[error("the file sells nothing: add a [[route]]")]
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    upstream: String,
    title: Option<String>,
    description: Option<String>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteText {
    method: Option<String>,
    path: String,
    price: PriceText,
    intents: Option<Vec<String>>,
    settle: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PriceText {
    Text(String),
    #[serde(rename_all = "snake_case")]
    PerKib {
        base: String,
        per_kib: String,
        max_bytes: Option<u64>,
    },
}

impl Routes {
    /// Reads and checks a routes file's text.
    ///
    /// # Errors
    ///
    /// [`RoutesError`], naming the route and what is wrong.
    pub fn parse(text: &str) -> Result<Routes, RoutesError> {
        let file: FileText =
            toml::from_str(text).map_err(|error| RoutesError::Syntax(error.to_string()))?;
        let upstream = file.upstream.trim_end_matches('/').to_owned();
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|scheme| upstream.starts_with(scheme) && upstream.len() > scheme.len());
        if !scheme_ok || upstream.contains(char::is_whitespace) {
            return Err(RoutesError::Upstream(file.upstream));
        }
        if file.routes.is_empty() {
            return Err(RoutesError::Empty);
        }
        let mut routes: Vec<Route> = Vec::with_capacity(file.routes.len());
        for (index, text) in file.routes.into_iter().enumerate() {
            let wrong = |why: String| RoutesError::Route {
                number: index + 1,
                path: text.path.clone(),
                why,
            };
            let route = read_route(&text).map_err(wrong)?;
            let same = routes
                .iter()
                .position(|other| other.method == route.method && other.path == route.path);
            if let Some(other) = same {
                return Err(wrong(format!(
                    "the same method and path as route {}",
                    other + 1
                )));
            }
            routes.push(route);
        }
        Ok(Routes {
            upstream,
            title: file.title.unwrap_or_else(|| "paywall".into()),
            description: file.description,
            routes,
        })
    }

    /// The first route matching `method` and `path`.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.position(method, path).map(|index| &self.routes[index])
    }

    /// The index of the first route matching `method` and `path` (its routed form, see
    /// [`routed_path`]). `HEAD` matches a `GET` route: it is priced as the `GET` it answers
    /// like.
    pub fn position(&self, method: &Method, path: &str) -> Option<usize> {
        self.routes.iter().position(|route| {
            let method_matches = route
                .method
                .as_ref()
                .is_none_or(|own| own == method || (*own == Method::GET && method == Method::HEAD));
            method_matches && route.path.matches(path)
        })
    }

    /// The methods of the paid routes naming one that match `path`.
    pub fn sold_for(&self, path: &str) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|route| route.price != PriceRule::Free && route.path.matches(path))
            .filter_map(|route| route.method.as_ref().map(Method::as_str))
            .collect()
    }
}

fn read_route(text: &RouteText) -> Result<Route, String> {
    let method = match &text.method {
        None => None,
        Some(method) if method == "*" => None,
        Some(method) => Some(
            Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{method:?} is not an HTTP method"))?,
        ),
    };
    let path = PathPattern::parse(&text.path)?;
    let amount = |text: &str| -> Result<i128, String> {
        let price =
            Price::parse(text).map_err(|error| format!("price {text:?} does not read: {error}"))?;
        Ok(price.amount().atomic())
    };
    let price = match &text.price {
        PriceText::Text(free) if free == "free" => PriceRule::Free,
        PriceText::Text(fixed) => PriceRule::Fixed(amount(fixed)?),
        PriceText::PerKib {
            base,
            per_kib,
            max_bytes,
        } => PriceRule::PerKib {
            base: amount(base)?,
            per_kib: amount(per_kib)?,
            max_bytes: *max_bytes,
        },
    };
    if price == PriceRule::Fixed(0) {
        return Err("a price of 0: write \"free\"".into());
    }
    let intents = match &text.intents {
        None => vec![Intent::X402, Intent::Charge],
        Some(names) if names.is_empty() => return Err("intents is empty".into()),
        Some(names) => {
            let mut intents = Vec::new();
            for name in names {
                let intent = match name.as_str() {
                    "x402" => Intent::X402,
                    "charge" => Intent::Charge,
                    "channel" => Intent::Channel,
                    other => {
                        return Err(format!(
                            "intent {other:?} is not one of \"x402\", \"charge\", \"channel\""
                        ));
                    }
                };
                if !intents.contains(&intent) {
                    intents.push(intent);
                }
            }
            intents
        }
    };
    let settle = match text.settle.as_deref() {
        None | Some("after-success") => Settle::AfterSuccess,
        Some("before") => Settle::Before,
        Some(other) => {
            return Err(format!(
                "settle {other:?} is not \"after-success\" or \"before\""
            ));
        }
    };
    Ok(Route {
        method,
        path,
        price,
        intents,
        settle,
        description: text.description.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's five-line file.
    fn readme() -> &'static str {
        let readme = include_str!("../../../README.md");
        let section = readme.split("`paywall`\n").nth(1).unwrap();
        let block = section.split("```toml\n").nth(1).unwrap();
        block.split("```").next().unwrap()
    }

    #[test]
    fn the_readme_file_reads() {
        let routes = Routes::parse(readme()).unwrap();
        assert_eq!(readme().lines().count(), 5);
        assert_eq!(routes.upstream, "http://127.0.0.1:8000");
        let route = routes.find(&Method::GET, "/weather/paris").unwrap();
        assert_eq!(route.price, PriceRule::Fixed(10_000));
        assert_eq!(route.intents, [Intent::X402, Intent::Charge]);
        assert_eq!(route.settle, Settle::AfterSuccess);
        assert!(routes.find(&Method::GET, "/weather").is_none());
        assert!(routes.find(&Method::GET, "/weather/paris/today").is_none());
        // Literal segments match whatever their case: an upstream routing without it is
        // still charged.
        assert!(routes.find(&Method::GET, "/WEATHER/paris").is_some());
        // HEAD is priced as GET.
        assert!(routes.find(&Method::HEAD, "/weather/paris").is_some());
    }

    #[test]
    fn routes_match_in_order_by_method_and_pattern() {
        let routes = Routes::parse(
            r#"
upstream = "https://api.example/"
[[route]]
method = "post"
path = "/upload/*"
price = { base = "0.001", per_kib = "0.0001", max_bytes = 4096 }
intents = ["x402", "channel", "x402"]
settle = "before"
description = "an upload"
[[route]]
path = "/upload/{name}"
price = "free"
[[route]]
path = "/"
price = "0.5"
"#,
        )
        .unwrap();
        assert_eq!(routes.upstream, "https://api.example");
        let upload = routes.find(&Method::POST, "/upload/a/b").unwrap();
        assert_eq!(upload.intents, [Intent::X402, Intent::Channel]);
        assert_eq!(upload.settle, Settle::Before);
        assert_eq!(upload.description.as_deref(), Some("an upload"));
        assert_eq!(upload.price.price(Some(0)), Ok(Some(10_000)));
        assert_eq!(upload.price.price(Some(1)), Ok(Some(11_000)));
        assert_eq!(upload.price.price(Some(1024)), Ok(Some(11_000)));
        assert_eq!(upload.price.price(Some(1025)), Ok(Some(12_000)));
        assert_eq!(upload.price.price(None), Err(Unpriced::LengthRequired));
        assert_eq!(
            upload.price.price(Some(4097)),
            Err(Unpriced::TooLarge { max_bytes: 4096 })
        );
        // Another method falls to the next route.
        let free = routes.find(&Method::GET, "/upload/a").unwrap();
        assert_eq!(free.price.price(None), Ok(None));
        assert!(routes.find(&Method::GET, "/upload/a/b").is_none());
        assert!(routes.find(&Method::GET, "/").is_some());
        assert!(routes.find(&Method::GET, "/other").is_none());
    }

    #[test]
    fn paths_are_routed_decoded_and_unreadable_spellings_refused() {
        for (path, routed) in [
            ("/", "/"),
            ("/paid/x", "/paid/x"),
            ("/paid/x/", "/paid/x"),
            ("/p%61id/x", "/paid/x"),
            ("/caf%C3%A9", "/café"),
        ] {
            assert_eq!(routed_path(path).as_deref(), Some(routed), "{path}");
        }
        for path in [
            "",
            "paid",
            "//paid/x",
            "/free//paid",
            "/free/../paid",
            "/free/%2e%2e/paid",
            "/free/./x",
            "/free%2fpaid",
            "/free%2Fpaid",
            "/free\\..\\paid",
            "/free/%5c",
            "/p%2561id",
            "/%ff",
            "/paid;jsessionid=1",
            "/paid%3bx",
        ] {
            assert_eq!(routed_path(path), None, "{path}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let route = |body: &str| format!("upstream = \"http://u\"\n[[route]]\n{body}\n");
        for (text, error) in [
            ("not toml".to_owned(), "does not read"),
            (
                "upstream = \"ftp://u\"\n[[route]]\npath = \"/\"\nprice = \"1\"".to_owned(),
                "upstream must be",
            ),
            ("upstream = \"http://u\"".to_owned(), "sells nothing"),
            (
                route("path = \"/\"\nprice = \"1\"\ncolour = 1"),
                "does not read",
            ),
            (
                route("path = \"/\"\nprice = \"abc\""),
                "route 1 (/): price \"abc\"",
            ),
            (route("path = \"/\"\nprice = \"0\""), "write \"free\""),
            (route("path = \"/\"\nprice = \"-1\""), "route 1 (/): price"),
            (route("path = \"x\"\nprice = \"1\""), "starts with /"),
            (route("path = \"/a//b\"\nprice = \"1\""), "empty segment"),
            (route("path = \"/*/a\"\nprice = \"1\""), "* comes last"),
            (route("path = \"/{a b}\"\nprice = \"1\""), "not a {name}"),
            (route("path = \"/a{b}\"\nprice = \"1\""), "mixes a literal"),
            (
                route("path = \"/\"\nprice = \"1\"\nmethod = \"G T\""),
                "not an HTTP method",
            ),
            (
                route("path = \"/\"\nprice = \"1\"\nintents = []"),
                "intents is empty",
            ),
            (
                route("path = \"/\"\nprice = \"1\"\nintents = [\"exact\"]"),
                "intent \"exact\"",
            ),
            (
                route("path = \"/\"\nprice = \"1\"\nsettle = \"later\""),
                "settle \"later\"",
            ),
            (
                format!(
                    "{}[[route]]\npath = \"/\"\nprice = \"2\"\n",
                    route("path = \"/\"\nprice = \"1\"")
                ),
                "route 2 (/): the same method and path as route 1",
            ),
        ] {
            let refused = Routes::parse(&text).unwrap_err().to_string();
            assert!(refused.contains(error), "{text:?}: {refused}");
        }
    }
}
