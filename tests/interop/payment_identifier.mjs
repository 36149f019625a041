// Pays with the official x402 client (`@x402/fetch` + `@x402/stellar`) and the official
// payment-identifier helpers (`@x402/extensions`), as their README shows: one id for one logical
// request, added by an `onBeforePaymentCreation` hook. Fetches URL_TO_PAY twice, then
// OTHER_URL, all under the same id, and prints the three answers as a JSON array of
// {status, body, paymentResponse, sentId}.
//
// Environment: URL_TO_PAY, OTHER_URL, RPC_URL (https), PAYER_SECRET (S…), USDC (contract id).
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import {
  appendPaymentIdentifierToExtensions,
  extractPaymentIdentifier,
  generatePaymentId,
} from "@x402/extensions/payment-identifier";
import { ExactStellarScheme, createEd25519Signer } from "@x402/stellar";

const { URL_TO_PAY, OTHER_URL, RPC_URL, PAYER_SECRET, USDC } = process.env;

const signer = createEd25519Signer(PAYER_SECRET, "stellar:testnet");
const client = new x402Client().register(
  "stellar:*",
  new ExactStellarScheme(signer, { url: RPC_URL }),
);
client.setSpendControls({ allowedAssets: [{ network: "stellar:testnet", asset: USDC }] });

const paymentId = generatePaymentId();
client.onBeforePaymentCreation(async ({ paymentRequired }) => {
  if (!paymentRequired.extensions) {
    paymentRequired.extensions = {};
  }
  appendPaymentIdentifierToExtensions(paymentRequired.extensions, paymentId);
});
let sentId = null;
client.onAfterPaymentCreation(async ({ paymentPayload }) => {
  sentId = extractPaymentIdentifier(paymentPayload);
});

const fetchWithPayment = wrapFetchWithPayment(fetch, client);
const answers = [];
for (const url of [URL_TO_PAY, URL_TO_PAY, OTHER_URL]) {
  sentId = null;
  const response = await fetchWithPayment(url);
  answers.push({
    status: response.status,
    body: await response.text(),
    paymentResponse: response.headers.get("payment-response"),
    sentId,
  });
}
console.log(JSON.stringify({ paymentId, answers }));
