//! `Accept-Payment`: the client's preferred payment methods and intents, with weights.
//!
//! ```text
//! Accept-Payment: stellar/charge, stellar/channel;q=0.5, */*;q=0.1
//! ```
//!
//! Each element is `method/intent`, either side possibly `*`, with an optional `q` weight
//! (RFC 9110 qvalue, `0` to `1` with up to three decimals; default 1). `q=0` means "not this".
//! An offer takes the weight of the most specific range that matches it (`method/intent`, then
//! `method/*` or `*/intent`, then `*/*`; among equally specific ranges the heaviest, then the
//! first listed, as mppx ranks them); an offer no range matches is not acceptable. Malformed elements (no `/`, bad characters, a bad `q`) are
//! ignored; other parameters are ignored. Names compare case-insensitively.
//!
//! [`AcceptPayment::order`] filters and orders a server's offers by that weight, keeping the
//! server's order among equal weights. When the header is absent, has no usable element or is
//! longer than [`MAX_ACCEPT_PAYMENT_LEN`], the offers are returned as they were. When it accepts
//! none of them, the server "MAY ignore it" and a 402 must offer something: the offers it does
//! not exclude with `q=0` are returned in the server's order, or all of them when it excludes
//! every one.

use http::{HeaderMap, HeaderName};

use super::auth_param::split_list;

/// `Accept-Payment`.
pub const ACCEPT_PAYMENT: HeaderName = HeaderName::from_static("accept-payment");

/// The longest `Accept-Payment` read, in bytes over all its field lines joined by commas; a
/// longer one is ignored as a whole (as if absent). mppx sends about 16 bytes per method it
/// knows.
pub const MAX_ACCEPT_PAYMENT_LEN: usize = 4096;

/// The full weight, `q=1`, in thousandths.
const Q_ONE: u16 = 1000;

/// One element of `Accept-Payment`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentRange {
    /// The method, `None` for `*`.
    pub method: Option<String>,
    /// The intent, `None` for `*`.
    pub intent: Option<String>,
    /// The weight in thousandths (`q=0.5` is 500), 0 to 1000.
    pub weight: u16,
}

impl PaymentRange {
    /// How specific the range is when it matches: the number of sides that are not `*` (2 for
    /// `method/intent`, 0 for `*/*`); `None` when it does not match.
    fn specificity(&self, method: &str, intent: &str) -> Option<u8> {
        let side = |range: &Option<String>, name: &str| match range {
            None => Some(false),
            Some(range) => range.eq_ignore_ascii_case(name).then_some(true),
        };
        let method = side(&self.method, method)?;
        // The drafts' `session` intent (a metered payment relationship over a channel) names
        // what our `channel` intent is: a range of it takes `channel` offers.
        let intent = side(&self.intent, intent).or_else(|| {
            let session = self.intent.as_deref()?.eq_ignore_ascii_case(SESSION);
            (session && intent.eq_ignore_ascii_case("channel")).then_some(true)
        })?;
        Some(u8::from(method) + u8::from(intent))
    }
}

/// The drafts' name for a metered payment relationship over a channel, taken as an alias of
/// the `channel` intent.
const SESSION: &str = "session";

/// A parsed `Accept-Payment` header.
///
/// ```
/// use tower_paywall::mpp::AcceptPayment;
///
/// let accept = AcceptPayment::parse("stellar/channel;q=0.5, stellar/*, */*;q=0");
/// let offers = [("tempo", "charge"), ("stellar", "channel"), ("stellar", "charge")];
/// let ordered = accept.order(offers.to_vec(), |offer| *offer);
/// assert_eq!(ordered, [("stellar", "charge"), ("stellar", "channel")]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptPayment {
    ranges: Vec<PaymentRange>,
}

impl AcceptPayment {
    /// Parses one field value; malformed elements are left out.
    pub fn parse(value: &str) -> Self {
        Self::parse_lines([value])
    }

    /// Parses several field lines as one list; longer than [`MAX_ACCEPT_PAYMENT_LEN`] in all,
    /// an empty preference.
    pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let lines: Vec<&str> = lines.into_iter().collect();
        // The comma a list of lines is joined with counts too.
        let len = lines.iter().map(|line| line.len() + 1).sum::<usize>();
        if len > MAX_ACCEPT_PAYMENT_LEN + 1 {
            return Self::default();
        }
        let ranges = lines
            .into_iter()
            .flat_map(split_list)
            .filter_map(parse_range)
            .collect();
        Self { ranges }
    }

    /// Parses the `Accept-Payment` fields of `headers` (none: an empty preference, which keeps
    /// the server's order). Longer than [`MAX_ACCEPT_PAYMENT_LEN`] in all, an empty preference;
    /// fields that are not UTF-8 are skipped.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let fields = headers.get_all(ACCEPT_PAYMENT);
        let len = fields.iter().map(|value| value.len() + 1).sum::<usize>();
        if len > MAX_ACCEPT_PAYMENT_LEN + 1 {
            return Self::default();
        }
        Self::parse_lines(
            headers
                .get_all(ACCEPT_PAYMENT)
                .iter()
                .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok()),
        )
    }

    /// The usable elements, in order.
    pub fn ranges(&self) -> &[PaymentRange] {
        &self.ranges
    }

    /// Whether no usable element was given.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The weight (in thousandths) of an offer: that of the most specific matching range;
    /// `None` if no range matches. An empty preference accepts everything at full weight.
    pub fn weight(&self, method: &str, intent: &str) -> Option<u16> {
        if self.ranges.is_empty() {
            return Some(Q_ONE);
        }
        let mut best: Option<(u8, u16)> = None;
        for range in &self.ranges {
            if let Some(specificity) = range.specificity(method, intent)
                && best.is_none_or(|(s, w)| (specificity, range.weight) > (s, w))
            {
                best = Some((specificity, range.weight));
            }
        }
        best.map(|(_, weight)| weight)
    }

    /// The acceptable offers (weight above 0), heaviest first, in the server's order among equal
    /// weights. When that would be none: the offers not excluded by `q=0`, in the server's
    /// order, or all of them unchanged when every one is excluded. `key` gives an offer's
    /// `(method, intent)`.
    pub fn order<T>(&self, offers: Vec<T>, key: impl Fn(&T) -> (&str, &str)) -> Vec<T> {
        let weights: Vec<Option<u16>> = offers
            .iter()
            .map(|offer| {
                let (method, intent) = key(offer);
                self.weight(method, intent)
            })
            .collect();
        let mut weighted: Vec<(u16, usize)> = weights
            .iter()
            .enumerate()
            .filter_map(|(index, weight)| weight.filter(|w| *w > 0).map(|w| (w, index)))
            .collect();
        if weighted.is_empty() {
            let excluded = |index: usize| weights.get(index) == Some(&Some(0));
            if (0..offers.len()).all(excluded) {
                return offers;
            }
            return offers
                .into_iter()
                .enumerate()
                .filter(|(index, _)| !excluded(*index))
                .map(|(_, offer)| offer)
                .collect();
        }
        weighted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut slots: Vec<Option<T>> = offers.into_iter().map(Some).collect();
        weighted
            .into_iter()
            .filter_map(|(_, index)| slots.get_mut(index).and_then(Option::take))
            .collect()
    }
}

fn parse_range(element: &str) -> Option<PaymentRange> {
    let mut parts = element.split(';');
    let (method, intent) = parts.next()?.trim().split_once('/')?;
    let side = |name: &str| match name {
        "*" => Some(None),
        name if !name.is_empty() && name.bytes().all(is_name_byte) => Some(Some(name.to_owned())),
        _ => None,
    };
    let (method, intent) = (side(method)?, side(intent)?);
    let mut weight = Q_ONE;
    for param in parts {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            weight = parse_qvalue(value.trim())?;
        }
    }
    Some(PaymentRange {
        method,
        intent,
        weight,
    })
}

/// Method and intent names: `[A-Za-z0-9:_-]`, as mppx's method names and the spec's intents.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":_-".contains(&b)
}

/// RFC 9110 qvalue: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(Q_ONE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERS: [(&str, &str); 4] = [
        ("tempo", "charge"),
        ("stellar", "channel"),
        ("stellar", "charge"),
        ("stripe", "charge"),
    ];

    fn order(header: &str) -> Vec<(&'static str, &'static str)> {
        AcceptPayment::parse(header).order(OFFERS.to_vec(), |offer| *offer)
    }

    #[test]
    fn orders_by_weight_keeping_server_order_among_equals() {
        assert_eq!(
            order("stellar/charge, stellar/channel;q=0.5, */*;q=0.1"),
            [
                ("stellar", "charge"),
                ("stellar", "channel"),
                ("tempo", "charge"),
                ("stripe", "charge")
            ]
        );
        assert_eq!(
            order("*/charge;q=0.2, stellar/*;q=0.9"),
            [
                ("stellar", "channel"),
                ("stellar", "charge"),
                ("tempo", "charge"),
                ("stripe", "charge")
            ]
        );
    }

    #[test]
    fn most_specific_range_wins() {
        let accept = AcceptPayment::parse(
            "*/*;q=0.1, stellar/*;q=0.3, */charge;q=0.2, stellar/charge;q=0.4",
        );
        assert_eq!(accept.weight("stellar", "charge"), Some(400));
        assert_eq!(accept.weight("stellar", "channel"), Some(300));
        assert_eq!(accept.weight("tempo", "charge"), Some(200));
        assert_eq!(accept.weight("tempo", "session"), Some(100));
        // `session` is our `channel`, not the other way round.
        let session = AcceptPayment::parse("stellar/session, */*;q=0");
        assert_eq!(session.weight("stellar", "channel"), Some(1000));
        assert_eq!(session.weight("stellar", "charge"), Some(0));
        let channel = AcceptPayment::parse("stellar/channel, */*;q=0");
        assert_eq!(channel.weight("stellar", "session"), Some(0));
        assert_eq!(accept.weight("STELLAR", "Charge"), Some(400));
        // Among equally specific ranges the heaviest, as mppx ranks them: `stellar/*` and
        // `*/charge` are equally specific.
        let accept = AcceptPayment::parse("stellar/charge;q=0.2, stellar/charge;q=0.7");
        assert_eq!(accept.weight("stellar", "charge"), Some(700));
        let accept = AcceptPayment::parse("stellar/*;q=0, */charge");
        assert_eq!(accept.weight("stellar", "charge"), Some(1000));
        assert_eq!(accept.weight("stellar", "channel"), Some(0));
    }

    #[test]
    fn q_zero_excludes_and_unmatched_offers_are_left_out() {
        assert_eq!(
            order("stellar/*, stellar/channel;q=0"),
            [("stellar", "charge")]
        );
        assert_eq!(order("stellar/charge"), [("stellar", "charge")]);
        assert_eq!(
            order("*/*, tempo/*;q=0, stripe/charge;q=0.000"),
            [("stellar", "channel"), ("stellar", "charge")]
        );
    }

    #[test]
    fn falls_back_to_the_server_order() {
        for header in [
            "",
            " , ",
            "stellar",
            "stellar/charge;q=2",
            "lightning/charge",
            "*/*;q=0",
            "a b/c",
        ] {
            assert_eq!(order(header), OFFERS, "{header:?}");
        }
        // Accepting none, the fallback still leaves out what `q=0` excludes.
        assert_eq!(
            order("stellar/channel;q=0"),
            [
                ("tempo", "charge"),
                ("stellar", "charge"),
                ("stripe", "charge")
            ]
        );
        assert_eq!(
            order("stellar/*;q=0, lightning/charge"),
            [("tempo", "charge"), ("stripe", "charge")]
        );
        assert_eq!(
            AcceptPayment::from_headers(&HeaderMap::new()),
            AcceptPayment::default()
        );
    }

    #[test]
    fn malformed_elements_are_ignored_alone() {
        let accept = AcceptPayment::parse(
            "stellar, /charge, stellar/, st ellar/charge, stellar/charge;q=, stellar/charge;q=1.5, \
             stellar/charge;q=0.1234, stellar/charge;q, tempo/charge ; Q = 0.25 ; foo=bar",
        );
        assert_eq!(
            accept.ranges(),
            [PaymentRange {
                method: Some("tempo".into()),
                intent: Some("charge".into()),
                weight: 250
            }]
        );
    }

    #[test]
    fn an_over_long_header_is_ignored_as_a_whole() {
        let element = "stellar/charge, ";
        let padding = "x".repeat(MAX_ACCEPT_PAYMENT_LEN - 16);
        let at_limit = format!("{padding}, stellar/charge");
        assert_eq!(at_limit.len(), MAX_ACCEPT_PAYMENT_LEN);
        assert_eq!(order(&at_limit), [("stellar", "charge")]);
        let over = format!("{at_limit},");
        assert!(AcceptPayment::parse(&over).is_empty());
        let many = element.repeat(MAX_ACCEPT_PAYMENT_LEN / element.len() + 1);
        assert!(AcceptPayment::parse(&many).is_empty());
        assert_eq!(order(&many), OFFERS);
        // Across field lines too.
        let half = element.repeat(MAX_ACCEPT_PAYMENT_LEN / element.len() / 2 + 1);
        assert!(!AcceptPayment::parse(&half).is_empty());
        assert!(AcceptPayment::parse_lines([half.as_str(), half.as_str()]).is_empty());
        // Field lines that are not UTF-8 count too.
        let mut headers = HeaderMap::new();
        let junk = vec![0xff; MAX_ACCEPT_PAYMENT_LEN];
        headers.append(
            ACCEPT_PAYMENT,
            http::HeaderValue::from_bytes(&junk).unwrap(),
        );
        headers.append(ACCEPT_PAYMENT, "stellar/charge".parse().unwrap());
        assert!(AcceptPayment::from_headers(&headers).is_empty());
        headers.remove(ACCEPT_PAYMENT);
        headers.append(
            ACCEPT_PAYMENT,
            http::HeaderValue::from_bytes(&junk[..8]).unwrap(),
        );
        headers.append(ACCEPT_PAYMENT, "stellar/charge".parse().unwrap());
        assert_eq!(AcceptPayment::from_headers(&headers).ranges().len(), 1);
    }

    #[test]
    fn qvalues() {
        for (text, weight) in [
            ("0", 0),
            ("0.", 0),
            ("0.5", 500),
            ("0.05", 50),
            ("0.001", 1),
            ("1", 1000),
            ("1.000", 1000),
            ("1.", 1000),
        ] {
            assert_eq!(parse_qvalue(text), Some(weight), "{text}");
        }
        for text in ["", "1.001", "2", "-0", "0.0001", ".5", "0,5", "0.a"] {
            assert_eq!(parse_qvalue(text), None, "{text}");
        }
    }

    #[test]
    fn several_field_lines() {
        let mut headers = HeaderMap::new();
        headers.append(ACCEPT_PAYMENT, "stellar/channel;q=0.5".parse().unwrap());
        headers.append(ACCEPT_PAYMENT, "tempo/charge".parse().unwrap());
        let accept = AcceptPayment::from_headers(&headers);
        assert_eq!(
            accept.order(OFFERS.to_vec(), |offer| *offer),
            [("tempo", "charge"), ("stellar", "channel")]
        );
    }
}
