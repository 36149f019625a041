//! Paying as a stream flows: [`PayRequest::send_stream`](super::PayRequest::send_stream) opens
//! a metered SSE stream (a route priced per event, paid from one of the client's channels),
//! and [`PaidStream`] hands out its events, answering each in-band request for a voucher
//! (`payment-need-voucher`) with one paying [`stream_ahead`](super::PayingClientBuilder::stream_ahead)
//! units ahead, sent as a bodyless `POST` to the stream's URL, within the policy, the budget
//! and the stream's own cap ([`PayRequest::stream_cap`](super::PayRequest::stream_cap)).
//!
//! A stream that is dropped stops paying at once: the server has sent only what was paid for,
//! and gives back to the channel what it did not draw. With
//! [`stream_prepay`](super::PayingClientBuilder::stream_prepay), a stream priced per event pays
//! its next voucher when half of the last one is drawn, so that the stream need not stop.
//!
//! ```no_run
//! # async fn run(client: tower_paywall::client::PayingClient) -> Result<(), Box<dyn std::error::Error>> {
//! let mut stream = client.get("https://api.example/tokens").send_stream().await?;
//! while let Some(event) = stream.next().await {
//!     print!("{}", event?.data);
//! }
//! println!("\npaid {} in all; {:?}", stream.paid(), stream.receipt());
//! # Ok(()) }
//! ```

use std::collections::VecDeque;

use http::StatusCode;
use reqwest::{Response, Url};

use super::offer::ChannelRequest;
use super::{ClientError, PayError, PayingClient, channel};
use crate::mpp::Credential as MppCredential;
use crate::mpp::challenge::Challenge as MppChallenge;
use crate::mpp::stream::messages::{self, NEED_VOUCHER, RECEIPT};
use crate::mpp::stream::{Event, NeedVoucher, Splitter, StreamReceipt};

/// The stream a paid request opened: its challenge (each voucher echoes it) and channel.
#[derive(Clone, Debug)]
pub(crate) struct Opened {
    pub(crate) challenge: MppChallenge,
    pub(crate) request: ChannelRequest,
    pub(crate) origin: String,
}

/// A metered stream being read (see the [module docs](self)).
pub struct PaidStream {
    /// The answer being read; `None` once the stream stopped (its connection closed, so that
    /// the server stops too and gives back the credit it holds).
    response: Option<Response>,
    url: Url,
    payment: StreamPayment,
    splitter: Splitter,
    events: VecDeque<Event>,
    /// The `POST` of a voucher paid early, on its way.
    early: Option<tokio::task::JoinHandle<()>>,
    receipt: Option<StreamReceipt>,
    /// Why the stream stopped, handed out after the events read before it.
    failed: Option<ClientError>,
    ended: bool,
}

impl std::fmt::Debug for PaidStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaidStream")
            .field("url", &self.url.as_str())
            .field("paid", &self.payment.paid)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl PaidStream {
    /// The stream opened by `response`, whose opening voucher paid `paid`.
    pub(crate) fn new(
        client: PayingClient,
        response: Response,
        opened: Option<Opened>,
        paid: i128,
        cap: Option<i128>,
    ) -> PaidStream {
        PaidStream {
            url: response.url().clone(),
            response: Some(response),
            payment: StreamPayment::new(client, opened, paid, cap),
            splitter: Splitter::default(),
            events: VecDeque::new(),
            early: None,
            receipt: None,
            failed: None,
            ended: false,
        }
    }

    /// The next event of the application (payment events are answered, not handed out);
    /// `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(Ok(event));
            }
            if let Some(failed) = self.failed.take() {
                return Some(Err(failed));
            }
            let response = self.response.as_mut().filter(|_| !self.ended)?;
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    self.ended = true;
                    continue;
                }
                Err(error) => {
                    self.ended = true;
                    return Some(Err(error.into()));
                }
            };
            self.splitter.push(&chunk);
            loop {
                let block = match self.splitter.next_block() {
                    Ok(Some(block)) => block,
                    Ok(None) => break,
                    Err(_) => {
                        self.ended = true;
                        return Some(Err(ClientError::Pay(PayError::InvalidOffer(
                            "an event larger than the client reads",
                        ))));
                    }
                };
                let Some(event) = Event::read(&block.raw) else {
                    continue;
                };
                match event.kind() {
                    NEED_VOUCHER => {
                        if let Err(error) = self.pay_ahead(&event.data).await {
                            // The events before it were paid for: they come first. The
                            // connection closes now: the server stops waiting for a voucher.
                            self.ended = true;
                            self.response = None;
                            self.failed = Some(error);
                            break;
                        }
                    }
                    RECEIPT => self.receipt = messages::read_event(&event.data).ok(),
                    _ => {
                        self.events.push_back(event);
                        self.pay_early().await;
                    }
                }
            }
        }
    }

    /// The events as a [`Stream`](futures_util::Stream) (what [`next`](Self::next) hands
    /// out), for stream combinators; the stream's figures are no longer readable then.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Event, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut stream| async move {
            let item = stream.next().await?;
            Some((item, stream))
        })
    }

    /// What this stream has paid (its opening voucher and every one since), in atomic units.
    pub fn paid(&self) -> i128 {
        self.payment.paid
    }

    /// The server's final receipt, once the stream has ended with one.
    pub fn receipt(&self) -> Option<&StreamReceipt> {
        self.receipt.as_ref()
    }

    /// Answers a request for a voucher (the data of `payment-need-voucher`) with a `POST` of
    /// one to the stream's URL.
    async fn pay_ahead(&mut self, data: &str) -> Result<(), ClientError> {
        let need: NeedVoucher = messages::read_event(data)
            .map_err(|_| ClientError::Pay(PayError::InvalidOffer("payment-need-voucher")))?;
        if self.payment.covers(&need) {
            return Ok(()); // paid early: the voucher crossed the request
        }
        let credential = self.payment.voucher(&need).await?;
        let answer = (self.payment.client.inner.http)
            .post(self.url.clone())
            .header(http::header::AUTHORIZATION, credential)
            .send()
            .await?;
        if answer.status() != StatusCode::NO_CONTENT && !answer.status().is_success() {
            return Err(ClientError::Incomplete(PayError::Submission(format!(
                "the voucher was answered {}",
                answer.status()
            ))));
        }
        Ok(())
    }
}

impl PaidStream {
    /// Pays the next voucher early when it is due
    /// ([`stream_prepay`](super::PayingClientBuilder::stream_prepay)): posted without waiting
    /// for the answer. One that cannot be paid now is not fatal: the server asks in band when
    /// it needs a voucher, and that request gets the error.
    async fn pay_early(&mut self) {
        // A voucher whose `POST` is over has landed, or will not: the server asks if need be.
        if self
            .early
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            self.early = None;
            self.payment.pending = None;
        }
        let credential = match self.payment.read_one().await {
            Some(Ok(credential)) => credential,
            Some(Err(error)) => {
                tracing::debug!(%error, "no voucher paid ahead");
                return;
            }
            None => return,
        };
        let post = (self.payment.client.inner.http)
            .post(self.url.clone())
            .header(http::header::AUTHORIZATION, credential);
        self.early = Some(tokio::spawn(async move {
            if let Err(error) = post.send().await {
                tracing::debug!(%error, "a voucher paid ahead was not delivered");
            }
        }));
    }
}

/// The most vouchers' worth (of `stream_ahead` units) one event of bytes or counted units may
/// ask for.
const MAX_VOUCHERS_AN_EVENT: i128 = 10;

/// What a metered stream (SSE or WebSocket) pays, voucher by voucher.
pub(crate) struct StreamPayment {
    pub(crate) client: PayingClient,
    /// `None`: the stream is not metered (nothing was paid for it per unit).
    pub(crate) opened: Option<Opened>,
    /// What this stream has paid: its opening voucher and those since.
    pub(crate) paid: i128,
    pub(crate) cap: Option<i128>,
    /// What the events read so far cost (per-event streams), from the last time the stream
    /// ran dry.
    pub(crate) drawn: i128,
    /// Whether the stream ran dry once (the server asked in band): from then on this stream
    /// knows its credit (`paid - drawn`), and may pay early.
    dry: bool,
    /// The cumulative amount of a voucher paid early and not known to have landed yet.
    pub(crate) pending: Option<i128>,
    /// The highest cumulative amount this stream paid early.
    early: i128,
}

impl StreamPayment {
    /// A stream opened by `opened` (`None`: not metered), its opening voucher paying `paid`.
    pub(crate) fn new(
        client: PayingClient,
        opened: Option<Opened>,
        paid: i128,
        cap: Option<i128>,
    ) -> StreamPayment {
        StreamPayment {
            client,
            opened,
            paid,
            cap,
            drawn: 0,
            dry: false,
            pending: None,
            early: 0,
        }
    }

    /// An application event was read; with
    /// [`stream_prepay`](super::PayingClientBuilder::stream_prepay) on, a stream priced per
    /// event with less than half a voucher left pays the next one: its credential, to send
    /// without waiting for the server to ask.
    pub(crate) async fn read_one(&mut self) -> Option<Result<String, ClientError>> {
        let opened = self.opened.as_ref()?;
        let request = &opened.request;
        if request.unit.as_deref() != Some("event") {
            return None;
        }
        self.drawn = self.drawn.saturating_add(request.amount);
        let ahead = self.client.ahead(request);
        let left = self.paid - self.drawn;
        // Only once the stream ran dry (before, credit left on the channel by earlier streams
        // is drawn first, and this stream cannot tell how much), one voucher at a time.
        let due = self.dry && self.pending.is_none() && left * 2 <= ahead;
        if !self.client.inner.settings.stream_prepay || !due {
            return None;
        }
        Some(self.pay(ahead, None).await.map(|(credential, cumulative)| {
            self.pending = Some(cumulative);
            self.early = self.early.max(cumulative);
            credential
        }))
    }

    /// Whether a voucher this stream paid early covers `need` (the request crossed it on
    /// its way): nothing more to pay.
    pub(crate) fn covers(&self, need: &NeedVoucher) -> bool {
        self.early >= need.required_cumulative
    }

    /// Signs a voucher paying `amount` more: over what the server holds (`accepted`), or else
    /// over what this client signed; within the policy, the budget and the stream's cap.
    async fn pay(
        &mut self,
        amount: i128,
        accepted: Option<i128>,
    ) -> Result<(String, i128), ClientError> {
        let Some(opened) = &self.opened else {
            return Err(ClientError::Pay(PayError::InvalidOffer(
                "a voucher asked on a stream that was not paid per unit",
            )));
        };
        let settings = &self.client.inner.settings;
        if let Some(cap) = settings.policy.max_per_payment
            && amount > cap
        {
            return Err(ClientError::OverLimit { amount, cap });
        }
        if let Some(cap) = self.cap
            && self
                .paid
                .checked_add(amount)
                .is_none_or(|total| total > cap)
        {
            return Err(ClientError::BudgetExceeded {
                amount,
                budget: cap,
                spent: self.paid,
            });
        }
        self.client.reserve(amount)?;
        let (wallet, origin, network) = (&settings.wallet, &opened.origin, &settings.network);
        let signed = match accepted {
            Some(accepted) => {
                let target = accepted.saturating_add(amount);
                channel::voucher_to(wallet, origin, network, &opened.request, accepted, target)
                    .await
            }
            None => channel::voucher_more(wallet, origin, network, &opened.request, amount).await,
        };
        let (payload, cumulative) = match signed {
            Ok(signed) => signed,
            Err(failure) => return Err(self.client.failed(amount, failure)),
        };
        // Signed and stored: it counts, whatever the answer.
        self.paid += amount;
        let credential = MppCredential::new(opened.challenge.clone(), payload).encode();
        Ok((credential, cumulative))
    }

    /// A voucher answering `need`: one paying `stream_ahead` units past what the server holds
    /// (at least what it asks), within the policy, the budget and the stream's cap; the
    /// credential to send (`Payment …`). Once signed it counts as paid.
    pub(crate) async fn voucher(&mut self, need: &NeedVoucher) -> Result<String, ClientError> {
        let Some(opened) = &self.opened else {
            return Err(ClientError::Pay(PayError::InvalidOffer(
                "a voucher asked on a stream that was not paid per unit",
            )));
        };
        let request = &opened.request;
        if need.channel_id != request.channel.to_string() {
            return Err(ClientError::Pay(PayError::InvalidOffer(
                "a voucher asked for another channel",
            )));
        }
        // The server's numbers are checked, not trusted: it asks for more than it holds, and
        // (per event) for no more than one voucher of this client would pay. An event of
        // bytes or counted units may cost more than `stream_ahead` units: it is paid whole,
        // within the caps below.
        let ahead = self.client.ahead(request);
        let (accepted, required) = (need.accepted_cumulative, need.required_cumulative);
        let asked = required.checked_sub(accepted).unwrap_or(0);
        // One event never asks more than one voucher pays; one of bytes or counted units at
        // most ten.
        let per_event = request.unit.as_deref().is_none_or(|unit| unit == "event");
        let most = if per_event {
            ahead
        } else {
            ahead.saturating_mul(MAX_VOUCHERS_AN_EVENT)
        };
        if asked <= 0 || asked > most || accepted < 0 {
            return Err(ClientError::Pay(PayError::InvalidOffer(
                "a request for a voucher that asks nothing, or more than a voucher pays",
            )));
        }
        if required > need.deposit {
            return Err(ClientError::Pay(PayError::Unsupported(
                "the channel's deposit is spent: it needs a top-up",
            )));
        }
        let target = accepted.saturating_add(ahead.max(asked)).min(need.deposit);
        let amount = target - accepted;
        let (credential, _) = self.pay(amount, Some(accepted)).await?;
        // The stream ran dry: what it holds now is this voucher.
        self.dry = true;
        self.drawn = self.paid - amount;
        self.pending = None;
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stellar::{Address, JsonRpcClient, Keypair, Network, SorobanRpc};

    const ORIGIN: &str = "http://a";
    const PRICE: i128 = 10;

    /// A stream of `unit`s at 10 each, opened with 100 units paid, on a channel of this
    /// client's: the payment its server's `payment-need-voucher`s are answered by. Signing a
    /// voucher is local: the RPC is never asked.
    async fn stream(unit: &str) -> (StreamPayment, Address) {
        let channel = Address::Contract([7; 32]);
        let key = Keypair::from_seed([3; 32]);
        let rpc: Arc<dyn SorobanRpc> = Arc::new(
            JsonRpcClient::builder("http://127.0.0.1:9")
                .build()
                .unwrap(),
        );
        let client = PayingClient::builder(key.clone(), rpc, Network::testnet())
            .channel(ORIGIN, channel, key)
            .build()
            .unwrap();
        let request = ChannelRequest {
            amount: PRICE,
            channel,
            network: "stellar:testnet".into(),
            cumulative: 0,
            unit: Some(unit.into()),
        };
        // The opening voucher: 100 units, signed as the client's opening request does.
        let settings = &client.inner.settings;
        channel::voucher_more(
            &settings.wallet,
            ORIGIN,
            &settings.network,
            &request,
            100 * PRICE,
        )
        .await
        .unwrap();
        let challenge = MppChallenge::new("ch_1", "a", "stellar", "channel", "e30");
        let opened = Opened {
            challenge,
            request,
            origin: ORIGIN.into(),
        };
        (
            StreamPayment::new(client, Some(opened), 100 * PRICE, None),
            channel,
        )
    }

    fn need(channel: &Address, accepted: i128, required: i128, deposit: i128) -> NeedVoucher {
        NeedVoucher {
            channel_id: channel.to_string(),
            required_cumulative: required,
            accepted_cumulative: accepted,
            deposit,
        }
    }

    fn signed(payment: &StreamPayment, channel: &Address) -> i128 {
        let store = &payment.client.inner.settings.wallet.store;
        store.current("stellar:testnet", channel).unwrap()
    }

    #[tokio::test]
    async fn a_servers_request_for_a_voucher_is_checked_before_anything_is_signed() {
        // One voucher pays 100 units ahead: 1 000.
        let ahead = 100 * PRICE;
        let deposit = 100_000;
        for (unit, accepted, required, why) in [
            ("event", 1_000, 1_000, "asks nothing"),
            ("event", 1_000, 990, "asks less than it holds"),
            ("event", -10, 0, "holds a negative amount"),
            (
                "event",
                1_000,
                1_000 + ahead + 1,
                "one event, more than a voucher",
            ),
            (
                "byte",
                1_000,
                1_000 + 10 * ahead + 1,
                "one event, more than ten vouchers",
            ),
        ] {
            let (mut payment, channel) = stream(unit).await;
            let refused = payment
                .voucher(&need(&channel, accepted, required, deposit))
                .await;
            assert!(
                matches!(refused, Err(ClientError::Pay(PayError::InvalidOffer(_)))),
                "{why}: {refused:?}"
            );
            assert_eq!(payment.paid, 100 * PRICE, "{why}: nothing paid");
            assert_eq!(payment.client.spent(), 0, "{why}: nothing spent");
            assert_eq!(signed(&payment, &channel), 1_000, "{why}: nothing signed");
        }

        // Another channel than the stream's.
        let (mut payment, channel) = stream("event").await;
        let other = Address::Contract([8; 32]);
        let refused = payment.voucher(&need(&other, 1_000, 1_010, deposit)).await;
        assert!(
            matches!(refused, Err(ClientError::Pay(PayError::InvalidOffer(_)))),
            "{refused:?}"
        );
        assert_eq!(signed(&payment, &channel), 1_000);

        // Above the deposit: the channel needs a top-up, nothing is signed.
        let refused = payment.voucher(&need(&channel, 1_000, 1_010, 1_005)).await;
        assert!(
            matches!(refused, Err(ClientError::Pay(PayError::Unsupported(_)))),
            "{refused:?}"
        );
        assert_eq!(payment.client.spent(), 0);

        // A stream not paid per unit has no voucher to give.
        let (mut unmetered, channel) = stream("event").await;
        unmetered.opened = None;
        let refused = unmetered.voucher(&need(&channel, 0, 10, deposit)).await;
        assert!(matches!(
            refused,
            Err(ClientError::Pay(PayError::InvalidOffer(_)))
        ));

        // A fair request: a voucher of 100 units past what the server holds.
        let paid = payment
            .voucher(&need(&channel, 1_000, 1_010, deposit))
            .await;
        assert!(paid.unwrap().starts_with("Payment "));
        assert_eq!(signed(&payment, &channel), 1_000 + ahead);
        assert_eq!(payment.client.spent(), ahead);
        // Bytes may ask up to ten vouchers' worth for one event, paid whole; short of the
        // deposit, the voucher stops at it.
        let (mut bytes, channel) = stream("byte").await;
        let asked = 1_000 + 10 * ahead;
        bytes
            .voucher(&need(&channel, 1_000, asked, deposit))
            .await
            .unwrap();
        assert_eq!(signed(&bytes, &channel), asked);
        let (mut near, channel) = stream("event").await;
        near.voucher(&need(&channel, 1_000, 1_010, 1_500))
            .await
            .unwrap();
        assert_eq!(signed(&near, &channel), 1_500);
    }
}
