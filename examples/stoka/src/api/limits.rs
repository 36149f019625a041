//! Limits on the free routes, which cost a client nothing: a rate per client address (the
//! connection's peer, which stoka's listener records) and a global rate of wallet challenges,
//! which with their lifetime caps how many are outstanding in the store. Over either: 429
//! `rate_limited` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};

use super::{Stoka, error};

pub(crate) type FreeLimiter = DefaultKeyedRateLimiter<IpAddr>;
pub(crate) type ChallengeLimiter = DefaultDirectRateLimiter;

/// `per_minute` free requests per address, in bursts of as many.
pub(crate) fn free_limiter(per_minute: u32) -> FreeLimiter {
    RateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
    ))
}

/// `per_second` challenges for everyone, in bursts of as many.
pub(crate) fn challenge_limiter(per_second: u32) -> ChallengeLimiter {
    RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
    ))
}

/// The free routes' rate per client address. A request without a peer address (served by
/// another listener) is not limited here.
pub(super) async fn free_requests(
    State(stoka): State<Stoka>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    if let Some(peer) = peer
        && stoka.inner.free.check_key(&peer).is_err()
    {
        return rate_limited(60);
    }
    next.run(request).await
}

/// 429 `rate_limited`, retry after `seconds`.
pub(crate) fn rate_limited(seconds: u32) -> Response {
    let mut answer = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many free requests: slow down",
    );
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    answer
}

impl Stoka {
    /// Forgets the addresses whose rate is back to full (the sweeper calls it).
    pub(crate) fn forget_quiet_clients(&self) {
        self.inner.free.retain_recent();
        self.inner.free.shrink_to_fit();
    }
}
