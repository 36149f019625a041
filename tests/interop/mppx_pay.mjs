// Pays a list of requests through mppx's own client transport, `Mppx.create({ methods })
// .fetch`, with the Stellar methods of `stellar_mpp.mjs` (written after the Stellar MPP SDK's
// client), and prints as JSON, per request: the status, the body, the `Payment-Receipt`, what
// the first 402 offered (its `WWW-Authenticate: Payment` challenges, whether it carried an x402
// `PAYMENT-REQUIRED`, the `Accept-Payment` mppx sent) or the error mppx threw.
//
// Environment: MPPX (the package to load: `mppx`, or `mppx-0.11` for the newer line), RPC_URL
// (https), PAYER_SECRET (S…), STEPS (JSON: [{name, url, httpMethod?, headers?, bodyBase64?,
// pay: "pull" | "push" | "channel", channel?, action?}]); the channel steps sign with
// COMMITMENT_SECRET (S…).
import { readFileSync } from "node:fs";
import { Keypair } from "@stellar/stellar-sdk";
import { stellarMethods } from "./stellar_mpp.mjs";

const { MPPX, RPC_URL, PAYER_SECRET, COMMITMENT_SECRET, STEPS } = process.env;
const mppx = await import(MPPX);
const { Mppx } = await import(`${MPPX}/client`);
const { version } = JSON.parse(
  readFileSync(new URL(`./node_modules/${MPPX}/package.json`, import.meta.url), "utf8"),
);
const stellar = stellarMethods(mppx);
const payer = Keypair.fromSecret(PAYER_SECRET);

function challengesOf(response) {
  try {
    return mppx.Challenge.fromResponseList(response).map((c) => ({
      method: c.method,
      intent: c.intent,
      channel: c.request?.channel ?? null,
    }));
  } catch (error) {
    return [{ error: String(error) }];
  }
}

// One channel client per channel, for the whole run: its store keeps the cumulative amount
// signed, as an agent's would.
const channels = new Map();
function channelMethod(address) {
  if (!channels.has(address)) {
    channels.set(
      address,
      stellar.channel({
        commitmentKey: Keypair.fromSecret(COMMITMENT_SECRET),
        rpcUrl: RPC_URL,
        allowedChannels: [address],
      }),
    );
  }
  return channels.get(address);
}

const results = [];
for (const step of JSON.parse(STEPS)) {
  // The first 402 as the server sent it, and the request that drew it.
  let offered = null;
  const recording = async (input, init) => {
    const response = await fetch(input, init);
    if (response.status === 402 && offered === null) {
      const sent = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
      offered = {
        acceptPayment: sent.get("accept-payment"),
        paymentRequired: response.headers.has("payment-required"),
        challenges: challengesOf(response),
        body: await response.clone().json().catch(() => null),
      };
    }
    return response;
  };
  const method =
    step.pay === "channel"
      ? channelMethod(step.channel)
      : stellar.charge({ keypair: payer, rpcUrl: RPC_URL, mode: step.pay === "push" ? "push" : "pull" });
  const client = Mppx.create({ methods: [method], polyfill: false, fetch: recording });
  const init = { method: step.httpMethod ?? "GET", headers: step.headers ?? {} };
  if (step.bodyBase64 !== undefined) init.body = Buffer.from(step.bodyBase64, "base64");
  if (step.action) init.context = { action: step.action };
  const result = { name: step.name, mppx: version };
  try {
    const response = await client.fetch(step.url, init);
    const bytes = Buffer.from(await response.arrayBuffer());
    result.status = response.status;
    result.body = bytes.toString("utf8");
    result.bodyBase64 = bytes.toString("base64");
    result.receipt = response.headers.get("payment-receipt");
  } catch (error) {
    result.error = `${error?.name ?? "Error"}: ${error?.message ?? error}`;
  }
  result.offered = offered;
  results.push(result);
}
console.log(JSON.stringify({ mppx: version, results }));
