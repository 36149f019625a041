//! The hosted facilitators a seller can settle through without running one.

use crate::stellar::Network;

/// The hosted OpenZeppelin facilitator of `stellar:testnet`.
const OPENZEPPELIN_TESTNET: &str = "https://channels.openzeppelin.com/x402/testnet";
/// The hosted OpenZeppelin facilitator of `stellar:pubnet`.
const OPENZEPPELIN_PUBNET: &str = "https://channels.openzeppelin.com/x402";

/// The URL of the hosted OpenZeppelin facilitator of `network` (it takes an API key), or
/// `None` for a network it does not serve.
///
/// ```
/// use tower_paywall::stellar::Network;
/// use tower_paywall::x402::hosted_facilitator_url;
///
/// assert_eq!(
///     hosted_facilitator_url(&Network::testnet()),
///     Some("https://channels.openzeppelin.com/x402/testnet")
/// );
/// let local = Network::custom("stellar:local", "Standalone Network ; February 2017")?;
/// assert_eq!(hosted_facilitator_url(&local), None);
/// # Ok::<(), tower_paywall::stellar::NetworkError>(())
/// ```
#[must_use]
pub fn hosted_facilitator_url(network: &Network) -> Option<&'static str> {
    if *network == Network::testnet() {
        Some(OPENZEPPELIN_TESTNET)
    } else if *network == Network::pubnet() {
        Some(OPENZEPPELIN_PUBNET)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testnet_and_pubnet_have_one() {
        assert_eq!(
            hosted_facilitator_url(&Network::testnet()),
            Some(OPENZEPPELIN_TESTNET)
        );
        assert_eq!(
            hosted_facilitator_url(&Network::pubnet()),
            Some(OPENZEPPELIN_PUBNET)
        );
    }
}
