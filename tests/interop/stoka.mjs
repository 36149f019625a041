// Stores a blob in stoka and reads it back with the official x402 client (`@x402/fetch` +
// `@x402/stellar`), paying both 402s with x402 `exact`, and prints as JSON: the payer, both
// statuses, the store answer, the bytes read back (base64), whether they equal the stored
// ones, and both decoded PAYMENT-RESPONSEs.
//
// Environment: STOKA_URL, RPC_URL (https), PAYER_SECRET (S…), USDC (contract id), BLOB_KEY,
// BLOB_BASE64 (the blob).
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactStellarScheme, createEd25519Signer } from "@x402/stellar";

function settlement(response) {
  const header = response.headers.get("payment-response");
  return header ? decodePaymentResponseHeader(header) : null;
}

const { STOKA_URL, RPC_URL, PAYER_SECRET, USDC, BLOB_KEY, BLOB_BASE64 } = process.env;
const signer = createEd25519Signer(PAYER_SECRET, "stellar:testnet");
const client = new x402Client().register(
  "stellar:*",
  new ExactStellarScheme(signer, { url: RPC_URL }),
);
// @x402/stellar 2.9 declares no default assets, so spend controls must name USDC.
client.setSpendControls({ allowedAssets: [{ network: "stellar:testnet", asset: USDC }] });
const paying = wrapFetchWithPayment(fetch, client);
const blob = Buffer.from(BLOB_BASE64, "base64");

const stored = await paying(`${STOKA_URL}/v1/store`, {
  method: "POST",
  headers: {
    "X-Stoka-Key": BLOB_KEY,
    "Content-Length": String(blob.length),
    "Content-Type": "application/octet-stream",
  },
  body: blob,
});
const storeText = await stored.text();
let store;
try {
  store = JSON.parse(storeText);
} catch {
  store = storeText;
}

const retrieved = await paying(`${STOKA_URL}/v1/retrieve/${encodeURIComponent(BLOB_KEY)}`, {
  headers: { "X-Stoka-Owner": signer.address },
});
const bytes = Buffer.from(await retrieved.arrayBuffer());

console.log(
  JSON.stringify({
    payer: signer.address,
    store: {
      status: stored.status,
      body: store,
      paymentResponse: settlement(stored),
    },
    retrieve: {
      status: retrieved.status,
      ownerPubkey: retrieved.headers.get("x-stoka-owner-pubkey"),
      bodyBase64: retrieved.status === 200 ? bytes.toString("base64") : null,
      body: retrieved.status === 200 ? null : bytes.toString("utf8"),
      equal: retrieved.status === 200 && bytes.equals(blob),
      paymentResponse: settlement(retrieved),
    },
  }),
);
