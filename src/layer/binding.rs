//! One payment, one request: a payment's record answers only the request that made it.
//!
//! The binding is a digest of the method, the path and query, and every header pricing read
//! through [`PriceRequest::header`](crate::PriceRequest::header) or
//! [`content_length`](crate::PriceRequest::content_length) (names and all values). A payment's
//! record keeps it with the credential's digest, so the same credential on another request
//! finds the record held for another and is refused (409 `payment_already_used` once the
//! payment completed), while a retry of the same request gets the recorded answer.

use http::{HeaderMap, Method, Uri};

use crate::price::HeaderReads;
use crate::store::{Fingerprint, PaymentKey};

/// The digest of what a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestBinding([u8; 32]);

impl RequestBinding {
    /// The binding of a request with this head, pricing having read `reads`.
    pub(crate) fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        reads: &HeaderReads,
    ) -> RequestBinding {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let names = reads.names();
        let mut parts: Vec<&[u8]> = vec![b"request", method.as_str().as_bytes(), target.as_bytes()];
        for name in &names {
            parts.push(name.as_str().as_bytes());
            for value in headers.get_all(name) {
                parts.push(value.as_bytes());
            }
            // A name's values end here: no two lists of headers give the same parts.
            parts.push(b"\0");
        }
        RequestBinding(PaymentKey::derive(&parts).0)
    }

    /// The digest a record keeps for `credential` presented with this request.
    pub(crate) fn bind(&self, credential: Fingerprint) -> Fingerprint {
        Fingerprint(PaymentKey::derive(&[b"bound", &credential.0, &self.0]).0)
    }

    /// The bytes of the binding, for other digests.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(method: &str, uri: &str, headers: &[(&str, &str)], read: &[&str]) -> RequestBinding {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let reads = HeaderReads::default();
        let request = http::Request::builder().uri(uri).body(()).unwrap();
        let payer: &dyn crate::price::ClaimedPayer = &NoPayer;
        let view = crate::PriceRequest::of(&request, payer, &reads);
        for name in read {
            let _ = view.header(*name);
        }
        RequestBinding::of(
            &method.parse().unwrap(),
            &uri.parse().unwrap(),
            &map,
            &reads,
        )
    }

    struct NoPayer;

    impl crate::price::ClaimedPayer for NoPayer {
        fn claimed_payer(&self) -> Option<&str> {
            None
        }
    }

    #[test]
    fn requests_that_differ_in_what_pricing_read_are_bound_apart() {
        let base = binding(
            "POST",
            "/store",
            &[("x-key", "a"), ("x-other", "1")],
            &["x-key"],
        );
        // Headers pricing did not read change nothing; the order of reads changes nothing.
        assert_eq!(
            base,
            binding(
                "POST",
                "/store",
                &[("x-key", "a"), ("x-other", "2")],
                &["x-key"]
            )
        );
        assert_eq!(
            binding("POST", "/s", &[("a", "1"), ("b", "2")], &["a", "b"]),
            binding("POST", "/s", &[("a", "1"), ("b", "2")], &["b", "a", "a"])
        );
        for other in [
            binding("POST", "/store", &[("x-key", "b")], &["x-key"]),
            binding("POST", "/store", &[], &["x-key"]),
            binding(
                "POST",
                "/store",
                &[("x-key", "a"), ("x-key", "a")],
                &["x-key"],
            ),
            binding("PUT", "/store", &[("x-key", "a")], &["x-key"]),
            binding("POST", "/store?x=1", &[("x-key", "a")], &["x-key"]),
            binding("POST", "/other", &[("x-key", "a")], &["x-key"]),
        ] {
            assert_ne!(base, other);
        }
        // Values cannot slide from one header into the next.
        assert_ne!(
            binding("GET", "/", &[("a", "1"), ("b", "2")], &["a", "b"]),
            binding("GET", "/", &[("a", "1"), ("a", "b")], &["a", "b"])
        );
    }
}
