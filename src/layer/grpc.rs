//! gRPC calls through the layer: the layer's own answers (a payment required or refused, a
//! store or ledger unavailable, pricing's early answers) become gRPC statuses a gRPC client
//! reads, instead of HTTP statuses it would turn into `UNKNOWN` with the details lost.
//!
//! A request is a gRPC call when its `content-type` is `application/grpc` or one of its forms
//! (`application/grpc+proto`, `+json`, `application/grpc-web`, `-web+proto`, `-web-text` …).
//! The layer's answer to it is a *Trailers-Only* response: HTTP 200, the request's content
//! type, `grpc-status`, `grpc-message` (percent-encoded) and `grpc-status-details-bin` (a
//! `google.rpc.Status` whose details hold one `google.rpc.ErrorInfo`), with every header of
//! the HTTP answer kept as metadata (`payment-required`, `www-authenticate`, `retry-after` …)
//! and no body. gRPC-Web allows trailers in the response headers, so the same form serves it.
//! Responses of the inner service are left alone.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

/// The `grpc-status` trailer (and header, in a Trailers-Only response).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` trailer.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The `grpc-status-details-bin` trailer: a serialized `google.rpc.Status`, base64.
pub const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// The `ErrorInfo.domain` of the layer's answers.
pub const ERROR_DOMAIN: &str = "tower-paywall";

/// The gRPC status codes the layer answers with (`google.rpc.Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 0.
    Ok = 0,
    /// 2.
    Unknown = 2,
    /// 3.
    InvalidArgument = 3,
    /// 4.
    DeadlineExceeded = 4,
    /// 5.
    NotFound = 5,
    /// 7.
    PermissionDenied = 7,
    /// 8.
    ResourceExhausted = 8,
    /// 9.
    FailedPrecondition = 9,
    /// 10.
    Aborted = 10,
    /// 12.
    Unimplemented = 12,
    /// 13.
    Internal = 13,
    /// 14.
    Unavailable = 14,
    /// 16.
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code a gRPC client gets for the layer's HTTP answer `status` (the table in the
    /// [layer docs](crate::layer#grpc)).
    pub fn of(status: StatusCode) -> GrpcCode {
        match status.as_u16() {
            200..=299 => GrpcCode::Ok,
            402 | 429 => GrpcCode::ResourceExhausted,
            400 | 411 => GrpcCode::InvalidArgument,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::NotFound,
            405 | 501 => GrpcCode::Unimplemented,
            409 => GrpcCode::Aborted,
            410 | 412 => GrpcCode::FailedPrecondition,
            413 => GrpcCode::ResourceExhausted,
            500 => GrpcCode::Internal,
            502 | 503 => GrpcCode::Unavailable,
            504 => GrpcCode::DeadlineExceeded,
            _ => GrpcCode::Unknown,
        }
    }
}

/// Why the layer answered as it did, for the gRPC form of the answer: the code of the JSON
/// body (`payment_required`, `payment_in_use`, a scheme's rejection code …). Set on the
/// responses the layer makes.
#[derive(Clone, Debug)]
pub(crate) struct AnswerCode(pub(crate) String);

/// A gRPC call: the content type its answer carries.
#[derive(Clone, Debug)]
pub(crate) struct GrpcCall {
    content_type: HeaderValue,
}

impl GrpcCall {
    /// The call `headers` make, if they make one.
    pub(crate) fn of(headers: &HeaderMap) -> Option<GrpcCall> {
        let content_type = headers.get(CONTENT_TYPE)?;
        let text = content_type.to_str().ok()?;
        let essence = text.split(';').next().unwrap_or_default().trim();
        let grpc = essence
            .get(..16)
            .is_some_and(|start| start.eq_ignore_ascii_case("application/grpc"))
            && matches!(essence.as_bytes().get(16), None | Some(b'+' | b'-'));
        grpc.then(|| GrpcCall {
            content_type: content_type.clone(),
        })
    }

    /// `response` as this call's answer: a Trailers-Only gRPC status when the layer answered
    /// with anything but 200; the response itself otherwise.
    pub(crate) fn answer<B: From<Bytes>>(&self, response: Response<B>) -> Response<B> {
        if response.status() == StatusCode::OK {
            return response;
        }
        let (mut parts, _) = response.into_parts();
        let code = GrpcCode::of(parts.status);
        let reason = parts
            .extensions
            .get::<AnswerCode>()
            .map(|code| code.0.clone())
            .unwrap_or_else(|| {
                parts
                    .status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_owned()
            });
        // "Payment Required", "Conflict: payment_in_use" …
        let message = match parts.status.canonical_reason() {
            Some(phrase) if phrase.to_ascii_lowercase().replace(' ', "_") == reason => {
                phrase.to_owned()
            }
            Some(phrase) => format!("{phrase}: {reason}"),
            None => reason.clone(),
        };
        let details = status_details(code, &message, &reason, parts.status);
        let headers = &mut parts.headers;
        headers.remove(CONTENT_LENGTH);
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        headers.insert(GRPC_STATUS, HeaderValue::from(code as u16));
        if let Ok(message) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert(GRPC_MESSAGE, message);
        }
        if let Ok(details) = HeaderValue::from_str(&base64_unpadded(&details)) {
            headers.insert(GRPC_STATUS_DETAILS, details);
        }
        parts.status = StatusCode::OK;
        Response::from_parts(parts, B::from(Bytes::new()))
    }
}

/// Whether a response head says the call failed: an HTTP error, or a gRPC status other than
/// `OK` in the head (a Trailers-Only answer: how gRPC servers end a call that fails before it
/// sends a message). A call whose status comes only in the trailers, after its messages, is
/// judged by its head.
pub(crate) fn failed(status: StatusCode, headers: &HeaderMap) -> bool {
    status.as_u16() >= 400
        || headers
            .get(GRPC_STATUS)
            .is_some_and(|status| status.as_bytes() != b"0")
}

/// What `grpc-message` escapes besides non-ASCII bytes: controls, DEL and `%` (gRPC's rule:
/// bytes outside `%x20-%x7E`, and `%`).
const GRPC_MESSAGE_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// `message` percent-encoded as `grpc-message` wants.
fn percent_encode(message: &str) -> String {
    percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE_ESCAPED).to_string()
}

fn base64_unpadded(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// `google.rpc.Status { code, message, details: [Any(google.rpc.ErrorInfo { reason, domain,
/// metadata: { "httpStatus", "code" } })] }`, serialized.
fn status_details(code: GrpcCode, message: &str, reason: &str, http: StatusCode) -> Bytes {
    let mut info = BytesMut::new();
    field_bytes(&mut info, 1, error_reason(reason).as_bytes());
    field_bytes(&mut info, 2, ERROR_DOMAIN.as_bytes());
    for (key, value) in [("code", reason), ("httpStatus", http.as_str())] {
        let mut entry = BytesMut::new();
        field_bytes(&mut entry, 1, key.as_bytes());
        field_bytes(&mut entry, 2, value.as_bytes());
        field_bytes(&mut info, 3, &entry);
    }
    let mut any = BytesMut::new();
    field_bytes(&mut any, 1, b"type.googleapis.com/google.rpc.ErrorInfo");
    field_bytes(&mut any, 2, &info);
    let mut status = BytesMut::new();
    if code != GrpcCode::Ok {
        varint(&mut status, 1 << 3);
        varint(&mut status, code as u64);
    }
    field_bytes(&mut status, 2, message.as_bytes());
    field_bytes(&mut status, 3, &any);
    status.freeze()
}

/// `ErrorInfo.reason` from a code: `UPPER_SNAKE_CASE`, `[A-Z][A-Z0-9_]+[A-Z0-9]`, at most 63
/// characters.
fn error_reason(code: &str) -> String {
    let mut reason: String = code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    reason.truncate(63);
    let trimmed = reason
        .trim_start_matches(|c: char| !c.is_ascii_uppercase())
        .trim_end_matches('_');
    if trimmed.len() < 3 {
        "PAYMENT_ERROR".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// A length-delimited field (wire type 2).
fn field_bytes(out: &mut BytesMut, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_calls_and_others_are_not() {
        let call = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            GrpcCall::of(&headers).is_some()
        };
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "Application/GRPC; charset=utf-8",
        ] {
            assert!(call(grpc), "{grpc}");
        }
        for other in [
            "application/json",
            "application/grpcx",
            "text/plain",
            "application/gr",
        ] {
            assert!(!call(other), "{other}");
        }
        assert!(GrpcCall::of(&HeaderMap::new()).is_none());
    }

    #[test]
    fn messages_are_percent_encoded_as_grpc_wants() {
        assert_eq!(percent_encode("payment required"), "payment required");
        assert_eq!(percent_encode("100% paid\n"), "100%25 paid%0A");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn reasons_are_upper_snake_case_within_63_characters() {
        assert_eq!(error_reason("payment_required"), "PAYMENT_REQUIRED");
        assert_eq!(
            error_reason("invalid_exact_stellar_payload_bad-signature"),
            "INVALID_EXACT_STELLAR_PAYLOAD_BAD_SIGNATURE"
        );
        assert_eq!(error_reason(&"x".repeat(100)).len(), 63);
        assert_eq!(error_reason("_9"), "PAYMENT_ERROR");
    }

    #[test]
    fn http_answers_map_to_the_documented_codes() {
        for (http, grpc) in [
            (402, GrpcCode::ResourceExhausted),
            (400, GrpcCode::InvalidArgument),
            (409, GrpcCode::Aborted),
            (410, GrpcCode::FailedPrecondition),
            (503, GrpcCode::Unavailable),
            (502, GrpcCode::Unavailable),
            (404, GrpcCode::NotFound),
            (413, GrpcCode::ResourceExhausted),
            (418, GrpcCode::Unknown),
        ] {
            assert_eq!(GrpcCode::of(StatusCode::from_u16(http).unwrap()), grpc);
        }
    }

    #[test]
    fn a_failure_is_an_http_error_or_a_grpc_status_in_the_head() {
        let mut headers = HeaderMap::new();
        assert!(!failed(StatusCode::OK, &headers));
        assert!(failed(StatusCode::PAYMENT_REQUIRED, &headers));
        headers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert!(!failed(StatusCode::OK, &headers));
        headers.insert(GRPC_STATUS, HeaderValue::from_static("5"));
        assert!(failed(StatusCode::OK, &headers));
    }
}
