// Pays one URL with the official x402 client (`@x402/fetch` + `@x402/stellar`) and prints
// {status, body, paymentResponse} as JSON.
//
// Environment: URL_TO_PAY, RPC_URL (https), PAYER_SECRET (S…), USDC (contract id).
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactStellarScheme, createEd25519Signer } from "@x402/stellar";

export async function pay(url, { rpcUrl, payerSecret, usdc }) {
  const signer = createEd25519Signer(payerSecret, "stellar:testnet");
  const client = new x402Client().register(
    "stellar:*",
    new ExactStellarScheme(signer, { url: rpcUrl }),
  );
  // @x402/stellar 2.9 declares no default assets, so spend controls must name USDC.
  client.setSpendControls({ allowedAssets: [{ network: "stellar:testnet", asset: usdc }] });
  const response = await wrapFetchWithPayment(fetch, client)(url);
  return {
    status: response.status,
    body: await response.text(),
    paymentResponse: response.headers.get("payment-response"),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { URL_TO_PAY, RPC_URL, PAYER_SECRET, USDC } = process.env;
  const result = await pay(URL_TO_PAY, { rpcUrl: RPC_URL, payerSecret: PAYER_SECRET, usdc: USDC });
  console.log(JSON.stringify(result));
}
