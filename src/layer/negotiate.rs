//! Which protocols a 402 speaks: decided here, once, for the layer and every route (the
//! table is in the [layer docs](super#which-protocols-a-402-speaks)).

use http::HeaderMap;

use crate::mpp::AcceptPayment;
use crate::scheme::{Intent, Offer, Rejection};

/// Keeps, of the schemes' `offers`, those the 402 for a request with `headers` renders.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    offers: &mut Vec<(usize, Offer)>,
    rejection: Option<&Rejection>,
) {
    let mpp = Intent::MPP_CHARGE.protocol;
    if !offers
        .iter()
        .any(|(_, offer)| offer.intent().protocol == mpp)
        || AcceptPayment::from_headers(headers).is_empty()
    {
        return;
    }
    let refused = rejection.map(|rejection| rejection.protocol);
    offers.retain(|(_, offer)| {
        let protocol = offer.intent().protocol;
        protocol == mpp || Some(protocol) == refused
    });
}
