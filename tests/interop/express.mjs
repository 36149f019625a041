// The official x402 server (`@x402/express`), settling through a facilitator given by URL, paid
// by the official client. Prints the client's {status, body, paymentResponse} as JSON.
// With SERVE_ONLY=1 it only serves: it prints {url} and runs until its stdin closes (another
// client pays it).
//
// Environment: FACILITATOR_URL, FACILITATOR_API_KEY, PAY_TO (G…), RPC_URL (https),
// PAYER_SECRET (S…), USDC (contract id), SERVE_ONLY.
import express from "express";
import { HTTPFacilitatorClient } from "x402-core-2.9/server";
import { paymentMiddleware, x402ResourceServer } from "x402-express-2.9";
import { ExactStellarScheme } from "@x402/stellar/exact/server";
import { pay } from "./client.mjs";

const { FACILITATOR_URL, FACILITATOR_API_KEY, PAY_TO, RPC_URL, PAYER_SECRET, USDC } = process.env;
const auth = { Authorization: `Bearer ${FACILITATOR_API_KEY}` };
const facilitator = new HTTPFacilitatorClient({
  url: FACILITATOR_URL,
  createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: auth }),
});
const server = new x402ResourceServer(facilitator).register("stellar:testnet", new ExactStellarScheme());
const routes = {
  "GET /joke": {
    accepts: { scheme: "exact", price: "$0.01", network: "stellar:testnet", payTo: PAY_TO },
    description: "a joke",
  },
};
const app = express();
app.use(paymentMiddleware(routes, server));
app.get("/joke", (_request, response) => response.send("a joke"));

const listener = app.listen(0, "127.0.0.1", async () => {
  const url = `http://127.0.0.1:${listener.address().port}/joke`;
  if (process.env.SERVE_ONLY) {
    console.log(JSON.stringify({ url }));
    process.stdin.on("end", () => listener.close());
    process.stdin.resume();
    return;
  }
  try {
    const result = await pay(url, { rpcUrl: RPC_URL, payerSecret: PAYER_SECRET, usdc: USDC });
    console.log(JSON.stringify(result));
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    listener.close();
  }
});
